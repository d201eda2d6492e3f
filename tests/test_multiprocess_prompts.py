"""Per-process prompt slices for sampling (`sampling.LocalPrompts`): each process encodes only the rows
of each micro-batch that it supplies, and the samples are those of every process passing every prompt.

Fast: in this process (one device, no mesh) `LocalPrompts` gives bitwise the samples of the token
lists, encoding each prompt once, micro-batch by micro-batch.

Slow (`.ci/run`'s multi-process step): 11 prompts of varied lengths (3 micro-batches of 4 prompts,
the last one filled up) sampled on 2 processes x 2 devices from `LocalPrompts` give, bitwise, the
tokens and log-probs that 1 process x 4 devices gives from the token lists; process p encoded only
rows [2p, 2p + 2) of each micro-batch (the filler row of the last one encoded by nobody), and 1
process from `LocalPrompts` encodes every prompt once.
"""

from __future__ import annotations

import json
import textwrap

import jax
import numpy as np
import pytest

from multiprocess_lib import run_processes
from sharpen_jax import sampling
from sharpen_jax.config import TransformerConfig
from sharpen_jax.testing import random_params

LOCAL_PROMPTS = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from sharpen_jax import distributed, sampling, sharding
    from sharpen_jax.config import TransformerConfig
    from sharpen_jax.testing import random_params

    distributed.initialize()
    mesh = distributed.global_mesh(data=-1)
    config = TransformerConfig.tiny()
    base = random_params(config, 0, scale=0.1, unit_norms=False)
    params = distributed.to_global(base, sharding.param_shardings(base, mesh, decode=True))
    rng = np.random.default_rng(0)
    prompts = [rng.integers(1, config.vocab_size, n).tolist() for n in (3, 9, 5, 20, 2, 7, 4, 6, 17, 8, 5)]
    encoded = []

    def encode(indices):
        encoded.append([int(i) for i in indices])
        return [prompts[i] for i in indices]

    source = sampling.LocalPrompts(len(prompts), encode) if sys.argv[1] == "local" else prompts
    out = sampling.sample(params, config, source, num_samples=3, max_new_tokens=6, temperature=1.0, top_k=20,
                          rng=jax.random.key(1), mesh=mesh, max_rows=12)
    print(json.dumps({"encoded": encoded, "tokens": out.tokens.tolist(), "lengths": out.lengths.tolist(),
                      "model": out.model_logprobs.view(np.uint32).tolist(),
                      "sampling": out.sampling_logprobs.view(np.uint32).tolist()}))
""")


def _records(outputs):
    return [json.loads(next(line for line in out.splitlines() if line.startswith("{"))) for out in outputs]


def test_local_prompts_on_one_process_sample_what_the_token_lists_sample():
    config = TransformerConfig.tiny()
    params = random_params(config, 0, scale=0.1, unit_norms=False)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(1, config.vocab_size, n).tolist() for n in (3, 9, 5, 20, 2, 7, 4, 6, 17, 8, 5)]
    encoded = []

    def encode(indices):
        encoded.append([int(i) for i in indices])
        return [prompts[i] for i in indices]

    args = dict(num_samples=3, max_new_tokens=6, temperature=1.0, top_k=20, rng=jax.random.key(1), max_rows=12)
    whole = sampling.sample(params, config, prompts, **args)
    local = sampling.sample(params, config, sampling.LocalPrompts(len(prompts), encode), **args)
    assert whole.lengths.min() >= 1 and len(np.unique(whole.tokens)) > 10
    for name in ("tokens", "lengths", "model_logprobs", "sampling_logprobs"):
        assert getattr(local, name).tobytes() == getattr(whole, name).tobytes(), name
    assert encoded == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]


@pytest.mark.slow
def test_each_process_encodes_only_its_prompt_rows_and_the_samples_do_not_change():
    whole = _records(run_processes(LOCAL_PROMPTS, 1, 4, args=("lists",), timeout=180))[0]
    one = _records(run_processes(LOCAL_PROMPTS, 1, 4, args=("local",), timeout=180))[0]
    two = _records(run_processes(LOCAL_PROMPTS, 2, 2, args=("local",), timeout=180))
    outputs = ("tokens", "lengths", "model", "sampling")
    assert np.asarray(whole["lengths"]).min() >= 1 and len(np.unique(whole["tokens"])) > 10  # real samples
    for r in (one, *two):
        assert {k: r[k] for k in outputs} == {k: whole[k] for k in outputs}  # bitwise
    assert one["encoded"] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]  # every prompt once
    assert two[0]["encoded"] == [[0, 1], [4, 5], [8, 9]]
    assert two[1]["encoded"] == [[2, 3], [6, 7], [10]]  # row 11 fills the last micro-batch: nobody encodes it
