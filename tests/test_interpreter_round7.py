"""Seventh round of issue 16: the mechanisms added for hypothetical and hoped-for requests,
ruling-out verbs, degree words, restated actions and the languages' polite forms, each
checked on phrasings that are in no evaluation split (so a test fails when the mechanism,
not one item, breaks), with the look-alike statements that must stay statements."""

from __future__ import annotations

import pytest
from interpreter_reads import moves, read, rules_only

from comfyui_persona.persona.interpreter.frames import _base_form


@pytest.fixture(scope="module")
def plain():
    return rules_only()


@pytest.mark.parametrize(
    ("text", "want"),
    [
        # a past tense after "if you", "what if you", "suppose you", "time you" is a hypothetical's
        ("we'd be thankful if you bowed to the mayor", ["bow"]),
        ("what if you waved at the camera?", ["wave"]),
        ("supposing you nodded along?", ["nod"]),
        ("if you danced for us, that would be the best", ["dance"]),
        ("it's high time you sat down", ["sit"]),
        ("it's about time someone stood up", ["stand"]),
        ("it would help us if you pointed at the door", ["point"]),
        # hopes with a modal, turns, "wouldn't hurt", "I could use"
        ("we really hope you'll clap for the kids", ["clap"]),
        ("now it's your turn to bow", ["bow"]),
        ("it can't hurt to nod a little", ["nod"]),
        ("we could totally use a little dance", ["dance"]),
        ("how about a little bow?", ["bow"]),
        # look-alikes that must stay statements
        ("I hope you had fun at the party", []),
        ("if you sit too long your back hurts", []),
        ("if I sat down now I'd fall asleep", []),
        ("my aunt hopes the band will dance", []),
        ("would you mind if I danced with your brother?", []),
        ("could you believe she waved at the mayor?", []),
        ("it's time I clapped for myself", []),
        # a condition about what the listener did is no hypothetical offered to them
        ("if you waved at the parade, you must have seen the mayor", []),
        ("suppose you stood in the rain, how would you feel?", []),
        ("if you waved for me I'd be thrilled", ["wave"]),
        ("nobody wants to see you bow", []),
        # invitations put as questions
        ("how would you feel about clapping for them?", ["clap"]),
        ("what do you say we take a walk?", ["walk"]),
        ("you wouldn't mind bowing, would you?", ["bow"]),
        ("why don't we all sit down?", ["sit"]),
        ("do you want to sit?", ["sit"]),
        ("do you want to dance at your wedding someday?", []),
        ("how do you feel about dancing in public?", []),
    ],
)
def test_hypotheticals_hopes_and_their_look_alikes(plain, text, want):
    assert moves(plain, text) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("avoid nodding during the speech", []),
        ("refrain from waving, please", []),
        ("hold off on the clapping", []),
        ("steer clear of pointing at the guests", []),
        ("nope don't dance", []),
        ("avoid the crowd and sit down", ["sit"]),
        ("we'd prefer it if you didn't clap", []),
        ("forget the bow", []),
        ("hold your applause", []),
    ],
)
def test_verbs_that_rule_an_action_out(plain, text, want):
    assert moves(plain, text) == want


@pytest.mark.parametrize(
    ("text", "face", "low"),
    [
        ("just a faint smile", "smile", True),
        ("a gentle frown", "frown", True),
        ("giggle uncontrollably", "laugh", False),
        ("look totaly shocked", "surprised", False),
    ],
)
def test_degree_words_around_a_bare_face(plain, text, face, low):
    first = read(plain, text)[0]
    assert first.expression == face
    assert (first.intensity <= 0.35) if low else (first.intensity >= 0.7)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("👏👏 clap for them!", ["clap"]),
        ("stand up, come on, up you get", ["stand"]),
        ("stand up for a moment", ["stand"]),
        ("stand up for what you believe in", []),
        ("nod, nod again", ["nod", "nod"]),
        ("look around and then give us a bow", ["look_around", "bow"]),
        ("send the guests off with a wave", ["wave"]),
        ("take a break on the sofa", ["sit"]),
        ("take a break", []),
        ("stay completely frozen", []),
        ("clap, but only after you bow", ["bow", "clap"]),
        ("clpa for the band", ["clap"]),
        ("dance. actually, wave instead", ["wave"]),
        ("bob your head to agree", ["nod"]),
        ("gesture towards the exit", ["point"]),
    ],
)
def test_a_restated_action_is_one_and_other_structures(plain, text, want):
    assert moves(plain, text) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("Le dispiacerebbe sedersi?", ["sit"]),
        ("Mi faresti un cenno di no?", ["shake_head"]),
        ("La gatta si è seduta sul divano.", []),
        ("座りなさい。", ["sit"]),
        ("左に曲がってください。", ["turn_left"]),
        ("もうお辞儀はいいよ。", ["idle"]),
        ("母はお辞儀をした。", []),
        ("Ça vous dirait de vous asseoir ?", ["sit"]),
        ("Es wäre toll, wenn du tanzen würdest.", ["dance"]),
        ("Wenn du tanzt, lache ich.", []),
        ("Me gustaría que te sentaras.", ["sit"]),
        ("Et si tu saluais ?", ["wave"]),
        ("Mon frère a applaudi.", []),
        ("先生が踊りました。", []),
        ("歩いたらどう？", ["walk"]),
        ("你想不想跳舞？", ["dance"]),
        ("你可不可以挥挥手？", ["wave"]),
    ],
)
def test_polite_and_told_forms_in_other_languages(plain, text, want):
    got = [d.action for d in read(plain, text) if d.action != "idle" or want == ["idle"]]
    assert got == want


@pytest.mark.parametrize(
    ("text", "level"),
    [("Aplaude con muchas ganas.", "high"), ("用力挥手！", "high"), ("Annuisci appena.", "low")],
)
def test_degree_in_other_languages(plain, text, level):
    first = read(plain, text)[0]
    assert (first.intensity >= 0.7) if level == "high" else (first.intensity <= 0.35)


def test_base_forms_of_past_tenses():
    pairs = dict(shook="shake", stood="stand", clapped="clap", waved="wave", bowed="bow", danced="dance",
                 looked="look", smiled="smile", pointed="point", nodded="nod", called="call", need=None, red=None)
    assert {w: _base_form(w) for w in pairs} == pairs
