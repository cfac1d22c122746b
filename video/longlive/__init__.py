"""LongLive: the real-time engine (causal Wan2.1-T2V-1.3B, few-step, KV window with a frame sink).

Importing this package imports torch (model, sampler); `config` alone stays cheap except
for `WanConfig`, which is plain data.
"""
