"""The headless workflow runner: loading, UI → API conversion, validation, streaming execution.

Like ComfyUI's execution tests: tiny deterministic stub nodes built here, assertions on
which nodes ran or hit the cache, and the whole executor suite run once per cache policy.
The real persona nodes and the saved preview workflow are exercised at the end.
"""

import json
import math

import pytest

from comfyui_persona.headless.runner import (
    CACHE_POLICIES,
    BadLinkError,
    DependencyCycleError,
    InputTypeMismatchError,
    InvalidInputValueError,
    MissingInputError,
    NodeExecutionError,
    StreamingRunner,
    UnknownNodeTypeError,
    WorkflowError,
    WorkflowGraph,
    load_workflow,
    make_cache,
    to_api,
    ui_to_api,
    validate,
)
from comfyui_persona.nodes import NODE_CLASS_MAPPINGS
from comfyui_persona.nodes.runtime import CallbackListener, SessionStore, current_store
from paths import REPO

# -- stub node pack ---------------------------------------------------------------------------

CALLS: list[str] = []


class StubNumber:
    RETURN_TYPES = ("NUMBER",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 1, "min": 0, "max": 100})}}

    def make(self, value):
        CALLS.append(f"number:{value}")
        return (value,)


class StubAdd:
    RETURN_TYPES = ("NUMBER",)
    FUNCTION = "add"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("NUMBER",), "b": ("NUMBER",)}, "optional": {"scale": ("FLOAT", {"default": 1.0})}}

    def add(self, a, b, scale=1.0):
        CALLS.append("add")
        return ((a + b) * scale,)


class StubText:
    RETURN_TYPES = ("TEXT",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": ""}), "mode": (["upper", "lower"],)}}

    def make(self, text, mode):
        CALLS.append("text")
        return (text.upper() if mode == "upper" else text.lower(),)


class StubCounter:
    """A streaming node: counts its runs in the session store, per session."""

    RETURN_TYPES = ("NUMBER",)
    FUNCTION = "count"
    STREAMING = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"base": ("NUMBER",), "session_id": ("STRING", {"default": "x"})}}

    def count(self, base, session_id):
        session = current_store().get(session_id)
        with session.lock:
            session.counter = getattr(session, "counter", 0) + 1  # a test node's own part
            count = session.counter
        CALLS.append(f"counter:{session_id}")
        return (base + count,)


class StubOutput:
    RETURN_TYPES = ()
    FUNCTION = "show"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("NUMBER",)}}

    def show(self, value):
        CALLS.append("output")
        return {"ui": {"value": [value]}, "result": ()}


class StubAlwaysChanged:
    RETURN_TYPES = ("NUMBER",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}

    @classmethod
    def IS_CHANGED(cls, value):
        return math.nan

    def make(self, value):
        CALLS.append("always")
        return (value,)


class StubChat:
    """A turn-bound node, like PersonaConversationTurn."""

    RETURN_TYPES = ("NUMBER",)
    FUNCTION = "take"
    HEADLESS_BINDING = {"chat": "text"}

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": ""}), "turn": ("INT", {"default": 0, "min": -1})}}

    def take(self, text, turn):
        CALLS.append(f"chat:{text}:{turn}")
        return (len(text) if turn > 0 else 0,)


class StubBoom:
    RETURN_TYPES = ("NUMBER",)
    FUNCTION = "boom"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("NUMBER",)}}

    def boom(self, value):
        raise ZeroDivisionError("stub exploded")


STUBS = {
    cls.__name__: cls
    for cls in (StubNumber, StubAdd, StubText, StubCounter, StubOutput, StubAlwaysChanged, StubChat, StubBoom)
}


@pytest.fixture(autouse=True)
def _clear_calls():
    CALLS.clear()
    yield
    CALLS.clear()


@pytest.fixture(params=sorted(CACHE_POLICIES))
def policy(request):
    return request.param


def _runner(workflow, policy, session="s1", store=None):
    graph = WorkflowGraph(workflow, STUBS)
    return StreamingRunner(graph, store or SessionStore(), session, cache=make_cache(policy))


