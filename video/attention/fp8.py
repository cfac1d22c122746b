"""FP8 attention on Hopper through cuDNN's fused FP8 SDPA (`nvidia-cudnn-frontend`).

Why: self-attention is about half of a LongLive pass at 480x832 and cuDNN's BF16 kernel already
runs near the card's BF16 peak (benchmarks/results/longlive-h100-2026-11-25-profile-final.json),
so what is left is the FP8 tensor cores, twice the BF16 rate. PyTorch's SDPA has no FP8 path;
cuDNN's graph API has one (the kernel TransformerEngine's FP8 attention runs), reached through
NVIDIA's own Python frontend. Written here: the per-shape graph cache and the quantisation.

q, k and v are scaled per tensor by a power of two from their amax (computed on the GPU: no host
sync, so a pass that calls this can be captured in a CUDA graph), cast to e4m3, and attended in
one cuDNN kernel that returns bfloat16. Softmax probabilities are held in e4m3 scaled by 256
inside the kernel. Error against BF16 attention is measured in benchmarks/attention.py.
"""

from __future__ import annotations

import functools
import importlib.util
import threading

import torch

#: e4m3's largest finite value; amax is scaled to the power of two at or below it.
_E4M3_MAX = 448.0
#: softmax probabilities are in [0, 1]; 256 keeps 1.0 inside e4m3 and small ones representable.
_P_SCALE = 256.0

_UID_Q, _UID_K, _UID_V, _UID_O = 0, 1, 2, 3
_UID_DQ, _UID_DK, _UID_DV, _UID_DS, _UID_SS, _UID_SO = 5, 6, 7, 8, 9, 10
_UID_AMAX_S, _UID_AMAX_O = 11, 12
_UID_LEN_Q, _UID_LEN_KV = 13, 14
#: lengths are padded to this when the unpadded graph is not supported by the installed cuDNN
_PAD_TO = 64


def fp8_missing() -> str | None:
    """Why the FP8 backend cannot be used at all, or None when its package is importable."""
    if importlib.util.find_spec("cudnn") is None:
        return "package nvidia-cudnn-frontend is not installed (pip install nvidia-cudnn-frontend)"
    if not hasattr(torch, "float8_e4m3fn"):
        return f"torch {torch.__version__} has no float8_e4m3fn"
    return None


