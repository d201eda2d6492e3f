"""Dry runs: what an experiment will do and what it costs, before any weight is loaded.

`python -m experiments.X --config=FILE:PRESET --dry_run [--devices=8] [--tokens_per_s=...]` validates
the whole config (as a real run does), reads each model's config.json (or GGUF header) without its
weights, and prints:

* the plan: prompts, samples, tokens to generate and to score, training steps;
* memory per device, from `jax.eval_shape` of the real parameter, optimizer-state and KV-cache
  trees, divided as the experiment's mesh divides them (`sharpen_jax.sharding`'s table);
* a time estimate from a stated per-device throughput.

Not counted: activations of the train step and XLA's temporary buffers (the step's compiled memory
needs the accelerator it will run on); the estimate is a floor, and the output says so.

No GPU benchmark figure is on record yet (docs/BENCHMARKS.md), so the default throughputs are
stated assumptions, not measurements: DECODE_TOKENS_PER_S tokens/s per device when sampling a
7B-class model in bfloat16 at a batch of a few hundred rows, and a forward (teacher-forced) rate
SCORE_SPEEDUP times that. Pass `--tokens_per_s` to plan with a measured figure.
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AbstractMesh

from experiments.common import ConfigError
from experiments.models import is_trained_workdir, load_tokenizer, trained_config
from sharpen_jax import gguf_reader, sharding, testing, weights
from sharpen_jax.config import TransformerConfig
from sharpen_jax.model import init_cache, param_shapes
from sharpen_jax.training import lora

DECODE_TOKENS_PER_S = 1000.0  # assumption (see the module docstring), per device
SCORE_SPEEDUP = 10.0  # teacher-forced tokens per decoded token, same hardware (assumption)
PROMPT_TOKENS = 512  # assumed prompt length (few-shot prompts) for KV-cache sizes


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one run does and what it holds per device (bytes)."""

    lines: tuple[str, ...]  # the plan: counts of prompts, samples, tokens, steps
    generated_tokens: int
    scored_tokens: int
    memory: dict[str, dict[str, int]]  # model spec -> {"parameters", "optimizer state", "KV cache", ...}


def model_config(spec: str, tokenizer_spec: str = "", random_shape: dict | None = None,
                 dtype: str = "") -> TransformerConfig:
    """The TransformerConfig of a model spec without reading its weights: config.json of an HF
    directory, the GGUF header, or the random shape over the tokenizer's vocabulary."""
    if is_trained_workdir(spec):  # a training run's policy has its base model's shape
        cfg = trained_config(spec)
        return model_config(cfg["model"], cfg.get("tokenizer", ""), cfg.get("random_model"), dtype or cfg.get("dtype", ""))
    if testing.is_random_spec(spec):
        config = TransformerConfig(vocab_size=load_tokenizer(tokenizer_spec).vocab_size, **dict(random_shape or {}))
    else:
        path = weights.resolve(spec)
        if os.path.isdir(path):
            config = weights.config_from_hf(os.path.join(path, "config.json"))
        else:
            config = gguf_reader.config_from_gguf(gguf_reader.reader(path), path)
    return config.replace(dtype=dtype, param_dtype=dtype) if dtype else config


def mesh_for(devices: int, data: int = -1, fsdp: int = 1, model: int = 1) -> AbstractMesh:
    """The (data, fsdp, model) mesh over `devices` devices, as an abstract mesh (no devices needed)."""
    sizes = [data, fsdp, model]
    if -1 in sizes:
        known = int(np.prod([s for s in sizes if s != -1]))
        if devices % known:
            raise ConfigError(f"a mesh with fsdp*model = {known} does not divide {devices} devices")
        sizes[sizes.index(-1)] = devices // known
    if int(np.prod(sizes)) != devices:
        raise ConfigError(f"mesh sizes {sizes} do not multiply to {devices} devices")
    return AbstractMesh(tuple(sizes), sharding.AXES)


def _per_device_bytes(tree, mesh: AbstractMesh, decode: bool) -> int:
    """Bytes one device holds of a tree of ShapeDtypeStructs laid out by the parameter table."""
    shardings = jax.tree.leaves(sharding.param_shardings(tree, mesh, decode))
    return sum(math.prod(s.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
               for x, s in zip(jax.tree.leaves(tree), shardings))


def parameter_bytes(config: TransformerConfig) -> int:
    """Total bytes of the parameters (eval_shape of `model.param_shapes`)."""
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(param_shapes(config)))


