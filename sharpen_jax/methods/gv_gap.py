"""The generation-verification gap study (Song et al., 2024, "Mind the Gap") as a method.

A generator f samples N completions per prompt, the task grades them (u), verifiers g score them
(û, `selection.gv_verifiers`: MC, CoT-Binary, CoT-Score, Tournament), and filters reweight them
(`selection.gap`: per-prompt quantile, global threshold, exp(û / beta), AND ensembles). The gap
J(f[w]) - J(f) and the per-prompt relative gap measure how much the verification adds
(Defs. 2.1-2.2). Iterative self-improvement (Sec. 5, Alg. 1) trains f_{t+1} by maximum likelihood
on the samples of f_t that its own verifier kept: the "gv_filtered_sft" loss entry, which is the
SFT loss of `methods.sft_sharpening` on the kept rows.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Mapping, Sequence

import numpy as np

import jax

from sharpen_jax.methods.registry import LossEntry, register_loss
from sharpen_jax.methods.sft_sharpening import build_sft_loss
from sharpen_jax.rollouts import PromptSet, SampleFn, sample_rows, sampled_batches
from sharpen_jax.selection import best_of_n, gap, gv_verifiers
from sharpen_jax.selection.gv_verifiers import VerifierResult
from sharpen_jax.selection.rewards import RewardInputs
from sharpen_jax.training.datasets import SFTDataset
from sharpen_jax.training.optim import make_optimizer
from sharpen_jax.training.policies import make_policy_state

METHOD = "gv_gap"
FILTERED_SFT = register_loss(LossEntry("gv_filtered_sft", METHOD, build_sft_loss, batch_keys=("seqs",),
                                       description="maximum likelihood on the self-samples a verifier kept "
                                                   "(Song et al. 2024, Alg. 1)"))

Verify = Callable[[RewardInputs], VerifierResult]
# KeepFn(prompts, tokens_BNC, valid_BNC, token_logprobs_BNC) -> bool[B, N]: which samples to train on
KeepFn = Callable[[PromptSet, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class VerifierSettings:
    """How the verifiers run: templates by verifier name, the MC and tournament words, CoT generation."""

    templates: Mapping[str, str]
    mc_words: tuple[str, str] = (" Yes", " No")
    tournament_words: tuple[str, str] = (" A", " B")
    cot_max_new_tokens: int = 64
    cot_stop: tuple[str, ...] = ("\n\n",)
    batch_size: int = 32
    max_rows: int = 256
    seed: int = 0


def check_settings(settings: VerifierSettings, names: Sequence[str], *, where: str = "config") -> None:
    """Every verifier name valid and its template holding its placeholders in order; a ValueError naming the
    entry."""
    for i, name in enumerate(names):
        gv_verifiers.check_verifier_name(name, where=f"{where}.verifiers[{i}]")
        if name not in settings.templates:
            raise ValueError(f"{where}.templates has no template for verifier {name!r}")
        gv_verifiers.check_template(settings.templates[name], gv_verifiers.TEMPLATE_PLACEHOLDERS[name],
                                    where=f"{where}.templates.{name}")


def parse_ensemble(spec: str, *, where: str = "ensemble") -> list[tuple[str, gap.Filter]]:
    """Members of "VERIFIER@RULE:VALUE+VERIFIER@RULE:VALUE" (rejection filters only), e.g.
    "mc@quantile:0.5+cot_score@threshold:8"."""
    members = []
    for part in str(spec).split("+"):
        name, sep, filter_spec = part.partition("@")
        if not sep:
            raise ValueError(f"{where}={spec!r}; expected VERIFIER@RULE:VALUE joined by '+'")
        gv_verifiers.check_verifier_name(name, where=where)
        f = gap.Filter.parse(filter_spec, where=where)
        if f.rule == "exp":
            raise ValueError(f"{where}={spec!r}; an AND ensemble takes rejection filters (quantile, threshold)")
        members.append((name, f))
    if len(members) < 2:
        raise ValueError(f"{where}={spec!r}; an ensemble needs at least two members")
    return members


def make_verifiers(params, config, tokenizer, settings: VerifierSettings, names: Sequence[str], mesh=None
                   ) -> dict[str, Verify]:
    """verify(inputs) -> VerifierResult for each named verifier, all with the verifier model's params."""
    t = settings.templates
    out: dict[str, Verify] = {}
    for name in names:
        if name == "mc":
            out[name] = lambda inputs: gv_verifiers.mc_verify(params, config, tokenizer, inputs, template=t["mc"],
                                                              words=settings.mc_words, batch_size=settings.batch_size)
        elif name in ("cot_binary", "cot_score"):
            out[name] = lambda inputs, kind=name: gv_verifiers.cot_verify(
                params, config, tokenizer, inputs, kind=kind, template=t[kind],
                max_new_tokens=settings.cot_max_new_tokens, stop_strings=settings.cot_stop,
                max_rows=settings.max_rows, mesh=mesh)
        else:
            out[name] = lambda inputs: gv_verifiers.tournament_verify(
                params, config, tokenizer, inputs, template=t["tournament"], words=settings.tournament_words,
                batch_size=settings.batch_size, seed=settings.seed)
    return out


