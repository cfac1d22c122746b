"""FlashAttention-4 as the engine's dense kernel for long keys (video/attention/flash.py).

CPU: where "auto" turns it on, that asking for it where it cannot run fails naming why, that
the runtime keeps SDPA otherwise, and that the loader node adds the setting without shifting a
saved workflow's widgets. CUDA (marked gpu; needs flash-attn-4 and a Hopper card): the kernel
at LongLive's shape against SDPA, short keys staying on cuDNN, and a real-size stream's chunks
under CUDA graphs against plain launches and against cuDNN.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from comfyui_persona.video.attention import (
    AttentionBackend,
    BackendUnavailableError,
    dense_attention,
    explain,
)
from comfyui_persona.video.attention.flash import (
    flash_by_default,
    flash_card_reasons,
    flash_constraints,
    flash_dense_attention,
    flash_missing,
)
from comfyui_persona.video.longlive.runtime import EngineRuntime
from comfyui_persona.video.longlive.settings import LongLiveSettings
from comfyui_persona.video.longlive.testing import tiny_dit


def test_auto_uses_flash_only_on_hopper_with_the_package_and_flash_is_required_when_asked():
    auto = LongLiveSettings()
    assert auto.attention_kernel == "auto"
    assert not auto.resolved("cpu").flash_attention
    assert not auto.resolved("cuda", (8, 0)).flash_attention  # Ampere: not measured there
    assert not auto.resolved("cuda", (10, 0)).flash_attention
    assert auto.resolved("cuda", (9, 0)).flash_attention == (flash_missing() is None)
    assert not auto.resolved("cuda", (9, 0)).flash_required
    forced = LongLiveSettings(attention_kernel="flash").resolved("cpu")
    assert forced.flash_attention and forced.flash_required
    assert not LongLiveSettings(attention_kernel="cudnn").resolved("cuda", (9, 0)).flash_attention
    assert flash_card_reasons(None) and flash_card_reasons((8, 9)) and not flash_card_reasons((9, 0))
    assert not flash_card_reasons((10, 0))  # Blackwell runs it when asked for; auto keeps to Hopper
    assert not flash_by_default((10, 0)) and not flash_by_default(None)


def test_asking_for_flash_where_it_cannot_run_names_why_and_auto_keeps_sdpa(caplog):
    runtime = EngineRuntime(tiny_dit(local_attn_size=9))
    why = "flash-attn-4 is not installed" if flash_missing() else "CUDA"  # the package is checked first
    with pytest.raises(BackendUnavailableError, match=why):
        runtime.use_flash_attention(required=True)
    with caplog.at_level(logging.WARNING, logger="comfyui_persona.video.longlive.runtime"):
        assert runtime.use_flash_attention() is False
    assert "keeps SDPA" in caplog.text and why in caplog.text
    cpu_tensors = [torch.zeros(1, 2, 8, 32) for _ in range(3)]
    assert any(why in r for r in explain(AttentionBackend.FLASH, *cpu_tensors))
    reasons = flash_constraints(*cpu_tensors)
    assert any("CUDA" in r for r in reasons) and any("head_dim" in r for r in reasons)


def test_a_flash_attn_package_that_does_not_import_is_a_reason_not_a_crash(tmp_path, monkeypatch):
    """FlashAttention-2's package is also named `flash_attn`; one built for another torch raises
    on import. Loading the engine must then say so and keep SDPA, not fail."""
    package = tmp_path / "flash_attn"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('undefined symbol: built for another torch')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "flash_attn", raising=False)
    why = flash_missing()
    assert why is not None and "does not import" in why and "another torch" in why
    assert not LongLiveSettings().resolved("cuda", (9, 0)).flash_attention


def test_a_runtime_without_flash_runs_the_routers_dense_attention():
    runtime = EngineRuntime(tiny_dit(local_attn_size=9))
    from comfyui_persona.video.longlive.runtime import DENSE, PassRow

    row = PassRow(0, None, None, 1000.0, True, DENSE)
    assert set(runtime._attention_fns(row)) == {dense_attention}
    runtime._dense = flash_dense_attention  # as use_flash_attention leaves it on a Hopper card
    assert set(runtime._attention_fns(row)) == {flash_dense_attention}


def test_flash_takes_only_attention_with_many_queries_and_many_keys(monkeypatch):
    """Where cuDNN was as fast or faster on an H100 it keeps the call: a prompt's 512 keys, and
    a 320x576 chunk's 2,160 queries over its 8,640-key window (attention-h100-2026-12-07-*)."""
    from comfyui_persona.video.attention import flash

    taken = []
    monkeypatch.setattr(flash, "flash_attention", lambda q, k, v: taken.append((q.shape[-2], k.shape[-2])) or q)

    def call(queries: int, keys: int) -> None:
        q = torch.zeros(1, 1, queries, 64, dtype=torch.bfloat16)
        kv = torch.zeros(1, 1, keys, 64, dtype=torch.bfloat16)
        flash.flash_dense_attention(q, kv, kv)

    call(4680, 18720)  # a 480x832 chunk over its window
    call(4680, 512)  # cross-attention over the prompt
    call(2160, 8640)  # a 320x576 chunk over its window
    call(8640, 8640)  # a 320x576 stock re-cache pass over its window
    assert taken == [(4680, 18720), (8640, 8640)]


