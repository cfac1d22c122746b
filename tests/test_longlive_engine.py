"""The LongLive engine end to end on CPU: tiny DiT, tiny UMT5 and tiny TAEW2.1, random weights."""

import dataclasses

import numpy as np
import pytest
import tiny_longlive
import torch

from comfyui_persona.persona.schema import ActionDirective
from comfyui_persona.video.backend import RendererBackend, RenderError, SessionSpec
from comfyui_persona.video.decoders.taehv import tiny_taehv
from comfyui_persona.video.longlive.engine import LongLiveBackend
from comfyui_persona.video.model_files import CheckpointNotFoundError
from comfyui_persona.video.registry import create_backend

TEXT_LEN = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def shared_text_encoder():
    return tiny_longlive.text_encoder(TEXT_LEN)


def tiny_engine(**kwargs) -> LongLiveBackend:
    return tiny_longlive.tiny_engine(TEXT_LEN, **kwargs)


SPEC = SessionSpec(persona_id="p1", persona_name="Ada", look={"description": "a woman with red hair"},
                   width=96, height=64, seed=7)


def test_engine_streams_frames_at_16_fps_with_continuous_clock():
    engine = tiny_engine()
    assert isinstance(engine, RendererBackend)
    engine.start_session(SPEC)
    first, second = engine.next_chunk(), engine.next_chunk()
    assert first.frames.shape == (9, 64, 96, 3) and first.frames.dtype == np.uint8
    assert second.frames.shape == (12, 64, 96, 3)
    assert second.first_index == 9 and second.pts_ms[0] == round(9 * 1000 / 16)
    assert first.frames.std() > 0


def test_directive_changes_the_prompt_and_is_reported_in_the_next_chunk():
    engine = tiny_engine(blend_chunks=1)
    engine.start_session(SPEC)
    engine.next_chunk()
    rest_prompt = engine._prompt
    engine.submit([ActionDirective(action="wave", expression="smile", intensity=0.8, duration_s=1.0)], seq=4)
    assert engine._prompt != rest_prompt and "smil" in engine._prompt
    chunk = engine.next_chunk()
    assert chunk.shows_directives == [4]
    engine.next_chunk()  # 1 s = 16 frames = 2 chunks, then back to rest
    assert engine._prompt == rest_prompt


def test_same_seed_gives_the_same_stream():
    def frames() -> np.ndarray:
        engine = tiny_engine()
        engine.start_session(SPEC)
        return np.concatenate([engine.next_chunk().frames for _ in range(2)])

    assert np.array_equal(frames(), frames())


def test_unknown_action_and_bad_sizes_are_render_errors():
    engine = tiny_engine()
    with pytest.raises(RenderError, match="multiples of 16"):
        engine.start_session(SessionSpec(persona_id="p", persona_name="P", look={}, width=100, height=64))
    with pytest.raises(RenderError, match="16 fps"):
        engine.start_session(SessionSpec(persona_id="p", persona_name="P", look={}, width=96, height=64, fps=30))
    engine.start_session(SPEC)
    with pytest.raises(RenderError, match="moonwalk"):
        engine.submit([ActionDirective(action="moonwalk", expression="neutral", intensity=0.5)], seq=1)


def test_registry_builds_longlive_from_models_dir_and_names_missing_file(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="longlive_base.pt"):
        create_backend("longlive", models_dir=tmp_path)


def test_reference_latents_prime_the_sink_and_survive_recache():
    engine = tiny_engine()
    engine.start_session(SPEC)
    session = engine.session
    reference = torch.randn(engine.stream.shape, generator=torch.Generator().manual_seed(3))
    session.prime_sink(reference)
    rows = engine.stream.window.geometry.rows_per_slot
    engine.next_chunk()
    sink = session.kv()[0][..., :rows, :].clone()
    for _ in range(4):
        engine.next_chunk()
    engine.submit([ActionDirective(action="nod", expression="smile", intensity=0.5)], seq=2)
    engine.next_chunk()  # re-caches under the new prompt (18 frames made: stock keeps the sink)
    engine.next_chunk()
    assert torch.equal(session.kv()[0][..., :rows, :], sink)
    with pytest.raises(RuntimeError, match="before the first"):
        session.prime_sink(reference)


