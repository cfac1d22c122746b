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
        "i think you should",
        "i think you need to",
        "i think you ought to",
        "i suggest you",
        "i'd suggest you",
        "i'd love you to",
        "i'd love it if you would",
        "i'd love it if you",
        "it would be nice if you could",
        "it would be nice if you",
        "would you mind",
        "you might want to",
        "you may want to",
        "you need to",
        "you ought to",
        "you have to",
        "you gotta",
        "you'd better",
        "you better",
        "it's time to",
        "it's time you",
        "i want to see you",
        "feel free to",
        "go on and",
        "how about",
        "mind if you",
        "do me a favor and",
        "do me a favour and",
        "let me see you",
        "show me you can",
        "you should",
        "you could",
        "you must",
        "you can",
        "you may",
        "try to",
        "maybe try",
        "perhaps try",
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
        "it",
        "it's",
    }
)

#: Words that start a statement or question rather than a request.
NON_REQUEST_STARTERS = frozenset(
    """i i'm im i've i'd i'll me my mine we we're our he he's his she she's her they they're their it
    it's its this that that's these those there there's here the a an what what's where where's when
    who who's why how how's which whose is are was were am been have has had does did do you you're
    your yours u ur if because since though although as maybe perhaps everyone everybody someone
    nobody people sometimes yesterday today tomorrow you've you'll you'd he'll she'll they've we've
    i'll nice cool great lovely awesome cute pretty good bad wow beautiful amazing wonderful fantastic brilliant
    excellent perfect impressive sweet neat superb terrific awful terrible weird interesting gorgeous adorable
    incredible stunning fabulous splendid such mum mom dad brother sister grandma grandpa granny wife husband
    girlfriend boyfriend son daughter baby boss teacher kids children dogs cats friends parents family""".split()
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
NEGATORS = frozenset({"don't", "dont", "never", "without", "minus", "not", "cannot", "can't", "shouldn't", "mustn't"})
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
    ("try", "not", "to"),
    ("don't", "you", "dare"),
    ("no", "need", "to"),
    ("skip", "the"),
    ("skip", "that"),
    ("leave", "out", "the"),
    # Verbs that rule an action out, with the action as their (gerund) object: "avoid pointing
    # at people", "refrain from clapping", "hold off on the dancing", "steer clear of waving".
    ("avoid",),
    ("refrain", "from"),
    ("hold", "off", "on", "the"),
    ("hold", "off", "on"),
    ("hold", "off"),
    ("steer", "clear", "of"),
    ("stay", "away", "from"),
    ("keep", "away", "from"),
    ("resist", "the", "urge", "to"),
    ("didn't",),
    ("didnt",),
    ("did", "not"),
    ("forget", "the"),
    ("forget", "about", "the"),
    ("forget", "about"),
    ("hold", "the"),
    ("hold", "your"),
    # a face dropped: "lose the sad look", "ditch the grin", "get rid of that frown"
    ("lose", "the"),
    ("lose", "that"),
    ("ditch", "the"),
    ("ditch", "that"),
    ("get", "rid", "of", "the"),
    ("get", "rid", "of", "that"),
    ("nah", "dont"),
    ("nah", "don't"),
    ("nope", "dont"),
    ("nope", "don't"),
)
#: Clause-start words that turn an action into stopping it ("stop dancing" → idle).
STOPPERS = frozenset({"stop", "quit", "cease", "enough", "halt", "stahp"})
#: Clause-start phrases that ask to stop whatever is going on ("that's enough waving",
#: "cut it out with the dancing", "no more clapping"): the clause becomes idle.
STOP_PHRASES: tuple[tuple[str, ...], ...] = tuple(
    tuple(s.split())
    for s in (
        "stop with the",
        "that'll do",
        "that will do",
        "that's plenty",
        "hold it",
        "hold up",
        "enough already",
        "alright stop",
        "cut the",
        "cut it out with the",
        "cut it out with",
        "cut it out",
        "cut that out",
        "knock it off with the",
        "knock it off",
        "knock that off",
        "that's enough of the",
        "that's enough of",
        "that's enough",
        "thats enough",
        "that is enough",
        "enough with the",
        "enough of the",
        "enough of that",
        "enough",
        "no more",
        "stop it",
        "stop that",
        "quit it",
        "give it a rest",
        "cool it",
        "chill out",
        "you can stop",
        "please stop",
        "stop",
        "quit",
        "cease",
        "halt",
    )
)

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
KEEP_SPLITTERS: tuple[tuple[str, ...], ...] = (("instead", "of"), ("rather", "than"), ("without",), ("minus",))
#: Splitters whose clause happens before the previous one ("clap once you've stood up").
REORDER_SPLITTERS: tuple[tuple[str, ...], ...] = (
    ("as", "soon", "as", "you", "have"),
    ("once", "you", "have"),
    ("when", "you", "have"),
    ("when", "you've"),
    ("once", "you've"),
    ("once", "you"),
    ("as", "soon", "as", "you've"),
    ("as", "soon", "as", "you"),
)
#: Directions that repeat the previous clause's turn ("look right, then left").
DIRECTIONS = {"left": "turn_left", "right": "turn_right"}
DIRECTION_FILLER = frozenset(
    "to the your my a bit little now again way other side back afterwards afterward later next then too also".split()
)

