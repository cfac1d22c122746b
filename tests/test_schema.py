"""The directive contract: our pydantic model is exactly directive.schema.json."""

from __future__ import annotations

import json

import jsonschema
import pytest
from pydantic import ValidationError

from comfyui_persona.persona.schema import (
    CORE_ACTIONS,
    CORE_EXPRESSIONS,
    ActionDirective,
    CharacterState,
    core_vocabulary,
)
from paths import DIRECTIVE_SCHEMA, SHARED

CONTRACT = DIRECTIVE_SCHEMA


def _contract() -> dict:
    return json.loads(CONTRACT.read_text())


#: What our copy adds to the team's v1 contract (v1.1, additive: optional fields only).
V1_1_ADDED = {"character"}


def test_vendored_contract_is_the_shared_one_plus_only_the_v1_1_optional_fields():
    """docs/contracts/ holds a copy so users' clones can run the tests; it must not drift from
    the team's contract except by v1.1's optional fields (a v1 payload stays valid)."""
    shared = SHARED / "directive.schema.json"
    if not shared.exists():
        pytest.skip("no shared/ folder beside this checkout")
    team, ours = json.loads(shared.read_text()), _contract()
    if team == ours:
        return  # the team's contract has caught up
    assert ours["$id"] == team["$id"] + ".1"
    assert set(ours["properties"]) - set(team["properties"]) == V1_1_ADDED
    assert ours["required"] == team["required"] and not V1_1_ADDED & set(ours["required"])
    for name, spec in team["properties"].items():
        assert ours["properties"][name] == spec, name
    assert {k: v for k, v in ours.items() if k not in ("$id", "properties")} == {
        k: v for k, v in team.items() if k not in ("$id", "properties")}


def test_a_v1_payload_is_a_valid_v1_1_payload_naming_no_character():
    v1 = {"action": "wave", "expression": "smile", "intensity": 0.5}
    jsonschema.validate(v1, _contract())
    assert ActionDirective.model_validate(v1).character is None
    jsonschema.validate({**v1, "character": "bjorn"}, _contract())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**v1, "character": "Not An Id"}, _contract())
    with pytest.raises(ValidationError, match="character"):
        ActionDirective.model_validate({**v1, "character": "Not An Id"})


def test_model_schema_matches_contract_fields_types_and_bounds():
    contract = _contract()
    ours = ActionDirective.model_json_schema()
    assert set(ours["properties"]) == set(contract["properties"])
    assert set(ours["required"]) == set(contract["required"])
    assert ours.get("additionalProperties") is False
    for name, spec in contract["properties"].items():
        mine = ours["properties"][name]
        types = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
        mine_types = sorted(t["type"] for t in mine["anyOf"]) if "anyOf" in mine else [mine["type"]]
        assert sorted(types) == mine_types, name
        for bound in ("minimum", "maximum", "maxLength", "default"):
            if bound in spec:
                got = mine.get(bound)
                if got is None and "anyOf" in mine:
                    got = next((t[bound] for t in mine["anyOf"] if bound in t), mine.get(bound))
                assert got == spec[bound], f"{name}.{bound}"


@pytest.mark.parametrize(
    "payload",
    [
        {"action": "wave", "expression": "smile", "intensity": 0.5},
        {"action": "sit", "expression": "neutral", "intensity": 0.0, "dialogue": "hi", "duration_s": None},
        {"action": "dance", "expression": "excited", "intensity": 1.0, "duration_s": 60},
    ],
)
def test_valid_directives_pass_both_validators(payload):
    jsonschema.validate(payload, _contract())
    assert ActionDirective.model_validate(payload).model_dump(exclude_unset=True) == payload


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"action": "wave", "expression": "smile"}, "intensity"),
        ({"action": "wave", "expression": "smile", "intensity": 1.5}, "intensity"),
        ({"action": "wave", "expression": "smile", "intensity": -0.1}, "intensity"),
        ({"action": "wave", "expression": "smile", "intensity": 0.5, "duration_s": 61}, "duration_s"),
        ({"action": "wave", "expression": "smile", "intensity": 0.5, "dialogue": "x" * 2001}, "dialogue"),
        ({"action": "wave", "expression": "smile", "intensity": 0.5, "mood": "odd"}, "mood"),
        ({"expression": "smile", "intensity": 0.5}, "action"),
    ],
)
def test_invalid_directives_fail_both_validators_naming_the_field(payload, field):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(payload, _contract())
    with pytest.raises(ValidationError) as info:
        ActionDirective.model_validate(payload)
    assert field in str(info.value)


def test_core_vocabulary_is_the_contracts_examples_with_everything_filled_in():
    contract = _contract()
    assert [e.name for e in CORE_ACTIONS] == contract["properties"]["action"]["examples"]
    assert [e.name for e in CORE_EXPRESSIONS] == contract["properties"]["expression"]["examples"]
    assert len(CORE_ACTIONS) == 16 and len(CORE_EXPRESSIONS) == 12
    for entry in (*CORE_ACTIONS, *CORE_EXPRESSIONS):
        assert entry.description and entry.phrase and entry.synonyms, entry.name


def test_unknown_vocabulary_word_error_lists_the_known_ones():
    with pytest.raises(KeyError, match="unknown action 'backflip'.*wave"):
        core_vocabulary().action("backflip")


def test_allowed_actions_keep_idle_and_reject_unknown_names():
    vocab = core_vocabulary().extended(allowed_actions=("wave",))
    assert vocab.action_names == ["idle", "wave"]
    with pytest.raises(ValueError, match="backflip"):
        core_vocabulary().extended(allowed_actions=("backflip",))


def test_character_state_round_trips_as_protocol_json():
    state = CharacterState(since_ms=5)
    assert CharacterState.model_validate_json(state.model_dump_json()) == state
    assert set(state.model_dump()) == {"pose", "action", "expression", "activity", "speaking", "since_ms"}
