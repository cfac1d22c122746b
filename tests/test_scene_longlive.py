"""A scene on the LongLive engine, on CPU: tiny DiT, tiny UMT5 and tiny TAEW2.1, random weights.

One prompt names every character with its own directive (video/text/scene_prompt.py); a
directive for one character re-composes only its clause and goes through the engine's prompt
switch (blend, re-cache) as one persona's does; a one-persona session is what it was.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tiny_longlive
import torch

from comfyui_persona.persona.interpreter import get_interpreter
from comfyui_persona.persona.library import PersonaLibrary
from comfyui_persona.persona.scene import SceneInterpreter
from comfyui_persona.persona.schema import ActionDirective
from comfyui_persona.video.backend import RenderError, SessionSpec
from comfyui_persona.video.decoders.taehv import tiny_taehv
from comfyui_persona.video.longlive.engine import LongLiveBackend
from comfyui_persona.video.text.prompt import SPEAKING_CUE, PromptComposer
from comfyui_persona.video.text.scene_prompt import ScenePromptComposer

TEXT_LEN = 64
W, H = 96, 64

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def text_encoder():
    return tiny_longlive.text_encoder(TEXT_LEN)


def tiny_engine(**kwargs) -> LongLiveBackend:
    return tiny_longlive.tiny_engine(TEXT_LEN, **kwargs)


@functools.cache
def persona(persona_id: str):
    return PersonaLibrary.default().get(persona_id)


def spec(persona_id: str, seed: int = 3) -> SessionSpec:
    p = persona(persona_id)
    vocabulary = p.vocabulary()
    return SessionSpec(persona_id=p.id, persona_name=p.name, look=p.appearance.model_dump(mode="json"),
                       width=W, height=H, seed=seed,
                       vocabulary={"actions": [e.model_dump(mode="json") for e in vocabulary.actions],
                                   "expressions": [e.model_dump(mode="json") for e in vocabulary.expressions]})


def clauses(prompt: str) -> dict[str, str]:
    """{"Mira": her clause, ...} of a scene prompt."""
    found = {}
    for sentence in prompt.split(". "):
        if sentence.startswith("On the "):
            name, _, clause = sentence.split(", ", 1)[1].partition(": ")
            found[name] = clause
    return found


def test_a_scene_streams_frames_from_one_prompt_naming_both_characters():
    engine = tiny_engine()
    engine.start_scene([spec("mira"), spec("bjorn")])
    assert engine.cast == ("mira", "bjorn")
    expected = ScenePromptComposer.from_specs([spec("mira"), spec("bjorn")]).compose({})
    assert engine._prompt == expected and expected.startswith("Two people side by side. On the left, Mira: ")
    assert torch.equal(engine.blender.current, text_encoder().encode(expected))
    first, second = engine.next_chunk(), engine.next_chunk()
    assert first.frames.shape == (9, H, W, 3) and second.frames.shape == (12, H, W, 3)
    assert second.first_index == 9 and first.frames.std() > 0


def test_mira_wave_bjorn_sit_down_switches_to_one_prompt_naming_both_actions():
    """The real scene interpreter reads the utterance; the engine performs both directives."""
    engine = tiny_engine(blend_chunks=1)
    engine.start_scene([spec("mira"), spec("bjorn")])
    engine.next_chunk()
    rest = engine._prompt
    passes_before = engine.stream.counters.recache_passes
    reading = SceneInterpreter(get_interpreter("embedded"), [persona("mira"), persona("bjorn")]).interpret(
        "Mira, wave; Bjorn, sit down")
    directives = reading.directives
    assert [(d.character, d.action) for d in directives] == [("mira", "wave"), ("bjorn", "sit")]
    engine.submit(directives, seq=5)
    prompt = engine._prompt
    assert prompt != rest
    her, his = clauses(prompt)["Mira"], clauses(prompt)["Bjorn"]
    assert "waving" in her and "sitting" not in her
    assert "sitting" in his and "waving" not in his
    # The switch is the one-persona switch: the blender aims at the new prompt's embedding,
    # the next chunk shows the submission and the window is re-cached under the new prompt.
    assert torch.equal(engine.blender.target, text_encoder().encode(prompt))
    chunk = engine.next_chunk()
    assert chunk.shows_directives == [5]
    engine.host.settle(engine.session)  # "after" timing: the re-cache runs behind the chunk
    assert engine.stream.counters.recache_passes > passes_before
    assert torch.equal(engine.blender.current, engine.blender.target)


def test_a_directive_for_one_character_changes_only_its_clause_and_the_others_carry_on():
    engine = tiny_engine(blend_chunks=1)
    engine.start_scene([spec("mira"), spec("bjorn")])
    engine.submit([ActionDirective(action="wave", expression="smile", intensity=0.7, character="mira"),
                   ActionDirective(action="sit", expression="neutral", intensity=0.6, character="bjorn")], seq=1)
    before = clauses(engine._prompt)
    engine.submit([ActionDirective(action="nod", expression="smile", intensity=0.5, character="bjorn")], seq=2)
    after = clauses(engine._prompt)
    assert after["Mira"] == before["Mira"], "Mira's directive was not replaced: she still waves"
    assert after["Bjorn"] != before["Bjorn"] and "nodding" in after["Bjorn"]
    # An unnamed directive is the lead's (protocol 1.1: no character = the first persona).
    engine.submit([ActionDirective(action="clap", expression="laugh", intensity=0.6)], seq=3)
    assert "clapping" in clauses(engine._prompt)["Mira"] and clauses(engine._prompt)["Bjorn"] == after["Bjorn"]


def test_bad_scene_input_is_a_render_error_and_the_session_goes_on():
    engine = tiny_engine()
    engine.start_scene([spec("mira"), spec("bjorn")])
    prompt = engine._prompt
    with pytest.raises(RenderError, match="'ada', who is not in this scene"):
        engine.submit([ActionDirective(action="wave", expression="smile", intensity=0.5, character="mira"),
                       ActionDirective(action="wave", expression="smile", intensity=0.5, character="ada")], seq=1)
    with pytest.raises(RenderError, match="moonwalk"):
        engine.submit([ActionDirective(action="moonwalk", expression="neutral", intensity=0.5, character="bjorn")], seq=2)
    assert engine._prompt == prompt and all(t.current is None for t in engine.tracks.values())
    assert engine.next_chunk().frames.shape == (9, H, W, 3)
    with pytest.raises(RenderError, match="once per scene"):
        tiny_engine().start_scene([spec("mira"), spec("mira")])
    with pytest.raises(RenderError, match="1 to 4 characters"):
        tiny_engine().start_scene([spec(p) for p in ("mira", "bjorn", "ada", "mira", "bjorn")])


def test_the_talking_cue_goes_on_the_speaker_only():
    engine = tiny_engine()
    engine.start_scene([spec("mira"), spec("bjorn")])
    engine.set_speech(None, 1500, character="bjorn")
    said = clauses(engine._prompt)
    assert SPEAKING_CUE in said["Bjorn"] and SPEAKING_CUE not in said["Mira"]
    # A speech track speaking both voices: the cue follows its windows, chunk by chunk
    # (a chunk is 12 frames = 750 ms; the first is 9 frames = 562.5 ms).
    engine.set_speakers([(0, 500, "mira"), (600, 3000, "bjorn")])
    engine.set_speech([(0, "A"), (2900, "X")])
    assert SPEAKING_CUE in clauses(engine._prompt)["Mira"]
    engine.next_chunk()  # the next chunk starts at 562.5 ms, between the lines: Mira keeps the cue
    assert SPEAKING_CUE in clauses(engine._prompt)["Mira"]
    engine.next_chunk()  # the next starts at 1312.5 ms, in Bjorn's line
    said = clauses(engine._prompt)
    assert SPEAKING_CUE in said["Bjorn"] and SPEAKING_CUE not in said["Mira"]
    with pytest.raises(RenderError, match="not in this scene"):
        engine.set_speech(None, 500, character="ada")


def test_a_one_persona_session_is_unchanged_and_a_scene_of_one_is_the_same_stream():
    """v1: `start_session` composes the one-persona prompt, ignores `character` (1.0 has none)
    and gives the frames a scene of one gives."""
    engine = tiny_engine(blend_chunks=1)
    engine.start_session(spec("mira"))
    composer = PromptComposer.from_session(spec("mira"))
    assert engine.cast == () and engine._prompt == composer.compose(None)
    wave = ActionDirective(action="wave", expression="smile", intensity=0.7)
    engine.submit([wave], seq=1)
    assert engine._prompt == composer.compose(wave)
    frames = np.concatenate([engine.next_chunk().frames for _ in range(2)])

    alone = tiny_engine(blend_chunks=1)
    alone.start_scene([spec("mira")])
    assert alone._prompt == composer.compose(None)
    alone.submit([wave], seq=1)
    assert alone._prompt == composer.compose(wave)
    assert np.array_equal(frames, np.concatenate([alone.next_chunk().frames for _ in range(2)]))


def test_the_longlive_sampler_node_streams_the_scene_node_s_cast() -> None:
    """ComfyUI path: a Persona Scene node's value on the sampler's persona input (its type is
    PERSONA,PERSONA_SCENE) makes the session a scene and the engine one prompt for both."""
    from comfyui_persona.nodes import NODE_CLASS_MAPPINGS
    from comfyui_persona.nodes.engine_types import LongLiveModel
    from comfyui_persona.nodes.runtime import SessionStore, bind_store
    from comfyui_persona.nodes.types import DirectivePlan
    from comfyui_persona.video.longlive.loader import engine_from_parts
    from comfyui_persona.video.longlive.settings import LongLiveSettings
    from comfyui_persona.video.longlive.testing import tiny_dit

    model = tiny_dit(in_dim=16, out_dim=16, text_dim=32, text_len=TEXT_LEN)
    engine = LongLiveModel(engine_from_parts(model, text_encoder(), tiny_taehv(),
                                             LongLiveSettings(preset="tiny", dtype="float32", max_sessions=4)))
    assert "PERSONA_SCENE" in NODE_CLASS_MAPPINGS["PersonaLongLiveSampler"].INPUT_TYPES()["required"]["persona"][0]
    (scene,) = NODE_CLASS_MAPPINGS["PersonaScene"]().load("mira, bjorn")
    sampler = NODE_CLASS_MAPPINGS["PersonaLongLiveSampler"]()
    inputs = dict(width=W, height=H, seed=3, denoising_steps=2, sparge_attention=False, sparge_topk=0.5,
                  sparge_cdf_threshold=0.0, sparge_timestep_threshold=800.0)
    store = SessionStore()
    plan = DirectivePlan(turn=1, directives=(
        ActionDirective(action="wave", expression="smile", intensity=0.7, character="mira"),
        ActionDirective(action="sit", expression="neutral", intensity=0.6, character="bjorn")))
    with bind_store(store):
        (first,) = sampler.render(engine, scene, DirectivePlan(turn=0), "s", **inputs)
        (second,) = sampler.render(engine, scene, plan, "s", **inputs)
    backend = store.get("s").renderer.backend
    assert [p.id for p in store.get("s").cast] == ["mira", "bjorn"] and backend.cast == ("mira", "bjorn")
    assert first.chunk.frames.shape == (9, H, W, 3) and second.chunk.first_index == 9, "one stream, not restarted"
    said = clauses(backend._prompt)
    assert "waving" in said["Mira"] and "sitting" in said["Bjorn"] and second.chunk.shows_directives == [1]
