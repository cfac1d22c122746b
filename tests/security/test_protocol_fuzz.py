"""Fuzz target for the protocol parser: any text frame gives a typed message or a
`ProtocolError` with a PROTOCOL.md code — never another exception, never unbounded work.

Hypothesis generates JSON-shaped and raw inputs (derandomized, a bounded number of examples,
so CI runs the same cases in a few seconds; `PERSONA_FUZZ_EXAMPLES=100000` runs longer), and
the committed corpus (tests/security/corpus/protocol/) replays every input that once mattered:
deep nesting, lone surrogates, NaN/Infinity, right-to-left and zero-width text, paths.
"""

from __future__ import annotations

import json
import os
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfyui_persona.headless.server.protocol import (
    CLIENT_TYPES,
    ERROR_CODES,
    ClientMessage,
    ProtocolError,
    parse,
)
from paths import REPO

CORPUS = REPO / "tests" / "security" / "corpus" / "protocol"
EXAMPLES = int(os.environ.get("PERSONA_FUZZ_EXAMPLES", "250"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text()
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20)
FIELDS = st.sampled_from(["id", "text", "persona", "session", "token", "video", "directive", "on", "max_fps",
                          "action", "expression", "intensity", "dialogue", "duration_s"])
MESSAGES = st.builds(
    lambda kind, fields: {"type": kind, **fields},
    st.sampled_from(CLIENT_TYPES) | st.text(max_size=12),
    st.dictionaries(FIELDS, JSON, max_size=5),
)
DIRECTIVES = st.builds(
    lambda fields: {"type": "action", "id": "a", "directive": fields},
    st.dictionaries(FIELDS, SCALARS, max_size=6),
)


def _check(data: str) -> None:
    began = time.perf_counter()
    try:
        message = parse(data)
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES and exc.message
    else:
        assert isinstance(message, ClientMessage.__args__)
    assert time.perf_counter() - began < 1.0, "one frame must never cost the loop a second"


@FUZZ
@given(MESSAGES)
def test_structured_messages_parse_or_fail_cleanly(message):
    _check(json.dumps(message, allow_nan=True))


@FUZZ
@given(DIRECTIVES)
def test_directives_parse_or_fail_cleanly(message):
    _check(json.dumps(message, allow_nan=True))


@FUZZ
@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_raw_text_parses_or_fails_cleanly(data):
    _check(data)


def test_the_committed_corpus():
    files = sorted(CORPUS.glob("*.json"))
    assert len(files) >= 15
    for path in files:
        _check(path.read_bytes().decode("utf-8", "surrogatepass"))
