"""A scene as one LongLive prompt (video/text/scene_prompt.py), on CPU: both characters named
with their own directives, a change for one changing only its clause, and the text encoder's
token budget kept (the embedding has the one-persona prompt's shape, so the DiT does the same
work: the GPU timing is `benchmarks/longlive.py --scene-prompt`)."""

from __future__ import annotations

import pytest

from comfyui_persona.persona.library import load_persona
from comfyui_persona.persona.schema import ActionDirective
from comfyui_persona.video.backend import SessionSpec
from comfyui_persona.video.text.prompt import PromptComposer
from comfyui_persona.video.text.scene_prompt import (
    PromptBudgetError,
    ScenePromptComposer,
    UnknownCharacterError,
    umt5_token_counter,
)


def _spec(persona_id: str) -> SessionSpec:
    persona = load_persona(persona_id)
    vocabulary = persona.vocabulary()
    return SessionSpec(persona_id=persona.id, persona_name=persona.name, look=persona.appearance.model_dump(mode="json"),
                       vocabulary={"actions": [e.model_dump(mode="json") for e in vocabulary.actions],
                                   "expressions": [e.model_dump(mode="json") for e in vocabulary.expressions]})


def _scene(*ids: str) -> ScenePromptComposer:
    return ScenePromptComposer.from_specs([_spec(p) for p in ids])


WAVE = ActionDirective(action="wave", expression="smile", intensity=0.7, character="mira")
SIT = ActionDirective(action="sit", expression="neutral", intensity=0.6, character="bjorn")


def test_one_prompt_names_both_characters_left_to_right_each_with_its_own_directive() -> None:
    prompt = _scene("mira", "bjorn").compose([WAVE, SIT], speaking="bjorn")
    mira, bjorn = (PromptComposer.from_session(_spec(p), scene="") for p in ("mira", "bjorn"))
    her = mira.compose(WAVE).rstrip(".")
    his = bjorn.compose(SIT, speaking=True).rstrip(".")
    assert prompt == (f"Two people side by side. On the left, Mira: {her}. On the right, Bjorn: {his}. "
                      "Wide shot, static camera, everyone in frame, plain softly lit background.")
    assert "red hair" in her and "waving" in her and "grey beard" in his and "talking" in his
    assert "talking" not in her, "only the speaker's mouth moves"


def test_a_change_for_one_character_changes_only_its_clause() -> None:
    scene = _scene("mira", "bjorn", "ada")
    before = scene.compose({"mira": WAVE, "bjorn": SIT})
    after = scene.compose({"mira": WAVE, "bjorn": SIT, "ada": ActionDirective(action="clap", expression="laugh", intensity=0.6)})
    changed = [(a, b) for a, b in zip(before.split(". "), after.split(". "), strict=True) if a != b]
    assert len(changed) == 1 and changed[0][1].startswith("On the right, Professor Ada: "), changed
    assert before.startswith("Three people side by side. On the left, Mira: ")
    assert "In the middle, Bjorn: " in before


def test_a_scene_of_one_is_the_one_persona_prompt_and_unnamed_directives_go_to_the_first() -> None:
    alone = ScenePromptComposer.from_specs([_spec("mira")])
    plain = PromptComposer.from_session(_spec("mira"))
    wave = WAVE.model_copy(update={"character": None})
    assert alone.compose([wave]) == plain.compose(wave) and alone.compose() == plain.compose(None)
    pair = _scene("mira", "bjorn")
    assert pair.compose([wave]) == pair.compose({"mira": WAVE})


def test_a_directive_or_speaker_not_in_the_scene_is_refused_by_name() -> None:
    pair = _scene("mira", "bjorn")
    with pytest.raises(UnknownCharacterError, match=r"directive for 'ada', who is not in this scene \(mira, bjorn\)"):
        pair.compose([ActionDirective(action="wave", expression="smile", intensity=0.6, character="ada")])
    with pytest.raises(UnknownCharacterError, match="'ada' speaks but is not in this scene"):
        pair.compose(speaking="ada")
    with pytest.raises(ValueError, match="a character appears once per scene"):
        ScenePromptComposer.from_specs([_spec("mira"), _spec("mira")])
    with pytest.raises(ValueError, match="1 to 4 characters; got 5"):
        ScenePromptComposer.from_specs([_spec(p) for p in ("mira", "bjorn", "ada", "juno", "sol")])


