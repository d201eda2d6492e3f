"""Teacher-forced scoring throughput of SmolLM2-135M or Gemma 3 270M on CPU, side by side with transformers.

    python -m benchmarks.scoring --json runs/bench/scoring.json [--repeats 5] [--shapes 1x128,4x256,16x256]
        [--model smollm2-135m|gemma3-270m]

Workload "BxT": B sequences of T tokens, every token after the first is scored (per-token
log-probs of the whole sequence: forward pass, log-softmax, gather). Ours is
`scoring.score_sequences` (jitted, float32). The peer is Hugging Face transformers' forward pass on
the same dequantized GGUF weights followed by the same log-softmax + gather, in PyTorch at the
faster of 1 and 2 threads (both measured and recorded). The bound is the machine's measured float32
matmul FLOP/s divided by the model's forward FLOPs per token.
"""

from __future__ import annotations

import numpy as np

from benchmarks import common
from sharpen_jax import scoring, weights


def _torch_scorer(tokens_BT: np.ndarray, model: str):
    """A closure running transformers' forward + log-softmax + gather, or (None, reason)."""
    hf_model, reason = common.transformers_gguf(model)
    if hf_model is None:
        return None, reason
    import torch

    ids = torch.as_tensor(tokens_BT, dtype=torch.long)

    def run():
        with torch.no_grad():
            logits = hf_model(input_ids=ids).logits[:, :-1]
            return torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).sum().item()

    return run, None


def main() -> None:
    def extra(parser):
        parser.add_argument("--shapes", default="1x128,4x256,16x256")
        parser.add_argument("--model", default="smollm2-135m", choices=tuple(common.REAL_MODELS))

    args = common.parse_args(__doc__.splitlines()[0], extra)
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    config, params = weights.load(common.REAL_MODELS[args.model])
    peak = common.measured_matmul_flops()
    rng = np.random.default_rng(0)
    workloads = []
    for b, t in shapes:
        tokens = rng.integers(100, config.vocab_size, (b, t)).astype(np.int32)
        valid = np.ones((b, t), bool)
        ours = common.time_call(lambda: scoring.score_sequences(params, config, tokens, valid, valid)
                                .sum_logprob.block_until_ready(), repeats=args.repeats)
        torch_run, reason = _torch_scorer(tokens, args.model)
        peers, notes = {"transformers": None}, {}
        if torch_run is None:
            notes["transformers"] = reason
        else:
            threads, by_threads = common.fastest_torch_threads(torch_run)
            timing = common.time_call(torch_run, repeats=args.repeats)
            peers["transformers"] = b * t / timing["median_s"]
            notes["transformers"] = f"torch threads={threads}; median s by threads: " + ", ".join(
                f"{k}: {v:.3f}" for k, v in by_threads.items())
        bound = peak / config.flops_per_token(t / 2)
        workloads.append({
            "name": f"{args.model} score {b}x{t}", "unit": "tokens/s", "ours": b * t / ours["median_s"],
            "peers": peers, "peer_notes": notes, "bound": {"value": bound, "kind": "compute"},
            "fraction_of_bound": b * t / ours["median_s"] / bound, "compile_s": ours["first_call_s"],
            "ours_median_s": ours["median_s"]})
    common.write_report(args.json, "scoring", workloads, {"matmul_flops": peak})


if __name__ == "__main__":
    main()
