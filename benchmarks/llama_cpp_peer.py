"""llama.cpp peer for the sampling benchmark, through llama-cpp-python's low-level API (optional).

Install (it builds from source; the default build crashes in the AMX path on this machine class):
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
        pip install llama-cpp-python

The peer does what our sampler does, in llama.cpp's fastest honest configuration we found: one
prefill per prompt (a batch holding all prompts, each in its own sequence), the prompt's KV cells
copied to its N sample sequences (`llama_memory_seq_cp`, no recomputation), then one
`llama_decode` per step over all prompts x N sequences, sampling every output with llama.cpp's
`dist` sampler (temperature 1, no truncation). It runs the GGUF's own Q4_1/Q8_0 weights, which is
llama.cpp's native mode; ours runs the dequantized float32 weights.
"""

from __future__ import annotations

import time

import llama_cpp as lc
import numpy as np


def _run_once(ctx, batch, prompts: np.ndarray, num_samples: int, new_tokens: int, seed: int) -> float:
    num_prompts, prompt_len = prompts.shape
    memory = lc.llama_get_memory(ctx)
    lc.llama_memory_clear(memory, True)
    sampler = lc.llama_sampler_init_dist(seed)
    start = time.perf_counter()
    batch.n_tokens = 0
    for p in range(num_prompts):
        for t in range(prompt_len):
            i = batch.n_tokens
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = int(prompts[p, t]), t, 1
            batch.seq_id[i][0] = p * num_samples
            batch.logits[i] = t == prompt_len - 1
            batch.n_tokens += 1
    if lc.llama_decode(ctx, batch):
        raise RuntimeError("llama_decode failed on the prompt batch")
    for p in range(num_prompts):
        for j in range(1, num_samples):
            lc.llama_memory_seq_cp(memory, p * num_samples, p * num_samples + j, -1, -1)
    rows = num_prompts * num_samples
    # each sample draws its own first token from the logits of its prompt's last batch position
    tokens = [lc.llama_sampler_sample(sampler, ctx, (r // num_samples + 1) * prompt_len - 1) for r in range(rows)]
    for step in range(1, new_tokens):
        batch.n_tokens = rows
        for r in range(rows):
            batch.token[r], batch.pos[r], batch.n_seq_id[r] = tokens[r], prompt_len + step - 1, 1
            batch.seq_id[r][0] = r
            batch.logits[r] = True
        if lc.llama_decode(ctx, batch):
            raise RuntimeError(f"llama_decode failed at step {step}")
        tokens = [lc.llama_sampler_sample(sampler, ctx, r) for r in range(rows)]
    elapsed = time.perf_counter() - start
    lc.llama_sampler_free(sampler)
    return elapsed


def batched_sampling_tokens_per_s(gguf_path: str, prompts: np.ndarray, num_samples: int, new_tokens: int,
                                  threads=(1, 2), repeats: int = 2):
    """(generated tokens/s at the faster thread count, note with per-thread medians)."""
    num_prompts, prompt_len = prompts.shape
    rows = num_prompts * num_samples
    lc.llama_backend_init()
    model = lc.llama_model_load_from_file(gguf_path.encode(), lc.llama_model_default_params())
    medians = {}
    for n_threads in threads:
        params = lc.llama_context_default_params()
        params.n_ctx = rows * (prompt_len + new_tokens) + 256
        params.n_batch = params.n_ubatch = max(rows, num_prompts * prompt_len)
        params.n_seq_max = rows
        params.n_threads = params.n_threads_batch = n_threads
        params.kv_unified = True
        ctx = lc.llama_init_from_model(model, params)
        batch = lc.llama_batch_init(params.n_batch, 0, 1)
        _run_once(ctx, batch, prompts, num_samples, new_tokens, seed=0)  # warm-up
        medians[n_threads] = float(np.median([_run_once(ctx, batch, prompts, num_samples, new_tokens, seed=s)
                                              for s in range(1, repeats + 1)]))
        lc.llama_batch_free(batch)
        lc.llama_free(ctx)
    lc.llama_model_free(model)
    best = min(medians, key=medians.get)
    note = (f"llama-cpp-python {lc.__version__}, GGUF Q4_1/Q8_0 weights, unified KV, threads={best}; "
            "median s by threads: " + ", ".join(f"{k}: {v:.1f}" for k, v in medians.items()))
    return rows * new_tokens / medians[best], note
