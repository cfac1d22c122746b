"""Our streaming engine against a plain reference written from LongLive's published algorithm.

The reference below shares nothing with video/longlive but the weights (read by their
checkpoint names): Wan's block maths from Wan's `model.py`, RoPE as Wan's `rope_apply`
(complex multiplication by e^{i·pos·freq}, per-axis frequencies theta^(-2i/d_axis), the
head dim split d - 4(d//6), 2(d//6), 2(d//6)), attention as an explicit softmax, and
LongLive's inference loop (`pipeline/causal_inference.py`, `interactive_causal_inference.py`
at NVlabs/LongLive v1.0):

- a chunk of 3 latent frames is denoised at the warped timesteps [1000, 937.5, 833.3, 625],
  x0 = x_t - sigma * flow, re-noised with fresh noise between steps; the clean chunk is then
  run at t = 0 and its keys/values cached;
- a chunk attends to the sink (the first `sink_size` frames) and the most recent frames of
  the window, and to itself;
- `_recache_after_switch`: one pass at t = 0, under the new prompt, over the last
  min(local_attn_size, t) frames, with no mask (its block mask is built but the cached path
  ignores it); while t <= local_attn_size the sink is among them and is rewritten, after it
  the cached sink keys are kept.

Positions: before any frame leaves the window our block-relative RoPE equals LongLive's
absolute positions; after, our one documented difference is that the sink sits at positions
0..sink-1 right before the window (docs/longlive.md). The reference takes the positions as
an argument, so each test states which scheme it checks.

Each of these mutations of our code fails at least two tests here or in the other LongLive
test files: RoPE rotated the other way, the sink dropped from attention, the ring shift in the
wrong direction, "after" mode never re-caching, the LoRA scale forced to 1 (see the report of
issue 22's work for which tests fail for each).
"""

import math

import pytest
import torch

from comfyui_persona.video.longlive.sampler import StreamingSampler
from comfyui_persona.video.longlive.testing import tiny_dit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LAT_H, LAT_W = 4, 6
STEPS = [1000.0, 937.5, 2500.0 / 3.0, 625.0]  # LongLive's warped denoising timesteps


# --------------------------------------------------------------------------- the reference


