"""Dense attention in FP8 (e4m3) on cuDNN's fused FP8 SDPA, through the cuDNN frontend's graph API.

Why: attention is about half of a LongLive pass, and bf16 SDPA on cuDNN already runs at ~508
TFLOP/s on H100 (1.06 ms at 4,680 x 18,720, benchmarks/results/attention-h100-2026-11-25.json),
close to the bf16 tensor-core peak. Hopper's FP8 tensor cores have twice that peak, so the
only large step left is doing QK^T and PV in FP8. torch SDPA has no FP8 path (it accepts no
float8 inputs), and a hand-written FP8 flash kernel for Hopper means warp-specialised WGMMA
code with in-register P re-layout: months of tuning to reach what NVIDIA ships in cuDNN. The
cuDNN frontend (`pip install nvidia-cudnn-frontend==1.32.0`, imported as `cudnn`) reaches the
same libcudnn torch already loads; we use only its classic graph path (`cudnn.pygraph`),
which imports without the CuTe DSL / TVM FFI packages the wheel declares (checked: `import
cudnn` pulls in neither; the Python engines that need them are looked up lazily and skipped).

Scaling (per tensor, all on the device, no host sync: the engine queues work asynchronously):
  * Q, K, V: amax = max|x|, scale = 448 / amax (448 = largest e4m3 value), x8 = e4m3(x * scale),
    descale = amax / 448 fed to the graph as a 1-element float32 tensor. Relative rounding
    error per element is at most 2^-4 (3 mantissa bits); values below amax * 2^-15 go subnormal.
  * Optional `smooth_k`: K minus its mean over tokens, per head. Exact under softmax (it adds
    the same q.mean_k to every score of a query) and it shrinks amax(K) when K has a large
    shared offset, so the remaining spread gets the FP8 range (SageAttention's trick).
  * P (softmax probabilities in [0, 1]): scale_s = 448, descale_s = 1/448 (cuDNN's documented
    choice for e4m3 without dropout); Amax_S is not requested (deprecated, and it slows cuDNN).
  * O: Hopper's FP8 SDPA only writes FP8 O (the frontend refuses half/bf16 O below
    Blackwell: node/sdpa_support_surface.h, "sdpa fp8 forward with HALF/BFLOAT16 output is only
    supported on Blackwell"). Rows of P sum to 1, so |O| <= amax(V); scale_o = 448 / (2 amax(V))
    can never overflow (the 2 covers P's own rounding), and e4m3 keeps its 2^-4 relative error
    at any magnitude above the subnormals. We dequantise O to the input dtype right after the
    call. On Blackwell (10.x) cuDNN writes bf16/fp16 O directly and scale_o = 1.

Error: emulating this pipeline in float32 on the start-up self-check case (random Gaussian,
250 x 330, head_dim 128) gives cosine 0.998 and relative L1 0.058 against float32 SDPA; the
self-check allows (0.99, 0.1): selfcheck.TOLERANCES has no entry for "cudnn_fp8", so it takes
the default for quantised kernels, the same band as the INT8 ones (sage, sparge).

Layout: q/k/v are (B, H, T, D) and may be strided views (e.g. `cache_k[:, :, :n]`). The
quantised copies are fresh tensors, and cuDNN is told their real strides (last dim must be
unit-stride, else they are made contiguous). O is written contiguous (B, H, Tq, D).

The cuDNN call is a `torch.library.custom_op` ("persona::cudnn_fp8_attention") with a fake
kernel, so a `torch.compile`d block traces through it without a graph break; the
quantisation and dequantisation stay outside the op in plain torch, so inductor fuses them
into neighbouring kernels. Graphs are built once per (shapes, strides, dtypes, scale, device)
(building takes ~0.1-1 s) with their workspace from the torch caching allocator; the cuDNN
handle is per (thread, device) and is bound to torch's current stream at every call.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import threading
from dataclasses import dataclass
from typing import Any

import torch

FRONTEND_PIN = "nvidia-cudnn-frontend==1.32.0"
E4M3_MAX = 448.0
_HALF = (torch.float16, torch.bfloat16)
_HEAD_DIMS = (64, 128)
#: amax floor, so an all-zero tensor quantises to zeros instead of 0 * inf = NaN
_AMAX_FLOOR = 1e-30
#: O headroom over amax(V): P's own FP8 rounding can push a row sum slightly above 1
_O_HEADROOM = 2.0
#: cuDNN's attention kernels index with 32-bit offsets; stay clear of it per tensor
_MAX_ELEMENTS = 2**31 - 1

# Graph tensor uids (the variant pack is keyed by these).
_Q, _K, _V, _DESCALE_Q, _DESCALE_K, _DESCALE_V, _DESCALE_S, _SCALE_S, _SCALE_O = range(1, 10)
_O, _AMAX_O = 20, 21


# --------------------------------------------------------------------------- availability


def cudnn_fp8_missing() -> str | None:
    """Why this backend cannot be used at all here, or None. Cheap: imports nothing."""
    reasons = []
    if importlib.util.find_spec("cudnn") is None:
        reasons.append(f"package nvidia-cudnn-frontend is not installed (pip install {FRONTEND_PIN})")
    if not torch.cuda.is_available():
        reasons.append("cuDNN FP8 attention needs a CUDA GPU and torch.cuda.is_available() is False")
    return "; ".join(reasons) or None


def cudnn_fp8_constraints(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> list[str]:
    """Every reason these tensors do not fit cuDNN's FP8 SDPA (empty: they do). Runs nothing."""
    if not q.is_cuda:
        return [f"needs CUDA tensors, got device {q.device}"]
    reasons = []
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in _HALF:
        reasons.append(f"needs float16 or bfloat16 q/k/v of one dtype, got {q.dtype}/{k.dtype}/{v.dtype}")
    cap = torch.cuda.get_device_capability(q.device)
    if cap[0] not in (9, 10):
        name = torch.cuda.get_device_name(q.device)
        reasons.append(f"cuDNN FP8 attention runs on Hopper (9.x) and B200/B300 (10.x) only; {name} is {cap}")
    if q.shape[-1] not in _HEAD_DIMS or v.shape[-1] != q.shape[-1]:
        reasons.append(f"needs head_dim 64 or 128 for q, k and v alike, got {q.shape[-1]} (v {v.shape[-1]})")
    if q.dim() == 4 and (q.shape[0] < 1 or q.shape[1] < 1 or q.shape[2] < 1 or k.shape[2] < 1):
        reasons.append(f"needs non-empty batch, heads and tokens, got q {tuple(q.shape)}, k {tuple(k.shape)}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.numel() > _MAX_ELEMENTS:
            reasons.append(f"{name} has {t.numel():,} elements, over cuDNN's 32-bit indexing limit")
    return reasons


# --------------------------------------------------------------------------- quantisation (plain torch)


def quantize_e4m3(x: torch.Tensor, *, smooth: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(x8, descale): per-tensor e4m3 copy of `x` and its 0-d float32 descale, both on x's device.

    `smooth` subtracts the mean over tokens (dim -2) first: for K that is exact under softmax.
    No host sync: the scale is a device tensor, never read back.
    """
    xf = x.float()
    if smooth:
        xf = xf - xf.mean(dim=-2, keepdim=True)
    amax = xf.abs().amax().clamp_min(_AMAX_FLOOR)
    x8 = (xf * (E4M3_MAX / amax)).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return x8, amax / E4M3_MAX


def dequantize_e4m3(x8: torch.Tensor, descale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x8 * descale in `dtype` (the inverse of `quantize_e4m3`, up to e4m3 rounding)."""
    return (x8.float() * descale).to(dtype)


def _fp8_output(device: torch.device) -> bool:
    """Whether cuDNN must write O in FP8 here (Hopper) rather than in half precision (Blackwell).
    `get_device_properties`, not `get_device_capability`: dynamo constant-folds the former."""
    return torch.cuda.get_device_properties(device).major < 10


def cudnn_fp8_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, smooth_k: bool = False
) -> torch.Tensor:
    """Non-causal softmax(q k^T / sqrt(D)) v in FP8 on cuDNN; same shape and dtype as SDPA's output.

    Check `cudnn_fp8_constraints` first (dispatch.attention does); this function assumes a fit.
    """
    q8, descale_q = quantize_e4m3(q)
    k8, descale_k = quantize_e4m3(k, smooth=smooth_k)
    v8, descale_v = quantize_e4m3(v)
    return cudnn_fp8_attention_quantized(q8, k8, v8, descale_q, descale_k, descale_v, q.dtype)


def cudnn_fp8_attention_quantized(
    q8: torch.Tensor,
    k8: torch.Tensor,
    v8: torch.Tensor,
    descale_q: torch.Tensor,
    descale_k: torch.Tensor,
    descale_v: torch.Tensor,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """The cuDNN call on already-quantised inputs (`quantize_e4m3`'s outputs), O in `out_dtype`."""
    attn_scale = 1.0 / math.sqrt(q8.shape[-1])
    if _fp8_output(q8.device):
        descale_o = descale_v * _O_HEADROOM  # |O| <= amax(V) = 448 * descale_v
        o8 = _OP(
            q8, k8, v8, descale_q, descale_k, descale_v, 1.0 / descale_o, attn_scale, torch.float8_e4m3fn
        )
        return dequantize_e4m3(o8, descale_o, out_dtype)
    one = torch.ones((), dtype=torch.float32, device=q8.device)
    return _OP(q8, k8, v8, descale_q, descale_k, descale_v, one, attn_scale, out_dtype)


# --------------------------------------------------------------------------- the custom op


def _run_graph(
    q8: torch.Tensor,
    k8: torch.Tensor,
    v8: torch.Tensor,
    descale_q: torch.Tensor,
    descale_k: torch.Tensor,
    descale_v: torch.Tensor,
    scale_o: torch.Tensor,
    attn_scale: float,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    q8, k8, v8 = (t if t.stride(-1) == 1 else t.contiguous() for t in (q8, k8, v8))
    out = torch.empty((*q8.shape[:-1], v8.shape[-1]), dtype=out_dtype, device=q8.device)
    key = _GraphKey(
        shapes=(tuple(q8.shape), tuple(k8.shape), tuple(v8.shape)),
        strides=(q8.stride(), k8.stride(), v8.stride()),
        out_dtype=out_dtype,
        attn_scale=attn_scale,
        device=q8.device.index if q8.device.index is not None else torch.cuda.current_device(),
    )
    plan = _plan(key)
    cudnn = _cudnn()
    handle = _handle(key.device)
    cudnn.set_stream(handle, torch.cuda.current_stream(q8.device).cuda_stream)
    scalars = (descale_q, descale_k, descale_v, scale_o)
    scalars = tuple(s.to(device=q8.device, dtype=torch.float32).contiguous() for s in scalars)
    # Bare device addresses: the graph's declarations say what the bytes mean (frontend
    # `_native_var_pack` takes ints), which avoids exporting float8 tensors through DLPack.
    pack = {
        _Q: q8.data_ptr(),
        _K: k8.data_ptr(),
        _V: v8.data_ptr(),
        _DESCALE_Q: scalars[0].data_ptr(),
        _DESCALE_K: scalars[1].data_ptr(),
        _DESCALE_V: scalars[2].data_ptr(),
        _SCALE_O: scalars[3].data_ptr(),
        _DESCALE_S: plan.descale_s.data_ptr(),
        _SCALE_S: plan.scale_s.data_ptr(),
        _O: out.data_ptr(),
        _AMAX_O: plan.amax_o.data_ptr(),
    }
    plan.graph.execute(pack, plan.workspace, handle=handle)
    return out


def _fake(q8, k8, v8, descale_q, descale_k, descale_v, scale_o, attn_scale, out_dtype):
    return q8.new_empty((*q8.shape[:-1], v8.shape[-1]), dtype=out_dtype)


OP_NAME = "persona::cudnn_fp8_attention"


def _register_op():
    """The custom op, registered once per process even when this file is loaded under two
    package names (the benchmark loads video/attention by path next to the installed package).
    Registered at import, not lazily: dynamo would trace (and warn about) a cached getter."""
    namespace, name = OP_NAME.split("::")
    try:
        return getattr(getattr(torch.ops, namespace), name)
    except (AttributeError, RuntimeError):
        pass
    torch.library.custom_op(OP_NAME, mutates_args=())(_run_graph).register_fake(_fake)
    return getattr(getattr(torch.ops, namespace), name)  # the op packet dynamo traces natively


# --------------------------------------------------------------------------- graphs and handles


@dataclass(frozen=True)
class _GraphKey:
    shapes: tuple[tuple[int, ...], ...]
    strides: tuple[tuple[int, ...], ...]
    out_dtype: torch.dtype
    attn_scale: float
    device: int


@dataclass
class _Plan:
    graph: Any
    workspace: torch.Tensor
    scale_s: torch.Tensor
    descale_s: torch.Tensor
    amax_o: torch.Tensor  # written by cuDNN every call, read by no one


@functools.cache
def _cudnn():
    import cudnn  # noqa: PLC0415 - optional dependency, imported on first use

    return cudnn


_HANDLES = threading.local()  # cuDNN handles must not be shared across threads
_PLANS: dict[_GraphKey, _Plan] = {}
_PLANS_LOCK = threading.Lock()


def _handle(device: int):
    by_device = getattr(_HANDLES, "by_device", None)
    if by_device is None:
        by_device = _HANDLES.by_device = {}
    if device not in by_device:
        with torch.cuda.device(device):
            by_device[device] = _cudnn().create_handle()
    return by_device[device]


def _plan(key: _GraphKey) -> _Plan:
    plan = _PLANS.get(key)
    if plan is None:
        with _PLANS_LOCK:
            plan = _PLANS.get(key)
            if plan is None:
                plan = _PLANS[key] = _build(key)
    return plan


def _cudnn_dtype(dtype: torch.dtype):
    types = _cudnn().data_type
    return {
        torch.float8_e4m3fn: types.FP8_E4M3,
        torch.bfloat16: types.BFLOAT16,
        torch.float16: types.HALF,
    }[dtype]


def _build(key: _GraphKey) -> _Plan:
    """Declare, validate and build one FP8 SDPA graph (slow: done once per key)."""
    cudnn = _cudnn()
    types = cudnn.data_type
    with torch.cuda.device(key.device):
        handle = _handle(key.device)
        graph = cudnn.pygraph(
            io_data_type=types.FP8_E4M3,
            intermediate_data_type=types.FLOAT,
            compute_data_type=types.FLOAT,
            handle=handle,
        )
        (q_shape, k_shape, v_shape), (q_stride, k_stride, v_stride) = key.shapes, key.strides
        q = graph.tensor(name="q", dim=q_shape, stride=q_stride, data_type=types.FP8_E4M3, uid=_Q)
        k = graph.tensor(name="k", dim=k_shape, stride=k_stride, data_type=types.FP8_E4M3, uid=_K)
        v = graph.tensor(name="v", dim=v_shape, stride=v_stride, data_type=types.FP8_E4M3, uid=_V)
        scalar = {"dim": (1, 1, 1, 1), "stride": (1, 1, 1, 1), "data_type": types.FLOAT}
        descale_q, descale_k, descale_v, descale_s, scale_s, scale_o = (
            graph.tensor(name=name, uid=uid, **scalar)
            for name, uid in (
                ("descale_q", _DESCALE_Q),
                ("descale_k", _DESCALE_K),
                ("descale_v", _DESCALE_V),
                ("descale_s", _DESCALE_S),
                ("scale_s", _SCALE_S),
                ("scale_o", _SCALE_O),
            )
        )
        o, _stats, _amax_s, amax_o = graph.sdpa_fp8(
            q=q,
            k=k,
            v=v,
            descale_q=descale_q,
            descale_k=descale_k,
            descale_v=descale_v,
            descale_s=descale_s,
            scale_s=scale_s,
            scale_o=scale_o,
            generate_stats=False,
            attn_scale=key.attn_scale,
            use_causal_mask=False,
            name="sdpa_fp8",
        )
        o_shape = (*q_shape[:-1], v_shape[-1])
        o_stride = tuple(math.prod(o_shape[i + 1 :]) for i in range(len(o_shape)))
        o.set_uid(_O).set_output(True).set_dim(o_shape).set_stride(o_stride).set_data_type(
            _cudnn_dtype(key.out_dtype)
        )
        amax_o.set_uid(_AMAX_O).set_output(True).set_dim((1, 1, 1, 1)).set_stride((1, 1, 1, 1)).set_data_type(
            types.FLOAT
        )
        graph.validate()
        graph.build_operation_graph()
        graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        graph.check_support()
        graph.build_plans()
        device = torch.device("cuda", key.device)
        return _Plan(
            graph=graph,
            workspace=torch.empty(graph.get_workspace_size(), dtype=torch.uint8, device=device),
            scale_s=torch.full((1,), E4M3_MAX, dtype=torch.float32, device=device),
            descale_s=torch.full((1,), 1.0 / E4M3_MAX, dtype=torch.float32, device=device),
            amax_o=torch.zeros((1,), dtype=torch.float32, device=device),
        )


_OP = _register_op()


def reset() -> None:
    """Drop every built graph (tests; frees their workspaces)."""
    with _PLANS_LOCK:
        _PLANS.clear()