def test_four_characters_fit_the_text_encoders_tokens_and_embed_to_the_one_persona_shape() -> None:
    torch = pytest.importorskip("torch")
    from comfyui_persona.video.text.umt5 import build_tiny_tokenizer, tiny_text_encoder

    scene = _scene("mira", "bjorn", "ada", "kenji")
    directives = [WAVE, SIT, ActionDirective(action="clap", expression="laugh", intensity=0.6, character="ada"),
                  ActionDirective(action="dance", expression="excited", intensity=0.9, character="kenji")]
    prompt = scene.compose(directives, speaking="ada")
    one = PromptComposer.from_session(_spec("mira")).compose(WAVE.model_copy(update={"character": None}))
    encoder = tiny_text_encoder(corpus=[prompt, one])
    count = umt5_token_counter(encoder.tokenizer)
    assert count(one) < count(prompt) < 512 - 1, (count(one), count(prompt))
    assert scene.compose(directives, speaking="ada", count_tokens=count) == prompt, "fits: nothing cut"
    assert encoder.token_count(prompt) == count(prompt) + 1  # the encoder reads every piece, then </s>
    scene_rows, one_rows = encoder.encode(prompt), encoder.encode(one)
    assert scene_rows.shape == one_rows.shape == (1, 512, encoder.dim), "the DiT reads the same 512 rows"
    assert torch.count_nonzero(scene_rows.abs().sum(-1)) == count(prompt) + 1

    # A budget the full looks overflow: each look cut to its first clause, every character still named.
    char_pieces = umt5_token_counter(build_tiny_tokenizer(["abcdefghijklmnopqrstuvwxyz"]))
    full = char_pieces(prompt) + 1
    short = scene.compose(directives, speaking="ada", count_tokens=char_pieces, budget=full - 1)
    assert char_pieces(short) + 1 < full and "freckles" not in short and "a young woman with short red hair" in short
    assert all(f"{name}: " in short for name in ("Mira", "Bjorn", "Professor Ada", "Kenji"))
    with pytest.raises(PromptBudgetError, match=r"needs \d+ tokens with short appearances \(\d+ in full\); "
                                                r"the text encoder takes 40"):
        scene.compose(directives, count_tokens=char_pieces, budget=40)


def test_the_benchmark_times_a_two_character_prompt_against_one_persona(tmp_path) -> None:
    """`benchmarks/longlive.py --scene-prompt --smoke` (tiny engine, CPU): both prompts' chunk times
    and token counts (a tokenizer in the real file format in the models folder) are recorded."""
    import json
    import os
    import subprocess
    import sys

    from comfyui_persona.video.text.umt5 import build_tiny_tokenizer
    from paths import REPO

    (tmp_path / "models" / "umt5-xxl").mkdir(parents=True)
    tokenizer = build_tiny_tokenizer(["abcdefghijklmnopqrstuvwxyz"])
    tokenizer.tokenizer.save(str(tmp_path / "models" / "umt5-xxl" / "tokenizer.json"))
    out = tmp_path / "longlive.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "longlive.py"), "--smoke", "--scene-prompt", "--no-decode",
         "--out", str(out)], capture_output=True, text=True, timeout=240,
        env={"PERSONA_COMMIT": "test", "OMP_NUM_THREADS": "1", "PATH": os.environ.get("PATH", ""),
             "PERSONA_MODELS_DIR": str(tmp_path / "models")},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["config"]["scene_prompt"] is True
    scene = record["metrics"]["runs"][0]["scene_prompt"]
    assert scene["prompts"]["two_characters"].startswith("Two people side by side. On the left, Mira: ")
    tokens = scene["tokens_with_eos"]
    assert 0 < tokens["one_persona"] < tokens["two_characters"], tokens
    assert scene["tokenizer"].endswith("tokenizer.json") and scene["chunks_timed_each"] >= 4
    assert scene["chunk_ms_p50_one_persona"] > 0 and scene["chunk_ms_p50_two_characters"] > 0
