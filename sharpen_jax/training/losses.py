"""Training losses over sequence log-probabilities (Huang et al., 2024, "Self-Improvement in
Language Models: The Sharpening Mechanism").

Every loss is a pure function of per-sequence arrays (leading axis B, or B*K for grouped
samples) and returns `(loss, metrics)`. Each loss has the form

    loss = sum_i numerator_i / sum_i denominator_i

with a denominator that does not depend on the parameters; `metrics["denominator"]` reports
`sum_i denominator_i` so that gradient accumulation over micro-batches reproduces the full-batch
gradient exactly (accumulate `denominator * grad(loss)`, divide by the summed denominators).

Notation: logp = log pi(y|x) under the trained policy, ref = log pi_base(y|x) under the frozen base
policy, r = self-reward, beta > 0 the KL coefficient. The minimizer of the KL-regularized objective
E_pi[r] - beta KL(pi || pi_base) is pi*_beta ∝ pi_base exp(r / beta), which for r = log pi_base is
pi_base^(1 + 1/beta).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Metrics = dict[str, jax.Array]


def _check_same_shape(**arrays) -> None:
    """Raise a ValueError naming the first input whose shape differs from the first one's."""
    names = list(arrays)
    first = jnp.shape(arrays[names[0]])
    if len(first) != 1:
        raise ValueError(f"{names[0]} must be a 1-D per-sequence array, got shape {first}")
    for name in names[1:]:
        if jnp.shape(arrays[name]) != first:
            raise ValueError(f"{name} has shape {jnp.shape(arrays[name])}; expected {first} like {names[0]}")


def _weights(weight_B, like_B) -> jax.Array:
    if weight_B is None:
        return jnp.ones_like(like_B, jnp.float32)
    _check_same_shape(logp=like_B, weight=weight_B)
    return jnp.asarray(weight_B, jnp.float32)


def _ratio(num: jax.Array, den: jax.Array) -> jax.Array:
    """num / den, and 0 when den == 0 (an all-zero-weight micro-batch contributes nothing)."""
    return num / jnp.where(den > 0, den, 1.0)


def sft_loss(logp_B, num_tokens_B, weight_B=None) -> tuple[jax.Array, Metrics]:
    """Token-mean negative log-likelihood: -sum_i w_i log pi(y_i|x_i) / sum_i w_i |y_i|.

    Maximum likelihood on (x, y_BoN) pairs is SFT-Sharpening (Huang et al., Section 4.1).
    """
    _check_same_shape(logp=logp_B, num_tokens=num_tokens_B)
    w_B = _weights(weight_B, logp_B)
    den = jnp.sum(w_B * num_tokens_B)
    loss = _ratio(-jnp.sum(w_B * logp_B), den)
    return loss, {"loss": loss, "denominator": den}


def _pair_residual(logp_a, logp_b, ref_a, ref_b, reward_a, reward_b, beta):
    """beta * ((logp_a - ref_a) - (logp_b - ref_b)) - (r_a - r_b), the residual of Eq. 4."""
    return beta * ((logp_a - ref_a) - (logp_b - ref_b)) - (reward_a - reward_b)


def reward_dpo_loss(logp_a_B, logp_b_B, ref_a_B, ref_b_B, reward_a_B, reward_b_B, *, beta: float,
                    weight_B=None) -> tuple[jax.Array, Metrics]:
    """Reward-based DPO (paper Eq. 4): mean_i (beta*(log pi/pi_base(a_i) - log pi/pi_base(b_i)) - (r(a_i) - r(b_i)))^2.

    With pairs a, b drawn from pi_base its population minimizer is pi*_beta ∝ pi_base exp(r/beta).
    """
    _check_same_shape(logp_a=logp_a_B, logp_b=logp_b_B, ref_a=ref_a_B, ref_b=ref_b_B,
                      reward_a=reward_a_B, reward_b=reward_b_B)
    w_B = _weights(weight_B, logp_a_B)
    residual_B = _pair_residual(logp_a_B, logp_b_B, ref_a_B, ref_b_B, reward_a_B, reward_b_B, beta)
    den = jnp.sum(w_B)
    loss = _ratio(jnp.sum(w_B * residual_B**2), den)
    return loss, {"loss": loss, "denominator": den, **_pair_metrics(logp_a_B, logp_b_B, ref_a_B, ref_b_B,
                                                                     reward_a_B, reward_b_B, w_B)}


def xpo_loss(logp_a_B, logp_b_B, ref_a_B, ref_b_B, reward_a_B, reward_b_B, *, beta: float, alpha: float,
             weight_B=None) -> tuple[jax.Array, Metrics]:
    """XPO with the squared loss (paper Algorithm 1), per pair averaged:

        mean_i [ alpha * log pi(b_i) + (beta*(log pi/pi_base(a_i) - log pi/pi_base(b_i)) - (r(a_i) - r(b_i)))^2 ]

    where a_i ~ pi (current policy) and b_i ~ pi_base. The first term lowers the likelihood of base
    samples: the optimism that drives exploration. This is the paper's sum over the dataset divided
    by its size, so it has the same minimizer.
    """
    _check_same_shape(logp_a=logp_a_B, logp_b=logp_b_B, ref_a=ref_a_B, ref_b=ref_b_B,
                      reward_a=reward_a_B, reward_b=reward_b_B)
    w_B = _weights(weight_B, logp_a_B)
    residual_B = _pair_residual(logp_a_B, logp_b_B, ref_a_B, ref_b_B, reward_a_B, reward_b_B, beta)
    den = jnp.sum(w_B)
    exploration = _ratio(jnp.sum(w_B * logp_b_B), den)
    squared = _ratio(jnp.sum(w_B * residual_B**2), den)
    loss = alpha * exploration + squared
    return loss, {"loss": loss, "denominator": den, "squared_loss": squared,
                  "base_sample_logp": exploration,
                  **_pair_metrics(logp_a_B, logp_b_B, ref_a_B, ref_b_B, reward_a_B, reward_b_B, w_B)}


