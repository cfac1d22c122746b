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
