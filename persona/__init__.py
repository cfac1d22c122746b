"""The conversation side: contract, vocabulary, persona cards, conversation, interpreters,
state tracking. Never imports torch, `video` or ComfyUI (checked by import-linter)."""
