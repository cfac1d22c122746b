"""The models directory: resolution, the named missing-file error, `persona models check`."""

import pytest
import torch

from comfyui_persona.headless.cli import main
from comfyui_persona.video import model_files
from comfyui_persona.video.longlive.checkpoint import add_wrapper_prefix
from comfyui_persona.video.longlive.config import WanConfig
from comfyui_persona.video.longlive.model import CausalWanModel


def test_models_dir_prefers_argument_then_env_then_default(monkeypatch, tmp_path):
    monkeypatch.delenv(model_files.ENV_VAR, raising=False)
    assert model_files.models_dir() == model_files.DEFAULT_DIR.expanduser()
    monkeypatch.setenv(model_files.ENV_VAR, str(tmp_path / "env"))
    assert model_files.models_dir() == tmp_path / "env"
    assert model_files.models_dir(tmp_path / "arg") == tmp_path / "arg"


def test_missing_file_error_names_file_size_and_source(tmp_path):
    with pytest.raises(model_files.CheckpointNotFoundError) as err:
        model_files.find("longlive.generator", tmp_path)
    text = str(err.value)
    assert "longlive/longlive_base.pt" in text and "about 5.29 GiB" in text
    assert "huggingface.co/Efficient-Large-Model/LongLive-1.3B" in text and str(tmp_path) in text


def test_find_accepts_alternative_name(tmp_path):
    (tmp_path / "lora.pt").write_bytes(b"x")
    assert model_files.find("longlive.lora", tmp_path) == tmp_path / "lora.pt"


def test_registering_a_key_twice_with_other_content_fails():
    spec = model_files.FILES["longlive.lora"]
    model_files.register(spec)  # same spec again: harmless
    with pytest.raises(model_files.DuplicateModelFileError, match="longlive.lora"):
        model_files.register(model_files.ModelFile(**{**spec.__dict__, "size_bytes": 1}))


def test_models_check_lists_missing_files_with_source(tmp_path, capsys):
    assert main(["models", "check", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "MISSING  longlive/longlive_base.pt" in out
    assert "get it from https://huggingface.co/Efficient-Large-Model/LongLive-1.3B" in out


def test_models_check_reports_a_generator_of_the_wrong_layout(tmp_path, capsys):
    (tmp_path / "longlive").mkdir()
    odd = CausalWanModel(WanConfig.from_name("tiny").replace(ffn_dim=80))  # the size of no preset
    torch.save({"generator": add_wrapper_prefix(odd.state_dict())}, tmp_path / "longlive" / "longlive_base.pt")
    assert main(["models", "check", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "BAD" in out and "ffn 80" in out and "matches no known Wan preset" in out
