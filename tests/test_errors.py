"""The error root and the one missing-model-file error (errors.py)."""

import pickle

from comfyui_persona.errors import ModelFileMissingError, PersonaError


def test_missing_model_file_names_file_size_and_source():
    error = ModelFileMissingError(
        "taew2_1.pth", purpose="tiny decoder", source="https://example.org/taew2_1.pth",
        looked_in=["/m/taew2_1.pth"], size_bytes=22 * 2**20,
    )
    assert isinstance(error, PersonaError) and isinstance(error, FileNotFoundError)
    text = str(error)
    assert "taew2_1.pth" in text and "22 MiB" in text and "https://example.org/taew2_1.pth" in text and "/m/taew2_1.pth" in text
    payload = error.payload()
    assert payload["code"] == "model_file_missing" and payload["size_bytes"] == 22 * 2**20
    again = pickle.loads(pickle.dumps(error))
    assert again.payload() == payload
