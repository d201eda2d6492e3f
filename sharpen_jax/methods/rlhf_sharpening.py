"""RLHF-Sharpening (Huang et al., 2024, Sec. 4.2): KL-regularized policy optimization toward a self-reward.

Maximize E_pi[r_self] - beta KL(pi || pi_base); the optimum is pi*_beta ∝ pi_base exp(r/beta), which
for r = log pi_base is pi_base^(1 + 1/beta). Four loss entries, each with its batch source (who
samples which side, Sec. 4.2 and Algorithm 1):

    reward_dpo   a ~ pi_base, b ~ pi_base   squared loss of Eq. 4
    xpo          a ~ pi,      b ~ pi_base   Algorithm 1: alpha * log pi(b) + the same squared term
    online_dpo   a ~ pi,      b ~ pi        logistic loss on self-reward preferences
    kl_pg        K samples ~ pi per prompt  REINFORCE, leave-one-out baseline, KL shaping

Reference log-probs come from `ref_params`, the step's separate argument, under stop_gradient. The
self-reward of every sample is computed under the base model through the selection layer: on the
sampler's own log-probs when the base model drew it, on a rescoring under the base model otherwise.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import numpy as np

from sharpen_jax.methods.registry import GROUP, Draw, LossEntry, register_loss
from sharpen_jax.rollouts import PromptSet, SampleFn, ScoreFn, sample_rows
from sharpen_jax.selection.rewards import BUILTIN, MODEL_REWARDS
from sharpen_jax.training import losses

METHOD = "rlhf_sharpening"
PAIR_KEYS = ("a", "b", "reward_a", "reward_b")
# Per-sample rewards only: a subset-dependent reward (majority) is meaningless on one pair.
SELF_REWARDS = tuple(name for name, r in BUILTIN.items() if not r.subset_dependent) + MODEL_REWARDS
BaseTokenLogprobFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def check_beta(beta: float) -> float:
    """beta if it is a positive finite number; the KL coefficient is an error otherwise."""
    if not (isinstance(beta, (int, float)) and np.isfinite(beta) and beta > 0):
        raise ValueError(f"beta={beta!r}; the KL coefficient must be a positive finite number")
    return float(beta)


def _ref_logp(ref_logprob_fn, ref_params, seqs):
    return jax.lax.stop_gradient(ref_logprob_fn(ref_params, seqs)[0])


def _pair_loss(pair_loss_of_arrays):
    """The builder of a pair loss: loss_fn reads sides "a" and "b" and their rewards."""

    def build(logprob_fn, ref_logprob_fn, **hyperparameters):
        check_beta(hyperparameters.get("beta"))
        loss = functools.partial(pair_loss_of_arrays, **hyperparameters)

        def loss_fn(params, ref_params, batch):
            logp_a_B, _ = logprob_fn(params, batch["a"])
            logp_b_B, _ = logprob_fn(params, batch["b"])
            return loss(logp_a_B, logp_b_B, _ref_logp(ref_logprob_fn, ref_params, batch["a"]),
                        _ref_logp(ref_logprob_fn, ref_params, batch["b"]), batch["reward_a"], batch["reward_b"],
                        weight_B=batch.get("weight"))

        return loss_fn

    return build


def _build_xpo(logprob_fn, ref_logprob_fn, *, beta: float, alpha: float = 0.0):
    if not (np.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha={alpha!r}; the XPO optimism coefficient must be >= 0")
    return _pair_loss(losses.xpo_loss)(logprob_fn, ref_logprob_fn, beta=beta, alpha=alpha)


def _build_kl_pg(logprob_fn, ref_logprob_fn, *, beta: float, group_size: int | None = None):
    check_beta(beta)
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise ValueError(f"group_size={group_size!r}; the leave-one-out baseline needs >= 2 samples per prompt")

    def loss_fn(params, ref_params, batch):
        logp_N, _ = logprob_fn(params, batch["seqs"])
        return losses.kl_policy_gradient_loss(logp_N, _ref_logp(ref_logprob_fn, ref_params, batch["seqs"]),
                                              batch["reward"], group_size=group_size, beta=beta,
                                              weight_N=batch.get("weight"))

    return loss_fn


REWARD_DPO = register_loss(LossEntry(
    "reward_dpo", METHOD, _pair_loss(losses.reward_dpo_loss), PAIR_KEYS,
    draws=(Draw("a", "base"), Draw("b", "base")), hyperparameters=("beta",),
    description="squared loss of Eq. 4 on pairs from pi_base"))
XPO = register_loss(LossEntry(
    "xpo", METHOD, _build_xpo, PAIR_KEYS, draws=(Draw("a", "policy"), Draw("b", "base")),
    hyperparameters=("beta", "alpha"), description="Algorithm 1: on-policy a, base b, optimism alpha log pi(b)"))
ONLINE_DPO = register_loss(LossEntry(
    "online_dpo", METHOD, _pair_loss(losses.online_dpo_loss), PAIR_KEYS,
    draws=(Draw("a", "policy"), Draw("b", "policy")), hyperparameters=("beta",),
    description="logistic DPO on self-reward preferences between two on-policy samples"))
KL_PG = register_loss(LossEntry(
    "kl_pg", METHOD, _build_kl_pg, ("seqs", "reward"), draws=(Draw("seqs", "policy", GROUP),),
    hyperparameters=("beta", "group_size"), grouped=True,
    description="REINFORCE with a leave-one-out baseline and KL shaping"))


def draw_batch(entry: LossEntry, sample_fn: SampleFn, policy_params, base_params, prompts: PromptSet,
               key: jax.Array, *, temperature: float, score_fn: ScoreFn,
               base_token_logprobs_fn: BaseTokenLogprobFn, group_size: int = 2) -> dict:
    """A training batch for `entry` on `prompts`, each side sampled by the policy its `draws` name.

    Sides drawn by the same policy with one sample per prompt are drawn together (one sampler call
    with two samples per prompt). Rewards are `score_fn` on token log-probs under the base model:
    the sampler's own when the base model drew the side, `base_token_logprobs_fn` otherwise.
    """
    if not entry.draws:
        raise ValueError(f"loss {entry.name!r} trains on a fixed dataset; it has no on-policy batch source")
    params = {"policy": policy_params, "base": base_params}
    # One sampler call per policy: its sides' samples are taken in order from the same call.
    per_policy: dict[str, list[Draw]] = {}
    for draw in entry.draws:
        per_policy.setdefault(draw.policy, []).append(draw)
    sides = {}
    for (policy, draws), k in zip(per_policy.items(), jax.random.split(key, len(per_policy))):
        counts = [d.samples(group_size) for d in draws]
        tokens, valid, logp = jax.device_get(sample_fn(params[policy], prompts.tokens, prompts.valid, k,
                                                       sum(counts), temperature))
        ref_logp = logp if policy == "base" else base_token_logprobs_fn(prompts.tokens, prompts.valid, tokens, valid)
        reward_BN = np.asarray(score_fn(prompts, tokens, valid, ref_logp), np.float32)
        offset = 0
        for draw, count in zip(draws, counts):
            cut = slice(offset, offset + count)
            sides[draw.side] = (tokens[:, cut], valid[:, cut], reward_BN[:, cut])
            offset += count
    if entry.grouped:
        tokens, valid, reward = sides["seqs"]
        return {"seqs": sample_rows(prompts, tokens, valid), "reward": reward.reshape(-1)}
    batch = {}
    for side, (tokens, valid, reward) in sides.items():
        batch[side] = sample_rows(prompts, tokens, valid)
        batch[f"reward_{side}"] = reward[:, 0]
    return batch
