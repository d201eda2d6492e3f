#!/usr/bin/env bash
# The test command: set up (idempotent), then run the default (fast) test suite.
# Slow tests: scripts/test.sh -m slow
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
