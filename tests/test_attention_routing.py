"""Sparse-attention settings, the per layer/step router, backend checks and the timing hook."""

import importlib.util
import json
import logging

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from comfyui_persona.video.attention import (
    AttentionBackend,
    BackendUnavailableError,
    DenseRouter,
    SparseAttentionConfig,
    SparseConfigError,
    attention,
    explain,
    make_router,
    selfcheck,
)
from comfyui_persona.video.attention.schedule import sparse_reach, warped_timesteps
from comfyui_persona.video.attention.timing import compare_routers
from paths import REPO


def qkv(q_len=96, k_len=256, heads=2, dim=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(1, heads, n, dim, generator=gen) for n in (q_len, k_len, k_len))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("sparge_topk", 0.0, "greater than 0"),
        ("sparge_topk", 1.5, "less than or equal to 1"),
        ("sparge_cdf_threshold", 0.0, "greater than 0"),
        ("sparge_timestep_threshold", 1200, "less than or equal to 1000"),
        ("sparge_timestep_threshold", -1, "greater than or equal to 0"),
        ("sparge_dense_layers", [0, -1], "must be >= 0"),
        ("sparge_dense_layers", [3, 3], "repeat"),
        ("sparge_block_k", 96, "64 or 128"),
        ("sparge_kernel", "triton", "'flex' or 'spargeattn'"),
        ("sparge_typo", True, "Extra inputs are not permitted"),
    ],
)
def test_bad_sparse_settings_are_refused_with_the_field_named(field, value, message):
    with pytest.raises(ValidationError, match=message) as info:
        SparseAttentionConfig(**{field: value})
    assert field in str(info.value)


def test_dense_layer_past_the_last_layer_is_refused_when_the_router_is_built():
    config = SparseAttentionConfig(sparge_attention=True, sparge_dense_layers=[0, 30])
    with pytest.raises(SparseConfigError, match=r"\[30\] do not exist: the model has 30 layers"):
        make_router(config, num_layers=30)


def test_every_setting_carries_a_description_and_ui_hints():
    for name, prop in SparseAttentionConfig.model_json_schema()["properties"].items():
        assert prop.get("description"), name
        assert "order" in prop["ui"] and prop["ui"]["is_load_param"] is False, name


def test_router_keeps_edge_layers_early_steps_and_refresh_dense():
    router = make_router({"sparge_attention": True}, num_layers=30, sink_tokens=64)
    assert router.dense_layers == {0, 1, 28, 29}
    for layer in (0, 1, 28, 29):
        assert router.select(layer, 625.0, refresh=False) is router.dense
    assert router.select(5, 800.0, refresh=False) is router.dense, "sparse only when t < threshold"
    assert router.select(5, 937.5, refresh=False) is router.dense
    assert router.select(5, 0.0, refresh=True) is router.dense, "the KV-refresh pass stays dense"
    assert router.select(5, 625.0, refresh=False) is router.sparse
    assert router.select(27, 799.9, refresh=False) is router.sparse
    assert router.stats == {"dense": 7, "sparse": 2}


def test_router_with_sparse_off_is_dense_everywhere():
    router = make_router({}, num_layers=4)
    assert all(router.select(layer, 100.0, False) is router.dense for layer in range(4))


def test_only_the_last_longlive_step_is_sparse_at_the_default_threshold():
    steps = warped_timesteps()
    assert steps == pytest.approx([1000.0, 937.5, 833.333, 625.0], abs=1e-3)
    router = make_router({"sparge_attention": True}, num_layers=30)
    assert [router.is_sparse(10, t, False) for t in steps] == [False, False, False, True]
    assert sparse_reach(800)["attention_share"] == pytest.approx(1 / 5 * 26 / 30)


def test_sparse_router_function_runs_and_with_all_blocks_equals_dense():
    router = make_router({"sparge_attention": True, "sparge_topk": 1.0}, num_layers=8, sink_tokens=32)
    q, k, v = qkv()
    out = router.select(4, 500.0, False)(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5)
    assert DenseRouter().select(0, 1000.0, True)(q, k, v).equal(F.scaled_dot_product_attention(q, k, v))


def test_sparse_router_function_compiles_as_one_graph_after_its_first_call():
    """The engine compiles its chunk forward: after the first (self-checking) call, the
    sparse function must trace without graph breaks, mask building included."""
    router = make_router(
        {"sparge_attention": True, "sparge_topk": 0.3, "sparge_block_q": 64, "sparge_block_k": 64},
        num_layers=8,
        sink_tokens=32,
    )
    q, k, v = qkv()
    fn = router.select(4, 500.0, False)
    eager = fn(q, k, v)
    compiled = torch.compile(lambda q, k, v: fn(q, k, v), backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), eager, atol=1e-5, rtol=1e-5)


