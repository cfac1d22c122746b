"""headless layer (see ARCHITECTURE.md)."""