def run_verifiers(verifiers: Mapping[str, Verify], inputs: RewardInputs
                  ) -> tuple[dict[str, VerifierResult], dict[str, float]]:
    """Every verifier's result on `inputs` and its wall time in seconds."""
    results, seconds = {}, {}
    for name, verify in verifiers.items():
        start = time.perf_counter()
        results[name] = verify(inputs)
        seconds[name] = time.perf_counter() - start
    return results, seconds


def pass_at_every_k(correct_BN: np.ndarray) -> dict[str, dict[str, float]]:
    """Unbiased pass@k (Chen et al. 2021) for every k in 1..N, {"k": {"mean", "se"}}."""
    correct_BN = np.asarray(correct_BN, bool)
    return {str(k): best_of_n.mean_and_se(best_of_n.pass_at_n(correct_BN, k))
            for k in range(1, correct_BN.shape[1] + 1)}


def task_summary(correct_BN: np.ndarray, scores: Mapping[str, np.ndarray], failed: Mapping[str, np.ndarray],
                 filters: Mapping[str, Sequence[gap.Filter]], ensembles: Mapping[str, Sequence[tuple[str, gap.Filter]]],
                 *, num_resamples: int = 1000, seed: int = 0) -> dict:
    """One (model, task): J(f), the gap table per verifier / filter and per ensemble (bootstrap SEs),
    pass@k for every k, and per verifier its parse failures, score distribution and dominance AUC."""
    weights = {name: {f.name: f.weights(s) for f in filters[name]} for name, s in scores.items()}
    for spec, members in ensembles.items():
        if all(name in scores for name, _ in members):
            weights[spec] = {"and": gap.ensemble_weights(scores, members)}
    table = gap.gap_table(correct_BN, weights, num_resamples=num_resamples, seed=seed)
    table["pass_at_k"] = pass_at_every_k(correct_BN)
    table["verifiers"] = {name: {**gv_verifiers.score_report(s, failed[name]),
                                 "dominance_auc": best_of_n.dominance_auc(s, correct_BN)}
                          for name, s in scores.items()}
    return table


def filtered_dataset(sample_fn: SampleFn, params, prompts: PromptSet, key: jax.Array, *, num_samples: int,
                     temperature: float, batch_size: int, keep_fn: KeepFn, progress: str = "") -> SFTDataset | None:
    """Steps 1-3 of a self-improvement round (Alg. 1): N samples per prompt from `params`, the ones
    `keep_fn` keeps (e.g. a verifier's per-prompt quantile filter, or the grader for the ground-truth
    arm) as training rows (x, y) for the "gv_filtered_sft" loss; None when nothing at all was kept
    (e.g. the ground-truth arm on prompts the model never solves)."""
    if len(prompts) == 0:
        raise ValueError("filtered dataset: there are no training prompts to sample")
    rows = []
    for real, tokens, valid, logp in sampled_batches(sample_fn, params, prompts, key, num_samples=num_samples,
                                                     temperature=temperature, batch_size=batch_size,
                                                     progress=progress):
        keep_BN = np.asarray(keep_fn(real, tokens, valid, logp), bool)
        if keep_BN.shape != (len(real), num_samples):
            raise ValueError(f"keep_fn returned shape {keep_BN.shape}; expected {(len(real), num_samples)}")
        batch_rows = sample_rows(real, tokens, valid)
        rows.append({k: v[keep_BN.reshape(-1)] for k, v in batch_rows.items()})
    seqs = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    return SFTDataset(seqs) if len(seqs["tokens"]) else None


def train_on_kept(config, params, dataset: SFTDataset, *, num_steps: int, batch_size: int, learning_rate: float,
                  lora_rank: int, lora_alpha: float, seed: int) -> tuple[dict, float]:
    """Step 4 of a round: f_{t+1} = `num_steps` updates of the "gv_filtered_sft" loss (LoRA when
    lora_rank > 0) from `params` on `dataset`, through the one train step; returns (the plain
    parameters of f_{t+1}, adapters merged, and the last loss)."""
    tx, _ = make_optimizer(learning_rate=learning_rate, num_steps=num_steps)
    policy, state = make_policy_state(config, params, tx, jax.random.key(seed), lora_rank=lora_rank,
                                      lora_alpha=lora_alpha)
    step = FILTERED_SFT.make_step(policy.logprob_fn, tx, ref_logprob_fn=policy.ref_logprob_fn)
    loss = float("nan")
    for t in range(num_steps):
        state, metrics = step(state, params, dataset.batch(t, batch_size, seed))
        loss = metrics["loss"]
    return policy.sampling_params(state), float(loss)
