"""Word lists the embedded parser reads: politeness, negation, intensity, ordering.

Plain data, kept apart from the parser so it can be read (and argued with) in one place.
All entries are lower case; multi-word entries are tuples of words.
"""

from __future__ import annotations

#: Stripped from the start of a clause; the ones in POLITE_REQUEST also mark a request.
LEADING_FILLERS: tuple[tuple[str, ...], ...] = tuple(
    tuple(s.split())
    for s in (
        "go ahead and",
        "would you please",
        "could you please",
        "can you please",
        "will you please",
        "why don't you",
        "why dont you",
        "why not",
        "how about you",
        "i want you to",
        "i'd like you to",
        "i would like you to",
        "i need you to",
        "i wish you would",
        "i want to see you",
        "let me see you",
        "show me you can",
        "you should",
        "you could",
        "you must",
        "you can",
        "you may",
        "try to",
        "try and",
        "can you",
        "could you",
        "would you",
        "will you",
        "can u",
        "could u",
        "would u",
        "let's",
        "lets",
        "let us",
        "please",
        "pls",
        "plz",
        "kindly",
        "ok",
        "okay",
        "alright",
        "now",
        "so",
        "then",
        "first",
        "firstly",
        "next",
        "finally",
        "also",
        "just",
        "well",
        "oh",
        "and",
        "but",
        "yeah",
        "right",
    )
)
POLITE_REQUEST = frozenset(
    {
        "go",
        "would",
        "could",
        "can",
        "will",
        "why",
        "how",
        "i",
        "let",
        "show",
        "you",
        "try",
        "let's",
        "lets",
        "please",
        "pls",
        "plz",
        "kindly",
    }
)

#: Words that start a statement or question rather than a request.
NON_REQUEST_STARTERS = frozenset(
    """i i'm im i've i'd i'll me my mine we we're our he he's his she she's her they they're their it
    it's its this that that's these those there there's here the a an what what's where where's when
    who who's why how how's which whose is are was were am been have has had does did do you you're
    your yours u ur if because since though although as maybe perhaps everyone everybody someone
    nobody people sometimes yesterday today tomorrow""".split()
)

#: Verbs that start a request for something physical (used to tell an unsupported request
#: like "juggle three balls" from small talk like "cool").
REQUEST_VERBS = frozenset(
    """do give make show try take have get go put bring fetch grab lift push pull roll crawl kneel salute
    whistle shout scream yell sneeze cough flip fight punch hide sleep paint build fix clean wash carry
    catch hit shoot tap stretch skip hop crouch squat lean raise lower touch hold wiggle blink stare
    close open fly sing juggle swim cook play climb kick eat drink throw ride drive draw pick teleport
    transform breathe lie lay hug kiss type read spin jump write run sprint jog count spell imitate
    pretend act become turn leave come follow stomp tiptoe slide moonwalk cartwheel somersault
    backflip wiggle shake""".split()
)

#: Request verbs that ask for talk, not movement: the clause is small talk, not unsupported.
CHAT_VERBS = frozenset("tell talk say explain describe ask answer speak chat listen remind guess".split())

#: Clause-start words that negate the clause ("don't wave", "never bow", "no dancing").
NEGATORS = frozenset({"don't", "dont", "never", "without", "not", "cannot", "can't", "shouldn't", "mustn't"})
NEGATING_PREFIXES: tuple[tuple[str, ...], ...] = (
    ("do", "not"),
    ("i", "don't", "want"),
    ("i", "dont", "want"),
    ("i", "do", "not", "want"),
    ("you", "don't"),
    ("you", "dont"),
    ("you", "do", "not"),
    ("you", "shouldn't"),
    ("you", "should", "not"),
    ("no",),
    ("instead", "of"),
    ("rather", "than"),
)
#: Clause-start words that turn an action into stopping it ("stop dancing" → idle).
STOPPERS = frozenset({"stop", "quit", "cease", "enough"})

#: Words that split an utterance into ordered clauses. ("after", reorder) puts the clause
#: that follows first: "sit down after you wave" → wave, sit.
SPLITTERS: tuple[tuple[tuple[str, ...], bool], ...] = (
    (("and", "then"), False),
    (("after", "that"), False),
    (("followed", "by"), False),
    (("and", "after", "that"), False),
    (("then",), False),
    (("and",), False),
    (("but",), False),
    (("before",), False),
    (("afterwards",), False),
    (("next",), False),
    (("finally",), False),
    (("after",), True),
)
#: Multi-word negating splitters keep their words: the new clause starts with them.
KEEP_SPLITTERS: tuple[tuple[str, ...], ...] = (("instead", "of"), ("rather", "than"))

#: Dropped before phrase matching, on both the vocabulary and the user's side.
FILLER = frozenset("a an the your my me us to please pls plz just some for".split())

