"""RLHF-Sharpening simulated exactly (reward-based DPO and XPO), trained with the project's train step.

Both methods target pi*_beta ∝ pi_base^(1 + 1/beta), the maximizer of E_pi[log pi_base] - beta KL(pi || pi_base)
(Huang et al., 2024, Sec. 4.2), and fit it by the squared loss of the paper's Eq. 4 on pairs (a, b):

    (beta (log pi/pi_base(a|x) - log pi/pi_base(b|x)) - (r_self(a|x) - r_self(b|x)))^2.

reward-DPO: a, b ~ pi_base (the data never depends on the learner).
XPO (paper Algorithm 1): in round t, a ~ pi_t (the current policy), b ~ pi_base, plus the optimism
term alpha log pi(b). Its guarantee depends on the class's sequential extrapolation coefficient, not on
C_cov, so on the linear-softmax separation family its sample complexity should not grow with C_cov.

Each round draws `pairs_per_round` prompts and pairs (2 samples each, all counted), appends them to
a buffer, and takes `steps_per_round` updates of the registered loss's train step (`sharpen_jax.methods`)
on minibatches drawn from the whole buffer (the paper's argmin over all data so far). After every
round pi_t(y*(x)|x) is computed exactly, and whether y*(x) was drawn is recorded. Everything is one
compiled function vmapped over seeds and over stacked base policies of one class (a sweep of C_cov),
compiled with `SIMULATION_COMPILER_OPTIONS` (see `sft_sharpening.py`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sharpen_jax.methods import get_loss
from sharpen_jax.training.train_state import create_train_state
from sharpen_jax.theory import exact
from sharpen_jax.theory.families import SharpeningProblem
from sharpen_jax.theory.sampling import sample_prompts, sample_responses
from sharpen_jax.theory.sft_sharpening import SIMULATION_COMPILER_OPTIONS


@dataclasses.dataclass(frozen=True)
class RlhfConfig:
    """One RLHF-Sharpening run: the loss ("reward_dpo" or "xpo"), beta, alpha, rounds and optimizer.

    on_policy: draw a ~ pi_t (XPO, and online reward-DPO) instead of a ~ pi_base.
    """

    loss: str = "xpo"
    beta: float = 0.05
    alpha: float = 0.0
    on_policy: bool = True
    num_rounds: int = 20
    pairs_per_round: int = 2
    steps_per_round: int = 40
    batch_size: int = 16
    learning_rate: float = 0.1
    eps: float = 0.1
    delta: float = 0.1

    def __post_init__(self):
        if self.loss not in ("reward_dpo", "xpo"):
            raise ValueError(f"loss={self.loss!r}; expected 'reward_dpo' or 'xpo'")
        exact.check_beta(self.beta)
        if self.alpha < 0:
            raise ValueError(f"alpha={self.alpha}: the optimism coefficient must be >= 0")
        if min(self.num_rounds, self.pairs_per_round, self.steps_per_round, self.batch_size) < 1:
            raise ValueError("num_rounds, pairs_per_round, steps_per_round and batch_size must be >= 1")
        exact.check_unit_interval(self.eps, "eps")
        exact.check_unit_interval(self.delta, "delta")

    @property
    def samples_after_round(self) -> np.ndarray:
        """Responses drawn after each round (two per pair), float64[num_rounds]."""
        return 2.0 * self.pairs_per_round * np.arange(1, self.num_rounds + 1)


def _rlhf_one_seed(policy, config: RlhfConfig, key, base_params, prompt_probs_X):
    tx = optax.adam(config.learning_rate)
    entry = get_loss(config.loss)
    hyperparameters = {k: v for k, v in (("beta", config.beta), ("alpha", config.alpha)) if k in entry.hyperparameters}
    po_step = entry.make_step(policy.logprob_fn, tx, hyperparameters=hyperparameters)
    base_logp_XY = policy.logprobs_XY(base_params)
    y_star_X = jnp.argmax(base_logp_XY, axis=-1)
    eval_seqs = policy.seqs(jnp.arange(policy.num_prompts), y_star_X)
    size = config.num_rounds * config.pairs_per_round
    empty = jnp.zeros(size, jnp.int32)
    _, k_rounds = jax.random.split(key)

    def one_round(carry, inputs):
        state, buffer = carry
        r, round_key = inputs
        k_x, k_a, k_b, k_steps = jax.random.split(round_key, 4)
        x_P = sample_prompts(k_x, prompt_probs_X, config.pairs_per_round)
        a_logp_XY = policy.logprobs_XY(state.params) if config.on_policy else base_logp_XY
        new = {"x": x_P, "a": sample_responses(k_a, a_logp_XY, x_P, 1)[:, 0],
               "b": sample_responses(k_b, base_logp_XY, x_P, 1)[:, 0]}
        start = r * config.pairs_per_round
        buffer = {k: jax.lax.dynamic_update_slice(buffer[k], new[k], (start,)) for k in buffer}
        filled = start + config.pairs_per_round

        def one_step(state, step_key):
            k_idx, _ = jax.random.split(step_key)
            idx_M = jax.random.randint(k_idx, (config.batch_size,), 0, filled)
            x_M, a_M, b_M = buffer["x"][idx_M], buffer["a"][idx_M], buffer["b"][idx_M]
            batch = {"a": policy.seqs(x_M, a_M), "b": policy.seqs(x_M, b_M),
                     "reward_a": base_logp_XY[x_M, a_M], "reward_b": base_logp_XY[x_M, b_M]}
            state, metrics = po_step(state, base_params, batch)
            return state, (metrics["loss"], metrics["finite"])

        state, (loss_K, finite_K) = jax.lax.scan(one_step, state, jax.random.split(k_steps, config.steps_per_round))
        target_X = jnp.exp(policy.logprob_fn(state.params, eval_seqs)[0])
        drawn = jnp.any((new["a"] == y_star_X[x_P]) | (new["b"] == y_star_X[x_P]))
        return (state, buffer), (target_X, loss_K[-1], jnp.all(finite_K), drawn)

    init = (create_train_state(base_params, tx), {"x": empty, "a": empty, "b": empty})
    rounds = (jnp.arange(config.num_rounds), jax.random.split(k_rounds, config.num_rounds))
    (state, _), (target_RX, loss_R, finite_R, drawn_R) = jax.lax.scan(one_round, init, rounds)
    return {"target_probs_RX": target_RX, "final_loss_R": loss_R, "final_params": state.params,
            "finite": jnp.all(finite_R), "target_drawn_R": drawn_R}


@functools.partial(jax.jit, static_argnums=(0, 1), compiler_options=SIMULATION_COMPILER_OPTIONS)
def _rlhf_seeds(policy, config: RlhfConfig, keys_S, base_params_C, prompt_probs_CX):
    one_seed = functools.partial(_rlhf_one_seed, policy, config)
    per_seed = jax.vmap(one_seed, in_axes=(0, None, None))
    return jax.vmap(per_seed, in_axes=(None, 0, 0))(keys_S, base_params_C, prompt_probs_CX)


def run_rlhf_sharpening(key, problem: SharpeningProblem, config: RlhfConfig, num_seeds: int) -> dict[str, Any]:
    """RLHF-Sharpening on `problem` for `num_seeds` seeds.

    Returns numpy arrays: "target_probs" [S, R, X] = pi_t(y*(x)|x) after each round,
    "sharpness" [S, R] = P_x[pi_t(y*|x) >= 1 - delta], "success" [S, R], "final_loss" [S, R],
    "target_drawn" [S, R] (y*(x) was one of the responses drawn in round r, on either side),
    "samples" [R] (responses drawn so far), and "final_params" (the last policy of every seed).
    """
    stacked = jax.tree.map(lambda a: a[None], problem.base_params)
    return run_rlhf_sharpening_stacked(key, problem.policy, stacked, problem.prompt_probs_X[None], config,
                                       num_seeds)[0]


def run_rlhf_sharpening_stacked(key, policy, base_params_C, prompt_probs_CX, config: RlhfConfig,
                                num_seeds: int) -> list[dict[str, Any]]:
    """`run_rlhf_sharpening` for C base policies of one class stacked on a leading axis (one compile);
    every problem sees the same seeds' keys."""
    num_problems = jax.tree.leaves(base_params_C)[0].shape[0]
    keys_S = jax.random.split(key, num_seeds)
    out = jax.device_get(_rlhf_seeds(policy, config, keys_S, base_params_C, jnp.asarray(prompt_probs_CX)))
    if not np.all(out["finite"]):
        raise FloatingPointError(f"RLHF-Sharpening simulation ({config.loss}): po_step met a non-finite "
                                 "loss or gradient")
    results = []
    for c in range(num_problems):
        target_SRX = np.asarray(out["target_probs_RX"][c])
        sharp_SR = np.asarray(exact.sharpness_from_target_probs(target_SRX, config.delta, prompt_probs_CX[c]))
        results.append({"target_probs": target_SRX, "sharpness": sharp_SR, "success": sharp_SR >= 1.0 - config.eps,
                        "final_loss": np.asarray(out["final_loss_R"][c]),
                        "target_drawn": np.asarray(out["target_drawn_R"][c]), "samples": config.samples_after_round,
                        "final_params": jax.tree.map(lambda a: a[c], out["final_params"])})
    return results
