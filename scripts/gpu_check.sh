#!/usr/bin/env bash
# The GPU check (issue 14), for a machine with an NVIDIA GPU:
#   1. sets up .venv (scripts/setup.sh), installs the gpu extra (jax[cuda12]) and checks that JAX sees a GPU;
#   2. runs the device-independent tests on it: parity with transformers (tests/test_model_golden.py),
#      the sampler = scorer invariant (tests/test_sampling.py, tests/test_scoring.py) and exact resume
#      (tests/test_checkpoint_resume.py);
#   3. runs benchmarks.sampling and benchmarks.training at the Llama-3.2-1B shape in bfloat16;
#   4. prints the fraction of the HBM-bandwidth bound reached when decoding and the training MFU
#      (targets: >= 0.70 and >= 0.40), and writes both JSON reports under OUT.
#
#   bash scripts/gpu_check.sh [--out DIR]        # on the GPU machine (default OUT: runs/gpu_check)
#   bash scripts/gpu_check.sh --dry-run [--out DIR]
#
# --dry-run is the same sequence on CPU at tiny shapes: no install, the tests are only collected,
# the benchmarks run the tiny model in float32 (tests/test_gpu_check.py runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
OUT=runs/gpu_check
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT="$2"; shift ;;
    *) echo "gpu_check.sh: unknown argument $1 (expected --dry-run or --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT"
PY=.venv/bin/python
TESTS=(tests/test_model_golden.py tests/test_sampling.py tests/test_scoring.py tests/test_checkpoint_resume.py)

if [ "$DRY" = 1 ]; then
  [ -x "$PY" ] || bash scripts/setup.sh
  export JAX_PLATFORMS=cpu
  MODEL=tiny; DTYPE=float32
  SAMPLING_ARGS=(--prompts 2 --samples 2 --prompt-len 8 --new 4 --repeats 1)
  TRAINING_ARGS=(--batch 2 --seq 16 --repeats 1 --warmup 0)
  PYTEST_ARGS=(--collect-only -q)
else
  bash scripts/setup.sh
  "$PY" -m pip install -q -e ".[gpu]"
  MODEL=llama3-1b; DTYPE=bfloat16
  SAMPLING_ARGS=(--prompts 16 --samples 16 --prompt-len 100 --new 256 --repeats 5)
  TRAINING_ARGS=(--batch 8 --seq 2048 --repeats 5 --warmup 2)
  PYTEST_ARGS=(-q -x)
fi

echo "== 1. devices"
"$PY" - "$DRY" <<'EOF'
import sys
import jax
platform = jax.devices()[0].platform
print(f"jax {jax.__version__}: {jax.device_count()} {platform} device(s): {jax.devices()[0].device_kind}")
if sys.argv[1] == "0" and platform != "gpu":
    sys.exit(f"gpu_check.sh: JAX sees no GPU (platform {platform!r}); is the CUDA 12 driver installed?")
EOF

echo "== 2. device-independent tests: ${TESTS[*]}"
"$PY" -m pytest "${PYTEST_ARGS[@]}" "${TESTS[@]}"

echo "== 3. benchmarks at the $MODEL shape, $DTYPE"
"$PY" -m benchmarks.sampling --json "$OUT/sampling.json" --model "$MODEL" --dtype "$DTYPE" --skip-peers \
  "${SAMPLING_ARGS[@]}"
"$PY" -m benchmarks.training --json "$OUT/training.json" --model "$MODEL" --dtype "$DTYPE" --no-peers \
  "${TRAINING_ARGS[@]}"

echo "== 4. fractions of the bounds"
"$PY" - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
for name, label, target in (("sampling", "decoding: fraction of the HBM-bandwidth bound", 0.70),
                            ("training", "training: MFU", 0.40)):
    with open(os.path.join(out, f"{name}.json")) as f:
        doc = json.load(f)
    for w in doc["workloads"]:
        if "fraction_of_bound" in w:
            verdict = "meets" if w["fraction_of_bound"] >= target else "below"
            print(f"{label}: {w['fraction_of_bound']:.3f} ({w['name']}; {w['ours']:.1f} {w['unit']}; "
                  f"{verdict} the target {target:.2f})")
EOF
