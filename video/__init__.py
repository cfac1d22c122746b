"""The generation side: renderer backends (preview, LongLive), transitions, attention,
identity, decoders and model loading. From `persona` it imports only `persona.schema`."""