def kv_cache_bytes(config: TransformerConfig, rows: int, length: int, mesh: AbstractMesh) -> int:
    """Bytes per device of the decode KV cache for `rows` rows of `length` slots, rows split over
    data x fsdp and kv heads over model where they divide."""
    cache = jax.eval_shape(lambda: init_cache(config, rows, length))
    total = sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(cache))
    row_split = math.gcd(rows, mesh.shape["data"] * mesh.shape["fsdp"])
    head_split = math.gcd(config.num_kv_heads, mesh.shape["model"])
    return total // (row_split * head_split)


def sampler_cache_bytes(config: TransformerConfig, num_samples: int, max_rows: int, max_new_tokens: int,
                        mesh: AbstractMesh) -> int:
    """Per-device bytes of the sampler's cache for one micro-batch: max(1, max_rows // N) prompt
    caches of PROMPT_TOKENS slots, shared by their N samples, plus each sample's max_new_tokens slots
    (the layout of `model.fork_cache`)."""
    prompts = max(1, max_rows // num_samples)
    return (kv_cache_bytes(config, prompts, PROMPT_TOKENS, mesh)
            + kv_cache_bytes(config, prompts * num_samples, max_new_tokens, mesh))


def training_memory(config: TransformerConfig, mesh: AbstractMesh, lora_rank: int, lora_targets: tuple[str, ...],
                    cache_bytes: int) -> dict[str, int]:
    """Per-device bytes of a training run: frozen or trainable parameters, the trainable ones'
    gradients and Adam moments (float32), and the sampler's KV cache (`cache_bytes`)."""
    shapes = param_shapes(config)
    if lora_rank:
        adapters = jax.eval_shape(lambda: lora.init_lora(shapes, lora_rank, jax.random.key(0), lora_targets))
        trainable = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32), adapters)
    else:
        trainable = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32), shapes)
    trainable_bytes = _per_device_bytes(trainable, mesh, decode=False)
    return {"parameters": _per_device_bytes(shapes, mesh, decode=False),
            "trainable copy (float32)" if not lora_rank else "LoRA adapters (float32)": trainable_bytes,
            "gradients": trainable_bytes, "Adam moments": 2 * trainable_bytes,
            "KV cache": cache_bytes}


def inference_memory(config: TransformerConfig, mesh: AbstractMesh, cache_bytes: int) -> dict[str, int]:
    """Per-device bytes of sampling: parameters in the decode layout and the KV cache (`cache_bytes`)."""
    return {"parameters": _per_device_bytes(param_shapes(config), mesh, decode=True), "KV cache": cache_bytes}


def _gib(n: int) -> str:
    return f"{n / 2**30:8.2f} GiB"


def report(plan: Plan, devices: int, tokens_per_s: float = 0.0) -> str:
    """The dry run's printout: the plan, memory per device per model, and the time estimate at
    `tokens_per_s` decoded tokens/s per device (0 = DECODE_TOKENS_PER_S, a stated assumption)."""
    assumed = not tokens_per_s
    tokens_per_s = tokens_per_s or DECODE_TOKENS_PER_S
    out = ["plan:", *(f"  {line}" for line in plan.lines),
           f"  tokens to generate: {plan.generated_tokens:,} (at most; sampling stops early at EOS)",
           f"  tokens to score: {plan.scored_tokens:,} (at most)", "memory per device (floor; activations not counted):"]
    for spec, parts in plan.memory.items():
        out.append(f"  {spec}:")
        out.extend(f"    {name:<26}{_gib(value)}" for name, value in parts.items())
        out.append(f"    {'total':<26}{_gib(sum(parts.values()))}")
    seconds = (plan.generated_tokens + plan.scored_tokens / SCORE_SPEEDUP) / (tokens_per_s * devices)
    out.append(f"time: about {seconds / 3600:.2f} hours on {devices} device(s) at {tokens_per_s:g} decoded tokens/s "
               f"per device ({'assumed' if assumed else 'given'}; --tokens_per_s sets it), "
               f"teacher-forced tokens {SCORE_SPEEDUP:g}x faster")
    return "\n".join(out)


# The table of docs/SCALING.md: `python -m experiments.plan` (options: --help).
TABLE_MODELS = {"Llama-3.1-8B": TransformerConfig.llama3_1_8b, "Mistral-7B": TransformerConfig.mistral_7b,
                "Qwen2.5-7B": TransformerConfig.qwen2_5_7b}
