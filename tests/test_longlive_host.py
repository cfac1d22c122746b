"""EngineHost: several sessions batched on one engine, each as if it were alone (CPU, tiny models)."""

import threading

import pytest
import torch

from comfyui_persona.video.decoders.taehv import tiny_taehv
from comfyui_persona.video.longlive.host import (
    ChunkInterrupted,
    EngineBusyError,
    EngineHost,
    SessionFailedError,
    rows_that_fit,
)
from comfyui_persona.video.longlive.runtime import EngineRuntime
from comfyui_persona.video.longlive.testing import tiny_dit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LAT_H, LAT_W = 4, 6


def prompts(n: int, seed: int = 11) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 5, 24, generator=gen) for _ in range(n)]


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Frames equal up to one uint8 level (batched float32 GEMMs may round apart)."""
    return a.shape == b.shape and int((a.int() - b.int()).abs().max()) <= 1


def make_host(**kwargs) -> EngineHost:
    runtime = EngineRuntime(tiny_dit(in_dim=16, out_dim=16, local_attn_size=9))
    return EngineHost(runtime, tiny_taehv(), **kwargs)


def script_for(i: int):
    """Session i's own script: its prompt, then a switch after i + 2 chunks (stock re-cache)."""
    a, b = prompts(2, seed=100 + i)
    return a, {i + 2: b}


def run_alone(i: int, chunks: int, mode: str = "stock") -> list[torch.Tensor]:
    host = make_host()
    s = host.open_session(LAT_H, LAT_W, seed=i, recache_mode=mode)
    first, switches = script_for(i)
    s.set_prompt(first)
    out = []
    for c in range(chunks):
        if c in switches:
            s.set_prompt(switches[c])
        out.append(s.next_frames())
    return out


@torch.no_grad()
@pytest.mark.parametrize("mode", ["stock", "causal"])
def test_batched_sessions_equal_each_session_alone(mode):
    """Three sessions with their own seeds, prompts and switch times, two of them joining late,
    stepped together in batched passes: each gets the frames it gets alone (float32 on CPU:
    a row's attention is the same computation in a batched call; batched GEMMs may round
    differently). Rows reading the same keys attend in one call."""
    host = make_host()
    attention_batches = []
    dense = host.runtime._dense

    def counting(q, k, v):
        attention_batches.append(q.shape[0])
        return dense(q, k, v)

    host.runtime._dense = counting
    sessions, outs = [], {}
    for c in range(7):
        if c in (0, 1, 3):  # sessions join between chunks, at different points of the others' streams
            i = len(sessions)
            s = host.open_session(LAT_H, LAT_W, seed=i, recache_mode=mode)
            s.set_prompt(script_for(i)[0])
            sessions.append((i, s, c))
            outs[i] = []
        for i, s, joined in sessions:
            switch = script_for(i)[1].get(c - joined)
            if switch is not None:
                s.set_prompt(switch)
        frames = host.step_all([s for _, s, _ in sessions])
        for (i, _, _), f in zip(sessions, frames, strict=True):
            outs[i].append(f)
    assert max(host.stats.batch_sizes) == 3 and host.stats.passes < sum(len(v) for v in outs.values()) * 5
    assert 3 in attention_batches  # once all three are in steady state, one call serves them
    for i, got in outs.items():
        alone = run_alone(i, len(got), mode)
        for a, b in zip(alone, got, strict=True):
            assert same(a, b)


@torch.no_grad()
def test_a_session_leaving_keeps_the_others_streaming_from_packed_rows():
    host = make_host()
    sessions = [host.open_session(LAT_H, LAT_W, seed=i) for i in range(3)]
    for s, p in zip(sessions, prompts(3), strict=True):
        s.set_prompt(p)
    before = host.step_all(sessions)
    host.step_all(sessions)
    sessions[0].close()
    assert [s.row for s in sessions[1:]] == [0, 1]  # rows stay packed: one contiguous range per pass
    later = host.step_all(sessions[1:])
    alone = run_alone_with(prompts(3)[2], seed=2, chunks=3)
    assert same(before[2], alone[0]) and same(later[1], alone[2])
    newcomer = host.open_session(LAT_H, LAT_W, seed=5)
    assert newcomer.row == 2



