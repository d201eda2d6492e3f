#!/usr/bin/env bash
# The main job: set up (idempotent), then inference-time sharpening (best-of-N with self-rewards)
# on SmolLM2-135M-Instruct with the `cpu` preset. Extra arguments go to the experiment
# (ml_collections overrides such as --config.KEY=VALUE).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m experiments.inference_sharpening \
  --config=experiments/configs/inference_sharpening.py:cpu --workdir "${WORKDIR:-runs/inference_cpu}" "$@"
