#!/usr/bin/env bash
# Set up (scripts/setup.sh test), check the layer contracts and lint, run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
.venv/bin/lint-imports --no-cache .importlinter
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