@torch.no_grad()
def test_a_lone_sessions_owed_passes_are_queued_before_its_frames_are_handed_out_and_change_nothing():
    """With `queue_owed` (the GPU default), a lone session's chunk refresh, and the re-cache an
    "after" switch queued, are queued before its frames are handed out, so nothing is owed
    while the caller works on them (on a GPU only passes that replay a graph: the CUDA test);
    not while another session is working. The frames are those of a host that runs every owed
    pass at the next request. Sessions opened under inference mode, as the serving benchmark
    does: the queued pass's instant work (a commit) updates their tensors in place."""
    owed, eager = make_host(queue_owed=False), make_host(queue_owed=True)
    assert make_host().queue_owed is False  # CPU default: off
    frames = {}
    for name, host in (("owed", owed), ("eager", eager)):
        with torch.inference_mode():
            s = host.open_session(LAT_H, LAT_W, seed=3)
        a, b = prompts(2)
        s.set_prompt(a)
        out = []
        for c in range(7):
            if c == 4:
                s.set_prompt(b, timing="after")
            out.append(s.next_frames())
            assert s.stream.owes_work is (name == "owed"), (name, c)
        frames[name] = out
    for c, (x, y) in enumerate(zip(frames["owed"], frames["eager"], strict=True)):
        assert torch.equal(x, y), f"chunk {c}"
    assert eager.stats.passes == owed.stats.passes + 1  # the last chunk's refresh, already run

    other = eager.open_session(LAT_H, LAT_W, seed=4)
    other.set_prompt(prompts(1)[0])
    other.stream.request_chunk()  # another session with passes to run: its caller drives them
    eager.sessions[0].next_frames()
    assert eager.sessions[0].stream.owes_work

def run_alone_with(prompt, seed, chunks):
    host = make_host()
    s = host.open_session(LAT_H, LAT_W, seed=seed)
    s.set_prompt(prompt)
    return [s.next_frames() for _ in range(chunks)]


def test_another_size_or_one_session_too_many_is_a_clear_busy():
    host = make_host(max_sessions=2)
    a = host.open_session(LAT_H, LAT_W)
    with pytest.raises(EngineBusyError, match=r"streaming 1 session\(s\) at 32x48; a session at 32x64 needs its own engine"):
        host.open_session(LAT_H, LAT_W + 2)
    host.open_session(LAT_H, LAT_W)
    with pytest.raises(EngineBusyError, match="already serves its 2 sessions"):
        host.open_session(LAT_H, LAT_W)
    assert EngineBusyError("x").payload()["code"] == "engine_busy"
    a.close()
    host.open_session(LAT_H, LAT_W)


