"""Sampling throughput: N completions per prompt on SmolLM2-135M or Gemma 3 270M, side by side with peers.

    python -m benchmarks.sampling --json runs/bench/sampling.json [--prompts 16 --samples 16 --new 64]
        [--model smollm2-135m|gemma3-270m]

Workload (issue 3): 16 prompts of 100 tokens, N = 16 samples each, 64 new tokens, temperature 1,
no truncation, every sequence forced to the full 64 tokens (no stop), float32. Reported: generated
tokens/s (prompts x N x new / wall time, prefill included) for
  * ours: `sampling.sample` (one prefill per prompt, cache forked N ways, on-device while_loop);
  * transformers: `generate(do_sample=True, num_return_sequences=N, top_k=0, min_new_tokens=new)`
    on the same dequantized GGUF weights, PyTorch at the faster of 1 and 2 threads (both timed);
  * llama.cpp (llama-cpp-python, optional): the same GGUF (its native Q4_1/Q8_0 weights), one
    prefill per prompt, KV copied to N sequences, all N x prompts sequences decoded in one batch
    per step (see benchmarks/llama_cpp_peer.py);
and the compute bound (measured matmul FLOP/s over the model's FLOPs per generated token) with the
fraction reached. Batch-1 greedy latency per token is reported as a second workload.

    python -m benchmarks.sampling --json PATH --model llama3-1b --dtype bfloat16 --skip-peers

runs the same workload on a Llama-3.2-1B-shaped configuration with random weights (for a GPU),
with the memory-bandwidth bound of decoding as the reference: every decode step reads all weights
once plus each row's KV cache, so rows / (bytes per step / measured bandwidth) tokens/s at most.
"""

from __future__ import annotations

import jax
import numpy as np

from benchmarks import common
from sharpen_jax import sampling, weights
from sharpen_jax.testing import random_params
from sharpen_jax.config import TransformerConfig

BANDWIDTH_MODELS = {"llama3-1b": TransformerConfig.llama3_1b, "tiny": TransformerConfig.tiny}


def _transformers_peer(model: str, prompts: np.ndarray, num_samples: int, new_tokens: int):
    """(tokens/s, note) for transformers' generate at its faster thread count, or (None, reason)."""
    hf_model, reason = common.transformers_gguf(model)
    if hf_model is None:
        return None, reason
    import torch

    ids = torch.as_tensor(prompts, dtype=torch.long)

    def run():
        torch.manual_seed(0)
        with torch.no_grad():
            out = hf_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                    temperature=1.0, top_k=0, top_p=1.0, num_return_sequences=num_samples,
                                    max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)
        assert out.shape == (len(prompts) * num_samples, prompts.shape[1] + new_tokens)

    threads, by_threads = common.fastest_torch_threads(run, repeats=1)
    generated = prompts.shape[0] * num_samples * new_tokens
    note = "torch threads={}; seconds by threads: {}".format(
        threads, ", ".join(f"{k}: {v:.1f}" for k, v in by_threads.items()))
    return generated / by_threads[threads], note


def _llama_cpp_peer(model: str, prompts: np.ndarray, num_samples: int, new_tokens: int):
    try:
        from benchmarks import llama_cpp_peer
    except ImportError as err:
        return None, f"llama-cpp-python not installed ({err})"
    return llama_cpp_peer.batched_sampling_tokens_per_s(weights.resolve(common.REAL_MODELS[model]), prompts,
                                                        num_samples, new_tokens)