#: Dropped before phrase matching, on both the vocabulary and the user's side.
FILLER = frozenset("a an the your my me us to please pls plz just some for".split())

#: Intensity adverbs (per clause) and the level they set.
HIGH_INTENSITY = frozenset(
    """excitedly enthusiastically wildly vigorously energetically hard loudly big huge deeply quickly fast
    crazy passionately strongly fiercely intensely lot lots eagerly frantically madly dramatically
    grand wide massive enormous giant widely broadly beaming biggest widest brightest happiest largest
    wildest loudest hugest full""".split()
)
LOW_INTENSITY = frozenset(
    """slowly slightly gently softly little small tiny barely subtly calmly quietly lightly carefully
    lazily faintly bit quick briefly lil faint soft mild mildly weak weakly half tad hint slight
    smallest tiniest teeny gentle somewhat""".split()
)
MEAN_IT = (
    ("mean", "it"), ("ear", "to", "ear"), ("all", "out"), ("with", "gusto"),
    # "laugh till you cry", "dance until you drop", "clap your heart out", "wave like crazy":
    # a result or manner clause that only a strong version reaches
    ("till", "you"), ("until", "you"), ("til", "you"), ("till", "it"), ("until", "it"),
    ("till", "your"), ("until", "your"), ("til", "your"),
    ("heart", "out"), ("like", "crazy"), ("like", "mad"), ("like", "there's", "no", "tomorrow"),
    # "wave like a maniac", "dance like a madman": a manner only a strong version has
    ("like", "a", "maniac"), ("like", "a", "madman"), ("like", "a", "madwoman"), ("like", "a", "lunatic"),
    ("like", "a", "crazy"), ("like", "a", "mad"), ("like", "crazy", "person"), ("like", "a", "wild"),
    ("like", "an", "animal"), ("like", "nobody's", "watching"), ("like", "a", "maniac"),
)
VERY = frozenset(
    {"very", "really", "so", "super", "extremely", "real", "totally", "mega", "soo", "rly", "hella", "incredibly", "seriously",
     "duper", "awfully", "terribly", "truly", "mighty", "ridiculously", "unbelievably", "exceptionally", "especially",
     "particularly", "utterly", "absolutely", "properly", "insanely", "completely", "thoroughly", "wholly",
     "realy", "relly", "rlly", "verry", "suuper", "extremly", "increadibly", "totaly"}
)

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
    "think": ("have a think", "think it over", "mull it over", "reflect"),
    "look_around": ("look about", "look round", "survey", "surroundings", "look all around", "have a nosey",
                    "nose around", "nose about", "poke around", "have a poke around", "have a gander"),
    "point": ("point out", "point over there", "gesture at", "gesture towards", "gesture toward", "gesture to",
              "motion towards", "motion toward", "motion at"),
    "shrug": ("lift your shoulders", "raise your shoulders", "shoulders up", "shoulder thing", "shoulders thing",
              "do the shoulders", "let your shoulders do the talking"),
    "bow": ("bow your head", "bend at the waist", "bend from the waist"),
    "nod": ("nod along", "nod in agreement", "bob your head", "dip your head", "head nod", "head bob", "silent yes",
            "quiet yes", "wordless yes", "nod of the head"),
    "shake_head": ("head shake", "headshake", "silent no", "quiet no", "wordless no", "shake of the head"),
    "idle": ("freeze", "hold still", "be still", "stand still", "wait", "rest a bit", "halt"),
    "clap": ("applause", "clap hands", "clap along", "hands together"),
    "dance": ("do a dance", "shake it", "move to the music", "dancing", "bust some moves", "cut a rug", "boogie down"),
}
#: Extra phrasings of core expressions.
EXTRA_EXPRESSION_PHRASES: dict[str, tuple[str, ...]] = {
    "smile": (
        "happy face", "joyful", "smiley", "jolly", "content", "delighted", "chipper", "sunny", "smiling",
        "say cheese", "friendly", "warm", "proud", "grateful",
    ),
    "sad": (
        "disappointed", "worried", "heartsick", "forlorn",
        "sad face", "tear", "weep", "teary", "miserable", "glum", "blue", "melancholy", "tearful", "mopey",
        "sorry for yourself", "down in the dumps", "crying", "bummed",
    ),
    "angry": ("angry face", "livid", "enraged", "fuming", "irate", "outraged", "pissed", "annoyed as hell"),
    "surprised": (
        "scared", "afraid", "terrified", "frightened",
        "surprise", "surprised face", "awestruck", "flabbergasted", "gobsmacked", "dumbfounded", "wide eyed",
        "raise your eyebrows", "raised eyebrows", "eyebrows up", "jaw drop", "mind blown",
    ),
    "neutral": (
        "straight face", "no expression", "expressionless", "stoic", "deadpan", "stone faced", "bored",
        "keep it serious", "poker faced",
    ),
    "excited": (
        "excitement", "giddy", "stoked", "psyched", "jazzed", "elated", "bubbly", "amped", "fired up",
        "over the moon", "hyper", "pumped up",
    ),
    "frown": (
        "grumpy", "sulky", "moody", "cranky", "grouchy", "sour", "pouty", "pout", "sulk", "disgusted",
        "unimpressed", "jealous", "irritable", "furrow your brow", "furrow your brows", "furrowed brow", "knit your brows", "scrunch your face",
    ),
    "confused": (
        "arch an eyebrow", "bewildered", "clueless", "befuddled", "mystified", "confounded", "scratch your head", "skeptical",
        "suspicious", "doubtful", "unsure",
    ),
    "wink": ("flirty", "flirtatious", "sly", "mischievous", "teasing", "smug", "smirk", "cocky"),
    "shy": ("sheepish", "awkward", "flustered", "blushing", "bashful", "nervous", "anxious", "timidly"),
    "thoughtful": ("dreamy", "wistful", "lost in thought", "deep in thought"),
    "laugh": ("crack up", "laughing", "in stitches", "lmao", "rofl", "goofy", "silly"),
}
#: Mood words by the face that shows them, beyond the core synonyms: an affect word list
#: (how people describe a face), not phrases from any one utterance. Adjectives count only
#: after a look-word ("look crestfallen"), as all face adjectives do.
MOOD_WORDS: dict[str, str] = {
    "smile": "chuffed merry radiant blissful gleeful upbeat thankful tickled contented serene beaming cheery",
    "sad": "devastated crestfallen dejected downcast despondent morose mournful woeful disheartened distraught "
    "downhearted heavy-hearted despairing grief-stricken sombre somber wretched desolate lonely homesick weepy",
    "excited": "jubilant exhilarated buzzing electrified euphoric exuberant raring wired thrilled giddy starstruck pumped psyched hyped",
    "angry": "seething incensed infuriated indignant raging apoplectic wrathful murderous steaming hostile cross",
    "frown": "peeved irked miffed sullen disgruntled vexed exasperated petulant put-out huffy stroppy testy crabby disapproving",
    "surprised": "astounded aghast startled petrified shocked speechless thunderstruck agog awed alarmed spooked awestruck dumbstruck",
    "confused": "muddled nonplussed bemused disoriented addled flummoxed stumped bamboozled fazed foggy dazed frazzled discombobulated",
    "shy": "abashed mortified demure meek self-conscious diffident reticent red-faced bashful",
    "thoughtful": "meditative musing introspective absorbed preoccupied philosophical brooding",
    "wink": "impish roguish knowing coquettish",
    "neutral": "indifferent unmoved impassive composed stony unbothered stone-faced poker-faced deadpan expressionless",
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

#: Phrasings that ask for an action without naming it ("take a load off" → sit), matched
#: anywhere in a clause and acted on even when the clause reads as a statement ("you've
#: been on your feet all day"). Longest first.
INDIRECT: dict[tuple[str, ...], str] = {
    tuple(k.split()): v
    for k, v in {
        "on your feet all day": "sit",
        "your feet must be killing you": "sit",
        "rest your legs": "sit",
        "sit yourself down": "sit",
        "cop a squat": "sit",
        "big hand": "clap",
        "hands together for": "clap",
        "shake a leg": "dance",
        "strut your stuff": "dance",
        "get moving": "walk",
        "go for a stroll": "walk",
        "wander around": "walk",
        "look all around you": "look_around",
        "check out your surroundings": "look_around",
        "been standing all day": "sit",
        "standing all day": "sit",
        "tired of standing": "sit",
        "your feet must hurt": "sit",
        "your legs must be tired": "sit",
        "take a load off": "sit",
        "take the weight off": "sit",
        "pop a squat": "sit",
        "grab a chair": "sit",
        "grab a seat": "sit",
        "pull up a chair": "sit",
        "park yourself": "sit",
        "park it": "sit",
        "make yourself comfortable": "sit",
        "give them a hand": "clap",
        "give him a hand": "clap",
        "give her a hand": "clap",
        "give it up for": "clap",
        "hear it for": "clap",
        "round of applause": "clap",
        "show some appreciation": "clap",
        "show your appreciation": "clap",
        "put your hands together": "clap",
        "put those hands together": "clap",
        "everyone rise": "stand",
        "everybody rise": "stand",
        "all rise": "stand",
        "rise and shine": "stand",
        "up you get": "stand",
        "upsy daisy": "stand",
        "get off the chair": "stand",
        "get off your seat": "stand",
        "stretch your legs": "walk",
        "take a stroll": "walk",
        "take a few steps": "walk",
        "hit the dance floor": "dance",
        "show me your moves": "dance",
        "show us your moves": "dance",
        "take a look around": "look_around",
        "have a look around": "look_around",
        "check out the room": "look_around",
        "look over there": "point",
        "show me the way": "point",
        "show us the way": "point",
        "take a bow": "bow",
        "who knows": "shrug",
    }.items()
}
#: Word sequences that contain an action word without asking for it ("nice bow tie",
#: "point of view"): removed before matching.
NOT_ACTIONS: tuple[tuple[str, ...], ...] = tuple(
    tuple(s.split())
    for s in (
        "show us what you've got", "show me what you've got", "show us what you got", "show me what you got",
        "bow tie", "bowtie", "point of view", "no point", "the point", "what's the point", "good point",
        "stand by", "can't stand", "cannot stand", "can not stand", "stand for", "sit on it", "sit tight",
        "wave of", "heat wave", "nod off", "dance floor", "dance class", "clap back", "rain bow",
        "point taken", "bow out", "stand out", "stand up for", "turn down the", "turn up the", "turn off",
        "turn on the", "look up", "look forward to", "sit through", "walk me through", "walk you through",
        "walk through", "stand a chance", "take a stand", "step by step", "point me to a", "point me to an",
        "point me to some", "point me in the right direction",
    )
)
#: Chat spellings, respelled before parsing ("u" → "you", "2 me" → "to me").
SLANG: dict[str, str] = {
    "u": "you", "ur": "your", "r": "are", "n": "and", "nd": "and", "pls": "please", "plz": "please",
    "plzz": "please", "pleasee": "please", "gimme": "give me", "lemme": "let me", "wanna": "want to",
    "gonna": "going to", "gotta": "got to", "lil": "little", "thx": "thanks", "ty": "thanks", "b4": "before",
    "l8r": "later", "rn": "now", "k": "ok", "kk": "ok", "ya": "you", "yah": "yes", "yep": "yes", "yup": "yes",
    "nope": "no", "cuz": "because", "bc": "because", "tho": "though", "sry": "sorry", "luv": "love",
    "bday": "birthday", "smth": "something", "idk": "i don't know", "ik": "i know", "wat": "what",
    "whatcha": "what are you", "dunno": "dunno", "dont": "don't", "cant": "can't", "im": "i'm", "cn": "can", "wud": "would",
    "cud": "could", "shud": "should", "pleez": "please", "pleaseee": "please", "bruh": "", "bro": "",
    "sup": "what's up", "wassup": "what's up", "hru": "how are you", "hbu": "how about you",
}
#: Digits that stand for words in chat, unless a count follows ("2 times").
SLANG_DIGITS = {"2": "to", "4": "for"}
#: Emoji → what they ask for. Gestures are actions; faces are expressions.
EMOJI: dict[str, str] = {
    "👋": "wave", "🙋": "wave", "👏": "clap", "🙌": "clap", "💃": "dance", "🕺": "dance", "🙇": "bow",
    "🤷": "shrug", "👉": "point", "👈": "point", "👆": "point", "☝": "point", "👍": "nod", "👎": "shake your head",
    "🤔": "think", "🚶": "walk", "🪑": "sit down", "👀": "look around",
    "😊": "smile", "🙂": "smile", "😀": "smile", "😃": "smile", "😄": "smile", "😁": "smile", "☺": "look shy",
    "🥰": "smile", "😍": "look excited", "🤩": "look excited", "🥳": "look excited", "😆": "laugh",
    "😂": "laugh", "🤣": "laugh", "😹": "laugh", "😢": "look sad", "😭": "look sad", "😞": "look sad",
    "😔": "look sad", "☹": "look sad", "🙁": "look sad", "😿": "look sad", "😠": "look angry",
    "😡": "look angry", "🤬": "look angry", "😤": "frown", "😒": "frown", "😣": "frown", "😮": "look surprised",
    "😲": "look surprised", "😯": "look surprised", "😱": "look surprised", "🤯": "look surprised",
    "😕": "look confused", "🤨": "look confused", "😵": "look confused", "😉": "wink", "😜": "wink",
    "😏": "wink", "😳": "look shy", "🫣": "look shy", "😐": "keep a straight face", "😑": "keep a straight face",
    "✋": "wave", "🤚": "wave", "🙏": "bow", "🤗": "smile", "😘": "wink", "😬": "look shy", "🥺": "look sad",
    "😎": "wink", "🔥": "look excited", "😅": "look shy", "😇": "smile", "🙄": "frown",
}

#: Prototype phrasings of indirect requests, for the embedding fallback: an English utterance
#: that asked for nothing else is compared with these (and the INDIRECT phrases); at cosine
#: INDIRECT_THRESHOLD or more it asks for that action. General English, written before the
#: held-out split that measures it.
INDIRECT_PROTOTYPES: dict[str, tuple[str, ...]] = {
    "sit": (
        "you must be tired, have a rest",
        "you look like you need to sit",
        "there's a free chair for you",
        "rest your weary legs",
        "you should take a break and sit",
        "your legs must be tired",
        "make yourself comfortable in a chair",
    ),
    "stand": (
        "everybody stand up",
        "please rise for the anthem",
        "get up off the floor",
        "time to get up",
        "up on your feet everyone",
    ),
    "clap": (
        "let's applaud them",
        "give a big round of applause",
        "show the performers some love",
        "cheer for the band",
        "let's hear some applause",
    ),
    "walk": (
        "go take a stroll",
        "move around a bit",
        "take a little walk around the room",
        "time to stretch your legs",
    ),
    "dance": (
        "let's party",
        "the music is on, move your body",
        "get down on the dance floor",
        "show off your moves",
    ),
    "look_around": ("check out the place", "take in the view around you", "have a good look at this room"),
}
INDIRECT_THRESHOLD = 0.68
#: First words of a question: a question is never read as an indirect request.
QUESTION_WORDS = frozenset(
    "do does did are is was were can could will would should have has what when where why who how which".split()
)

#: Words that open a clause addressed to a group ("everybody clap"): dropped when an action
#: or request verb follows, so the rest reads as the imperative it is.
VOCATIVES = frozenset("everybody everyone y'all guys folks all people".split())
#: Verbs of liking that make a clause a compliment or an opinion ("love your dancing").
OPINION_VERBS = frozenset("love loved like liked hate hated miss missed adore adored appreciate enjoyed admire".split())
OPINION_OBJECTS = frozenset("your the that this how his her their my our it when watching seeing those these".split())
