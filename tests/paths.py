"""Where things are, for tests (importable because pytest's `pythonpath` holds tests/)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
CHECKPOINT_MANIFESTS = FIXTURES / "checkpoints"
#: The team's shared folder beside the checkout (present for developers and CI, not for users).
SHARED = REPO.parent / "shared"
#: The directive contract, vendored from shared/ (tests/test_schema.py checks the copy is current).
DIRECTIVE_SCHEMA = REPO / "docs" / "contracts" / "directive.schema.json"