@torch.no_grad()
def test_a_session_that_fails_mid_batch_does_not_take_the_others_down():
    """Session 1's decoder breaks on its third chunk (inside a batched tick): it alone fails,
    with its error; the others keep streaming, and their frames are what they are alone."""
    host = make_host()
    sessions = [host.open_session(LAT_H, LAT_W, seed=i) for i in range(3)]
    for s, p in zip(sessions, prompts(3), strict=True):
        s.set_prompt(p)
    broken = sessions[1]
    real_decode, calls = broken.decode.decode_uint8, []

    def failing(latents):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("decoder out of memory")
        return real_decode(latents)

    broken.decode.decode_uint8 = failing
    host.step_all(sessions)
    host.step_all(sessions)
    results = {}

    def run(s):
        try:
            results[s.name] = [s.next_frames() for _ in range(2)]
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[s.name] = exc

    threads = [threading.Thread(target=run, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert isinstance(results[broken.name], SessionFailedError) and "out of memory" in str(results[broken.name])
    for i in (0, 2):
        got = results[sessions[i].name]
        assert same(got[1], run_alone_with(prompts(3)[i], seed=i, chunks=4)[3])
    assert host.stats.failures == 1


@torch.no_grad()
def test_an_interrupt_stops_within_one_pass_and_the_next_request_continues_without_a_gap():
    """The interrupt callback fires after the chunk's second pass: `ChunkInterrupted` before a
    third pass runs; the next request makes that same chunk (from the same noise), so the
    stream has no gap and equals an uninterrupted one."""
    host = make_host()
    s = host.open_session(LAT_H, LAT_W, seed=4)
    (p,) = prompts(1)
    s.set_prompt(p)
    plain = run_alone_with(p, seed=4, chunks=4)
    frames = [s.next_frames(), s.next_frames()]
    passes = host.stats.passes
    calls = []

    def interrupt():
        calls.append(host.stats.passes)
        return host.stats.passes - passes >= 2

    with pytest.raises(ChunkInterrupted):
        s.next_frames(interrupt=interrupt)
    assert host.stats.passes - passes == 2, "stopped within one pass of the interrupt"
    frames += [s.next_frames(), s.next_frames()]
    assert len(frames) == 4 and all(torch.equal(a, b) for a, b in zip(plain, frames, strict=True))


@torch.no_grad()
def test_a_restart_while_a_caller_waits_gives_it_the_restarted_streams_first_chunk():
    """`restart` while `next_frames` waits (here from the caller's own interrupt check, between
    two passes of its chunk): the caller gets the first chunk of the stream started again, as
    a fresh session of that seed makes it. Before, the request was forgotten and it waited
    for ever."""
    text = prompts(1)[0]
    host = make_host()
    s = host.open_session(LAT_H, LAT_W, seed=3)
    s.set_prompt(text)
    s.next_frames(), s.next_frames()
    restarted = []

    def restart_once():
        if not restarted:
            restarted.append(True)
            s.restart(seed=5)
        return False

    got = []
    worker = threading.Thread(target=lambda: got.append(s.next_frames(interrupt=restart_once)), daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the caller was left waiting"
    fresh = make_host().open_session(LAT_H, LAT_W, seed=5)
    fresh.set_prompt(text)
    assert restarted and torch.equal(got[0], fresh.next_frames())


@torch.no_grad()
def test_a_directive_restarts_the_chunk_in_flight_under_the_new_prompt():
    """A new prompt that arrives after the chunk's first pass restarts the chunk: its frames are
    the chunk made under the new prompt from the start (a plain stream switching before it)."""
    old, new = prompts(2)
    host = make_host()
    s = host.open_session(LAT_H, LAT_W, seed=6)
    pending = {}

    def begin_hook():  # what LongLiveBackend's blender gives: the prompt for the chunk beginning
        return pending.pop("next", None)

    s.stream.begin_hook = begin_hook
    s.restart_hook = lambda: new
    s.set_prompt(old)
    s.next_frames(), s.next_frames()
    passes = host.stats.passes

    def directive_after_first_pass():
        if host.stats.passes - passes == 2:  # the refresh owed, then the chunk's first pass
            s.notify_directive()
        return False

    got = s.next_frames(interrupt=directive_after_first_pass)
    assert host.stats.preempted == 1
    reference = make_host().open_session(LAT_H, LAT_W, seed=6)
    reference.set_prompt(old)
    reference.next_frames(), reference.next_frames()
    reference.set_prompt(new)  # "after" timing, as the host's session: re-cache behind the chunk
    assert torch.equal(got, reference.next_frames())


def test_the_pass_time_estimate_is_the_passes_own_time_not_the_idle_time_between_chunks():
    """Deadline decisions (restart the chunk in flight, sit a pass out) use the estimated time of
    a pass. At real-time pacing the engine idles between a lone session's chunks; that idle time
    once entered the estimate and made restarts that would have been on time look late."""
    now = [0.0]

    def clock():  # every reading moves a little; the viewer's playing time is added below
        now[0] += 0.001
        return now[0]

    host = make_host(clock=clock)
    s = host.open_session(LAT_H, LAT_W, seed=0)
    s.set_prompt(prompts(1)[0])
    seen = []
    for _ in range(4):
        s.next_frames(progress=lambda done, total, latents: seen.append(host._estimate(1)))
        now[0] += 1.0  # the viewer plays the chunk: the engine is idle
    assert len(seen) >= 16 and 0 < max(seen) < 0.1


def two_streaming_sessions(host: EngineHost):
    """Two sessions with their own prompts, one chunk made for each."""
    a, b = (host.open_session(LAT_H, LAT_W, seed=i) for i in range(2))
    for s, p in zip((a, b), prompts(2), strict=True):
        s.set_prompt(p)
    host.step_all([a, b])
    return a, b


class Cancelled(Exception):
    """What ComfyUI's progress hook raises on Cancel (InterruptProcessingException)."""


@torch.no_grad()
def test_a_cancel_on_a_chunks_last_pass_stops_the_request_and_the_next_one_gets_those_frames():
    """ComfyUI's hook clears its flag as it raises, so a Cancel during a chunk's last pass is
    seen only there: the request raises, and the next request gets the finished chunk (no frame
    gap, nothing made twice), as an uninterrupted stream would."""
    plain = make_host()
    reference = plain.open_session(LAT_H, LAT_W, seed=1)
    reference.set_prompt(prompts(1)[0])
    expected = [reference.next_frames() for _ in range(3)]

    host = make_host()
    s = host.open_session(LAT_H, LAT_W, seed=1)
    s.set_prompt(prompts(1)[0])
    got = [s.next_frames()]

    def cancel_at_the_last_pass(done, total, latents):
        if done == total:
            raise Cancelled

    with pytest.raises(Cancelled):
        s.next_frames(progress=cancel_at_the_last_pass)
    passes = host.runtime.passes_run
    got.append(s.next_frames())
    assert host.runtime.passes_run == passes  # the finished chunk, not a new one
    got.append(s.next_frames())
    assert all(same(a, b) for a, b in zip(expected, got, strict=True))


@torch.no_grad()
def test_fewer_steps_set_during_a_chunk_apply_from_the_next_one():
    """The sampler node sets steps on every run, possibly while a chunk is in flight (begun
    early to fill a batch): that chunk keeps its schedule instead of failing the session."""
    host = make_host()
    s = host.open_session(LAT_H, LAT_W, seed=1)
    s.set_prompt(prompts(1)[0])
    s.next_frames()

    def lower_steps_mid_chunk(done, total, latents):
        if latents is not None and s.stream.chunk_in_flight is not None and len(s.stream.timesteps) == 4:
            s.configure(steps=2)

    s.next_frames(progress=lower_steps_mid_chunk)
    assert s.error is None and len(s.stream.timesteps) == 4  # the chunk in flight finished on 4
    s.next_frames()
    assert len(s.stream.timesteps) == 2


@torch.no_grad()
def test_a_cancel_after_a_sessions_chunk_was_made_is_not_charged_to_its_next_request():
    """Another session's caller drives the tick after this session's chunk is made and Cancel
    is pressed: that chunk is handed out, and the next request (no Cancel now) streams on."""
    host = make_host()
    a, b = two_streaming_sessions(host)
    cancel = [False]
    with host._lock:
        host._request(a, None, lambda: cancel[0])
        host._request(b, None, None)
        while not a.ready:
            host._tick_as_driver()
        cancel[0] = True  # the chunk is already made
        host._tick_as_driver()  # the next tick, for b
        host._claim(a)
    cancel[0] = False
    assert a.wanted == 0
    assert a.next_frames().shape[0] > 0


@torch.no_grad()
def test_a_sessions_own_callback_that_raises_fails_that_session_alone():
    """An interrupt or restart callback of one session that raises fails that session; the
    caller driving the tick for another session gets its frames."""
    host = make_host()
    a, b = two_streaming_sessions(host)

    def broken() -> bool:
        raise RuntimeError("a's interrupt callback broke")

    with host._lock:
        host._request(a, None, broken)
    assert b.next_frames().shape[0] > 0 and b.next_frames().shape[0] > 0
    assert isinstance(a.error, RuntimeError)
    with pytest.raises(SessionFailedError):
        a.next_frames()


@torch.no_grad()
def test_a_directive_during_a_chunk_that_goes_on_makes_the_next_chunk_urgent():
    """Without preemption a directive that comes mid-chunk is shown by the next chunk: that one
    gets the priority (the others sit its passes out), not the chunk in flight."""
    host = make_host(preempt=False)
    a, b = two_streaming_sessions(host)
    pending = {}
    a.stream.begin_hook = lambda: pending.pop("next", None)  # as LongLiveBackend: prompt at chunk begin
    far = host.clock() + 60.0

    def directive_mid_chunk(done, total, latents):
        if done == 2:
            pending["next"] = prompts(1, seed=5)[0]
            a.notify_directive()

    a.progress = directive_mid_chunk
    host.step_all([a, b], deadline=far)  # the chunk in flight goes on under the old prompt
    a.progress = None
    assert a.urgent and "next" in pending
    sat_out = host.stats.sat_out
    host.step_all([a, b], deadline=far)  # the directive's chunk
    assert host.stats.sat_out > sat_out and not a.urgent


@torch.no_grad()
def test_urgent_session_runs_alone_while_the_others_have_time():
    """With deadlines, a session whose chunk carries a directive runs its passes without the
    sessions that can wait (a smaller batch: its frames come sooner)."""
    host = make_host()
    a, b = two_streaming_sessions(host)
    a.notify_directive()
    far = host.clock() + 60.0
    host.step_all([a, b], deadline=far)
    assert host.stats.sat_out >= 4  # b sat out a's passes
    assert not a.urgent


def test_a_session_sits_out_an_urgent_chunk_only_with_a_pass_to_spare_for_its_frames():
    """The estimate is the passes' own time; a waiting session's frames also need their decode and
    hand-over, so it sits out only when its deadline holds one pass more than its latents need."""
    host = make_host()
    a, b = two_streaming_sessions(host)
    a.notify_directive()
    host._pass_s = {1: 0.1, 2: 0.1}  # 0.1 s a pass, alone or together
    b.wanted = 1  # its caller is waiting for its next chunk
    urgent_left = a.stream.passes_to_latents()
    own_left = b.stream.passes_to_latents()
    now, candidates = 100.0, [(a, None), (b, None)]
    b.deadline = now + (urgent_left + own_left) * 0.1 + 0.05  # enough for its latents only
    assert [s for s, _ in host._choose(candidates, now)] == [a, b]
    b.deadline = now + (urgent_left + own_left + 1) * 0.1 + 0.05  # and a pass to spare
    assert [s for s, _ in host._choose(candidates, now)] == [a]


def test_work_nobody_waits_for_sits_out_an_urgent_chunk_even_without_a_deadline():
    """A chunk begun early for a session (to join a batch) or a pass it owes from its last chunk
    has no caller waiting: it waits for the urgent chunk. A caller waiting without a deadline
    (a plain loop, a test) keeps its place, as before."""
    host = make_host()
    a, b = two_streaming_sessions(host)
    a.notify_directive()
    now, candidates = 100.0, [(a, None), (b, None)]
    b.deadline = None
    b.wanted, b.prefetched = 1, 1  # a chunk begun for it; its caller has not asked
    assert [s for s, _ in host._choose(candidates, now)] == [a]
    b.wanted, b.prefetched = 0, 0  # only the pass it owes from its last chunk
    assert [s for s, _ in host._choose(candidates, now)] == [a]
    b.wanted = 1  # its caller is waiting
    assert [s for s, _ in host._choose(candidates, now)] == [a, b]


def test_warm_up_runs_each_batch_size_and_leaves_no_session():
    host = make_host()
    seen = []
    host.warm_up(LAT_H, LAT_W, batch_sizes=(1, 2), progress=lambda done, total: seen.append((done, total)))
    assert seen[-1][0] == seen[-1][1] and not host.sessions
    assert host.stats.batch_sizes.get(2, 0) > 0 and host.stats.batch_sizes.get(1, 0) > 0


def test_warm_up_runs_every_range_of_consecutive_rows_as_a_pass_of_its_own():
    """Each run of consecutive rows a steady pass can meet (with 3 sessions: 0, 1, 2, 0-1, 1-2,
    0-2) is a whole pass in the warm-up, a denoising one and a refresh, so its CUDA graph is
    captured then, not while sessions wait (a capture runs the pass twice and waits for the GPU)."""
    host = make_host()
    passes: set[tuple[tuple[int, ...], bool]] = set()
    run = host.runtime.run

    def spy(rows):
        passes.add((tuple(sorted(r.row for r in rows)), any(r.output for r in rows)))
        return run(rows)

    host.runtime.run = spy
    seen = []
    host.warm_up(LAT_H, LAT_W, batch_sizes=(1, 3), progress=lambda done, total: seen.append((done, total)))
    ranges = [tuple(range(a, b)) for a in range(3) for b in range(a + 1, 4)]
    missing = [(r, out) for r in ranges for out in (True, False) if (r, out) not in passes]
    assert not missing, missing
    assert seen[-1][0] == seen[-1][1] and not host.sessions


def test_warm_up_re_caches_a_joiner_in_each_row_at_each_stage_of_its_windows_fill():
    """A viewer's first message often comes while its window fills, and each fill stage's
    stock re-cache, in each row a joiner can take, is a CUDA graph of its own: the warm-up runs
    them all (paced runs captured 3 to 6 graphs while streaming without this)."""
    host = make_host()
    clean: set[tuple[int, int, int]] = set()  # (row, keys read, frames) of passes without output, alone
    run = host.runtime.run

    def spy(rows):
        if len(rows) == 1 and not rows[0].output:  # a refresh or a re-cache
            clean.add((rows[0].row, rows[0].plan.n_valid, rows[0].x.shape[2]))
        return run(rows)

    host.runtime.run = spy
    host.warm_up(LAT_H, LAT_W, batch_sizes=(1, 3))
    cfg = host.runtime.model.cfg
    chunk = cfg.num_frame_per_block
    stages = {row: {(n, f) for r, n, f in clean if r == row and f > chunk} for row in range(3)}
    # each fill stage's re-cache (over 2, 3... chunks of the window) and the full window's
    fill = cfg.local_attn_size // chunk
    assert all(len(stages[row]) >= fill for row in range(3)), stages
    assert not host.sessions


def test_the_warm_up_captures_a_partial_row_range_the_first_time_it_comes():
    """While serving, a partial row range is captured only after SPLIT_CAPTURE_AFTER sightings
    (a capture stalls every session); the warm-up meets each range once, and nobody waits for it."""
    from comfyui_persona.video.longlive.runtime import SPLIT_CAPTURE_AFTER

    host = make_host()
    during: set[int] = set()
    run = host.runtime.run

    def spy(rows):
        during.add(host.runtime.split_capture_after)
        return run(rows)

    host.runtime.run = spy
    host.warm_up(LAT_H, LAT_W, batch_sizes=(1, 3))
    assert during == {1} and host.runtime.split_capture_after == SPLIT_CAPTURE_AFTER > 1


@torch.no_grad()
def test_after_warm_up_sessions_joining_switching_and_leaving_compile_nothing_new():
    """A compile in the middle of serving stalls every session for seconds on a GPU (seen in a
    paced 2-session run before the warm-up started one session a chunk ahead): after `warm_up`,
    staggered starts, both prompt-switch timings and a session leaving reuse what it compiled."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # nothing compiled by other tests for the same code counts as warm
    try:
        runtime = EngineRuntime(tiny_dit(in_dim=16, out_dim=16, local_attn_size=9))
        runtime.compile(backend="eager")  # dynamo traces as Inductor would; no code generation
        host = EngineHost(runtime, tiny_taehv())
        host.warm_up(LAT_H, LAT_W, batch_sizes=(1, 3))
        compiled = counters["stats"]["unique_graphs"]
        texts = prompts(3)
        sessions = []
        for c in range(10):
            if c < 3:  # one more session each chunk: every row at its own point of the window's fill
                sessions.append(host.open_session(LAT_H, LAT_W, seed=c))
                sessions[-1].set_prompt(texts[c])
            if c == 5:
                sessions[1].set_prompt(texts[2], timing="after")
            if c == 6:
                sessions[0].set_prompt(texts[1])
            if c == 8:
                sessions.pop(2).close()
            host.step_all(sessions)
        assert counters["stats"]["unique_graphs"] == compiled
    finally:
        torch._dynamo.reset()  # and what it compiled is not warm for the tests after it


# --------------------------------------------------------------------------- on a CUDA GPU

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def cuda_host(graphs: bool, dtype=torch.float32) -> EngineHost:
    model = tiny_dit(in_dim=16, out_dim=16, local_attn_size=9).to("cuda", dtype)
    runtime = EngineRuntime(model)
    runtime.use_cuda_graphs(graphs)
    return EngineHost(runtime, tiny_taehv().to("cuda"))


def cuda_script(host: EngineHost, sessions: int, chunks: int = 8) -> tuple[list[list[torch.Tensor]], torch.Tensor]:
    """`sessions` sessions stepped together through prompt switches (stock re-cache, after)."""
    opened = [host.open_session(LAT_H, LAT_W, seed=i) for i in range(sessions)]
    texts = [p.to("cuda") for p in prompts(3)]
    for i, s in enumerate(opened):
        s.set_prompt(texts[i % 3])
    frames: list[list[torch.Tensor]] = [[] for _ in opened]
    for c in range(chunks):
        if c in (3, 6):
            for i, s in enumerate(opened):
                s.set_prompt(texts[(i + c) % 3])
        for i, f in enumerate(host.step_all(opened)):
            frames[i].append(f)
    for s in opened:
        host.settle(s)
    return frames, host.runtime.store.cache_k[:, :sessions].clone()


@pytest.mark.gpu
@cuda
@torch.no_grad()
def test_cuda_side_stream_decode_and_graph_replay_give_the_frames_and_cache_of_plain_launches():
    """The host on a GPU: decode on the side stream, steady passes replayed from CUDA graphs
    (every ring slot through one graph per row range): the frames and cache of plain launches;
    and the frames of a plain loop decoding on the main stream."""
    plain_frames, plain_cache = cuda_script(cuda_host(graphs=False), 1)
    graph_host = cuda_host(graphs=True)
    graph_frames, graph_cache = cuda_script(graph_host, 1)
    assert graph_host.runtime.graphs_captured >= 1 and graph_host.runtime.graph_replays > 10
    for a, b in zip(plain_frames[0], graph_frames[0], strict=True):
        assert (a.int() - b.int()).abs().max() <= 1
    torch.testing.assert_close(graph_cache, plain_cache, atol=1e-3, rtol=1e-3)
    captured = graph_host.runtime.graphs_captured
    again, _ = cuda_script(graph_host, 1)  # a new session in the same row replays, no new capture
    assert graph_host.runtime.graphs_captured == captured
    for a, b in zip(graph_frames[0], again[0], strict=True):
        assert (a.int() - b.int()).abs().max() <= 1
    # A plain loop: the sampler's chunks decoded on the main stream.
    from comfyui_persona.video.longlive.sampler import StreamingSampler

    sampler = StreamingSampler(EngineRuntime(tiny_dit(in_dim=16, out_dim=16, local_attn_size=9).to("cuda")), seed=0)
    sampler.start(LAT_H, LAT_W)
    texts = [p.to("cuda") for p in prompts(3)]
    sampler.set_prompt(texts[0])
    decode = tiny_taehv().to("cuda").decode_stream()
    for c in range(8):
        if c in (3, 6):
            sampler.set_prompt(texts[c % 3], timing="after")
        frame = decode.decode_uint8(sampler.next_chunk())[0].cpu()
        assert (frame.int() - plain_frames[0][c].int()).abs().max() <= 1, f"chunk {c}"


@pytest.mark.gpu
@cuda
@torch.no_grad()
def test_cuda_sessions_starting_together_after_warm_up_capture_no_graph():
    """Three sessions started together (the first a chunk ahead, then the other two filling
    their windows in step, as the paced benchmark's threads start), with a prompt switch while
    they fill: every graph was captured by the warm-up (a paced run at 1e1d67b captured the
    two rows filling together while streaming: longlive-serving-h100-2026-12-07-wave11-joiners-paced-3-480.json)."""
    host = cuda_host(graphs=True)
    host.warm_up(LAT_H, LAT_W, batch_sizes=(1, 3))
    captured = host.runtime.graphs_captured
    opened = [host.open_session(LAT_H, LAT_W, seed=i) for i in range(3)]
    texts = [p.to("cuda") for p in prompts(3)]
    for i, s in enumerate(opened):
        s.set_prompt(texts[i])
    host.step_all(opened[:1])
    for c in range(6):
        if c == 1:
            opened[2].set_prompt(texts[0], timing="after")
        host.step_all(opened)
    assert host.runtime.graphs_captured == captured
    host.runtime.drop_cuda_graphs()


@pytest.mark.gpu
@cuda
@torch.no_grad()
def test_cuda_after_warm_up_steady_passes_of_any_row_range_capture_no_graph():
    """Three steady sessions, after `warm_up(batch_sizes=(1, 3))`, passing in any run of
    consecutive rows (one waiting, two, all) replay graphs the warm-up captured."""
    host = cuda_host(graphs=True)
    host.warm_up(LAT_H, LAT_W, batch_sizes=(1, 3))
    opened = [host.open_session(LAT_H, LAT_W, seed=i) for i in range(3)]
    texts = [p.to("cuda") for p in prompts(3)]
    for i, s in enumerate(opened):
        s.set_prompt(texts[i])
    for _ in range(6):  # the windows full
        host.step_all(opened)
    captured, replays = host.runtime.graphs_captured, host.runtime.graph_replays
    for a, b in ((0, 1), (1, 3), (0, 2), (2, 3), (1, 2), (0, 3)):
        host.step_all(opened[a:b])
        host.settle(opened[a])
    assert host.runtime.graphs_captured == captured and host.runtime.graph_replays > replays
    host.runtime.drop_cuda_graphs()  # freed now, not by the collector during another test's capture


@pytest.mark.gpu
@cuda
@torch.no_grad()
def test_cuda_a_batch_with_a_hole_replays_a_graph_per_row_range_and_changes_no_frame():
    """Sessions in rows 0, 2 and 3 stream while row 1's session waits: every steady pass replays
    two graphs (rows 0 and 2-3) instead of launching kernel by kernel, counts as one pass, and
    each session gets the frames of plain launches."""

    def run(graphs: bool):
        host = cuda_host(graphs=graphs)
        opened = [host.open_session(LAT_H, LAT_W, seed=i) for i in range(4)]
        texts = [p.to("cuda") for p in prompts(3)]
        for i, s in enumerate(opened):
            s.set_prompt(texts[i % 3])
        streaming = [opened[0], opened[2], opened[3]]
        frames = [host.step_all(streaming) for _ in range(6)]
        passes, replays = host.runtime.passes_run, host.runtime.graph_replays
        frames += [host.step_all(streaming) for _ in range(2)]
        for s in streaming:
            host.settle(s)
        counts = host.runtime.passes_run - passes, host.runtime.graph_replays - replays
        # Freed now: a graph the garbage collector frees later, during another test's capture,
        # cannot be destroyed then (CUDA warns "operation not permitted when stream is capturing").
        host.runtime.drop_cuda_graphs()
        return frames, *counts

    plain_frames, _, _ = run(False)
    graph_frames, passes, replays = run(True)
    assert passes >= 8 and replays == 2 * passes, (passes, replays)  # 2 chunks of 5 passes
    for chunk_plain, chunk_graph in zip(plain_frames, graph_frames, strict=True):
        for a, b in zip(chunk_plain, chunk_graph, strict=True):
            assert (a.int() - b.int()).abs().max() <= 1


@pytest.mark.gpu
@cuda
@torch.no_grad()
def test_cuda_the_pass_time_estimate_is_the_gpus_time_for_the_pass_not_its_idle_time():
    """On a GPU a pass is timed by CUDA events around its kernels: the GPU's idle time while the
    viewer plays a chunk is not in it (the CPU test above checks the same on CPU)."""
    import time

    host = cuda_host(graphs=True)
    s = host.open_session(LAT_H, LAT_W, seed=0)
    s.set_prompt(prompts(1)[0].to("cuda"))
    seen = []
    for _ in range(6):
        s.next_frames(progress=lambda done, total, latents: seen.append(host._estimate(1)))
        time.sleep(0.3)  # the viewer plays the chunk: the GPU idles
    assert 1 in host._pass_s and 0 < max(seen[8:]) < 0.05, seen


@pytest.mark.gpu
@cuda
@torch.no_grad()
def test_cuda_batched_sessions_equal_each_session_alone_in_bf16():
    """Three sessions batched on a GPU in bf16, graphs on: each session's frames against the same
    session alone. Batched GEMMs may pick other kernels: the bound is a few uint8 levels, and
    the measured maximum is printed for the report."""
    together, _ = cuda_script(cuda_host(graphs=True, dtype=torch.bfloat16), 3)
    worst = 0
    for i in range(3):
        host = cuda_host(graphs=True, dtype=torch.bfloat16)
        s = host.open_session(LAT_H, LAT_W, seed=i)
        texts = [p.to("cuda") for p in prompts(3)]
        s.set_prompt(texts[i % 3])
        for c in range(8):
            if c in (3, 6):
                s.set_prompt(texts[(i + c) % 3])
            worst = max(worst, int((s.next_frames().int() - together[i][c].int()).abs().max()))
    print(f"batched vs alone, bf16 on {torch.cuda.get_device_name()}: max |diff| = {worst} uint8 levels")
    assert worst <= 8


@pytest.mark.gpu
@cuda
@torch.no_grad()
def test_cuda_steady_chunks_never_make_the_host_wait_for_the_gpu():
    """Once the window is full, a chunk's passes (ring shift, denoising replays, the deferred
    refresh) queue on the GPU without one host synchronisation: a sync between passes would
    leave the GPU idle while the host prepares the next one. torch's sync debug mode raises
    on any synchronising call."""
    from comfyui_persona.video.longlive.sampler import StreamingSampler

    runtime = EngineRuntime(tiny_dit(in_dim=16, out_dim=16, local_attn_size=9).to("cuda"))
    runtime.use_cuda_graphs(True)
    sampler = StreamingSampler(runtime, seed=0)
    sampler.start(LAT_H, LAT_W)
    sampler.set_prompt(prompts(1)[0].to("cuda"))
    for _ in range(6):  # fill the window; the first steady passes capture their graphs
        sampler.next_chunk(defer_refresh=True)
    replays = runtime.graph_replays
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            sampler.next_chunk(defer_refresh=True)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert runtime.graph_replays > replays



@pytest.mark.gpu
@cuda
@torch.no_grad()
def test_cuda_owed_passes_are_queued_before_the_frames_only_when_they_replay_a_graph():
    """On a GPU with graphs on, every chunk's refresh (the window's filling included) and a
    prompt switch's stock re-cache replay a graph and are queued before the frames are handed
    out; with graphs off they would launch kernel by kernel (the frames would wait for their
    launches), so they stay owed."""
    host = cuda_host(graphs=True)
    assert host.queue_owed
    s = host.open_session(LAT_H, LAT_W, seed=0)
    texts = [p.to("cuda") for p in prompts(2)]
    s.set_prompt(texts[0])
    for c in range(6):
        if c == 4:
            s.set_prompt(texts[1], timing="after")  # its re-cache is owed after this chunk
        s.next_frames()
        assert not s.stream.owes_work, c
    plain = cuda_host(graphs=False)
    p = plain.open_session(LAT_H, LAT_W, seed=0)
    p.set_prompt(texts[0])
    p.next_frames()
    assert p.stream.owes_work


def test_the_host_queues_at_least_one_tick_ahead():
    """`queue_ahead` 0 would make the GPU wait for the host between every two passes."""
    with pytest.raises(ValueError, match="queue_ahead"):
        EngineHost(EngineRuntime(tiny_dit()), tiny_taehv(), queue_ahead=0)


def test_a_warm_up_batch_is_lowered_to_the_sessions_the_free_memory_holds():
    """The loader warms up to max_sessions (4 by default): on a card with room for fewer, the
    warm-up must lower its batch, not fail the load with an out-of-memory error."""
    gib = 1 << 30
    assert rows_that_fit(5 * gib, 60 * gib) == 12  # an H100 after the load: 4 fit
    assert rows_that_fit(5 * gib, 7 * gib) == 1  # a 24 GB card holding the text encoder too
    assert rows_that_fit(5 * gib, 14 * gib) == 2
    assert rows_that_fit(0, 1) >= 16  # nothing measured (the peak already held): no cap
