"""R_PIT scoring of N candidates against one (x, y_ref): one shared prefill against N separate rows.

    python -m benchmarks.pit_scoring --json runs/bench/pit_scoring.json [--repeats 5] [--shapes 256x32x4,256x32x16]

Workload "PxSxN": a prefix (x, y_ref) of P tokens and N candidates y of S tokens each, SmolLM2-135M
with a scalar head (`training.reward_model`). Ours is `reward_model.score_candidates`: the prefix runs
once into a KV cache that the N candidate rows read (`model.fork_cache`). The peer is the same model
on the N full rows prefix ++ candidate (`reward_model.last_hidden` + the head), the cost of scoring
without the shared prefix. Both are jitted float32; tokens/s counts the N * (P + S) row tokens whose
reward is computed, so the two rates compare the same work; "ratio" = ours / separate.
"""

from __future__ import annotations

import jax
import numpy as np

from benchmarks import common
from sharpen_jax import weights
from sharpen_jax.training import reward_model


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0],
                             lambda p: p.add_argument("--shapes", default="256x32x4,256x32x16"))
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    config, params = weights.load("smollm2-135m-instruct")
    head = reward_model.init_head(config, jax.random.key(0))
    separate = jax.jit(lambda p, h, tokens, valid: reward_model.head_reward(
        h, reward_model.last_hidden(p, config, tokens, valid)))
    rng = np.random.default_rng(0)
    workloads = []
    for p, s, n in shapes:
        prefix = rng.integers(100, config.vocab_size, (1, p)).astype(np.int32)
        suffix = rng.integers(100, config.vocab_size, (n, s)).astype(np.int32)
        lengths = np.full(n, s, np.int32)
        prefix_valid = np.ones((1, p), bool)
        rows = np.concatenate([np.repeat(prefix, n, axis=0), suffix], axis=1)
        rows_valid = np.ones(rows.shape, bool)
        shared_fn = lambda: reward_model.score_candidates(params, head, config, prefix, prefix_valid, suffix,  # noqa
                                                          lengths, n).block_until_ready()
        separate_fn = lambda: separate(params, head, rows, rows_valid).block_until_ready()  # noqa: E731
        np.testing.assert_allclose(np.asarray(shared_fn()), np.asarray(separate_fn()), atol=1e-3, rtol=1e-3)
        ours, peer = (common.time_call(fn, repeats=args.repeats) for fn in (shared_fn, separate_fn))
        tokens = n * (p + s)
        workloads.append({
            "name": f"smollm2-135m r_pit {p}x{s}x{n}", "unit": "tokens/s", "ours": tokens / ours["median_s"],
            "peers": {"separate_prefill": tokens / peer["median_s"]},
            "peer_notes": {"separate_prefill": "the same jitted model on the N full rows prefix ++ candidate"},
            "bound": None, "ratio": peer["median_s"] / ours["median_s"], "compile_s": ours["first_call_s"],
            "ours_median_s": ours["median_s"], "separate_median_s": peer["median_s"]})
    common.write_report(args.json, "pit_scoring", workloads)


if __name__ == "__main__":
    main()