def online_dpo_loss(logp_a_B, logp_b_B, ref_a_B, ref_b_B, reward_a_B, reward_b_B, *, beta: float,
                    weight_B=None) -> tuple[jax.Array, Metrics]:
    """Logistic DPO on self-reward preferences: mean over untied pairs of -log sigmoid(beta * margin),
    margin = s * ((logp_a - ref_a) - (logp_b - ref_b)), s = sign(r_a - r_b).

    Pairs with r_a == r_b carry no preference and get weight 0.
    """
    _check_same_shape(logp_a=logp_a_B, logp_b=logp_b_B, ref_a=ref_a_B, ref_b=ref_b_B,
                      reward_a=reward_a_B, reward_b=reward_b_B)
    w_B = _weights(weight_B, logp_a_B)
    sign_B = jnp.sign(reward_a_B - reward_b_B).astype(jnp.float32)
    w_B = w_B * jnp.abs(sign_B)
    margin_B = beta * sign_B * ((logp_a_B - ref_a_B) - (logp_b_B - ref_b_B))
    den = jnp.sum(w_B)
    loss = _ratio(jnp.sum(w_B * -jax.nn.log_sigmoid(margin_B)), den)
    return loss, {"loss": loss, "denominator": den,
                  "preference_accuracy": _ratio(jnp.sum(w_B * (margin_B > 0)), den),
                  **_pair_metrics(logp_a_B, logp_b_B, ref_a_B, ref_b_B, reward_a_B, reward_b_B, w_B)}


def _pair_metrics(logp_a, logp_b, ref_a, ref_b, reward_a, reward_b, w) -> Metrics:
    den = jnp.sum(w)
    mean = lambda x: _ratio(jnp.sum(w * jax.lax.stop_gradient(x)), den)
    return {"logratio_a": mean(logp_a - ref_a), "logratio_b": mean(logp_b - ref_b),
            "reward_mean": _ratio(jnp.sum(w * (reward_a + reward_b)), 2 * den),
            "reward_margin": mean(reward_a - reward_b)}


def leave_one_out_advantages(shaped_reward_N, group_size: int) -> jax.Array:
    """r_i - mean_{j != i} r_j within each consecutive group of `group_size` samples of one prompt."""
    if group_size < 2:
        raise ValueError(f"group_size={group_size}: a leave-one-out baseline needs at least 2 samples per prompt")
    n = shaped_reward_N.shape[0]
    if n % group_size:
        raise ValueError(f"reward has {n} entries, not a multiple of group_size={group_size}")
    r_GK = shaped_reward_N.reshape(n // group_size, group_size)
    baseline_GK = (jnp.sum(r_GK, axis=1, keepdims=True) - r_GK) / (group_size - 1)
    return (r_GK - baseline_GK).reshape(n)


def kl_policy_gradient_loss(logp_N, ref_logp_N, reward_N, *, group_size: int, beta: float,
                            weight_N=None) -> tuple[jax.Array, Metrics]:
    """REINFORCE for max_pi E_pi[r] - beta KL(pi || pi_base), with a leave-one-out baseline.

    Samples come in consecutive groups of K = `group_size` drawn from the current policy for one
    prompt. The shaped reward r~_i = r_i - beta (logp_i - ref_i) is held constant (stop-gradient);
    the advantage A_i = r~_i - mean_{j != i} r~_j; loss = -mean_i A_i log pi(y_i). Its expected
    gradient is the gradient of the KL-regularized objective (the extra -beta E[grad log pi] is 0).
    """
    _check_same_shape(logp=logp_N, ref_logp=ref_logp_N, reward=reward_N)
    w_N = _weights(weight_N, logp_N)
    logratio_N = jax.lax.stop_gradient(logp_N - ref_logp_N)
    shaped_N = reward_N - beta * logratio_N
    advantage_N = jax.lax.stop_gradient(leave_one_out_advantages(shaped_N, group_size))
    den = jnp.sum(w_N)
    loss = _ratio(-jnp.sum(w_N * advantage_N * logp_N), den)
    return loss, {"loss": loss, "denominator": den, "kl": _ratio(jnp.sum(w_N * logratio_N), den),
                  "reward_mean": _ratio(jnp.sum(w_N * reward_N), den),
                  "shaped_reward_mean": _ratio(jnp.sum(w_N * shaped_N), den),
                  "advantage_abs_mean": _ratio(jnp.sum(w_N * jnp.abs(advantage_N)), den)}