def _sum_graph(a=2, b=3):
    return {
        "1": {"class_type": "StubNumber", "inputs": {"value": a}},
        "2": {"class_type": "StubNumber", "inputs": {"value": b}},
        "3": {"class_type": "StubAdd", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
        "4": {"class_type": "StubOutput", "inputs": {"value": ["3", 0]}},
    }


# -- executor, once per cache policy -------------------------------------------------------------


def test_first_run_executes_every_needed_node_and_returns_output_ui(policy):
    runner = _runner(_sum_graph(), policy)
    result = runner.start()
    assert sorted(result.ran) == ["1", "2", "3", "4"]
    assert result.ui == {"4": {"value": [5]}}


def test_nodes_no_output_needs_are_never_run(policy):
    workflow = _sum_graph()
    workflow["9"] = {"class_type": "StubText", "inputs": {"text": "unused", "mode": "upper"}}
    result = _runner(workflow, policy).start()
    assert "9" not in result.ran and "text" not in CALLS


def test_unchanged_turn_inputs_hit_the_cache_except_with_the_null_policy(policy):
    workflow = {
        "1": {"class_type": "StubChat", "inputs": {"text": "", "turn": 0}},
        "2": {"class_type": "StubNumber", "inputs": {"value": 7}},
        "3": {"class_type": "StubAdd", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
        "4": {"class_type": "StubOutput", "inputs": {"value": ["3", 0]}},
    }
    runner = _runner(workflow, policy)
    runner.start()
    CALLS.clear()
    result = runner.turn("chat", "hello", 1)
    assert "1" in result.ran and "3" in result.ran  # the chat node's input changed, and its consumer
    if policy == "none":
        assert "2" in result.ran
    else:
        assert result.cached == ["2"]
        assert CALLS == ["chat:hello:1", "add", "output"]


def test_same_text_as_a_new_turn_runs_again(policy):
    workflow = {
        "1": {"class_type": "StubChat", "inputs": {"text": "", "turn": 0}},
        "2": {"class_type": "StubOutput", "inputs": {"value": ["1", 0]}},
    }
    runner = _runner(workflow, policy)
    runner.start()
    runner.turn("chat", "wave", 1)
    CALLS.clear()
    result = runner.turn("chat", "wave", 2)
    assert "1" in result.ran and CALLS[0] == "chat:wave:2"


def test_streaming_nodes_run_every_tick_and_their_sources_do_not(policy):
    workflow = {
        "1": {"class_type": "StubNumber", "inputs": {"value": 10}},
        "2": {"class_type": "StubCounter", "inputs": {"base": ["1", 0], "session_id": "x"}},
        "3": {"class_type": "StubOutput", "inputs": {"value": ["2", 0]}},
    }
    runner = _runner(workflow, policy)
    assert runner.start().ui["3"] == {"value": [11]}
    CALLS.clear()
    results = [runner.tick() for _ in range(3)]
    assert [r.ui["3"]["value"][0] for r in results] == [12, 13, 14]
    assert all(r.ran == ["2", "3"] for r in results)
    assert "number:10" not in CALLS


def test_session_id_inputs_are_bound_to_the_runners_session_and_sessions_are_isolated(policy):
    workflow = {
        "1": {"class_type": "StubNumber", "inputs": {"value": 0}},
        "2": {"class_type": "StubCounter", "inputs": {"base": ["1", 0], "session_id": "from-the-file"}},
        "3": {"class_type": "StubOutput", "inputs": {"value": ["2", 0]}},
    }
    store = SessionStore()
    graph = WorkflowGraph(workflow, STUBS)
    a = StreamingRunner(graph, store, "alice", cache=make_cache(policy))
    b = StreamingRunner(graph, store, "bob", cache=make_cache(policy))
    a.start()
    a.tick()
    b.start()
    assert a.tick().ui["3"]["value"] == [3]
    assert b.tick().ui["3"]["value"] == [2]
    assert sorted(store.ids()) == ["alice", "bob"]
    a.close()
    assert store.ids() == ["bob"]


def test_is_changed_nan_defeats_the_cache(policy):
    workflow = {
        "1": {"class_type": "StubAlwaysChanged", "inputs": {"value": 1}},
        "2": {"class_type": "StubChat", "inputs": {"text": "", "turn": 0}},
        "3": {"class_type": "StubAdd", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
        "4": {"class_type": "StubOutput", "inputs": {"value": ["3", 0]}},
    }
    runner = _runner(workflow, policy)
    runner.start()
    result = runner.turn("chat", "x", 1)
    assert "1" in result.ran


def test_a_failing_node_raises_an_error_naming_it_and_the_runner_goes_on(policy):
    workflow = {
        "1": {"class_type": "StubNumber", "inputs": {"value": 1}},
        "2": {"class_type": "StubBoom", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "StubOutput", "inputs": {"value": ["2", 0]}},
    }
    runner = _runner(workflow, policy)
    with pytest.raises(NodeExecutionError) as caught:
        runner.start()
    assert caught.value.node_id == "2" and caught.value.class_type == "StubBoom"
    assert isinstance(caught.value.__cause__, ZeroDivisionError)


def test_a_turn_for_a_kind_no_node_takes_is_refused(policy):
    runner = _runner(_sum_graph(), policy)
    runner.start()
    with pytest.raises(WorkflowError, match="'action'"):
        runner.turn("action", {}, 1)


# -- cache policies on their own -----------------------------------------------------------------


def test_lru_cache_keeps_results_by_content_and_evicts_the_oldest():
    cache = make_cache("lru", max_size=2)
    cache.put("1", ("k", 1), (1,))
    cache.put("2", ("k", 2), (2,))
    assert cache.get("other-node", ("k", 1)) == (1,)  # by content, not node id
    cache.put("3", ("k", 3), (3,))
    assert cache.get("2", ("k", 2)) is None and len(cache) == 2


def test_classic_cache_keeps_only_the_latest_result_per_node():
    cache = make_cache("classic")
    cache.put("1", ("a",), (1,))
    cache.put("1", ("b",), (2,))
    assert cache.get("1", ("a",)) is None and cache.get("1", ("b",)) == (2,)


def test_unknown_cache_policy_lists_the_known_ones():
    with pytest.raises(ValueError, match="classic, lru, none"):
        make_cache("fifo")


# -- validation ----------------------------------------------------------------------------------


def test_unknown_node_type_names_the_node():
    workflow = _sum_graph()
    workflow["3"]["class_type"] = "NoSuchNode"
    with pytest.raises(UnknownNodeTypeError) as caught:
        validate(workflow, STUBS)
    assert caught.value.node_id == "3" and "NoSuchNode" in str(caught.value)


def test_missing_required_input_names_node_and_input():
    workflow = _sum_graph()
    del workflow["3"]["inputs"]["b"]
    with pytest.raises(MissingInputError) as caught:
        validate(workflow, STUBS)
    assert (caught.value.node_id, caught.value.class_type, caught.value.input_name) == ("3", "StubAdd", "b")


def test_link_of_the_wrong_type_is_a_type_mismatch():
    workflow = _sum_graph()
    workflow["5"] = {"class_type": "StubText", "inputs": {"text": "a", "mode": "upper"}}
    workflow["3"]["inputs"]["b"] = ["5", 0]
    with pytest.raises(InputTypeMismatchError) as caught:
        validate(workflow, STUBS)
    assert caught.value.node_id == "3" and caught.value.expected == "NUMBER" and "TEXT" in caught.value.got


def test_widget_value_of_the_wrong_type_or_range_is_refused():
    workflow = _sum_graph(a="two")
    with pytest.raises(InputTypeMismatchError, match="expects INT"):
        validate(workflow, STUBS)
    with pytest.raises(InvalidInputValueError, match=r"outside \[0, 100\]"):
        validate(_sum_graph(a=101), STUBS)
    text = {"1": {"class_type": "StubText", "inputs": {"text": "a", "mode": "sideways"}}}
    with pytest.raises(InvalidInputValueError, match="not one of"):
        validate(text, STUBS)


def test_cycle_error_names_the_nodes_on_the_loop():
    workflow = {
        "1": {"class_type": "StubNumber", "inputs": {"value": 1}},
        "2": {"class_type": "StubAdd", "inputs": {"a": ["1", 0], "b": ["3", 0]}},
        "3": {"class_type": "StubAdd", "inputs": {"a": ["2", 0], "b": ["1", 0]}},
        "4": {"class_type": "StubOutput", "inputs": {"value": ["3", 0]}},
    }
    with pytest.raises(DependencyCycleError) as caught:
        validate(workflow, STUBS)
    assert sorted(caught.value.cycle) == ["2", "3"]
    assert "StubAdd" in str(caught.value)


def test_link_to_a_missing_node_or_output_slot_is_a_bad_link():
    workflow = _sum_graph()
    workflow["3"]["inputs"]["a"] = ["42", 0]
    with pytest.raises(BadLinkError, match="missing node 42"):
        validate(workflow, STUBS)
    workflow = _sum_graph()
    workflow["3"]["inputs"]["a"] = ["1", 3]
    with pytest.raises(BadLinkError, match="output 3"):
        validate(workflow, STUBS)


def test_workflow_without_an_output_node_is_refused():
    with pytest.raises(WorkflowError, match="no output node"):
        WorkflowGraph({"1": {"class_type": "StubNumber", "inputs": {"value": 1}}}, STUBS)


# -- UI format -----------------------------------------------------------------------------------


def _ui_sum_graph():
    return {
        "last_node_id": 6,
        "last_link_id": 4,
        "nodes": [
            {"id": 1, "type": "StubNumber", "mode": 0, "inputs": [], "widgets_values": [2]},
            {"id": 2, "type": "PrimitiveNode", "mode": 0, "widgets_values": [40]},
            {"id": 3, "type": "StubNumber", "mode": 0, "inputs": [{"name": "value", "type": "INT", "link": 4, "widget": {"name": "value"}}],
             "widgets_values": [5]},
            {"id": 4, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 1}]},
            {"id": 5, "type": "StubAdd", "mode": 0, "inputs": [{"name": "a", "type": "NUMBER", "link": 2}, {"name": "b", "type": "NUMBER", "link": 3}],
             "widgets_values": [0.5]},
            {"id": 6, "type": "StubOutput", "mode": 0, "inputs": [{"name": "value", "type": "NUMBER", "link": 5}]},
            {"id": 7, "type": "Note", "mode": 0, "widgets_values": ["a note"]},
            {"id": 8, "type": "StubText", "mode": 2, "widgets_values": ["muted", "upper"]},
        ],
        "links": [[1, 1, 0, 4, 0, "NUMBER"], [2, 4, 0, 5, 0, "NUMBER"], [3, 3, 0, 5, 1, "NUMBER"], [4, 2, 0, 3, 0, "INT"],
                  [5, 5, 0, 6, 0, "NUMBER"]],
    }


def test_ui_format_converts_widgets_links_reroutes_and_primitives():
    api = ui_to_api(_ui_sum_graph(), STUBS)
    assert api == {
        "1": {"class_type": "StubNumber", "inputs": {"value": 2}},
        "3": {"class_type": "StubNumber", "inputs": {"value": 40}},  # converted widget: the link wins
        "5": {"class_type": "StubAdd", "inputs": {"scale": 0.5, "a": ["1", 0], "b": ["3", 0]}},
        "6": {"class_type": "StubOutput", "inputs": {"value": ["5", 0]}},
    }
    assert _runner(api, "classic").start().ui["6"] == {"value": [21.0]}


def test_ui_format_skips_the_seed_control_value():
    class Seeded:
        RETURN_TYPES = ("NUMBER",)
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"seed": ("INT", {"default": 0}), "steps": ("INT", {"default": 1})}}

    ui = {"nodes": [{"id": 1, "type": "Seeded", "mode": 0, "widgets_values": [123, "randomize", 4]}], "links": []}
    assert ui_to_api(ui, {"Seeded": Seeded})["1"]["inputs"] == {"seed": 123, "steps": 4}


