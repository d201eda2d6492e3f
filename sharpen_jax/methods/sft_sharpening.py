"""SFT-Sharpening (Huang et al., 2024, Sec. 4.1): best-of-N by self-reward, then maximum likelihood.

Draw N samples per prompt from the base policy, keep y_BoN = argmax_n r(x, y_n) under a self-reward
of the selection layer (log pi_base(y|x) in the paper), and fit the policy by maximum likelihood on
the rows (x, y_BoN):

    loss = -sum_i w_i log pi(y_i|x_i) / sum_i w_i |y_i|          (the "sft" loss entry)

The batch source is a fixed `training.SFTDataset`, sampled here (`best_of_n_dataset`) or read from
the inference experiment's results file (`results_file_dataset`).
"""

from __future__ import annotations

import jax
import numpy as np

from sharpen_jax.jsonl import read_numbered_jsonl
from sharpen_jax.methods.registry import LossEntry, register_loss
from sharpen_jax.rollouts import PromptSet, SampleFn, ScoreFn, sample_rows, sampled_batches
from sharpen_jax.selection import best_of_n
from sharpen_jax.selection.rewards import NAMES
from sharpen_jax.training import losses
from sharpen_jax.training.datasets import SFTDataset
from sharpen_jax.training.policies import pack_token_lists

METHOD = "sft_sharpening"
SELF_REWARDS = NAMES  # any self-reward of the selection layer may pick y_BoN
DEFAULT_REWARD = "log_likelihood"


def build_sft_loss(logprob_fn, ref_logprob_fn):
    """loss_fn(params, ref_params, batch) = the token-mean NLL of batch["seqs"] (weights batch["weight"])."""
    del ref_logprob_fn  # maximum likelihood needs no reference model

    def loss_fn(params, ref_params, batch):
        logp_B, num_tokens_B = logprob_fn(params, batch["seqs"])
        return losses.sft_loss(logp_B, num_tokens_B, batch.get("weight"))

    return loss_fn


SFT = register_loss(LossEntry("sft", METHOD, build_sft_loss, batch_keys=("seqs",),
                              description="maximum likelihood on fixed (x, y) rows"))


def best_of_n_dataset(sample_fn: SampleFn, params, prompts: PromptSet, key: jax.Array, *, num_samples: int,
                      temperature: float, batch_size: int, score_fn: ScoreFn, progress: str = "") -> SFTDataset:
    """SFT-Sharpening data: N completions per prompt from `params`, the one with the highest self-reward
    kept (y_BoN = argmax_n score_fn(...), `best_of_n.take_best`), as training rows (x, y_BoN).

    `score_fn(prompts, tokens_BNC, valid_BNC, token_logprobs_BNC)` scores the samples; it is given the
    sampler's own log-probs, which are the base model's since the base model samples here. A
    non-empty `progress` shows a progress bar with that label.
    """
    if len(prompts) == 0:
        raise ValueError("SFT dataset is empty: there are no training prompts to draw best-of-N samples for")
    rows = []
    for real, tokens, valid, logp in sampled_batches(sample_fn, params, prompts, key, num_samples=num_samples,
                                                     temperature=temperature, batch_size=batch_size,
                                                     progress=progress):
        scores_BN = score_fn(real, tokens, valid, logp)
        best = best_of_n.take_best({"tokens": tokens, "valid": valid}, scores_BN)  # [B, C] each
        rows.append(sample_rows(real, best["tokens"][:, None], best["valid"][:, None]))
    return SFTDataset({k: np.concatenate([r[k] for r in rows]) for k in rows[0]})


def results_file_dataset(path: str, tokenizer, *, prompt_length: int, completion_length: int,
                         reward: str = DEFAULT_REWARD, completion_suffix: str = "") -> SFTDataset:
    """SFT-Sharpening data from the best-of-N results file of the inference-time experiment.

    Each line of `path` (experiments.inference_sharpening's results.jsonl) holds the "prompt" and
    its "samples", each with its "text" and "rewards" by name; the sample with the highest
    `reward` is y_BoN (`best_of_n.select`). Texts there are cut before the stop string, so
    `completion_suffix` (the task's stop string, e.g. "\\n") is appended to teach the model to stop.
    A line may instead hold {"prompt", "completion"}: an already selected y_BoN.
    """
    prompts, completions = [], []
    for number, record in read_numbered_jsonl(path, missing_ok=False):
        if "completion" in record:
            completion = record["completion"]
        elif record.get("samples"):
            try:
                scores = np.asarray([[sample["rewards"][reward] for sample in record["samples"]]])
            except KeyError as err:
                raise ValueError(f"{path}:{number}: a sample has no reward {reward!r}") from err
            completion = record["samples"][int(best_of_n.select(scores)[0])]["text"] + completion_suffix
        else:
            raise ValueError(f"{path}:{number}: expected 'prompt' with 'samples' or 'completion'")
        if "prompt" not in record:
            raise ValueError(f"{path}:{number}: the record has no 'prompt'")
        prompts.append(tokenizer.encode(record["prompt"]))
        completions.append(tokenizer.encode(completion, add_bos=False))  # continues the prompt: no BOS
    if not prompts:
        raise ValueError(f"SFT dataset is empty: {path} holds no best-of-N records")
    return SFTDataset(pack_token_lists(prompts, completions, completion_length=completion_length,
                                       prompt_length=max(prompt_length, max(map(len, prompts))),
                                       pad_id=tokenizer.pad_id))
