"""Interpreter backends: free text → ordered directives plus an in-character reply."""
