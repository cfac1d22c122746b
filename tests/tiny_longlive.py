"""The tiny LongLive engine the CPU tests drive: the `tiny` DiT fitted to the tiny UMT5 and
the 16-channel TAEW2.1, random weights (importable because pytest's `pythonpath` holds tests/)."""

from __future__ import annotations

import functools


@functools.cache
def text_encoder(text_len: int):
    """One tiny UMT5 per text length for the whole run: building one trains a tokenizer, and
    the encoder is reproducible (tests/test_umt5.py) and never changed by a test."""
    from comfyui_persona.video.text.umt5 import tiny_text_encoder

    return tiny_text_encoder(text_len=text_len)


def tiny_engine(text_len: int, **kwargs):
    """A fresh `LongLiveBackend` (engine options in `kwargs`) on the tiny DiT (seed 0, std 0.2)
    with `text_len` tokens, the shared tiny UMT5 and a tiny TAEW2.1; torch's global generator
    is seeded 0 first, so every test starts from the same noise."""
    import torch

    from comfyui_persona.video.decoders.taehv import tiny_taehv
    from comfyui_persona.video.longlive.engine import LongLiveBackend
    from comfyui_persona.video.longlive.testing import tiny_dit

    torch.manual_seed(0)
    model = tiny_dit(in_dim=16, out_dim=16, text_dim=32, text_len=text_len)
    return LongLiveBackend(model, text_encoder(text_len), tiny_taehv(), **kwargs)
