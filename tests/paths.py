"""Where things are, for tests (importable because pytest's `pythonpath` holds tests/)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
CHECKPOINT_MANIFESTS = FIXTURES / "checkpoints"
#: The team's shared folder beside the checkout (present for developers and CI, not for users).
SHARED = REPO.parent / "shared"
#: The directive contract, vendored from shared/ (tests/test_schema.py checks the copy is current).
DIRECTIVE_SCHEMA = REPO / "docs" / "contracts" / "directive.schema.json"


def publish_doc_image(shot: Path, name: str) -> None:
    """Copy a test screenshot to docs/images/ for the README, only when asked
    (PERSONA_UPDATE_DOC_IMAGES=1): a normal test run leaves tracked files alone."""
    import os
    import shutil

    if os.environ.get("PERSONA_UPDATE_DOC_IMAGES") == "1":
        (REPO / "docs" / "images").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, REPO / "docs" / "images" / name)
