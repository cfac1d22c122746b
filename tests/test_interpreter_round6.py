"""Sixth round of issue 16: the mechanisms added after holdout7's failures, each checked on
phrasings other than the split's own (so a test fails if the mechanism, not one item, breaks),
with the statements that must stay statements beside them."""

from __future__ import annotations

import pytest
from interpreter_reads import moves, read, rules_only


@pytest.fixture(scope="module")
def plain():
    return rules_only()


@pytest.mark.parametrize(
    ("text", "want"),
    [
        # an emoji restating the request before it is emphasis, not a second directive
        ("wave at me 👋", ["wave"]),
        ("pls nod 👍", ["nod"]),
        ("sit down 🪑 then clap 👏", ["sit", "clap"]),
        ("👋", ["wave"]),
        ("don't wave, just shrug 🤷", ["shrug"]),
        # a letter dropped from a 4-letter vocabulary word, when the three are no English word
        ("pls clp for me", ["clap"]),
        ("nod your hed", ["nod"]),
        ("put on a cap", []),  # "cap" is a word, not a dropped-letter "clap"
        ("ur hilarious lol wave 4 me", ["wave"]),  # "lol" ends a clause
        ("thx now nod", ["nod"]),
        ("lemme c u bow", ["bow"]),
        ("thanks for the dance", []),
        # dropped g on a vocabulary gerund, and "yo/hey" before a stop
        ("hey quit clappin", ["idle"]),
        ("oi stop wavin", ["idle"]),
        # questions about someone else; "let me" + the speaker's own doing
        ("can dogs learn to bow?", []),
        ("do parrots nod their heads?", []),
        ("could you sit?", ["sit"]),
        ("can a horse bow?", []),
        ("does your cat wave at people?", []),
        ("do the robot dance", ["dance"]),  # an imperative, not a question about "the robot"
        ("let me sit with that idea", []),
        ("let me see you bow", ["bow"]),
        # idioms
        ("you should take a stand against it", []),
        ("we can go step by step", []),
        # ordering
        ("prior to sitting, wave", ["wave", "sit"]),
        ("nod, but before that, shrug", ["shrug", "nod"]),
        ("bow last; first wave, then nod", ["wave", "nod", "bow"]),
        ("nod, but first, shrug", ["shrug", "nod"]),
        ("shrug at the end, but nod to start", ["nod", "shrug"]),
        ("finish with a bow, begin with a wave", ["wave", "bow"]),
        ("at the end of the day, wave", ["wave"]),
        # stop
        ("ok, lower your arms now", ["idle"]),
        ("that's enough, the waving", ["idle"]),
        ("put those hands away", ["idle"]),
        ("stahp", ["idle"]),
        ("hands down, you're the best", []),  # "hands down" = without doubt
        # whole-utterance indirect cues
        ("answer yes without a word, just use your head", ["nod"]),
        ("welcome our guests the traditional Japanese way", ["bow"]),
        ("check whether anybody is looking", ["look_around"]),
        ("someone on your left is waving, turn and face them", ["turn_left"]),
        ("greet everyone with a nod", ["nod"]),
        ("signal agreement", ["nod"]),
        ("gesture no", ["shake_head"]),
        ("show us you don't know", ["shrug"]),
        ("what about a quick salsa", ["dance"]),
        ("a salsa class is fun", []),
        ("say night-night with a wave", ["wave"]),
        ("stand up for me", ["stand"]),
        ("grab a chair and relax", ["sit"]),  # the rest is how to sit, not a second directive
        ("坐下来休息一会儿", ["sit"]),
        ("stand up for what you believe", []),
        ("don't frown while you nod", ["nod"]),
    ],
)
def test_round6_mechanisms(plain, text: str, want: list[str]) -> None:
    if "idle" in want:  # a stop: the rest itself is the answer
        assert [d.action for d in read(plain, text)] == want
    else:
        assert moves(plain, text) == want


@pytest.mark.parametrize(
    ("text", "face", "band"),
    [
        ("look a tad sad", "sad", "low"),
        ("a barely-there frown", "frown", "low"),
        ("go full-on angry", "angry", "high"),
        ("look thoroughly confused", "confused", "high"),
        ("look hella surprised", "surprised", "high"),
        ("be cross", "angry", None),
        ("give me a disapproving look", "frown", None),
        ("look starstruck", "excited", None),
        ("look frazzled", "confused", None),
        ("go pale and gobsmacked", "surprised", None),  # the look-word carries over "and"
    ],
)
def test_degree_words_on_faces(plain, text: str, face: str, band: str | None) -> None:
    directives = read(plain, text)
    assert directives and directives[0].expression == face
    if band == "high":
        assert directives[0].intensity >= 0.7
    elif band == "low":
        assert directives[0].intensity <= 0.35


@pytest.mark.parametrize(
    ("text", "want", "face", "band"),
    [
        ("Sonríe un poquito, por favor.", [], "smile", "low"),  # es
        ("Fai un sorrisetto.", [], "smile", "low"),  # it diminutive
        ("Faz uma cara tristinha.", [], "sad", None),  # pt diminutive of a face word
        ("Fai una faccia tristissima!", [], "sad", "high"),  # it superlative
        ("Les chiens savent-ils s'asseoir ?", [], None, None),  # fr: someone else's doing
        ("猫会挥手吗？", [], None, None),  # zh: a question about cats
        ("给她来点掌声", ["clap"], None, None),  # zh: applause as a noun
        ("Lass das Nicken.", ["idle"], None, None),  # de: "lass das X" stops X
        ("Pon una cara un pelín triste.", [], "sad", "low"),  # es: degree inside the face phrase
        ("有点难过的样子。", [], "sad", "low"),  # zh: "a little", "...的样子" as a face
        ("Souris à fond !", [], "smile", "high"),  # fr
        ("Aie l'air étonnée.", [], "surprised", None),  # fr: feminine adjective ending
        ("Tanz wie verrückt!", ["dance"], None, "high"),  # de: "like crazy" in each language
        ("Balla come una matta!", ["dance"], None, "high"),
        ("No frunzas el ceño mientras asientes.", ["nod"], None, None),  # es: "while you" asked
        ("Não sorria enquanto acena.", ["wave"], None, None),  # pt
    ],
)
def test_languages_round6(plain, text: str, want: list[str], face: str | None, band: str | None) -> None:
    directives = read(plain, text)
    actions = [d.action for d in directives]
    assert (actions if "idle" in want else [a for a in actions if a != "idle"]) == want
    if face:
        assert directives and directives[0].expression == face
    if band == "low":
        assert directives[0].intensity <= 0.35
    elif band == "high":
        assert directives[0].intensity >= 0.7
