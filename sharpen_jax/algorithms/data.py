"""Data assembly for the training loops: best-of-N selection, SFT datasets and their batch order.

The SFT batch order is a pure function of (seed, step): the example stream is the concatenation of
one random permutation per epoch, and batch `step` is its slice [step*B, (step+1)*B). Resuming at
a step therefore needs no iterator state beyond the step number, which the checkpoint records as the
data position.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sharpen_jax.tokenizer import pad_batch


def best_of_n_indices(reward_PN: jax.Array) -> jax.Array:
    """argmax_n r(x_p, y_pn) for each prompt p (the first maximum on ties): the index of y_BoN."""
    if jnp.ndim(reward_PN) != 2:
        raise ValueError(f"reward_PN must be [prompts, N], got shape {jnp.shape(reward_PN)}")
    return jnp.argmax(reward_PN, axis=1)


def select_best_of_n(samples_PN: Any, reward_PN: jax.Array) -> Any:
    """The best-of-N sample of each prompt from a pytree of arrays with leading axes [P, N]."""
    best_P = best_of_n_indices(reward_PN)
    return jax.tree.map(lambda x: x[jnp.arange(x.shape[0]), best_P], samples_PN)


class SFTDataset:
    """A fixed set of training sequences held in host memory: a dict of arrays with leading axis M."""

    def __init__(self, seqs: dict[str, np.ndarray], weight: np.ndarray | None = None):
        sizes = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in seqs.items()}
        if not sizes:
            raise ValueError("SFT dataset has no arrays; expected a dict of per-sequence arrays")
        if len(set(sizes.values())) != 1 or None in sizes.values():
            raise ValueError(f"SFT dataset arrays disagree on the number of sequences: {sizes}")
        self.size = next(iter(sizes.values()))
        if self.size == 0:
            raise ValueError("SFT dataset is empty: best-of-N selection produced no training sequences")
        self.seqs = {k: np.asarray(v) for k, v in seqs.items()}
        self.weight = None if weight is None else np.asarray(weight, np.float32)
        if self.weight is not None and self.weight.shape != (self.size,):
            raise ValueError(f"SFT dataset weight has shape {self.weight.shape}; expected ({self.size},)")

    def batch(self, step: int, batch_size: int, seed: int) -> dict:
        """Batch number `step` of the epoch-permuted stream (see the module docstring)."""
        idx = stream_indices(self.size, batch_size, seed, step)
        out = {"seqs": {k: v[idx] for k, v in self.seqs.items()}}
        if self.weight is not None:
            out["weight"] = self.weight[idx]
        return out

    def steps_per_epoch(self, batch_size: int) -> int:
        """Batches of `batch_size` per pass over the data (the last one partial, filled from the next epoch)."""
        return max(1, -(-self.size // batch_size))


def stream_indices(size: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Indices [step*B, (step+1)*B) of the stream perm_0 ++ perm_1 ++ ..., perm_e a permutation of
    range(size) drawn from (seed, e)."""
    if size <= 0:
        raise ValueError(f"cannot draw batches from a dataset of {size} examples")
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), size)
        perm = np.random.default_rng([seed, epoch]).permutation(size)
        out.extend(perm[offset:offset + batch_size - len(out)].tolist())
    return np.asarray(out, np.int64)


def completion_rows(prompt_tokens_BP, prompt_valid_BP, tokens_BC, valid_BC) -> dict[str, np.ndarray]:
    """Training rows [B, P + C] = left-padded prompt ++ right-padded completion (one contiguous span),
    with `target` on the completion tokens: the `seqs` layout of `policies.make_transformer_logprob_fn`."""
    prompt_tokens_BP, prompt_valid_BP = np.asarray(prompt_tokens_BP), np.asarray(prompt_valid_BP)
    valid_BC = np.asarray(valid_BC)
    return {"tokens": np.concatenate([prompt_tokens_BP, np.asarray(tokens_BC)], 1).astype(np.int32),
            "valid": np.concatenate([prompt_valid_BP, valid_BC], 1),
            "target": np.concatenate([np.zeros_like(prompt_valid_BP), valid_BC], 1)}


def self_reward(logp_BN, valid_BNC, kind: str) -> np.ndarray:
    """The self-reward [B, N] from sequence log-likelihoods: "logp" = log pi(y|x), "mean_logp" = that / |y|."""
    total_BN = np.asarray(logp_BN)
    if kind == "logp":
        return total_BN
    if kind == "mean_logp":
        return total_BN / np.maximum(np.asarray(valid_BNC).sum(-1), 1)
    raise ValueError(f"self_reward={kind!r}; expected 'logp' or 'mean_logp'")


def best_of_n_dataset(sample_fn, params, prompts, key: jax.Array, *, num_samples: int, temperature: float,
                      batch_size: int, reward: str = "logp") -> SFTDataset:
    """SFT-Sharpening data: for each prompt draw N completions from `params`, keep the one with the
    highest self-reward (y_BoN = argmax_n r(x, y_n)), and return the rows (x, y_BoN)."""
    if len(prompts) == 0:
        raise ValueError("SFT dataset is empty: there are no training prompts to draw best-of-N samples for")
    rows = []
    for chunk, n in prompts.batches(batch_size):
        key, sub = jax.random.split(key)
        tokens, valid, logp = jax.device_get(sample_fn(params, chunk.tokens, chunk.valid, sub, num_samples,
                                                       temperature))
        reward_BN = self_reward(logp[:n].sum(-1), valid[:n], reward)
        best = select_best_of_n({"tokens": tokens[:n], "valid": valid[:n]}, reward_BN)
        rows.append(completion_rows(chunk.tokens[:n], chunk.valid[:n], best["tokens"], best["valid"]))
    return SFTDataset({k: np.concatenate([r[k] for r in rows]) for k in rows[0]})


def results_file_dataset(path: str, tokenizer, *, prompt_length: int, completion_length: int,
                         reward: str = "log_likelihood", completion_suffix: str = "") -> SFTDataset:
    """SFT-Sharpening data from the best-of-N results file of the inference-time experiment.

    Each line of `path` (experiments.inference_sharpening's results.jsonl) holds the "prompt" and
    its "samples", each with its "text" and "rewards" by name; the sample with the highest
    `reward` is y_BoN. Texts there are cut before the stop string, so `completion_suffix` (the
    task's stop string, e.g. "\n") is appended to teach the model to stop. A line may instead
    hold {"prompt", "completion"}: an already selected y_BoN.
    """
    prompts, completions = [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if "completion" in record:
                completion = record["completion"]
            elif record.get("samples"):
                try:
                    scores = [sample["rewards"][reward] for sample in record["samples"]]
                except KeyError as err:
                    raise ValueError(f"{path}:{number}: a sample has no reward {reward!r}") from err
                completion = record["samples"][int(np.argmax(scores))]["text"] + completion_suffix
            else:
                raise ValueError(f"{path}:{number}: expected 'prompt' with 'samples' or 'completion'")
            prompts.append(tokenizer.encode(record["prompt"]))
            completions.append(tokenizer.encode(completion)[:completion_length])
    if not prompts:
        raise ValueError(f"SFT dataset is empty: {path} holds no best-of-N records")
    p = pad_batch(prompts, tokenizer.pad_id, "left", max(prompt_length, max(map(len, prompts))))
    c = pad_batch(completions, tokenizer.pad_id, "right", completion_length)
    return SFTDataset(completion_rows(p.tokens, p.valid, c.tokens, c.valid))
