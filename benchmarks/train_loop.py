"""What the loop's lagged finiteness check buys: `train_loop` updates/s with the check of update t-1
read after update t is dispatched, against the same loop forced to sync on every update (the loop
before the change read `metrics["finite"]` right after each step).

    python -m benchmarks.train_loop --json runs/bench/train_loop.json --repeats 3 [--workloads "toy b8 t64"]

Workloads: a toy transformer (the smoke presets' shape) and the SmolLM2-135M shape (random
weights), SFT step on a fixed batch, `log_every` large so logging does not sync either. Both loops
run in the same process, alternating, after a warm-up; medians of `--repeats` runs.
"""

from __future__ import annotations

import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from sharpen_jax.config import TransformerConfig
from sharpen_jax.methods import get_loss
from sharpen_jax.testing import random_params
from sharpen_jax.training import train_loop
from sharpen_jax.training.policies import make_policy_state

WORKLOADS = {"toy b8 t64": (TransformerConfig.tiny(vocab_size=97, max_seq_len=128), 8, 64, 200),
             "smollm2-135m b2 t64": (TransformerConfig.smollm2_135m(), 2, 64, 20)}


def loop_seconds(config: TransformerConfig, batch: int, seq: int, steps: int, sync_every_update: bool) -> float:
    """Wall seconds of `train_loop` over `steps` SFT updates (compiled beforehand, no checkpoint in between)."""
    tx = optax.adamw(1e-5)
    policy, state = make_policy_state(config, random_params(config, 0), tx, jax.random.key(0))
    step = get_loss("sft").make_step(policy.logprob_fn, tx)
    rng = np.random.default_rng(0)
    seqs = {"tokens": jnp.asarray(rng.integers(0, config.vocab_size, (batch, seq)), jnp.int32),
            "valid": jnp.ones((batch, seq), bool), "target": jnp.ones((batch, seq), bool).at[:, 0].set(False)}

    def update(state, _):
        state, metrics = step(state, None, {"seqs": seqs})
        if sync_every_update:
            bool(metrics["finite"])  # what the loop did before: wait for every update
        return state, metrics

    jax.block_until_ready(update(state, 0))  # compile (donates a copy the loop does not use)
    _, state = make_policy_state(config, random_params(config, 0), tx, jax.random.key(0))
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        train_loop(state, update, workdir=workdir, num_steps=steps, save_every=10**9, log_every=10**9,
                   progress=False)
        return time.perf_counter() - start


def main() -> None:
    """Measure both loops on each workload and write the JSON report."""
    args = common.parse_args(__doc__.splitlines()[0], lambda parser: parser.add_argument(
        "--workloads", nargs="+", choices=sorted(WORKLOADS), default=sorted(WORKLOADS),
        help="which workloads to run (default: all)"))
    workloads = []
    for name in args.workloads:
        config, batch, seq, steps = WORKLOADS[name]
        times = {True: [], False: []}
        for _ in range(args.repeats):
            for synced in (False, True):
                times[synced].append(loop_seconds(config, batch, seq, steps, synced))
        lagged, synced = (float(np.median(times[k])) for k in (False, True))
        workloads.append({"name": name, "unit": "updates/s", "ours": steps / lagged,
                          "peers": {"per-update host sync": steps / synced},
                          "peer_notes": {"per-update host sync": "the same loop reading metrics['finite'] after "
                                                                 "every update, as before the lagged check"},
                          "bound": None, "steps": steps, "seconds": {"lagged": times[False], "synced": times[True]}})
    common.write_report(args.json, "train_loop", workloads)


if __name__ == "__main__":
    main()
