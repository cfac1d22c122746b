"""Latent → pixel decoders (and the Wan VAE encoder) for the LongLive engine.

`wan_vae` is the full Wan 2.1 VAE (quality, and encoding the identity reference);
`taehv` is the tiny TAEW2.1 decoder (real-time preview quality). Both stream chunk by
chunk with their temporal state carried over, behind `streaming.StreamingDecoder`.
Importing this package imports torch; the modules load lazily nothing else.
"""