def test_router_passes_the_engines_own_chunk_position_to_the_mask():
    router = make_router(
        {"sparge_attention": True, "sparge_topk": 0.05, "sparge_block_q": 64, "sparge_block_k": 64},
        num_layers=8,
    )
    q, k, v = qkv(q_len=64, k_len=512)
    last = router.select(4, 500.0, False)(q, k, v)
    router.set_query_position(128)
    moved = router.select(4, 500.0, False)(q, k, v)
    assert not torch.allclose(last, moved), "a different own chunk must change which keys are kept"
    with pytest.raises(ValueError, match="own_start"):
        router.set_query_position(-1)


def test_missing_kernel_packages_are_explained_not_guessed():
    q, k, v = qkv()
    reasons = explain(AttentionBackend.SAGE3, q, k, v)
    assert reasons and ("not installed" in reasons[0] or "Blackwell" in " ".join(reasons))
    with pytest.raises(BackendUnavailableError, match="'sage' cannot run"):
        attention(q, k, v, backend="sage")
    bad = explain(AttentionBackend.SPARSE, q, k[..., :16], v)
    assert any("do not fit together" in r for r in bad)


def test_backend_failing_its_self_check_is_disabled_with_one_log_line(caplog):
    selfcheck.reset()

    def broken(q, k, v):
        return F.scaled_dot_product_attention(q, k, v) * 1.5  # plausible shape, wrong numbers

    with caplog.at_level(logging.WARNING, logger=selfcheck.__name__):
        first = selfcheck.self_check("broken", broken, torch.device("cpu"), torch.float32)
        second = selfcheck.self_check("broken", broken, torch.device("cpu"), torch.float32)
    assert first and first == second and "rel L1" in first
    assert len(caplog.records) == 1 and "disabled" in caplog.records[0].getMessage()
    assert (
        selfcheck.self_check("sparse-ok", F.scaled_dot_product_attention, torch.device("cpu"), torch.float32)
        is None
    )

    def first_session_only(q, k, v):  # right for one session, wrong for a batch (the engine sends batches)
        return F.scaled_dot_product_attention(q, k[:1].expand_as(k), v[:1].expand_as(v))

    def contiguous_only(q, k, v):  # a kernel that cannot read the KV store's strided window
        if not k.is_contiguous():
            raise RuntimeError("keys must be contiguous")
        return F.scaled_dot_product_attention(q, k, v)

    for name, fn in (("batch-1", first_session_only), ("contiguous", contiguous_only)):
        assert selfcheck.self_check(name, fn, torch.device("cpu"), torch.float32), name
    selfcheck.reset()


def test_timing_hook_times_each_router_and_reports_error_against_the_first():
    q, k, v = qkv()

    def run_chunk(router):
        return router.select(3, 500.0, False)(q, k, v)

    routers = {
        "dense": make_router({}, num_layers=8),
        "sparse_all_blocks": make_router({"sparge_attention": True, "sparge_topk": 1.0}, num_layers=8),
        "sparse_0.2": make_router(
            {"sparge_attention": True, "sparge_topk": 0.2, "sparge_block_q": 64, "sparge_block_k": 64},
            num_layers=8,
        ),
    }
    result = compare_routers(run_chunk, routers, warmup=1, repeats=2)
    assert set(result) == set(routers)
    assert result["dense"]["rel_l1_vs_first"] == 0.0
    assert result["sparse_all_blocks"]["rel_l1_vs_first"] < 1e-5
    assert result["sparse_0.2"]["rel_l1_vs_first"] > 1e-3, "dropping blocks must change random attention"
    assert result["sparse_0.2"]["sparse_selection_share"] == 1.0
    assert all(row["chunk_ms_p50"] > 0 for row in result.values())


def test_benchmark_smoke_run_writes_a_result_file(tmp_path):
    spec = importlib.util.spec_from_file_location("attention_benchmark", REPO / "benchmarks" / "attention.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--smoke", "--out", str(tmp_path), "--commit", "test"]) == 0
    (path,) = tmp_path.glob("attention-cpu-*.json")
    record = json.loads(path.read_text())
    assert {"benchmark", "device", "torch", "commit", "date", "config", "metrics"} <= set(record)
    cases = record["metrics"]["smoke_3x4x6"]["cases"]
    assert cases["flex_topk1.0_ownchunk"]["rel_l1"] < 1e-5
    assert cases["flex_topk0.2_diagonal_only"]["density"] < 1.0
    assert all("error" not in row for row in cases.values()), cases
    engine = record["metrics"]["engine_tiny_cpu"]["routers"]
    assert engine["dense"]["rel_l1_vs_first"] == 0.0
    assert engine["sparse_topk0.2_all_steps_all_layers"]["sparse_selection_share"] > 0
