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


def test_every_exception_class_of_the_pack_derives_from_the_one_root():
    """Every module imports (the test extras are installed), and every exception class it
    defines is a PersonaError, so hosts can tell an explained failure from a bug with one
    `except` (errors.py)."""
    import importlib
    import inspect
    import pkgutil

    import comfyui_persona

    outside = []
    for info in pkgutil.walk_packages(comfyui_persona.__path__, "comfyui_persona."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__
                    and not issubclass(obj, PersonaError)):
                outside.append(f"{obj.__module__}.{obj.__qualname__}")
    assert not outside, outside