def test_speech_adds_the_speaking_cue_through_the_blender_and_drops_it_after():
    from comfyui_persona.video.text.prompt import SPEAKING_CUE

    # 64 tokens, so the cue is not cut off the end of the prompt as it is at TEXT_LEN = 16.
    engine, encoder = tiny_longlive.tiny_engine(64, blend_chunks=1), tiny_longlive.text_encoder(64)
    engine.start_session(SPEC)
    engine.next_chunk()
    rest = engine._prompt
    assert SPEAKING_CUE not in rest
    engine.set_speech([(0, "A"), (600, "O"), (1000, "M")], duration_ms=0)  # 1 s = 16 frames = 2 chunks
    speaking = engine._prompt
    assert speaking == engine.composer.compose(None, speaking=True) and SPEAKING_CUE in speaking
    assert not torch.equal(encoder.encode(speaking), encoder.encode(rest))
    assert torch.equal(engine.blender.target, encoder.encode(speaking))
    text_k = engine.runtime.store.text_k[:, engine.session.row]
    before = text_k.clone()
    engine.next_chunk()  # the blender reaches the speaking prompt: new text K/V, window re-cached
    assert not torch.equal(text_k, before)
    assert engine._prompt == speaking
    engine.next_chunk()  # the second spoken chunk; speech is over after it
    assert engine._prompt == rest and torch.equal(engine.blender.target, encoder.encode(rest))
    engine.set_speech([(0, "A")], duration_ms=3000)
    assert engine._prompt == speaking
    engine.set_speech(None)  # speech cut short (barge-in): the cue goes at once
    assert engine._prompt == rest


def test_speaking_cue_joins_the_current_directive():
    from comfyui_persona.video.text.prompt import SPEAKING_CUE

    engine = tiny_engine(blend_chunks=1)
    engine.start_session(SPEC)
    wave = ActionDirective(action="wave", expression="smile", intensity=0.5)
    engine.submit([wave], seq=1)
    engine.set_speech(None, duration_ms=2000)
    assert engine._prompt == engine.composer.compose(wave, speaking=True) and SPEAKING_CUE in engine._prompt


def _three_viewers_on_one_host(chunks: int):
    """Three sessions (seeds 0-2) started on one shared EngineHost, and the first `chunks`
    chunks each gets on an engine of its own (what the shared host must reproduce)."""
    from comfyui_persona.video.longlive.host import EngineHost
    from comfyui_persona.video.longlive.runtime import EngineRuntime

    specs = [dataclasses.replace(SPEC, seed=i, persona_id=f"p{i}") for i in range(3)]
    alone = []
    for spec in specs:
        engine = tiny_engine()
        engine.start_session(spec)
        alone.append([engine.next_chunk().frames for _ in range(chunks)])
    host = EngineHost(EngineRuntime(tiny_engine().model), tiny_taehv(), prefetch=True)
    viewers = [LongLiveBackend(host=host, text_encoder=shared_text_encoder()) for _ in specs]
    for viewer, spec in zip(viewers, specs, strict=True):
        viewer.start_session(spec)
    return host, viewers, alone