#: Intensity adverbs (per clause) and the level they set.
HIGH_INTENSITY = frozenset(
    """excitedly enthusiastically wildly vigorously energetically hard loudly big huge deeply quickly fast
    crazy passionately strongly fiercely intensely lot lots eagerly frantically madly dramatically
    grand wide""".split()
)
LOW_INTENSITY = frozenset(
    """slowly slightly gently softly little small tiny barely subtly calmly quietly lightly carefully
    lazily faintly bit quick briefly""".split()
)
MEAN_IT = (("mean", "it"),)
VERY = frozenset({"very", "really", "so", "super", "extremely"})

#: Repeat counts: "nod twice" → nod, nod (capped at MAX_REPEAT).
REPEATS: dict[tuple[str, ...], int] = {
    ("twice",): 2,
    ("two", "times"): 2,
    ("2", "times"): 2,
    ("three", "times"): 3,
    ("3", "times"): 3,
    ("thrice",): 3,
}
MAX_REPEAT = 3

#: Greeting and farewell clauses: the persona waves (once per utterance).
GREETINGS: tuple[tuple[str, ...], ...] = tuple(
    tuple(s.split())
    for s in (
        "hi",
        "hello",
        "hey",
        "hiya",
        "howdy",
        "greetings",
        "yo",
        "good morning",
        "good afternoon",
        "good evening",
        "morning",
        "hi there",
        "hello there",
        "hey there",
    )
)
FAREWELLS: tuple[tuple[str, ...], ...] = tuple(
    tuple(s.split())
    for s in (
        "bye",
        "goodbye",
        "good bye",
        "bye bye",
        "see you",
        "see you later",
        "see you soon",
        "see ya",
        "farewell",
        "good night",
        "goodnight",
        "later",
        "cya",
        "take care",
    )
)
GREETING_TAIL = frozenset("there everyone everybody all friend guys folks again".split())
THANKS = frozenset({"thanks", "thank", "thx", "ty", "cheers"})

#: Extra phrasings of core actions (general English, added to the card's synonyms).
EXTRA_ACTION_PHRASES: dict[str, tuple[str, ...]] = {
    "wave": ("wave at", "give a wave", "wave hi", "say goodbye", "goodbye", "wave bye"),
    "walk": ("step", "steps", "walk forward", "walk about", "take a stroll", "wander", "jog", "pace around"),
    "sit": ("sit back", "seat", "sit on the floor"),
    "stand": ("stand upright", "get on your feet", "stand tall"),
    "clap": ("applause", "clap hands"),
    "think": ("have a think", "think it over", "mull it over", "reflect"),
    "look_around": ("look about", "look round", "survey", "surroundings", "look all around"),
    "dance": ("do a dance", "shake it", "move to the music", "dancing"),
    "point": ("point out", "point over there"),
    "bow": ("bow your head",),
    "nod": ("nod along", "nod in agreement"),
    "idle": ("freeze", "hold still", "be still", "stand still", "wait", "rest a bit"),
}
#: Extra phrasings of core expressions.
EXTRA_EXPRESSION_PHRASES: dict[str, tuple[str, ...]] = {
    "smile": ("happy face", "joyful", "smiley"),
    "sad": ("sad face", "tear", "weep", "teary"),
    "angry": ("angry face",),
    "surprised": ("surprise", "surprised face"),
    "neutral": ("straight face", "no expression", "expressionless"),
    "excited": ("excitement",),
}
#: Adverbs that ask for an expression while doing something ("dance happily").
EXPRESSION_ADVERBS: dict[str, str] = {
    "happily": "smile",
    "cheerfully": "smile",
    "joyfully": "smile",
    "gleefully": "smile",
    "sadly": "sad",
    "sorrowfully": "sad",
    "angrily": "angry",
    "furiously": "angry",
    "shyly": "shy",
    "sheepishly": "shy",
    "bashfully": "shy",
    "nervously": "shy",
    "thoughtfully": "thoughtful",
    "curiously": "thoughtful",
    "playfully": "wink",
    "excitedly": "excited",
    "confusedly": "confused",
    "grumpily": "frown",
}
#: Expression words that are verbs you can ask for directly ("smile", "cry"); other
#: expression words (adjectives) count only after LOOK_WORDS ("look sad", "be happy").
EXPRESSION_VERBS = frozenset(
    "smile grin beam laugh giggle chuckle frown scowl grimace cry weep wink blush gasp pout sulk".split()
)
LOOK_WORDS = frozenset("look be act get seem appear make keep stay show feel with go turn".split())
#: Synonyms that are ordinary words in most sentences; they count only when they are the
#: whole utterance ("yes" nods, "no" shakes the head, "hmm" thinks).
STANDALONE_ONLY = frozenset(
    "no yes hmm wow huh lol haha down lost funny party cross blank serious gasp".split()
)
#: Synonyms too loose to count when another action is in the same clause
#: ("show me your dance moves" is a dance, not a point and a walk).
WEAK_PHRASES = frozenset({("show", "me"), ("move",), ("search",), ("show",)})
#: "do it again": refer back to the last action mentioned.
ANAPHORA = frozenset({"it", "that", "this"})
