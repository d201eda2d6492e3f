"""Training throughput of `sft_step` (full fine-tuning and LoRA) next to a transformers + PyTorch step.

    python -m benchmarks.training --json /tmp/training.json [--model smollm2-135m] [--batch 4] [--seq 128]
        [--warmup 1] [--repeats 5] [--no-peers]
    python -m benchmarks.training --json /tmp/training_1b.json --model llama3-1b --dtype bfloat16 \
        --batch 8 --seq 2048 --no-peers     # on a GPU: model FLOPs utilization of the 1B configuration

Both sides train the same Llama-shaped model (random weights of the real shapes: throughput does not
depend on their values) on the same batch of B x T tokens with AdamW, every token a target. LoRA is
rank 8 on q,k,v,o,gate,up,down on both sides (peft for PyTorch). Reported: median tokens/s over
`--repeats` timed steps after `--warmup` steps, compile/first-step time separately, and a compute
bound = measured matmul FLOP/s / training FLOPs per token (6 N per token for full fine-tuning, 4 N
for LoRA, which forms no weight gradients, plus attention); ours / bound is the model FLOPs
utilization (MFU) against the matmul rate XLA reaches on this device in the run's dtype. Each side runs with the faster of one
core and all cores, measured here: PyTorch with torch.set_num_threads, ours in a worker process
pinned to one core (sched_setaffinity, so XLA sizes its thread pools to it) or not pinned. Options,
timing, the machine description and the JSON report (layout of DESIGN.md) come from
`benchmarks.common`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from sharpen_jax.config import TransformerConfig
from sharpen_jax.methods import get_loss
from sharpen_jax.testing import random_params
from sharpen_jax.training.policies import make_policy_state

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MODELS = {"smollm2-135m": TransformerConfig.smollm2_135m, "llama3-1b": TransformerConfig.llama3_1b,
          "tiny": TransformerConfig.tiny}


def model_config(args: argparse.Namespace) -> TransformerConfig:
    """The benchmarked configuration: the named model in the requested compute and parameter dtype."""
    return MODELS[args.model](dtype=args.dtype, param_dtype=args.dtype)


def core_counts() -> list[int]:
    """The core settings each side is measured at: one core and all cores."""
    return sorted({1, os.cpu_count() or 1})


def train_flops_per_token(config: TransformerConfig, seq: int, lora: bool) -> float:
    """Forward FLOPs x 3 (full: forward, activation and weight gradients) or x 2 (LoRA: no weight grads)."""
    return config.flops_per_token(seq / 2) * (2 if lora else 3)


def ours(config: TransformerConfig, batch: int, seq: int, lora: bool, warmup: int, repeats: int) -> dict:
    """sft_step throughput (tokens/s) on the batch, with AdamW."""
    tx = optax.adamw(1e-5)
    policy, state = make_policy_state(config, random_params(config, 0), tx, jax.random.key(0),
                                      lora_rank=8 if lora else 0, lora_alpha=16.0, lora_targets=LORA_TARGETS)
    step = get_loss("sft").make_step(policy.logprob_fn, tx)
    rng = np.random.default_rng(0)
    seqs = {"tokens": jnp.asarray(rng.integers(0, config.vocab_size, (batch, seq)), jnp.int32),
            "valid": jnp.ones((batch, seq), bool), "target": jnp.ones((batch, seq), bool).at[:, 0].set(False)}
    holder = {"state": state}

    def run_step():
        holder["state"], metrics = step(holder["state"], None, {"seqs": seqs})
        metrics["loss"].block_until_ready()

    timing = common.time_call(run_step, repeats=repeats, warmup=warmup)
    return {"tokens_per_s": batch * seq / timing["median_s"], "first_step_s": timing["first_call_s"]}


def ours_best_threads(args, lora: bool) -> dict:
    """`ours` in a worker process per core setting (1 core, all cores); the faster one, with both numbers."""
    results = {}
    for cores in core_counts():
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = [sys.executable, "-m", "benchmarks.training", "--json", out.name, "--model", args.model,
                   "--dtype", args.dtype,
                   "--batch", str(args.batch), "--seq", str(args.seq), "--warmup", str(args.warmup),
                   "--repeats", str(args.repeats), "--worker-cores", str(cores)] + (["--worker-lora"] if lora else [])
            subprocess.run(cmd, check=True)
            with open(out.name) as f:
                results[cores] = {**json.load(f), "threads": cores}
    best = max(results.values(), key=lambda r: r["tokens_per_s"])
    return {**best, "by_threads": {t: r["tokens_per_s"] for t, r in results.items()}}


def torch_peer(config: TransformerConfig, batch: int, seq: int, lora: bool, repeats: int) -> dict:
    """transformers LlamaForCausalLM + torch.optim.AdamW (+ peft LoRA) at the faster thread setting."""
    import torch
    import transformers

    hf_config = transformers.LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.dim, intermediate_size=config.hidden_dim,
        num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads, head_dim=config.head_dim, rms_norm_eps=config.rms_norm_eps,
        rope_theta=config.rope_theta, tie_word_embeddings=config.tie_embeddings,
        max_position_embeddings=config.max_seq_len)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(hf_config).to(getattr(torch, config.dtype))
    if lora:
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_modules=list(LORA_TARGETS),
                                                           lora_dropout=0.0))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    tokens = torch.randint(0, config.vocab_size, (batch, seq))

    def run_step():
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    threads, medians = common.fastest_torch_threads(run_step, candidates=core_counts(), repeats=repeats)
    return {"tokens_per_s": batch * seq / medians[threads], "threads": threads,
            "by_threads": {t: batch * seq / m for t, m in medians.items()}}


def add_options(parser: argparse.ArgumentParser) -> None:
    """The benchmark's own options (common.parse_args adds --json and --repeats, the timed steps)."""
    parser.add_argument("--model", default="smollm2-135m", choices=sorted(MODELS))
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones")
    parser.add_argument("--no-peers", action="store_true", help="skip the PyTorch side")
    parser.add_argument("--worker-cores", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--worker-lora", action="store_true", help=argparse.SUPPRESS)


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], add_options)
    if args.worker_cores:  # internal: one measurement of ours, pinned to the first `worker_cores` cores
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.worker_cores]))
        result = ours(model_config(args), args.batch, args.seq, args.worker_lora, args.warmup, args.repeats)
        with open(args.json, "w") as f:
            json.dump(result, f)
        return

    config = model_config(args)
    roof = common.measured_matmul_flops(dtype=config.compute_dtype)
    workloads = []
    for lora in (False, True):
        name = f"{args.model} sft_step {'lora-r8' if lora else 'full'} b{args.batch} t{args.seq} {args.dtype}"
        mine = ours_best_threads(args, lora)
        if args.no_peers:
            peer, reason = None, "skipped with --no-peers"
        else:
            try:
                peer, reason = torch_peer(config, args.batch, args.seq, lora, args.repeats), None
            except ImportError as err:
                peer, reason = None, f"not installed: {err}"
        workloads.append({
            "name": name, "unit": "tokens/s", "ours": mine["tokens_per_s"],
            "ours_notes": f"{mine['threads']} core(s) (by cores: {mine['by_threads']})",
            "peers": {"transformers+torch": None if peer is None else peer["tokens_per_s"]},
            "peer_notes": {"transformers+torch": reason or f"random weights of the same shapes; {peer['threads']} "
                                                           f"thread(s) (tokens/s by threads: {peer['by_threads']})"},
            "bound": {"value": roof / train_flops_per_token(config, args.seq, lora), "kind": "compute"},
            "fraction_of_bound": mine["tokens_per_s"] * train_flops_per_token(config, args.seq, lora) / roof,
            "compile_and_first_step_s": mine["first_step_s"],
        })
    common.write_report(args.json, "training", workloads, {"matmul_flops_per_s": roof})


if __name__ == "__main__":
    main()
