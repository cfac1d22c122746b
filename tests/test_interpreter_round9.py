"""Ninth round of issue 16: faces ruled out by a frame rather than a leading negation, leading time
clauses, indirect requests put as judgements or as someone else's wish, and degree said as advice,
each checked on phrasings that are in no evaluation split (so a test fails when the mechanism, not
one item, breaks), with the look-alikes that must stay as they were."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from interpreter_reads import moves, read, rules_only

from comfyui_persona.persona.interpreter.exclusions import face_exclusion

EVAL = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "interpreter_eval.jsonl"


@pytest.fixture(scope="module")
def plain():
    return rules_only()


def faces(interp, text: str) -> set[str]:
    return {d.expression for d in read(interp, text)}


RULED_OUT = [
    ("Nod, but get rid of the smirk.", ["nod"], "smile"),
    ("Please stand, and leave the angry face at home.", ["stand"], "angry"),
    ("Bow, but nothing sad about it.", ["bow"], "sad"),
    ("Walk over, but not with a frown.", ["walk"], "frown"),
    ("Point at it without any frown.", ["point"], "frown"),
    ("Give me a wave, and make it a smile-free one.", ["wave"], "smile"),
    ("Clap but skip the excited face.", ["clap"], "excited"),
    ("Sit down, and wipe off that smile.", ["sit"], "smile"),
    ("Nod, not a happy nod though.", ["nod"], "smile"),
    ("dance, and tuck that grin away", ["dance"], "smile"),
    ("wave and keep the sadness off your face", ["wave"], "sad"),
]


@pytest.mark.parametrize(("text", "want", "gone"), RULED_OUT)
def test_a_face_ruled_out_by_a_frame_is_never_shown(plain, text, want, gone):
    assert moves(plain, text) == want
    assert gone not in faces(plain, text)


@pytest.mark.parametrize(
    ("text", "face"),
    [
        # the same words asking for the face, or naming no face, stay as they were
        ("why not smile?", "smile"),
        ("keep that smile on your face", "smile"),
        ("hold that smile", "smile"),
        ("smile with no teeth", "smile"),
        ("look happy, not sad", "smile"),
        ("take that frown off and smile", "smile"),
    ],
)
def test_frames_that_ask_for_the_face_still_show_it(plain, text, face):
    assert face in faces(plain, text)


def test_face_exclusion_needs_a_frame_and_leaves_other_words():
    assert face_exclusion("cut the cake with a smile".split()) is None
    assert face_exclusion("look excited but not too excited".split()) is None
    start, face_start, end = face_exclusion("bow and wipe that excited look off your face".split())
    assert (start, face_start, end) == (2, 4, 9)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("The second you've bowed, wave.", ["bow", "wave"]),
        ("the moment you're seated, nod", ["sit", "nod"]),
        ("Once the dancing's over, clap.", ["dance", "clap"]),
        ("As soon as you're done with the shrug, point at me.", ["shrug", "point"]),
        ("Pivot left, then right.", ["turn_left", "turn_right"]),
    ],
)
def test_leading_time_clauses_order_the_actions(plain, text, want):
    assert moves(plain, text) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("It'd be so cute if you waved at the baby.", ["wave"]),
        ("It would be a shame not to dance to this song.", ["dance"]),
        ("The kids would love it if you danced.", ["dance"]),
        ("Grandpa would be thrilled if you bowed to him.", ["bow"]),
        ("Your fans are cheering, the least you can do is wave.", ["wave"]),
        ("The director wants you sitting in the front row.", ["sit"]),
        ("How about sitting down for a bit?", ["sit"]),
        ("Take a minute and think about it.", ["think"]),
        ("perhaps wave at them", ["wave"]),
        # look-alikes: the speaker's wish, someone else's plans, a generic judgement
        ("It would be fun to go to the beach this weekend.", []),
        ("It would be polite to reply to his email.", []),
        ("My boss wants everybody back in the office on Monday.", []),
        ("My mum would be thrilled if you visited.", []),
        ("maybe dance lessons would help", []),
        ("maybe I'll sit", []),
        ("lie down on the rug", []),
    ],
)
def test_judgements_and_wishes_ask_for_the_act(plain, text, want):
    assert moves(plain, text) == want


@pytest.mark.parametrize(
    ("text", "band"),
    [
        ("Wave, but take it easy.", "low"),
        ("Give a half-hearted nod.", "low"),
        ("Go all out with the clapping!", "high"),
        ("Clap until your hands hurt!", "high"),
        ("Say goodbye with a big wave.", "high"),
    ],
)
def test_degree_said_as_advice_or_in_a_noun_frame(plain, text, band):
    level = read(plain, text)[0].intensity
    assert level >= 0.7 if band == "high" else level <= 0.35


def test_these_phrasings_are_in_no_evaluation_split():
    """The checks above are worth something only on utterances no split holds."""
    norm = lambda t: re.sub(r"[^\w]+", " ", t.lower()).strip()  # noqa: E731
    seen = {norm(json.loads(line)["text"]) for line in EVAL.read_text(encoding="utf-8").splitlines() if line.strip()}
    mine = [t for t, _, _ in RULED_OUT] + ["The second you've bowed, wave.", "The kids would love it if you danced.",
                                            "Wave, but take it easy.", "Give a half-hearted nod."]
    assert not [t for t in mine if norm(t) in seen]
