"""Preference and policy-gradient batches for RLHF-Sharpening, sampled on the fly.

Which policy draws which side, per loss (Huang et al., 2024, Sec. 4.2 and Algorithm 1):

    reward_dpo   a ~ pi_base, b ~ pi_base
    xpo          a ~ pi (current), b ~ pi_base
    online_dpo   a ~ pi, b ~ pi
    kl_pg        K samples ~ pi per prompt

The self-reward of every sample is computed under the base model: the sampler's own log-probs when
the base model drew it, the scorer on the base parameters otherwise.
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from sharpen_jax.algorithms.data import completion_rows, self_reward
from sharpen_jax.algorithms.rollouts import PromptSet, SampleFn

SOURCES = {"reward_dpo": ("base", "base"), "xpo": ("policy", "base"), "online_dpo": ("policy", "policy")}
BaseLogprobFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _rewards(source: str, prompts: PromptSet, tokens, valid, logp, base_logprob_fn: BaseLogprobFn,
             kind: str) -> np.ndarray:
    """Self-reward [B, N] under the base model of samples drawn by `source`."""
    if source == "policy":
        return self_reward(base_logprob_fn(prompts.tokens, prompts.valid, tokens, valid), valid, kind)
    return self_reward(np.asarray(logp).sum(-1), valid, kind)


def _rows(prompts: PromptSet, tokens_BNC, valid_BNC) -> dict[str, np.ndarray]:
    """Training rows [B*N, P+C] for the N samples of each prompt (samples of a prompt consecutive)."""
    b, n, c = np.shape(tokens_BNC)
    repeat = lambda x: np.repeat(x, n, axis=0)  # noqa: E731
    return completion_rows(repeat(prompts.tokens), repeat(prompts.valid), np.reshape(tokens_BNC, (b * n, c)),
                           np.reshape(valid_BNC, (b * n, c)))


def draw_batch(loss: str, sample_fn: SampleFn, policy_params, base_params, prompts: PromptSet, key: jax.Array, *,
               temperature: float, base_logprob_fn: BaseLogprobFn, reward: str = "logp",
               group_size: int = 2) -> dict:
    """A `po_step` batch for `loss` on `prompts` (see the module docstring for who samples what)."""
    params = {"policy": policy_params, "base": base_params}
    if loss == "kl_pg":
        tokens, valid, logp = jax.device_get(sample_fn(policy_params, prompts.tokens, prompts.valid, key,
                                                       group_size, temperature))
        r = _rewards("policy", prompts, tokens, valid, logp, base_logprob_fn, reward)
        return {"seqs": _rows(prompts, tokens, valid), "reward": r.reshape(-1).astype(np.float32),
                "group_size": group_size}
    if loss not in SOURCES:
        raise ValueError(f"loss={loss!r}; expected one of {sorted(SOURCES) + ['kl_pg']}")
    source_a, source_b = SOURCES[loss]
    if source_a == source_b:  # one call with two samples per prompt
        tokens, valid, logp = jax.device_get(sample_fn(params[source_a], prompts.tokens, prompts.valid, key, 2,
                                                       temperature))
        r = _rewards(source_a, prompts, tokens, valid, logp, base_logprob_fn, reward)
        sides = [(tokens[:, i:i + 1], valid[:, i:i + 1], r[:, i]) for i in (0, 1)]
    else:
        sides = []
        for source, k in zip((source_a, source_b), jax.random.split(key)):
            tokens, valid, logp = jax.device_get(sample_fn(params[source], prompts.tokens, prompts.valid, k, 1,
                                                           temperature))
            sides.append((tokens, valid, _rewards(source, prompts, tokens, valid, logp, base_logprob_fn,
                                                  reward)[:, 0]))
    (ta, va, ra), (tb, vb, rb) = sides
    return {"a": _rows(prompts, ta, va), "b": _rows(prompts, tb, vb), "reward_a": ra.astype(np.float32),
            "reward_b": rb.astype(np.float32)}
