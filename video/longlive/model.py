"""The causal Wan DiT that LongLive runs: weights and maths, nothing else.

Reads top to bottom (STYLE.md house rule 1): precision policy, timestep embedding, RoPE,
layers, block, head, model. Module names are the checkpoint's exactly
(`blocks.N.self_attn.q`, `ffn.0`, `modulation`, `head.head`...), so the released weights
load with `strict=True` after `checkpoint.strip_wrapper_prefix`.

What is *not* here, and why: the KV cache buffers, the window bookkeeping, torch.compile and
CUDA-graph capture are per-engine and per-session state, kept by `runtime.EngineRuntime`
(gpt-fast keeps the equivalent in `generate.py`), and `window.py` plans where each pass
writes. So this module holds no per-call shape state: `forward_full` (the reference path)
and the runtime's streaming passes can run in any order on one model.

A block is split at self-attention (`Block.attn_inputs` / `Block.after_attn`) because that is
where a batch of sessions parts ways: every linear, norm and modulation runs batched over the
sessions of a pass, while each session attends to its own KV window (runtime.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import dense_attention
from .config import WanConfig
from .window import rope_angles

# --------------------------------------------------------------------------- precision policy

#: Parameters whose name contains one of these stay float32 when the model is cast to
#: bf16/fp16: the timestep path and the adaLN modulation feed every block's scale/shift,
#: where bf16 rounding visibly shifts colours. Norms compute in float32 regardless.
KEEP_FP32_MODULES: list[str] = ["time_embedding", "time_projection", "modulation"]


def cast_for_inference(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast `model` to `dtype`, except parameters named in `KEEP_FP32_MODULES`."""
    for name, param in model.named_parameters():
        keep = any(part in name for part in KEEP_FP32_MODULES)
        param.data = param.data.to(torch.float32 if keep else dtype)
    return model


# --------------------------------------------------------------------------- timestep embedding


def sinusoidal_embedding(dim: int, t: torch.Tensor) -> torch.Tensor:
    """Wan's sinusoidal timestep embedding, [cos | sin], computed in float32."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float().reshape(-1, 1) * freqs
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


# --------------------------------------------------------------------------- RoPE


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of x (B, H, N, D) by angles (N, D/2) or (B, 1, N, D/2); float32
    maths, x's dtype out. A rotation by +angle (x0 cos − x1 sin, x0 sin + x1 cos), as Wan's
    complex multiplication by e^{i·angle}."""
    xf = x.float().unflatten(-1, (-1, 2))
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
    return out.flatten(-2).type_as(x)


# --------------------------------------------------------------------------- layers