def test_ui_format_with_an_unknown_node_type_names_it():
    ui = {"nodes": [{"id": 9, "type": "Missing", "mode": 0, "widgets_values": []}], "links": []}
    with pytest.raises(UnknownNodeTypeError) as caught:
        ui_to_api(ui, STUBS)
    assert caught.value.node_id == "9"


def test_not_a_workflow_is_a_format_error(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("[1, 2]")
    with pytest.raises(WorkflowError, match="JSON object"):
        load_workflow(path, STUBS)
    with pytest.raises(WorkflowError, match="not a ComfyUI workflow"):
        to_api({"hello": 1}, STUBS)


# -- the saved workflows with the real persona nodes ------------------------------------------


@pytest.mark.parametrize("name", ["persona_preview_chat"])
def test_every_ui_workflow_converts_to_its_committed_api_twin(name):
    ui = load_workflow(REPO / "workflows" / f"{name}.json", NODE_CLASS_MAPPINGS)
    api = json.loads((REPO / "workflows" / "api" / f"{name}_api.json").read_text())
    assert ui == api


def test_preview_workflow_streams_frames_and_applies_a_chat_turn(policy):
    graph = WorkflowGraph(load_workflow(REPO / "workflows" / "api" / "persona_preview_chat_api.json", NODE_CLASS_MAPPINGS),
                          NODE_CLASS_MAPPINGS)
    assert graph.turn_lane == ["1", "2", "3", "4"] and graph.stream_lane == ["5", "6", "7"]
    store = SessionStore()
    events = []
    store.open("viewer", listener=CallbackListener(lambda kind, payload: events.append((kind, payload))))
    runner = StreamingRunner(graph, store, "viewer", cache=make_cache(policy))
    runner.start()
    assert [k for k, _ in events] == ["state", "chunk"]  # the turn nodes did nothing: turn -1
    events.clear()
    runner.turn("action", {"action": "sit", "expression": "smile", "intensity": 0.5, "duration_s": 0.0, "dialogue": ""}, 1)
    runner.tick()
    kinds = [k for k, _ in events]
    assert kinds[0] == "state" and events[0][1]["state"]["action"] == "sit"
    chunk = next(p["frames"].chunk for k, p in events if k == "chunk")
    assert chunk.shows_directives == [1] and chunk.frames.shape[1:] == (384, 384, 3)
    runner.close()
    assert store.ids() == []
