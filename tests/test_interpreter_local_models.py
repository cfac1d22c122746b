"""Packaged GGUF models for the local LLM server: a model shipped in chunk packages is
assembled (in order, through an atomic write) and checked to be a GGUF; a missing chunk is a
ModelFileMissingError naming it."""

from __future__ import annotations

import sys

import pytest

from comfyui_persona.errors import ModelFileMissingError
from comfyui_persona.persona.interpreter.local_llm import LocalServerError, PackagedModel


@pytest.fixture
def chunk_packages(tmp_path, monkeypatch):
    root = tmp_path / "site"
    for i, data in enumerate((b"GGUF-part-one|", b"part-two|", b"part-three"), start=1):
        package = root / f"fake_gguf_part{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / "chunk.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(root))
    yield root
    for i in (1, 2, 3):
        sys.modules.pop(f"fake_gguf_part{i}", None)


def _model(order=(1, 2, 3)) -> PackagedModel:
    return PackagedModel(
        "fake", "fake.gguf", tuple(f"fake_gguf_part{i}" for i in order), ("data/chunk.bin",) * len(order)
    )


def test_chunks_are_assembled_in_order_once(chunk_packages, tmp_path):
    model = _model()
    assert model.installed()
    path = model.path(cache=tmp_path / "cache")
    assert path.read_bytes() == b"GGUF-part-one|part-two|part-three"
    mtime = path.stat().st_mtime_ns
    assert model.path(cache=tmp_path / "cache").stat().st_mtime_ns == mtime  # not rewritten


def test_chunks_out_of_order_are_not_a_gguf(chunk_packages, tmp_path):
    with pytest.raises(LocalServerError, match="not a GGUF"):
        _model((2, 1, 3)).path(cache=tmp_path / "cache")


def test_a_missing_chunk_names_the_file(chunk_packages, tmp_path):
    (chunk_packages / "fake_gguf_part2" / "data" / "chunk.bin").unlink()
    with pytest.raises(ModelFileMissingError, match="chunk.bin"):
        _model().path(cache=tmp_path / "cache")
