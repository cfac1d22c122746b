"""Built-in persona cards (Character Card V3 JSON files; data only, loaded by `persona.library`)."""