def test_sessions_asking_back_to_back_ride_in_one_batch_and_each_gets_its_own_frames():
    """Three viewers on one engine, each asking for its next chunk from its own thread as soon
    as it has the last (the render loop's way): the host keeps them in one batched pass
    (a viewer coming back a moment late joins through a chunk begun for it, `EngineHost.prefetch`)
    and every viewer gets the frames it gets alone."""
    import threading

    chunks = 6
    host, viewers, alone = _three_viewers_on_one_host(chunks)
    got: list[list[np.ndarray]] = [[] for _ in viewers]
    errors: list[BaseException] = []

    def watch(i: int) -> None:
        try:
            for _ in range(chunks):
                got[i].append(viewers[i].next_chunk().frames)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=watch, args=(i,)) for i in range(len(viewers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    # How full the batches are depends on when each thread gets the CPU (on a loaded box,
    # less): the benchmark measures it (gpu_wave2.sh serving); the next test pins it down.
    assert host.stats.rows > host.stats.passes, host.stats
    for mine, theirs in zip(got, alone, strict=True):
        for a, b in zip(mine, theirs, strict=True):
            assert a.shape == b.shape and int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


def test_a_viewer_asking_late_joins_the_batch_through_a_chunk_begun_for_it():
    """Three viewers asking in turn from one thread, each only once the one before has its
    chunk (the most out of step viewers can be): from the second round on, every pass carries
    all three, because the host begins the next chunk of the viewers not asking yet
    (`EngineHost.prefetch`); each viewer still gets the frames it gets alone."""
    rounds = 4
    host, viewers, alone = _three_viewers_on_one_host(rounds)
    got: list[list[np.ndarray]] = [[] for _ in viewers]
    after_first_round = None
    for r in range(rounds):
        for i, viewer in enumerate(viewers):
            got[i].append(viewer.next_chunk().frames)
        if r == 0:
            after_first_round = dict(host.stats.batch_sizes)
    later = {size: n - after_first_round.get(size, 0) for size, n in host.stats.batch_sizes.items()}
    assert host.stats.prefetched > 0 and later.get(3, 0) > 0, host.stats
    assert {size for size, n in later.items() if n} == {3}, (after_first_round, host.stats)
    for mine, theirs in zip(got, alone, strict=True):
        for a, b in zip(mine, theirs, strict=True):
            assert a.shape == b.shape and int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


def test_a_directives_chunk_runs_alone_while_the_other_viewers_are_not_asking():
    """Viewers whose callers are not waiting (their last chunk's refresh owed, nothing asked)
    neither ride in a directive's chunk nor get a chunk begun for them meanwhile: every pass
    until the directive's frames is that viewer's alone. Afterwards they batch again."""
    host, viewers, _ = _three_viewers_on_one_host(1)
    for _ in range(2):
        for viewer in viewers:
            viewer.next_chunk()
    viewers[0].submit([ActionDirective(action="wave", expression="smile", intensity=0.8, duration_s=3.0)], seq=1)
    assert viewers[0].next_chunk().shows_directives == []  # begun early for it, made before the directive
    before, prefetched = dict(host.stats.batch_sizes), host.stats.prefetched
    assert viewers[0].next_chunk().shows_directives == [1]
    during = {size: n - before.get(size, 0) for size, n in host.stats.batch_sizes.items()}
    assert {size for size, n in during.items() if n} == {1}, (before, host.stats)
    assert host.stats.prefetched == prefetched and host.stats.sat_out > 0
    for viewer in viewers:
        viewer.next_chunk()
    assert host.stats.batch_sizes.get(3, 0) > before.get(3, 0)


def test_a_chunk_begun_early_reports_only_the_directives_it_shows():
    """The host may begin a viewer's next chunk (to ride in another viewer's batch) before the
    viewer's thread has taken the last one. Each chunk must still report the directives it is
    the first to show, not those of the chunk begun after it. The race needs two threads; what
    decides it is the order of the begin hook's calls, made here in the race's order: chunk k
    begins, a directive comes, chunk k+1 begins, then the caller takes chunk k."""
    engine = tiny_engine(blend_chunks=1)
    engine.start_session(SPEC)
    engine.next_chunk()
    engine.submit([ActionDirective(action="wave", expression="smile", intensity=0.8, duration_s=3.0)], seq=1)
    engine._begin_chunk()  # the host begins chunk k
    engine.submit([ActionDirective(action="nod", expression="neutral", intensity=0.8, duration_s=3.0)], seq=2)
    engine._begin_chunk()  # and chunk k+1, before chunk k is handed out
    assert engine.next_chunk().shows_directives == [1]
    assert engine.next_chunk().shows_directives == [2]


@pytest.mark.parametrize(("blend_recache", "recaches"), [("last", 2), ("each", 4)])
def test_a_two_step_blend_re_caches_the_window_once_when_it_arrives(blend_recache, recaches):
    """A directive and its return to rest are two prompt changes; with the two-step blend, "last"
    re-caches the window once per change (when the blend arrives, as a stock switch does) and
    "each" after both steps: a stock re-cache is a pass over the whole window, 2.6 chunk passes
    of GPU time at 480x832 (video/longlive/settings.py BLEND_RECACHE)."""
    engine = tiny_engine(blend_chunks=2, blend_recache=blend_recache)
    engine.start_session(SPEC)
    for _ in range(4):
        engine.next_chunk()
    counters = engine.session.stream.counters
    before = counters.recache_passes
    rest = engine._prompt
    engine.submit([ActionDirective(action="wave", expression="smile", intensity=0.8, duration_s=1.0)], seq=1)
    for _ in range(8):
        engine.next_chunk()
    assert engine._prompt == rest and engine.blender.current is engine.blender.target  # back at rest
    assert counters.recache_passes - before == recaches
    with pytest.raises(ValueError, match="blend_recache"):
        tiny_engine(blend_recache="never")
