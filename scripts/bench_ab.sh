#!/usr/bin/env bash
# Side-by-side A/B of two checkouts on one machine: the `sft_step` worker of benchmarks.training
# (full fine-tuning and LoRA, 2 cores) and benchmarks.sampling (ours only), alternating between the
# two checkouts round by round so that a change in machine load hits both sides alike.
#   bash scripts/bench_ab.sh BEFORE_CHECKOUT OUT_DIR [ROUNDS]
# BEFORE_CHECKOUT is a second work tree (e.g. `git worktree add --detach ../before 8a0dd78`); both
# sides run with this checkout's .venv (Python puts the working directory first on sys.path, so each
# side imports its own sharpen_jax). Prints one line per run; the JSON files land in OUT_DIR.
set -euo pipefail
before=$(cd "$1" && pwd); out=$(mkdir -p "$2" && cd "$2" && pwd); rounds=${3:-3}
after=$(cd "$(dirname "$0")/.." && pwd); py="$after/.venv/bin/python"
for round in $(seq "$rounds"); do
  for side in before after; do
    dir=$before; [ "$side" = after ] && dir=$after
    for lora in "" "--worker-lora"; do
      json="$out/train_${side}_${round}${lora:+_lora}.json"
      (cd "$dir" && "$py" -m benchmarks.training --json "$json" --model smollm2-135m --dtype float32 \
        --batch 4 --seq 128 --warmup 2 --repeats 5 --worker-cores 2 $lora) >/dev/null
      echo "round $round $side sft_step ${lora:+lora}${lora:-full}: $("$py" -c "import json,sys; print(round(json.load(open(sys.argv[1]))['tokens_per_s'], 1))" "$json") tokens/s (load $(cut -d' ' -f1 /proc/loadavg))"
    done
    json="$out/sampling_${side}_${round}.json"
    (cd "$dir" && "$py" -m benchmarks.sampling --json "$json" --skip-peers --repeats 2) >/dev/null
    echo "round $round $side sampling: $("$py" -c "import json,sys; print(', '.join(f\"{w['name']}={w['ours']:.1f} {w['unit']}\" for w in json.load(open(sys.argv[1]))['workloads']))" "$json")"
  done
done
