"""SFT-Sharpening simulated exactly, trained with the project's own `sft_step`.

Algorithm (Huang et al., 2024, Sec. 4.1): draw n prompts x_i ~ mu; for each draw N responses
y_i1..y_iN ~ pi_base(.|x_i) and keep y_i^BoN = argmax_j log pi_base(y_ij|x_i); fit
pi_hat = argmax_{pi in Pi} sum_i log pi(y_i^BoN|x_i). The guarantee: with
n ~ log(|Pi|/rho)/(delta eps) and N ~ C_cov log(1/delta)/eps, pi_hat is (eps, delta)-sharpened.

Here the maximum likelihood fit is `num_steps` full-batch updates of
the "sft" loss of `sharpen_jax.methods` through `training.make_train_step` (Adam, cosine-decayed learning rate) from pi_base, and
pi_hat(y*(x)|x) is then computed exactly for every prompt. One compiled function covers a grid of
prompt counts n (a 0/1 `weight` over the first n of n_max prompts) and of sample sizes N (best-of-N
on one shared stream of samples), is vmapped over seeds, and over stacked base policies of the
same class (a sweep of C_cov).

These programs are tiny but deeply nested (vmap over grids, scan over steps), so XLA's compile time
dominates their run time on CPU; they are compiled with LLVM's expensive passes off
(`SIMULATION_COMPILER_OPTIONS`), which cuts compile time about 3x and leaves results unchanged.
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
from sharpen_jax.theory.sampling import best_of_n_along_grid, sample_prompts


SIMULATION_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@dataclasses.dataclass(frozen=True)
class SftConfig:
    """Grid and optimizer of an SFT-Sharpening simulation.

    prompt_counts: the values of n tried (training prompts drawn i.i.d. from mu).
    sample_sizes: the values of N tried (samples from pi_base per prompt).
    eps, delta: the sharpness target; a run succeeds when P_x[pi_hat(y*|x) >= 1 - delta] >= 1 - eps.
    """

    prompt_counts: tuple[int, ...]
    sample_sizes: tuple[int, ...]
    num_steps: int = 150
    learning_rate: float = 0.3
    eps: float = 0.1
    delta: float = 0.1

    def __post_init__(self):
        if not self.prompt_counts or min(self.prompt_counts) < 1:
            raise ValueError(f"prompt_counts={self.prompt_counts}: expected positive integers")
        if not self.sample_sizes or min(self.sample_sizes) < 1:
            raise ValueError(f"sample_sizes={self.sample_sizes}: expected positive integers")
        if self.num_steps < 1 or not self.learning_rate > 0:
            raise ValueError(f"num_steps={self.num_steps}, learning_rate={self.learning_rate}: expected > 0")
        exact.check_unit_interval(self.eps, "eps")
        exact.check_unit_interval(self.delta, "delta")

    @property
    def total_samples_nN(self) -> np.ndarray:
        """m = n N for every grid point, float64[len(prompt_counts), len(sample_sizes)]."""
        return np.outer(self.prompt_counts, self.sample_sizes).astype(np.float64)


def _optimizer(config: SftConfig) -> optax.GradientTransformation:
    return optax.adam(optax.cosine_decay_schedule(config.learning_rate, config.num_steps))


def _sft_one_seed(policy, config: SftConfig, key, base_params, prompt_probs_X):
    tx = _optimizer(config)
    sft_step = get_loss("sft").make_step(policy.logprob_fn, tx)
    k_prompt, k_sample, _ = jax.random.split(key, 3)
    n_max = max(config.prompt_counts)
    x_n = sample_prompts(k_prompt, prompt_probs_X, n_max)
    base_logp_XY = policy.logprobs_XY(base_params)
    y_star_X = jnp.argmax(base_logp_XY, axis=-1)
    winners_Gn = best_of_n_along_grid(k_sample, base_logp_XY, base_logp_XY, x_n, config.sample_sizes)
    eval_seqs = policy.seqs(jnp.arange(policy.num_prompts), y_star_X)

    def fit(y_n, weight_n):
        batch = {"seqs": policy.seqs(x_n, y_n), "weight": weight_n}

        def body(state, _):
            state, metrics = sft_step(state, None, batch)
            return state, (metrics["loss"], metrics["finite"])

        state, (loss_T, finite_T) = jax.lax.scan(body, create_train_state(base_params, tx), None,
                                                 length=config.num_steps)
        return jnp.exp(policy.logprob_fn(state.params, eval_seqs)[0]), loss_T[-1], jnp.all(finite_T)

    weights_Kn = (jnp.arange(n_max)[None, :] < jnp.asarray(config.prompt_counts)[:, None]).astype(jnp.float32)
    fit_N = jax.vmap(fit, in_axes=(0, None))
    target_KGX, loss_KG, finite_KG = jax.vmap(fit_N, in_axes=(None, 0))(winners_Gn, weights_Kn)
    hit_KG = jnp.sum(weights_Kn[:, None, :] * (winners_Gn[None] == y_star_X[x_n][None, None, :]), -1)
    return {"target_probs_KGX": target_KGX, "final_loss_KG": loss_KG, "finite": jnp.all(finite_KG),
            "bon_hit_rate_KG": hit_KG / jnp.asarray(config.prompt_counts, jnp.float32)[:, None]}


@functools.partial(jax.jit, static_argnums=(0, 1), compiler_options=SIMULATION_COMPILER_OPTIONS)
def _sft_grid(policy, config: SftConfig, keys_S, base_params_C, prompt_probs_CX):
    one_seed = functools.partial(_sft_one_seed, policy, config)
    per_seed = jax.vmap(one_seed, in_axes=(0, None, None))
    return jax.vmap(per_seed, in_axes=(None, 0, 0))(keys_S, base_params_C, prompt_probs_CX)


def run_sft_sharpening(key, problem: SharpeningProblem, config: SftConfig, num_seeds: int) -> dict[str, Any]:
    """SFT-Sharpening on `problem` for every (n, N) of the grid and `num_seeds` seeds.

    Returns numpy arrays: "target_probs" [S, K, G, X] = pi_hat(y*(x)|x) (K prompt counts, G sample
    sizes), "sharpness" [S, K, G] = P_x[pi_hat(y*|x) >= 1 - delta], "success" [S, K, G],
    "bon_hit_rate" [S, K, G] (fraction of training prompts whose best-of-N was y*),
    "final_loss" [S, K, G], and "total_samples" [K, G] = n N.
    """
    return run_sft_sharpening_stacked(key, problem.policy, jax.tree.map(lambda a: a[None], problem.base_params),
                                      problem.prompt_probs_X[None], config, num_seeds)[0]


def run_sft_sharpening_stacked(key, policy, base_params_C, prompt_probs_CX, config: SftConfig,
                               num_seeds: int) -> list[dict[str, Any]]:
    """`run_sft_sharpening` for C base policies of one class stacked on a leading axis (one compile)."""
    num_problems = jax.tree.leaves(base_params_C)[0].shape[0]
    keys_S = jax.random.split(key, num_seeds)
    out = jax.device_get(_sft_grid(policy, config, keys_S, base_params_C, jnp.asarray(prompt_probs_CX)))
    if not np.all(out["finite"]):
        raise FloatingPointError("SFT-Sharpening simulation: sft_step met a non-finite loss or gradient")
    results = []
    for c in range(num_problems):
        target_SKGX = np.asarray(out["target_probs_KGX"][c])
        sharp_SKG = np.asarray(exact.sharpness_from_target_probs(target_SKGX, config.delta, prompt_probs_CX[c]))
        results.append({"target_probs": target_SKGX, "sharpness": sharp_SKG,
                        "success": sharp_SKG >= 1.0 - config.eps,
                        "bon_hit_rate": np.asarray(out["bon_hit_rate_KG"][c]),
                        "final_loss": np.asarray(out["final_loss_KG"][c]),
                        "total_samples": config.total_samples_nN})
    return results