def _time_ours(params, config, args) -> tuple[np.ndarray, dict]:
    """The random prompts [prompts, prompt_len] and the timing of sampling N completions of each."""
    low = min(100, config.vocab_size // 2)  # ids >= 100 skip special tokens; the tiny vocabulary has 97
    prompts = np.random.default_rng(0).integers(low, config.vocab_size, (args.prompts, args.prompt_len))
    timing = common.time_call(lambda: sampling.sample(params, config, prompts.tolist(), num_samples=args.samples,
                                                      max_new_tokens=args.new, rng=jax.random.key(0)),
                              repeats=args.repeats)
    return prompts, timing


def main() -> None:
    def extra(parser):
        parser.add_argument("--prompts", type=int, default=16)
        parser.add_argument("--samples", type=int, default=16)
        parser.add_argument("--prompt-len", type=int, default=100)
        parser.add_argument("--new", type=int, default=64)
        parser.add_argument("--skip-peers", action="store_true", help="measure ours and the bound only")
        parser.add_argument("--model", default="smollm2-135m", choices=(*common.REAL_MODELS, *BANDWIDTH_MODELS),
                            help="llama3-1b (tiny: its CPU dry run): random weights, memory-bandwidth bound, no peers")
        parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                            help="our compute and weight dtype (the peers stay float32)")

    args = common.parse_args(__doc__.splitlines()[0], extra)
    if args.model in BANDWIDTH_MODELS:
        return _bandwidth_bound_run(args)
    config, params = weights.load(common.REAL_MODELS[args.model], dtype=args.dtype)
    peak = common.measured_matmul_flops(dtype=config.compute_dtype)
    prompts, ours = _time_ours(params, config, args)
    generated = args.prompts * args.samples * args.new
    # FLOPs per generated token: decode attends to prompt + half the new tokens on average; the
    # prompt prefill is amortized over the N samples.
    flops = config.flops_per_token(args.prompt_len + args.new / 2) + (
        config.flops_per_token(args.prompt_len / 2) * args.prompt_len / (args.samples * args.new))
    bound = peak / flops
    peers, notes = {}, {}
    for name, peer in (("transformers", _transformers_peer), ("llama.cpp", _llama_cpp_peer)):
        if args.skip_peers:
            peers[name], notes[name] = None, "skipped (--skip-peers)"
            continue
        peers[name], notes[name] = peer(args.model, prompts, args.samples, args.new)
    ours_tps = generated / ours["median_s"]
    latency = common.time_call(lambda: sampling.sample(params, config, prompts[:1].tolist(), max_new_tokens=args.new,
                                                       temperature=0.0), repeats=args.repeats)
    workloads = [
        {"name": f"{args.model} {args.dtype} b{args.prompts} n{args.samples} new{args.new}", "unit": "tokens/s",
         "ours": ours_tps,
         "peers": peers, "peer_notes": notes, "bound": {"value": bound, "kind": "compute"},
         "fraction_of_bound": ours_tps / bound, "compile_s": ours["first_call_s"], "ours_median_s": ours["median_s"]},
        {"name": f"{args.model} batch-1 greedy new{args.new} latency", "unit": "ms/token",
         "ours": 1000 * latency["median_s"] / args.new, "peers": {}, "compile_s": latency["first_call_s"],
         "note": f"includes one {args.prompt_len}-token prefill"},
    ]
    common.write_report(args.json, "sampling", workloads, {"matmul_flops": peak})


def _bandwidth_bound_run(args) -> None:
    """The sampling workload on a random-weight Llama-3.2-1B shape (or the tiny one), against the decode
    bandwidth bound."""
    config = BANDWIDTH_MODELS[args.model](dtype=args.dtype, param_dtype=args.dtype)
    params = random_params(config, 0)
    _, ours = _time_ours(params, config, args)
    rows, generated = args.prompts * args.samples, args.prompts * args.samples * args.new
    bandwidth = common.measured_memory_bandwidth()
    weight_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
    kv_bytes_per_slot = 2 * config.num_layers * config.num_kv_heads * config.head_dim * config.compute_dtype.itemsize
    # per step: all weights once, the shared prompt caches once, each row's own slots (half full on average)
    step_bytes = weight_bytes + kv_bytes_per_slot * (args.prompts * args.prompt_len + rows * args.new / 2)
    bound = rows * bandwidth / step_bytes
    tokens_per_s = generated / ours["median_s"]
    workloads = [{"name": f"{args.model}-shape {args.dtype} b{args.prompts} n{args.samples} new{args.new}",
                  "unit": "tokens/s", "ours": tokens_per_s, "peers": {}, "bound": {"value": bound, "kind": "memory"},
                  "fraction_of_bound": tokens_per_s / bound, "compile_s": ours["first_call_s"],
                  "ours_median_s": ours["median_s"]}]
    common.write_report(args.json, "sampling", workloads, {"memory_bytes_per_s": bandwidth})


if __name__ == "__main__":
    main()