class RMSNorm(nn.Module):
    """Wan's RMSNorm over the full width (before the head split), float32 inside."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and returned in float32 (the residual stream's dtype)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps)


class _AttentionWeights(nn.Module):
    """The weights both attentions share, named as in the checkpoint: q, k, v, o, norm_q, norm_k."""

    def __init__(self, cfg: WanConfig) -> None:
        super().__init__()
        dim = cfg.dim
        self.heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = RMSNorm(dim, cfg.eps)
        self.norm_k = RMSNorm(dim, cfg.eps)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)


class SelfAttention(_AttentionWeights):
    """The self-attention's projections. The attention itself runs in the runtime (over a
    session's KV window) or in `Block.forward_full` (over a whole clip, the reference)."""

    def __init__(self, cfg: WanConfig) -> None:
        super().__init__(cfg)
        # q, k, v stacked into one linear by `fuse_qkv` (then q, k, v are gone); None until then.
        self.qkv: nn.Linear | None = None

    def fuse_qkv(self) -> None:
        """Replace q, k, v by one linear `qkv` with their weights stacked (same maths, one GEMM
        of 3×dim outputs instead of three of dim: fuller waves on the GPU, fewer launches).
        The layout then no longer matches the checkpoint: call after loading and any LoRA
        merge, which name q, k, v."""
        if self.qkv is not None:
            return
        parts = (self.q, self.k, self.v)
        fused = nn.Linear(self.q.in_features, 3 * self.q.out_features, device=self.q.weight.device,
                          dtype=self.q.weight.dtype)
        with torch.no_grad():
            fused.weight.copy_(torch.cat([p.weight for p in parts]))
            fused.bias.copy_(torch.cat([p.bias for p in parts]))
        del self.q, self.k, self.v
        self.qkv = fused

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k (normed) and v, each (B, H, N, head_dim)."""
        if self.qkv is not None:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        return self._split(self.norm_q(q)), self._split(self.norm_k(k)), self._split(v)


class CrossAttention(_AttentionWeights):
    """Attention from video tokens to the (padded) text tokens; K/V computed once per prompt."""

    def text_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._split(self.norm_k(self.k(context))), self._split(self.v(context))

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = self._split(self.norm_q(self.q(x)))
        out = dense_attention(q, k, v)  # cuDNN first: plain SDPA picked FlashAttention-2 here
        return self.o(out.transpose(1, 2).flatten(2))


class Block(nn.Module):
    """One Wan block: adaLN-modulated self-attention, cross-attention, FFN.

    The residual stream `x` is float32 (as in the reference, where the gated adds run under
    float32 autocast); linear layers see it cast to the weights' dtype.
    """

    def __init__(self, cfg: WanConfig) -> None:
        super().__init__()
        dim = cfg.dim
        self.norm1 = LayerNorm(dim, cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(cfg)
        self.norm3 = (
            LayerNorm(dim, cfg.eps, elementwise_affine=True) if cfg.cross_attn_norm else nn.Identity()
        )
        self.cross_attn = CrossAttention(cfg)
        self.norm2 = LayerNorm(dim, cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The linears' compute dtype (an FP8 linear answers with the dtype it computes in)."""
        return self.ffn[0].weight.dtype

    def _modulation(self, e: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(shift1, scale1, gate1, shift2, scale2, gate2), each (B, Te, dim) float32."""
        return (self.modulation.float().unsqueeze(1) + e).unbind(2)

    @staticmethod
    def _modulate(h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        te = shift.shape[1]
        return (h.unflatten(1, (te, -1)) * (1 + scale[:, :, None]) + shift[:, :, None]).flatten(1, 2)

    @staticmethod
    def _gated(y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        te = gate.shape[1]
        return (y.float().unflatten(1, (te, -1)) * gate[:, :, None]).flatten(1, 2)

    def attn_inputs(self, x: torch.Tensor, e: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """The six modulations and the self-attention's q, k (rotated) and v, (B, H, N, D) in the
        linears' dtype. x (B, N, dim) float32; e (B, Te, 6, dim) float32, N divisible by Te."""
        mods = self._modulation(e)
        h = self._modulate(self.norm1(x), mods[0], mods[1]).to(self.compute_dtype)
        q, k, v = self.self_attn.project(h)
        return mods, apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def after_attn(self, x: torch.Tensor, attn: torch.Tensor, mods, text_k: torch.Tensor,
                   text_v: torch.Tensor) -> torch.Tensor:
        """The rest of the block from the self-attention's output `attn` (B, H, N, D)."""
        dtype = self.compute_dtype
        y = self.self_attn.o(attn.transpose(1, 2).flatten(2).to(dtype))
        x = x + self._gated(y, mods[2])
        x = x + self.cross_attn(self.norm3(x).to(dtype), text_k, text_v).float()
        y = self.ffn(self._modulate(self.norm2(x), mods[3], mods[4]).to(dtype))
        return x + self._gated(y, mods[5])

    def forward_full(self, x, e, text_k, text_v, cos, sin, mask: torch.Tensor | None) -> torch.Tensor:
        """The block over a whole clip (the reference path): attention over every token,
        restricted by `mask` (True = may attend) when given."""
        mods, q, k, v = self.attn_inputs(x, e, cos, sin)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.after_attn(x, attn, mods, text_k, text_v)


class Head(nn.Module):
    def __init__(self, cfg: WanConfig) -> None:
        super().__init__()
        self.norm = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, math.prod(cfg.patch_size) * cfg.out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x (B, N, dim) float32; e (B, Te, dim) float32 (the time embedding, not projected)."""
        te = e.shape[1]
        shift, scale = (self.modulation.float().unsqueeze(1) + e.unsqueeze(2)).unbind(2)
        h = self.norm(x).unflatten(1, (te, -1)) * (1 + scale[:, :, None]) + shift[:, :, None]
        return self.head(h.flatten(1, 2).to(self.head.weight.dtype))


# --------------------------------------------------------------------------- model


class CausalWanModel(nn.Module):
    """The LongLive generator's weights and maths. `forward_full` is the whole-clip reference;
    streaming passes are run by `runtime.EngineRuntime` from the pieces below."""

    def __init__(self, cfg: WanConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_dim, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg)

    @property
    def device(self) -> torch.device:
        return self.patch_embedding.weight.device

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.blocks[0].compute_dtype

    def grid_of(self, latent_h: int, latent_w: int) -> tuple[int, int]:
        """Token grid (rows, columns) of a latent frame size."""
        _, ph, pw = self.cfg.patch_size
        return latent_h // ph, latent_w // pw

    def fuse_qkv(self) -> None:
        """Stack every block's q/k/v into one linear (`SelfAttention.fuse_qkv`): same outputs,
        one GEMM instead of three per block and pass. After loading and any LoRA merge."""
        for block in self.blocks:
            block.self_attn.fuse_qkv()

    # ---- embeddings -----------------------------------------------------------------------

    def embed_text(self, context: torch.Tensor) -> torch.Tensor:
        """(B, n<=text_len, text_dim) → (B, text_len, dim), zero-padded as the reference does."""
        pad = self.cfg.text_len - context.shape[1]
        if pad < 0:
            raise ValueError(f"text has {context.shape[1]} tokens; the model takes at most {self.cfg.text_len}")
        context = F.pad(context, (0, 0, 0, pad))
        w = self.text_embedding[0].weight
        return self.text_embedding(context.to(w.dtype))

    @torch.no_grad()
    def text_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every layer's cross-attention K/V for this prompt: two (layers, B, H, text_len, D)."""
        ctx = self.embed_text(context)
        pairs = [block.cross_attn.text_kv(ctx) for block in self.blocks]
        return torch.stack([k for k, _ in pairs]), torch.stack([v for _, v in pairs])

    def embed_time(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t (B, Te) → e (B, Te, dim), e0 (B, Te, 6, dim), float32."""
        b, te = t.shape
        w = self.time_embedding[0].weight
        e = self.time_embedding(sinusoidal_embedding(self.cfg.freq_dim, t).to(w.dtype)).float()
        e0 = self.time_projection(e.to(self.time_projection[1].weight.dtype)).float()
        return e.view(b, te, -1), e0.view(b, te, 6, self.cfg.dim)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, F, H, W) latents → (B, F*h*w, dim) float32 tokens, each token's features
        contiguous: the residual stream keeps this layout through every add, and every norm reads
        a token's row (from the transposed view each row was strided, and every chunk slower on an
        H100: benchmarks/results/longlive-h100-2026-12-06-wave5-fp8-norm*.json)."""
        w = self.patch_embedding.weight
        tokens = self.patch_embedding(x.to(w.dtype)).flatten(2).transpose(1, 2)
        return tokens.contiguous().float()

    def unpatchify(self, x: torch.Tensor, frames: int, grid: tuple[int, int]) -> torch.Tensor:
        """(B, F*h*w, pt*ph*pw*C) → (B, C, F*pt, h*ph, w*pw) for a token `grid` (h, w)."""
        pt, ph, pw = self.cfg.patch_size
        gh, gw = grid
        b = x.shape[0]
        x = x.view(b, frames, gh, gw, pt, ph, pw, self.cfg.out_dim)
        return x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, self.cfg.out_dim, frames * pt, gh * ph, gw * pw)

    # ---- reference: whole sequence at once ------------------------------------------------

    def forward_full(
        self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, *, block_causal: bool = False
    ) -> torch.Tensor:
        """Flow prediction for a whole clip (B, C, F, H, W) with absolute frame positions.

        t is (B,) or per-frame (B, F). `block_causal` lets each chunk of
        `num_frame_per_block` frames see itself and earlier chunks (what the cache computes);
        otherwise attention is bidirectional (Wan / diffusers). No window is applied, so
        this equals the streaming path while the clip fits in `local_attn_size` frames.
        """
        cfg = self.cfg
        _, _, frames, hh, ww = x.shape
        grid = self.grid_of(hh, ww)
        tokens = self.patchify(x)
        per_frame = grid[0] * grid[1]
        if t.dim() == 1:
            t = t[:, None]
        e, e0 = self.embed_time(t)
        cos, sin = rope_angles(cfg, torch.arange(frames, device=x.device), *grid)
        mask = None
        if block_causal:
            chunk_of = torch.arange(frames * per_frame, device=x.device) // (per_frame * cfg.num_frame_per_block)
            mask = chunk_of[None, :] <= chunk_of[:, None]
        ctx = self.embed_text(context)
        for block in self.blocks:
            text_k, text_v = block.cross_attn.text_kv(ctx)
            tokens = block.forward_full(tokens, e0, text_k, text_v, cos, sin, mask)
        return self.unpatchify(self.head(tokens, e), frames, grid).float()


def build_on_meta(cfg: WanConfig) -> CausalWanModel:
    """The model with no storage: for layout checks and `load_state_dict(assign=True)`."""
    with torch.device("meta"):
        return CausalWanModel(cfg)


@torch.no_grad()
def init_random_(model: CausalWanModel, seed: int = 0, std: float = 0.02) -> CausalWanModel:
    """Fill every parameter with seeded random values (benchmarks and tests: no weights here).

    Norm weights get 1, biases small, so activations stay in a realistic range.
    """
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("norm_q.weight") or name.endswith("norm_k.weight") or name.endswith("norm3.weight"):
            vals = 1 + 0.1 * torch.randn(p.shape, generator=gen, device=device)
        elif "modulation" in name:
            vals = torch.randn(p.shape, generator=gen, device=device) / p.shape[-1] ** 0.5
        else:
            vals = std * torch.randn(p.shape, generator=gen, device=device)
        p.copy_(vals.to(p.dtype))
    return model
