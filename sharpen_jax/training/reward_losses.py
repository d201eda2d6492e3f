"""Reward-model losses: PIT's gap reward loss (Wang et al., 2023, Eq. 2) and plain Bradley-Terry.

Notation: r^{a,b} = r_gap(x, y_a, y_b), how much better y_a is than y_b (R_PIT read with
y_ref = y_b and y = y_a), for the two responses w (preferred) and l of a pair (x, y_w, y_l).
PIT's ordering constraint is r^{w,l} > r^{w,w} ≈ r^{l,l} > r^{l,w}; Eq. 2 asks for five of its
pairwise comparisons as Bradley-Terry log-sigmoid terms (the pair (w,w) vs (l,l) is left out):

    L = -[log σ(r^{w,l} - r^{w,w}) + log σ(r^{w,l} - r^{l,l}) + log σ(r^{w,l} - r^{l,w})
          + log σ(r^{w,w} - r^{l,w}) + log σ(r^{l,l} - r^{l,w})]

Only differences of rewards enter, so L is invariant to adding one constant to every r. With the
difference parameterisation r(y_1, y_2) = g(y_1) - g(y_2) it reduces to -[4 log σ(Δ) + log σ(2Δ)],
Δ = g(w) - g(l); under a fraction ε of flipped labels its minimiser Δ* solves
(1-ε)(4σ(-Δ) + 2σ(-2Δ)) = ε(4σ(Δ) + 2σ(2Δ)) (Δ* = 1.8355 at ε = 0.1, against Bradley-Terry's
log((1-ε)/ε) = 2.1972).

Both losses are per-pair means sum_i w_i l_i / sum_i w_i with metrics["denominator"] = sum_i w_i,
the form `training.grad_accum` accumulates exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sharpen_jax.training.losses import Metrics, _check_same_shape, _ratio, _weights

GAP_KEYS = ("wl", "ww", "ll", "lw")  # batch sides of Eq. 2: "ab" = R_PIT(x, y_ref = y_b, y = y_a)


def gap_reward_terms(r_wl_B, r_ww_B, r_ll_B, r_lw_B) -> jax.Array:
    """The five margins of Eq. 2, float32[5, B]: (wl - ww, wl - ll, wl - lw, ww - lw, ll - lw)."""
    return jnp.stack([r_wl_B - r_ww_B, r_wl_B - r_ll_B, r_wl_B - r_lw_B, r_ww_B - r_lw_B, r_ll_B - r_lw_B])


def gap_reward_loss(r_wl_B, r_ww_B, r_ll_B, r_lw_B, weight_B=None) -> tuple[jax.Array, Metrics]:
    """PIT's Eq. 2 averaged over pairs: mean_i -sum_{k=1..5} log σ(margin_k,i) (see the module docstring).

    metrics: "pair_accuracy" = fraction with r^{w,l} > r^{l,w}; "ordering" = fraction of pairs whose
    five comparisons all hold.
    """
    _check_same_shape(r_wl=r_wl_B, r_ww=r_ww_B, r_ll=r_ll_B, r_lw=r_lw_B)
    w_B = _weights(weight_B, r_wl_B)
    margins_5B = gap_reward_terms(r_wl_B, r_ww_B, r_ll_B, r_lw_B)
    per_pair_B = -jnp.sum(jax.nn.log_sigmoid(margins_5B), axis=0)
    den = jnp.sum(w_B)
    loss = _ratio(jnp.sum(w_B * per_pair_B), den)
    return loss, {"loss": loss, "denominator": den,
                  "pair_accuracy": _ratio(jnp.sum(w_B * (r_wl_B > r_lw_B)), den),
                  "ordering": _ratio(jnp.sum(w_B * jnp.all(margins_5B > 0, axis=0)), den),
                  "gap_margin": _ratio(jnp.sum(w_B * jax.lax.stop_gradient(r_wl_B - r_lw_B)), den)}


def bradley_terry_loss(r_w_B, r_l_B, weight_B=None) -> tuple[jax.Array, Metrics]:
    """The ordinary RLHF reward-model loss, mean_i -log σ(r(x_i, y_w,i) - r(x_i, y_l,i)) (Bradley-Terry).

    Its minimiser under a fraction ε of flipped labels is r_w - r_l = log((1-ε)/ε).
    """
    _check_same_shape(r_w=r_w_B, r_l=r_l_B)
    w_B = _weights(weight_B, r_w_B)
    margin_B = r_w_B - r_l_B
    den = jnp.sum(w_B)
    loss = _ratio(jnp.sum(w_B * -jax.nn.log_sigmoid(margin_B)), den)
    return loss, {"loss": loss, "denominator": den, "pair_accuracy": _ratio(jnp.sum(w_B * (margin_B > 0)), den),
                  "reward_margin": _ratio(jnp.sum(w_B * jax.lax.stop_gradient(margin_B)), den)}
