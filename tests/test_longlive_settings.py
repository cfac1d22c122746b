"""User-facing LongLive settings: bounds, forbidden extras, UI metadata on every field."""

import pytest
from pydantic import ValidationError

from comfyui_persona.video.longlive.settings import LongLiveSettings


def test_every_setting_carries_description_and_ui_metadata():
    schema = LongLiveSettings.model_json_schema()
    orders = []
    for name, prop in schema["properties"].items():
        assert prop.get("description"), name
        ui = prop["ui"]
        assert isinstance(ui["is_load_param"], bool), name
        orders.append(ui["order"])
    assert len(set(orders)) == len(orders)


def test_unknown_and_out_of_range_settings_are_rejected():
    with pytest.raises(ValidationError, match="extra"):
        LongLiveSettings(heigth=480)
    with pytest.raises(ValidationError, match="multiple of 3"):
        LongLiveSettings(local_attn_size=13)
    with pytest.raises(ValidationError, match="sink_size .* smaller than local_attn_size"):
        LongLiveSettings(sink_size=12, local_attn_size=12)


def test_settings_build_the_matching_wan_config():
    cfg = LongLiveSettings(local_attn_size=15, sink_size=6).wan_config()
    assert (cfg.local_attn_size, cfg.sink_size, cfg.dim) == (15, 6, 1536)


def test_fast_path_is_the_default_on_a_gpu_that_supports_it():
    """compile and FP8 block linears are "auto": on with a CUDA card (FP8 from Hopper, 9.0, on),
    off on CPU; bf16/eager are explicit; booleans saved by older workflows still load."""
    defaults = LongLiveSettings()
    hopper, ampere, cpu = defaults.resolved("cuda", (9, 0)), defaults.resolved("cuda", (8, 6)), defaults.resolved("cpu")
    assert (hopper.compile, hopper.fp8, hopper.cuda_graphs) == (True, True, True)
    assert hopper.warmup_hw == (480, 832) and hopper.compile_mode is None
    assert (ampere.compile, ampere.fp8) == (True, False)
    assert (cpu.compile, cpu.fp8, cpu.cuda_graphs, cpu.warmup_hw) == (False, False, False, None)
    explicit = LongLiveSettings(compile="off", linear_precision="bf16", compile_mode="max-autotune")
    assert not explicit.resolved("cuda", (9, 0)).compile and not explicit.resolved("cuda", (9, 0)).fp8
    assert LongLiveSettings(compile_mode="max-autotune").resolved("cuda", (9, 0)).compile_mode == "max-autotune-no-cudagraphs"
    assert LongLiveSettings(compile=True).compile == "on" and LongLiveSettings(compile=False).compile == "off"
    assert defaults.recache_mode == "stock" and defaults.prompt_switch_recache == "after" and defaults.preempt
    with pytest.raises(ValidationError, match="warmup_size"):
        LongLiveSettings(warmup_size="big")


def test_the_warm_up_runs_batches_up_to_the_sessions_an_engine_serves():
    """A service for 3 sessions must not capture a graph while they stream (a capture stalls every
    session): the load's warm-up takes its largest batch from max_sessions."""
    assert LongLiveSettings().resolved("cuda", (9, 0)).warmup_batches == (1, 4)
    assert LongLiveSettings(max_sessions=3).resolved("cuda", (9, 0)).warmup_batches == (1, 3)
    assert LongLiveSettings(max_sessions=1).resolved("cuda", (9, 0)).warmup_batches == (1,)
