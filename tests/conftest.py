"""Shared fixtures. Collecting the tests imports no torch (tests/test_packaging.py checks)."""
