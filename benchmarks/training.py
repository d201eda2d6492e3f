"""Training throughput of `sft_step` (full fine-tuning and LoRA) next to a transformers + PyTorch step.

    python -m benchmarks.training --json /tmp/training.json [--model smollm2-135m] [--batch 4] [--seq 128]

Both sides train the same Llama-shaped model (random weights of the real shapes: throughput does not
depend on their values) on the same batch of B x T tokens with AdamW, every token a target. LoRA is
rank 8 on q,k,v,o,gate,up,down on both sides (peft for PyTorch). Reported: median tokens/s over
`--steps` timed steps after `--warmup` steps, compile/first-step time separately, and a compute
bound = measured matmul FLOP/s / training FLOPs per token (6 N per token for full fine-tuning, 4 N
for LoRA, which forms no weight gradients, plus attention). Each side runs with the faster of one
core and all cores, measured here: PyTorch with torch.set_num_threads, ours in a worker process
pinned to one core (sched_setaffinity, so XLA sizes its thread pools to it) or not pinned. The JSON
layout is the one in DESIGN.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sharpen_jax.algorithms.experiment_setup import make_policy_state, random_params
from sharpen_jax.algorithms.sft import make_sft_step
from sharpen_jax.config import TransformerConfig

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MODELS = {"smollm2-135m": TransformerConfig.smollm2_135m, "tiny": TransformerConfig.tiny}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return f"{platform.processor()} x{os.cpu_count()}"


def matmul_flops_per_s(n: int = 1024, repeats: int = 5) -> float:
    """Measured float32 matmul throughput of the default JAX device (the compute roof)."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times)


def train_flops_per_token(config: TransformerConfig, seq: int, lora: bool) -> float:
    """Forward FLOPs x 3 (full: forward, activation and weight gradients) or x 2 (LoRA: no weight grads)."""
    return config.flops_per_token(seq / 2) * (2 if lora else 3)


def time_steps(run_step, warmup: int, steps: int) -> tuple[float, list[float]]:
    """(seconds of the first call, seconds of each timed call after `warmup` more)."""
    t0 = time.perf_counter()
    run_step()
    first = time.perf_counter() - t0
    for _ in range(warmup):
        run_step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        run_step()
        times.append(time.perf_counter() - t0)
    return first, times


def ours(config: TransformerConfig, batch: int, seq: int, lora: bool, warmup: int, steps: int) -> dict:
    """sft_step throughput (tokens/s) on the batch, with AdamW."""
    tx = optax.adamw(1e-5)
    policy, state = make_policy_state(config, random_params(config, 0), tx, jax.random.key(0),
                                      lora_rank=8 if lora else 0, lora_alpha=16.0, lora_targets=LORA_TARGETS)
    step = make_sft_step(policy.logprob_fn, tx)
    rng = np.random.default_rng(0)
    seqs = {"tokens": jnp.asarray(rng.integers(0, config.vocab_size, (batch, seq)), jnp.int32),
            "valid": jnp.ones((batch, seq), bool), "target": jnp.ones((batch, seq), bool).at[:, 0].set(False)}
    holder = {"state": state}

    def run_step():
        holder["state"], metrics = step(holder["state"], {"seqs": seqs})
        metrics["loss"].block_until_ready()

    first, times = time_steps(run_step, warmup, steps)
    return {"tokens_per_s": batch * seq / statistics.median(times), "first_step_s": first, "step_times_s": times}


def ours_best_threads(args, lora: bool) -> dict:
    """`ours` in a worker process per core setting (1 core, all cores); the faster one, with both numbers."""
    results = {}
    for cores in sorted({1, os.cpu_count() or 1}):
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = [sys.executable, "-m", "benchmarks.training", "--json", out.name, "--model", args.model,
                   "--batch", str(args.batch), "--seq", str(args.seq), "--warmup", str(args.warmup),
                   "--steps", str(args.steps), "--worker-cores", str(cores)] + (["--worker-lora"] if lora else [])
            subprocess.run(cmd, check=True)
            with open(out.name) as f:
                results[cores] = {**json.load(f), "threads": cores}
    best = max(results.values(), key=lambda r: r["tokens_per_s"])
    return {**best, "by_threads": {t: r["tokens_per_s"] for t, r in results.items()}}


def torch_peer(config: TransformerConfig, batch: int, seq: int, lora: bool, warmup: int, steps: int) -> dict:
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
    model = transformers.LlamaForCausalLM(hf_config).float()
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

    results = {}
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        first, times = time_steps(run_step, warmup, steps)
        results[threads] = {"tokens_per_s": batch * seq / statistics.median(times), "first_step_s": first,
                            "step_times_s": times, "threads": threads}
    best = max(results.values(), key=lambda r: r["tokens_per_s"])
    return {**best, "by_threads": {t: r["tokens_per_s"] for t, r in results.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", required=True, help="where to write the results JSON")
    parser.add_argument("--model", default="smollm2-135m", choices=sorted(MODELS))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--no-peers", action="store_true", help="skip the PyTorch side")
    parser.add_argument("--worker-cores", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--worker-lora", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_cores:  # internal: one measurement of ours, pinned to the first `worker_cores` cores
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.worker_cores]))
        result = ours(MODELS[args.model](), args.batch, args.seq, args.worker_lora, args.warmup, args.steps)
        with open(args.json, "w") as f:
            json.dump(result, f)
        return

    config = MODELS[args.model]()
    roof = matmul_flops_per_s()
    workloads = []
    for lora in (False, True):
        name = f"{args.model} sft_step {'lora-r8' if lora else 'full'} b{args.batch} t{args.seq} fp32"
        mine = ours_best_threads(args, lora)
        if args.no_peers:
            peer, reason = None, "skipped with --no-peers"
        else:
            try:
                peer, reason = torch_peer(config, args.batch, args.seq, lora, args.warmup, args.steps), None
            except ImportError as err:
                peer, reason = None, f"not installed: {err}"
        workloads.append({
            "name": name, "unit": "tokens/s", "ours": mine["tokens_per_s"],
            "ours_notes": f"{mine['threads']} core(s) (by cores: {mine['by_threads']})",
            "peers": {"transformers+torch": None if peer is None else peer["tokens_per_s"]},
            "peer_notes": {"transformers+torch": reason or f"{peer['threads']} threads (by threads: "
                                                           f"{peer['by_threads']})"},
            "bound": {"value": roof / train_flops_per_token(config, args.seq, lora), "kind": "compute"},
            "first_step_s": {"ours": mine["first_step_s"], "transformers+torch": peer and peer["first_step_s"]},
            "step_times_s": {"ours": mine["step_times_s"], "transformers+torch": peer and peer["step_times_s"]},
        })
        row = workloads[-1]
        peer_text = "n/a" if peer is None else f"{peer['tokens_per_s']:.1f}"
        print(f"{name:<48} ours {row['ours']:8.1f} tok/s   torch {peer_text:>8} tok/s   "
              f"bound {row['bound']['value']:8.1f}   compile+first step {mine['first_step_s']:.1f}s")
    doc = {"benchmark": "training",
           "machine": {"cpu": cpu_name(), "devices": str(jax.devices()), "jax": jax.__version__,
                       "matmul_flops_per_s": roof},
           "workloads": workloads}
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=2)


if __name__ == "__main__":
    main()