def test_the_loader_node_adds_the_setting_last_so_saved_workflows_keep_their_widgets():
    from comfyui_persona.nodes.engine_nodes import APPENDED_SETTINGS, PersonaLongLiveLoader

    inputs = PersonaLongLiveLoader.INPUT_TYPES()
    assert "attention_kernel" not in inputs["required"]
    assert list(inputs["optional"])[-len(APPENDED_SETTINGS):] == list(APPENDED_SETTINGS)
    choices, options = inputs["optional"]["attention_kernel"]
    assert choices == ["auto", "flash", "cudnn"] and options["default"] == "auto"


needs_flash = pytest.mark.skipif(
    not torch.cuda.is_available() or flash_missing() is not None
    or bool(flash_card_reasons(torch.cuda.get_device_capability() if torch.cuda.is_available() else None)),
    reason="needs a Hopper GPU and flash-attn-4",
)


@pytest.mark.gpu
@needs_flash
@torch.no_grad()
def test_cuda_flash_matches_sdpa_at_longlive_shape_and_short_keys_stay_on_cudnn():
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(1, 12, 4680, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
    k, v = (torch.randn(1, 12, 18720, 128, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(2))
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    out = flash_dense_attention(q, k, v).float()
    assert out.shape == ref.shape
    rel_l1 = float((out - ref).abs().sum() / ref.abs().sum())
    cudnn_l1 = float((dense_attention(q, k, v).float() - ref).abs().sum() / ref.abs().sum())
    print(f"rel L1 to float32 SDPA: flash-attn-4 {rel_l1:.2e}, cuDNN {cudnn_l1:.2e}")
    assert rel_l1 < 2 * cudnn_l1 + 1e-3
    short_k, short_v = k[:, :, :512], v[:, :, :512]  # a prompt's keys: cuDNN is faster there
    assert flash_dense_attention(q, short_k, short_v).equal(dense_attention(q, short_k, short_v))
    small_q, small_k, small_v = q[:, :, :2160], k[:, :, :8640], v[:, :, :8640]  # a 320x576 chunk
    assert flash_dense_attention(small_q, small_k, small_v).equal(dense_attention(small_q, small_k, small_v))


@pytest.mark.gpu
@needs_flash
@torch.no_grad()
def test_cuda_a_real_size_stream_on_flash_replays_from_graphs_and_follows_cudnn():
    """Two real-size blocks at 480x832: the window's filling (4,680 to 18,720 keys), steady
    chunks and a prompt switch's stock re-cache, each pass on FlashAttention-4. Graph replay
    gives the chunks of plain launches; cuDNN's chunks differ by bf16 rounding only."""
    from comfyui_persona.video.longlive.model import cast_for_inference
    from comfyui_persona.video.longlive.sampler import StreamingSampler

    gen = torch.Generator().manual_seed(5)
    texts = [torch.randn(1, 512, 4096, generator=gen).to("cuda", torch.bfloat16) for _ in range(2)]

    def stream(flash: bool, graphs: bool) -> tuple[list[torch.Tensor], EngineRuntime]:
        model = cast_for_inference(tiny_dit(preset="wan2.1-t2v-1.3b", num_layers=2), torch.bfloat16)
        runtime = EngineRuntime(model.to("cuda"))
        assert runtime.use_flash_attention(flash, required=flash) is flash
        runtime.use_cuda_graphs(graphs)
        sampler = StreamingSampler(runtime, seed=0)
        sampler.start(60, 104)
        sampler.set_prompt(texts[0])
        chunks = []
        for c in range(6):
            if c == 4:
                sampler.set_prompt(texts[1], timing="after")
            chunks.append(sampler.next_chunk().float().cpu())
        return chunks, runtime

    cudnn, _ = stream(False, True)
    plain, _ = stream(True, False)
    replayed, runtime = stream(True, True)
    assert runtime.graph_replays > 0 and runtime.graphs_captured >= 2
    for c, (a, b, ref) in enumerate(zip(plain, replayed, cudnn, strict=True)):
        torch.testing.assert_close(b, a, atol=1e-2, rtol=1e-2, msg=f"chunk {c}: replay vs plain")
        rel_l1 = float((b - ref).abs().sum() / ref.abs().sum())
        print(f"chunk {c}: flash-attn-4 vs cuDNN rel L1 {rel_l1:.2e}")
        assert rel_l1 < 2e-2, f"chunk {c}"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@torch.no_grad()
def test_cuda_one_call_for_several_sessions_gives_each_the_bits_it_gets_alone():
    """The runtime attends for several sessions in one call (`runtime._shared_read`): each
    session's rows of the batched call equal its own call bit for bit, on the engine's dense
    kernel at 480x832 (FlashAttention-4 where installed) and on cuDNN at 320x576, reading the
    keys through the KV store's strides (rows, heads, tokens, head_dim), not copies."""
    gen = torch.Generator(device="cuda").manual_seed(1)
    shapes = {"480x832": (4680, 18720), "320x576": (2160, 8640)}
    kernel = flash_dense_attention if flash_missing() is None and not flash_card_reasons(
        torch.cuda.get_device_capability()) else dense_attention
    for name, (n_q, n_k) in shapes.items():
        rows = 8 if name == "320x576" else 3
        q = torch.randn(rows, 12, n_q, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
        cache = torch.randn(2, rows, 12, n_k + 512, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
        k, v = cache[0, :, :, :n_k], cache[1, :, :, :n_k]
        together = kernel(q, k, v)
        for r in range(rows):
            alone = kernel(q[r : r + 1], k[r : r + 1], v[r : r + 1])
            assert alone.equal(together[r : r + 1]), f"{name}, session {r} of {rows} ({kernel.__name__})"