MACHINES = {"8x H100 80GB": (8, 80e9), "v5p-8": (4, 95e9)}  # (JAX devices, HBM bytes per device)


def memory_table(models: dict, machines: dict, meshes: tuple[dict, ...], *, num_samples: int = 50,
                 max_rows: int = 256, max_new_tokens: int = 512, lora_rank: int = 8) -> str:
    """A markdown table of memory per device (GiB) for each model (bfloat16 weights) x machine x mesh x
    workload: sampling (decode layout; N samples of max_new_tokens with PROMPT_TOKENS-token prompts,
    max_rows rows per micro-batch), LoRA and full fine-tuning (float32 trainable copy, gradients and
    Adam moments, plus the sampler's cache); `fits` compares the total with the device's HBM."""
    targets = tuple(lora.ALL_PROJECTIONS)
    header = ("| model | machine | mesh (data, fsdp, model) | workload | parameters | optimizer state "
              "(trainable copy, grads, Adam) | KV cache | total | fits |")
    rows = [header, "|" + "---|" * 9]
    for model_name, make_config in models.items():
        config = make_config(dtype="bfloat16", param_dtype="bfloat16")
        for machine, (devices, hbm) in machines.items():
            for sizes in meshes:
                mesh = mesh_for(devices, **sizes)
                cache = sampler_cache_bytes(config, num_samples, max_rows, max_new_tokens, mesh)
                workloads = {"sampling": inference_memory(config, mesh, cache),
                             f"LoRA r{lora_rank} training": training_memory(config, mesh, lora_rank, targets, cache),
                             "full fine-tuning": training_memory(config, mesh, 0, targets, cache)}
                for workload, parts in workloads.items():
                    optimizer = sum(v for k, v in parts.items() if k not in ("parameters", "KV cache"))
                    total = sum(parts.values())
                    rows.append(f"| {model_name} | {machine} | {tuple(mesh.shape.values())} | {workload} | "
                                f"{parts['parameters'] / 2**30:.1f} | {optimizer / 2**30:.1f} | "
                                f"{parts['KV cache'] / 2**30:.1f} | {total / 2**30:.1f} | "
                                f"{'yes' if total < hbm else 'no'} |")
    return "\n".join(rows)


def _mesh_arg(text: str) -> dict:
    """"fsdp=-1" -> {"data": 1, "fsdp": -1, "model": 1}: the axes not named have size 1."""
    sizes = dict.fromkeys(sharding.AXES, 1)
    for part in text.split(","):
        axis, _, value = part.partition("=")
        if axis not in sharding.AXES or not value.lstrip("-").isdigit():
            raise ValueError(f"--mesh {text!r}; expected AXIS=SIZE pairs over {sharding.AXES}, e.g. data=1,fsdp=-1")
        sizes[axis] = int(value)
    return sizes


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Memory per device of the 7-8B models from jax.eval_shape "
                                                 "(docs/SCALING.md); no weights are read.")
    parser.add_argument("--models", default=",".join(TABLE_MODELS), help=f"comma-separated, of {list(TABLE_MODELS)}")
    parser.add_argument("--machines", default=",".join(MACHINES), help=f"comma-separated, of {list(MACHINES)}")
    parser.add_argument("--mesh", action="append", default=None,
                        help="AXIS=SIZE,... (repeatable; default: data=-1 and fsdp=-1)")
    parser.add_argument("--num_samples", type=int, default=50)
    parser.add_argument("--max_new_tokens", type=int, default=512)
    parser.add_argument("--max_rows", type=int, default=256)
    parser.add_argument("--lora_rank", type=int, default=8)
    args = parser.parse_args(argv)

    def pick(names: str, table: dict, flag: str) -> dict:
        unknown = [n for n in names.split(",") if n not in table]
        if unknown:
            parser.error(f"--{flag} {names!r}: unknown {unknown}; expected names of {list(table)}")
        return {n: table[n] for n in names.split(",")}

    models, machines = pick(args.models, TABLE_MODELS, "models"), pick(args.machines, MACHINES, "machines")
    try:
        meshes = tuple(_mesh_arg(m) for m in (args.mesh or ["data=-1", "fsdp=-1"]))
        print(memory_table(models, machines, meshes, num_samples=args.num_samples, max_rows=args.max_rows,
                           max_new_tokens=args.max_new_tokens, lora_rank=args.lora_rank))
    except ValueError as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