def fp8_constraints(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> list[str]:
    if not q.is_cuda:
        return [f"needs a CUDA tensor, got device {q.device}"]
    reasons = []
    if q.dtype != torch.bfloat16:
        reasons.append(f"returns bfloat16 and takes bfloat16, got {q.dtype}")
    cap = torch.cuda.get_device_capability(q.device)
    if cap < (9, 0):
        reasons.append(f"cuDNN's FP8 attention needs Hopper or newer (capability >= 9.0), card has {cap}")
    if q.shape[-1] not in (64, 128):
        reasons.append(f"needs head_dim 64 or 128, got {q.shape[-1]}")
    return reasons


def _quantise(x: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x in e4m3, contiguous (B, H, N + pad, D) with zero rows appended, and its descale
    (1, 1, 1, 1) float32."""
    amax = x.abs().amax().float().clamp_min(1e-12)
    scale = torch.exp2(torch.floor(torch.log2(_E4M3_MAX / amax)))
    x8 = (x.float() * scale).clamp(-_E4M3_MAX, _E4M3_MAX)
    if pad:
        x8 = torch.nn.functional.pad(x8, (0, 0, 0, pad))
    return x8.to(torch.float8_e4m3fn).contiguous(), (1.0 / scale).reshape(1, 1, 1, 1)


@functools.cache
def _compiled_quantise():
    # One fused kernel per input (amax, scale, cast) instead of five eager ones.
    return torch.compile(_quantise, dynamic=False, fullgraph=True)


def _contiguous_strides(dims: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for d in reversed(dims):
        strides.append(step)
        step *= d
    return tuple(reversed(strides))


def _round_up(n: int) -> int:
    return -(-n // _PAD_TO) * _PAD_TO


class _Graph:
    """One built cuDNN FP8 SDPA graph for one (batch, heads, queries, keys, head_dim).

    `padded`: lengths rounded up to a multiple of 64 and masked by cuDNN's padding mask (for a
    cuDNN that supports only such lengths in FP8); otherwise the exact lengths."""

    def __init__(self, cudnn, device: torch.device, b: int, h: int, sq: int, skv: int, d: int, padded: bool):
        fp8, f32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
        g = cudnn.pygraph(io_data_type=fp8, intermediate_data_type=f32, compute_data_type=f32)
        self.queries = sq
        self.pad_q, self.pad_kv = (_round_up(sq) - sq, _round_up(skv) - skv) if padded else (0, 0)
        q_dims, kv_dims = (b, h, sq + self.pad_q, d), (b, h, skv + self.pad_kv, d)
        q = g.tensor(uid=_UID_Q, dim=q_dims, stride=_contiguous_strides(q_dims), data_type=fp8)
        k = g.tensor(uid=_UID_K, dim=kv_dims, stride=_contiguous_strides(kv_dims), data_type=fp8)
        v = g.tensor(uid=_UID_V, dim=kv_dims, stride=_contiguous_strides(kv_dims), data_type=fp8)

        def scalar(uid: int):
            return g.tensor(uid=uid, dim=(1, 1, 1, 1), stride=(1, 1, 1, 1), data_type=f32)

        lengths = {}
        if padded:
            def length(uid: int):
                return g.tensor(uid=uid, dim=(b, 1, 1, 1), stride=(1, 1, 1, 1), data_type=cudnn.data_type.INT32)

            lengths = dict(use_padding_mask=True, seq_len_q=length(_UID_LEN_Q), seq_len_kv=length(_UID_LEN_KV))
        o, _stats, amax_s, amax_o = g.sdpa_fp8(
            q=q, k=k, v=v,
            descale_q=scalar(_UID_DQ), descale_k=scalar(_UID_DK), descale_v=scalar(_UID_DV),
            descale_s=scalar(_UID_DS), scale_s=scalar(_UID_SS), scale_o=scalar(_UID_SO),
            generate_stats=False, attn_scale=d ** -0.5, use_causal_mask=False, **lengths,
        )
        o.set_uid(_UID_O).set_output(True).set_dim(q_dims).set_stride(_contiguous_strides(q_dims))
        o.set_data_type(cudnn.data_type.BFLOAT16)
        for t, uid in ((amax_s, _UID_AMAX_S), (amax_o, _UID_AMAX_O)):
            t.set_uid(uid).set_output(True).set_dim((1, 1, 1, 1)).set_stride((1, 1, 1, 1)).set_data_type(f32)
        g.validate()
        g.build_operation_graph()
        g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        g.check_support()
        g.build_plans()
        self.graph = g
        self.shape = q_dims
        self.workspace = torch.empty(max(g.get_workspace_size(), 1), dtype=torch.uint8, device=device)
        one = functools.partial(torch.full, (1, 1, 1, 1), dtype=torch.float32, device=device)
        self.constants = {
            _UID_DS: one(1.0 / _P_SCALE), _UID_SS: one(_P_SCALE), _UID_SO: one(1.0),
            _UID_AMAX_S: one(0.0), _UID_AMAX_O: one(0.0),
        }
        if padded:
            full = functools.partial(torch.full, (b, 1, 1, 1), dtype=torch.int32, device=device)
            self.constants.update({_UID_LEN_Q: full(sq), _UID_LEN_KV: full(skv)})


class _Cudnn:
    """The frontend module, one handle per device and the graphs built so far (thread-safe)."""

    def __init__(self) -> None:
        import cudnn

        self.cudnn = cudnn
        self._lock = threading.Lock()
        self._handles: dict[int, object] = {}
        self._graphs: dict[tuple, _Graph] = {}

    def graph(self, q: torch.Tensor, k: torch.Tensor) -> _Graph:
        b, h, sq, d = q.shape
        key = (q.device.index, b, h, sq, k.shape[2], d)
        found = self._graphs.get(key)
        if found is None:
            with self._lock:
                found = self._graphs.get(key)
                if found is None:
                    try:
                        found = _Graph(self.cudnn, q.device, b, h, sq, k.shape[2], d, padded=False)
                    except Exception:  # noqa: BLE001 - an older cuDNN: lengths of 64s only
                        found = _Graph(self.cudnn, q.device, b, h, sq, k.shape[2], d, padded=True)
                    self._graphs[key] = found
        return found

    def handle(self, device: torch.device):
        index = device.index if device.index is not None else torch.cuda.current_device()
        handle = self._handles.get(index)
        if handle is None:
            with self._lock, torch.cuda.device(index):
                handle = self._handles.setdefault(index, self.cudnn.create_handle())
        # The stream of the moment: a CUDA-graph capture runs on its own stream.
        self.cudnn.set_stream(handle=handle, stream=torch.cuda.current_stream(index).cuda_stream)
        return handle


@functools.cache
def _frontend() -> _Cudnn:
    return _Cudnn()


def fp8_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Non-causal attention of q over k/v, (batch, heads, tokens, head_dim) bfloat16 in and out,
    computed in FP8 by cuDNN."""
    cu = _frontend()
    graph = cu.graph(q, k)
    quantise = _compiled_quantise()
    (q8, dq), (k8, dk), (v8, dv) = quantise(q, graph.pad_q), quantise(k, graph.pad_kv), quantise(v, graph.pad_kv)
    out = torch.empty(graph.shape, dtype=torch.bfloat16, device=q.device)
    pack = {_UID_Q: q8, _UID_K: k8, _UID_V: v8, _UID_O: out, _UID_DQ: dq, _UID_DK: dk, _UID_DV: dv,
            **graph.constants}
    graph.graph.execute(pack, graph.workspace, handle=cu.handle(q.device))
    return out[:, :, : graph.queries] if graph.pad_q else out


def graph_modes() -> dict[str, str]:
    """How each graph built so far runs ("exact" or "padded"), keyed "BxHxSqxSkvxD" (benchmarks)."""
    if fp8_missing() is not None:
        return {}
    return {"x".join(map(str, key[1:])): "padded" if g.pad_q or g.pad_kv else "exact"
            for key, g in _frontend()._graphs.items()}