def ref_rope(x: torch.Tensor, frame_pos: list[int], grid: tuple[int, int], theta: float = 10000.0) -> torch.Tensor:
    """Wan's rope_apply on x (N, H, D) for tokens ordered (frame, row, column)."""
    d = x.shape[-1]
    dims = (d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6))

    def freqs(positions, dim):
        inv = 1.0 / torch.pow(theta, torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        angle = torch.outer(torch.tensor(positions, dtype=torch.float64), inv)
        return torch.polar(torch.ones_like(angle), angle)

    gh, gw = grid
    ft = freqs(frame_pos, dims[0])[:, None, None, :].expand(len(frame_pos), gh, gw, -1)
    fh = freqs(list(range(gh)), dims[1])[None, :, None, :].expand(len(frame_pos), gh, gw, -1)
    fw = freqs(list(range(gw)), dims[2])[None, None, :, :].expand(len(frame_pos), gh, gw, -1)
    rot = torch.cat([ft, fh, fw], dim=-1).reshape(-1, 1, d // 2)
    xc = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(xc * rot).flatten(-2).to(x.dtype)


def ref_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v, per head; (N, H, D) in, (N, H, D) out."""
    scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.shape[-1])
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)


class Reference:
    """A Wan DiT forward from the weights by name, with K/V kept per chunk (unrotated)."""

    def __init__(self, model) -> None:
        self.p = dict(model.state_dict())
        self.cfg = model.cfg

    def w(self, name: str) -> torch.Tensor:
        return self.p[name].float()

    def lin(self, x, name):
        return x @ self.w(name + ".weight").T + self.w(name + ".bias")

    def rms(self, x, name):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.cfg.eps) * self.w(name + ".weight")

    def ln(self, x, name=None):
        y = torch.nn.functional.layer_norm(x, x.shape[-1:], eps=self.cfg.eps)
        return y * self.w(name + ".weight") + self.w(name + ".bias") if name else y

    def heads(self, x):
        return x.view(x.shape[0], self.cfg.num_heads, -1)

    def time(self, t: float):
        half = self.cfg.freq_dim // 2
        f = torch.pow(10000.0, -torch.arange(half, dtype=torch.float32) / half)
        sin = torch.cat([torch.cos(t * f), torch.sin(t * f)])
        e = self.lin(torch.nn.functional.silu(self.lin(sin, "time_embedding.0")), "time_embedding.2")
        e0 = self.lin(torch.nn.functional.silu(e), "time_projection.1").view(6, -1)
        return e, e0

    def text(self, context):
        ctx = torch.nn.functional.pad(context[0], (0, 0, 0, self.cfg.text_len - context.shape[1]))
        h = self.lin(ctx, "text_embedding.0")
        return self.lin(torch.nn.functional.gelu(h, approximate="tanh"), "text_embedding.2")

    def tokens(self, x):
        """(1, C, F, H, W) → (F*h*w, dim) through the patch embedding (stride = kernel = patch)."""
        w, b = self.w("patch_embedding.weight"), self.w("patch_embedding.bias")
        out = torch.nn.functional.conv3d(x.float(), w, b, stride=self.cfg.patch_size)
        return out.flatten(2)[0].T

    def forward(self, x, t: float, context, positions: list[int], memory: list, grid):
        """Flow for chunk x (1, C, 3, H, W) at t, attending to `memory` — per layer a list of
        (unrotated k, v, frame positions) of earlier frames — and to itself; also returns this
        chunk's own per-layer (unrotated k, v)."""
        cfg = self.cfg
        h = self.tokens(x)
        e, e0 = self.time(t)
        ctx = self.text(context)
        own = []
        for i in range(cfg.num_layers):
            b = f"blocks.{i}."
            mod = self.w(b + "modulation")[0] + e0
            y = self.ln(h) * (1 + mod[1]) + mod[0]
            q = self.heads(self.rms(self.lin(y, b + "self_attn.q"), b + "self_attn.norm_q"))
            k = self.heads(self.rms(self.lin(y, b + "self_attn.k"), b + "self_attn.norm_k"))
            v = self.heads(self.lin(y, b + "self_attn.v"))
            own.append((k, v))
            keys = [ref_rope(mk, mp, grid) for mk, _, mp in memory[i]] + [ref_rope(k, positions, grid)]
            values = [mv for _, mv, _ in memory[i]] + [v]
            attn = ref_attention(ref_rope(q, positions, grid), torch.cat(keys), torch.cat(values))
            h = h + self.lin(attn.flatten(1), b + "self_attn.o") * mod[2]
            y = self.ln(h, b + "norm3")
            cq = self.heads(self.rms(self.lin(y, b + "cross_attn.q"), b + "cross_attn.norm_q"))
            ck = self.heads(self.rms(self.lin(ctx, b + "cross_attn.k"), b + "cross_attn.norm_k"))
            cv = self.heads(self.lin(ctx, b + "cross_attn.v"))
            h = h + self.lin(ref_attention(cq, ck, cv).flatten(1), b + "cross_attn.o")
            y = self.ln(h) * (1 + mod[4]) + mod[3]
            y = self.lin(torch.nn.functional.gelu(self.lin(y, b + "ffn.0"), approximate="tanh"), b + "ffn.2")
            h = h + y * mod[5]
        head = self.w("head.modulation")[0] + e
        out = self.lin(self.ln(h) * (1 + head[1]) + head[0], "head.head")
        frames = x.shape[2]
        gh, gw = grid
        pt, ph, pw = cfg.patch_size
        out = out.view(frames, gh, gw, pt, ph, pw, cfg.out_dim).permute(6, 0, 3, 1, 4, 2, 5)
        return out.reshape(1, cfg.out_dim, frames * pt, gh * ph, gw * pw), own


class ReferenceStream:
    """LongLive's inference loop over `Reference`, keeping every chunk's clean latents and,
    per layer, its (unrotated) K/V; `positions` maps (chunk index, context) to frame positions."""

    def __init__(self, model, seed: int, relative: bool) -> None:
        self.ref = Reference(model)
        self.cfg = model.cfg
        self.gen = torch.Generator().manual_seed(seed)
        self.relative = relative
        self.kv: dict[int, list] = {}  # chunk index -> per layer (k, v)
        self.clean: list[torch.Tensor] = []
        self.grid = (LAT_H // 2, LAT_W // 2)
        self.sink = self.cfg.sink_size // 3
        self.window = (self.cfg.local_attn_size - self.cfg.sink_size) // 3

    def context_of(self, c: int) -> list[int]:
        """The chunks chunk c attends to besides itself: the sink and the most recent window."""
        sinks = list(range(min(self.sink, c)))
        recent = [j for j in range(max(self.sink, c - (self.window - 1)), c)]
        return sinks + recent

    def frames_of(self, chunks: list[int], rank0: int = 0) -> list[list[int]]:
        """Frame positions of each chunk: absolute (3j..3j+2) or ranked in the window."""
        if not self.relative:
            return [list(range(3 * j, 3 * j + 3)) for j in chunks]
        return [list(range(3 * (rank0 + r), 3 * (rank0 + r) + 3)) for r in range(len(chunks))]

    def memory(self, chunks: list[int], positions: list[list[int]]) -> list:
        return [[(self.kv[j][i][0], self.kv[j][i][1], pos) for j, pos in zip(chunks, positions, strict=True)]
                for i in range(self.cfg.num_layers)]

    def chunk(self, context) -> torch.Tensor:
        c = len(self.clean)
        ctx_chunks = self.context_of(c)
        positions = self.frames_of(ctx_chunks + [c])
        memory = self.memory(ctx_chunks, positions[:-1])
        shape = (1, self.cfg.in_dim, 3, LAT_H, LAT_W)
        x = torch.randn(shape, generator=self.gen)
        for i, t in enumerate(STEPS):
            flow, _ = self.ref.forward(x, t, context, positions[-1], memory, self.grid)
            x0 = x - t / 1000 * flow
            if i + 1 < len(STEPS):
                s = STEPS[i + 1] / 1000
                x = (1 - s) * x0 + s * torch.randn(shape, generator=self.gen)
        _, self.kv[c] = self.ref.forward(x0, 0.0, context, positions[-1], memory, self.grid)
        self.clean.append(x0)
        return x0

    def recache(self, context) -> None:
        """`_recache_after_switch`: one unmasked pass over the window at t = 0 under `context`."""
        made = len(self.clean)
        frames = 3 * made
        if frames <= self.cfg.local_attn_size:
            chunks, kept = list(range(made)), []  # the sink too: every frame made is re-cached
        else:
            chunks = list(range(made - self.window, made))
            kept = list(range(self.sink))
        positions = self.frames_of(kept + chunks)
        x = torch.cat([self.clean[j] for j in chunks], dim=2)
        flat = [p for pos in positions[len(kept):] for p in pos]
        _, own = self.ref.forward(x, 0.0, context, flat, self.memory(kept, positions[: len(kept)]), self.grid)
        per_chunk = self.grid[0] * self.grid[1] * 3
        for n, j in enumerate(chunks):
            rows = slice(n * per_chunk, (n + 1) * per_chunk)
            self.kv[j] = [(k[rows], v[rows]) for k, v in own]


# --------------------------------------------------------------------------- the tests


def _prompts(n: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(21)
    return [torch.randn(1, 5, 24, generator=gen) for _ in range(n)]


def _ours(model, mode: str = "stock") -> StreamingSampler:
    sampler = StreamingSampler(model, seed=7, recache_mode=mode)
    sampler.start(LAT_H, LAT_W)
    return sampler


@torch.no_grad()
def test_chunks_before_eviction_match_the_reference():
    """Chunks 0..3 (the window filling): each attends to the sink and every chunk before it,
    at absolute positions (ours coincide with them until a frame leaves the window)."""
    model = tiny_dit()
    (text,) = _prompts(1)
    ours, ref = _ours(model), ReferenceStream(model, seed=7, relative=False)
    ours.set_prompt(text)
    for _ in range(4):
        torch.testing.assert_close(ours.next_chunk(), ref.chunk(text), rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_chunks_after_eviction_match_the_reference_with_window_relative_positions():
    """Chunks 4..7: the ring evicts every chunk; each chunk sees the sink at positions 0..2 and
    the two most recent chunks right after it (our block-relative RoPE), then itself."""
    model = tiny_dit()
    (text,) = _prompts(1)
    ours, ref = _ours(model), ReferenceStream(model, seed=7, relative=True)
    ours.set_prompt(text)
    for i in range(8):
        got, expected = ours.next_chunk(), ref.chunk(text)
        if i >= 4:
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("made", [2, 6], ids=["early-switch-rewrites-sink", "late-switch-keeps-sink"])
def test_stock_recache_matches_the_reference(made):
    """A prompt switch after `made` chunks in "stock" mode, re-cached before the next chunk:
    the chunk after it equals the reference's (one unmasked pass over the window; the sink
    rewritten only while no frame has left the window)."""
    model = tiny_dit()
    old, new = _prompts(2)
    ours, ref = _ours(model, "stock"), ReferenceStream(model, seed=7, relative=True)
    ours.set_prompt(old)
    for _ in range(made):
        ours.next_chunk(), ref.chunk(old)
    ours.set_prompt(new)  # "before": the re-cache runs now
    ref.recache(new)
    for _ in range(2):
        torch.testing.assert_close(ours.next_chunk(), ref.chunk(new), rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_after_timing_recaches_behind_the_switched_chunk_like_the_reference():
    """"after" timing: the first chunk under the new prompt sees the window as the old prompt
    left it (no re-cache yet); the re-cache follows it, so the chunk after equals the
    reference's chunk after a stock re-cache that includes the switched chunk."""
    model = tiny_dit()
    old, new = _prompts(2)
    ours, ref = _ours(model, "stock"), ReferenceStream(model, seed=7, relative=True)
    ours.set_prompt(old)
    for _ in range(5):
        ours.next_chunk(), ref.chunk(old)
    ours.set_prompt(new, timing="after")
    torch.testing.assert_close(ours.next_chunk(), ref.chunk(new), rtol=1e-4, atol=1e-4)  # old window
    ref.recache(new)
    torch.testing.assert_close(ours.next_chunk(), ref.chunk(new), rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_chunks_attend_to_the_sink():
    """Not only the sink's cache rows: a chunk's output depends on the sink through attention.
    One layer (cached K/V then depend on their own chunk alone): once every chunk that saw the
    first sink has left the window, two streams that differ only in their sink still differ."""
    model = tiny_dit(num_layers=1)
    (text,) = _prompts(1)
    outs = []
    for sink_seed in (1, 2):
        sampler = _ours(model)
        sampler.set_prompt(text)
        sampler.prime_sink(torch.randn(sampler.shape, generator=torch.Generator().manual_seed(sink_seed)))
        outs.append([sampler.next_chunk() for _ in range(6)])
    assert (outs[0][-1] - outs[1][-1]).abs().max() > 1e-3
