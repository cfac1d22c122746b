"""Text conditioning for the LongLive engine: prompt composition and the UMT5 encoder.

`prompt` (pure Python) turns a directive into prompt text; `umt5` (torch, transformers)
turns prompt text into the 512×4096 embedding the DiT cross-attends to, cached per prompt.
The package root imports nothing heavy.
"""
