"""The exploration separation: XPO against reward-DPO on a class that cannot extrapolate (notebook 6).

Huang et al. (2024) give two guarantees for RLHF-Sharpening. Reward-DPO on pairs from pi_base
(Thm 4.2) needs samples in proportion to a concentrability coefficient of pi_base with respect to
the class; XPO (Algorithm 1, Thm 4.3), whose side a comes from the current policy and whose loss
has the optimism term alpha log pi(b), replaces it by the class's sequential extrapolation
coefficient (SEC). The two differ only when pi_base covers the class badly and the class still
generalizes along the path that exploration takes. Where they must differ, derived for the families
of `families.py`:

* **Tabular classes cannot show it.** With one free logit per response, y* is the argmax, so
  pi_base(y*|x) >= 1/Y and C_cov <= Y; the class is linear in X Y one-hot features, and its SEC is of
  order X Y as well, so XPO's guarantee is not better than coverage there.
* **Prefix lock** (`families.prefix_lock_problem`, H features phi_h = 1[the first h tokens match the
  key s(x)], pi_base(y*|x) = q^H). The pair residual of Eq. 4 depends on theta only through
  sum_h (theta_h - theta_base,h) (phi_h(a) - phi_h(b)) (log Z cancels), and phi_H(y) = 1 only for
  y = y*(x). So on every pair without y*, d loss / d theta_H = 0, and a gradient method started at
  theta_base (Adam: zero gradient, zero moments, zero update) leaves theta_H = theta_base,H. Given
  the first H - 1 tokens right, the last one is then right with probability
  e^theta_H / (e^theta_H + V - 1) = q, whatever theta_<H: pi(y*|x) <= q < 1 - delta. Reward-DPO cannot
  be (eps, delta)-sharpened before pi_base has drawn some y*(x), and each draw is one with probability
  q^H = 1/C_cov: its sample complexity is at least a geometric variable of mean C_cov (log-log slope 1;
  its concentrability coefficient is >= C_cov here). XPO is not bound by this: once theta_1..theta_h
  are sharpened, pi_t reaches depth h almost surely and its own samples reveal theta_(h+1), and the
  optimism term raises the unvisited levels (d log pi(b) / d theta_h = phi_h(b) - E_pi[phi_h] < 0
  below b's depth). The class is linear in H features, so its SEC is O(H) (up to logs) and does not
  change with q: sweeping q = C_cov^(-1/H) at fixed (H, V) moves C_cov and leaves the class alone.
  Heuristically XPO pays O(1/q) samples per level, H/q = H C_cov^(1/H) in all: slope about 1/H.
* **Bit agreement** (the control): r_self is linear in features that pi_base turns on with
  probability q or 1 - q each, so about d pairs from pi_base identify theta: reward-DPO escapes C_cov
  too, and the claim's assertions must fail there.

SFT-Sharpening needs y* among its best-of-N samples on both families, so about C_cov samples.

`exploration_sweep` runs the three methods through the real step functions (`rlhf_sharpening.py`,
`sft_sharpening.py`) on problems of one class stacked over C_cov (one compile per method) and
summarizes them with the machinery of `sweeps.py`: first-success sample complexity per seed, median
with a bootstrap interval, log-log slope with a bootstrap interval. `check_claim` computes the verdict.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sharpen_jax.theory import exact, families
from sharpen_jax.theory.rlhf_sharpening import RlhfConfig, run_rlhf_sharpening_stacked
from sharpen_jax.theory.sft_sharpening import SftConfig, run_sft_sharpening_stacked
from sharpen_jax.theory.sweeps import first_success, geometric_grid, loglog_slope_with_ci, median_with_ci

FAMILIES = ("prefix_lock", "bit_agreement")


@dataclasses.dataclass(frozen=True)
class ExplorationSweepConfig:
    """SFT-Sharpening, reward-DPO and XPO on one class, pi_base(y*|x) = q^H swept so that C_cov takes `c_covs`.

    family: "prefix_lock" (H = horizon tokens over vocab_size) or "bit_agreement" (d = horizon bits).
    Both RLHF methods get the same rounds, enough for `rlhf_max_factor` max(c_covs) samples.
    SFT is given its best prompt count from `sft_prompt_counts` (None skips it), with sample sizes
    up to `sft_max_factor` max(c_covs) per prompt.
    """

    family: str = "prefix_lock"
    horizon: int = 10
    vocab_size: int = 2
    c_covs: tuple[float, ...] = (5.0, 15.0, 50.0, 165.0)
    num_prompts: int = 8
    num_seeds: int = 8
    rlhf_max_factor: float = 3.0
    xpo: RlhfConfig = RlhfConfig(loss="xpo", beta=0.05, alpha=0.01, on_policy=True)
    reward_dpo: RlhfConfig = RlhfConfig(loss="reward_dpo", beta=0.05, on_policy=False)
    sft_prompt_counts: tuple[int, ...] | None = (1, 2, 4, 8)
    sft_max_factor: float = 16.0
    sft_num_steps: int = 150
    sft_learning_rate: float = 0.3
    eps: float = 0.1
    delta: float = 0.1

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family={self.family!r}; expected one of {FAMILIES}")
        if not (isinstance(self.vocab_size, int) and self.vocab_size >= 2):
            raise ValueError(f"vocab_size={self.vocab_size!r}: expected an integer >= 2")
        if self.family == "bit_agreement" and self.vocab_size != 2:
            raise ValueError(f"vocab_size={self.vocab_size}: the bit-agreement family has binary responses (2)")
        c = tuple(self.c_covs)
        if len(c) < 2 or not all(x > 1 for x in c) or list(c) != sorted(set(c)):
            raise ValueError(f"c_covs={self.c_covs}: expected at least two increasing values > 1")
        if not (isinstance(self.horizon, int) and self.horizon >= 1):
            raise ValueError(f"horizon={self.horizon!r}: expected an integer >= 1")
        low = 1.0 / self.vocab_size
        if not self.agree_probs[-1] > low:
            raise ValueError(f"c_covs: the largest, {c[-1]:g}, needs q = C_cov^(-1/H) = {self.agree_probs[-1]:.3g} "
                             f"> {low:g} (y* the unique argmax) with horizon={self.horizon}; raise the horizon "
                             "or lower the C_cov")
        if self.num_seeds < 2 or not (self.rlhf_max_factor > 0 and self.sft_max_factor > 0):
            raise ValueError(f"num_seeds={self.num_seeds}, rlhf_max_factor={self.rlhf_max_factor}, "
                             f"sft_max_factor={self.sft_max_factor}: expected >= 2 seeds and positive factors")
        if self.xpo.loss != "xpo" or self.reward_dpo.loss != "reward_dpo" or self.reward_dpo.on_policy:
            raise ValueError(f"xpo.loss={self.xpo.loss!r}, reward_dpo=({self.reward_dpo.loss!r}, on_policy="
                             f"{self.reward_dpo.on_policy}): expected 'xpo', and 'reward_dpo' on pairs from pi_base")
        exact.check_unit_interval(self.eps, "eps")
        exact.check_unit_interval(self.delta, "delta")

    @property
    def agree_probs(self) -> tuple[float, ...]:
        """q = C_cov^(-1/H) for each C_cov, so that pi_base(y*|x) = q^H = 1/C_cov."""
        return tuple(c ** (-1.0 / self.horizon) for c in self.c_covs)

    def problems(self) -> list[families.SharpeningProblem]:
        """One problem per C_cov; they share one policy object, so their simulations stack."""
        if self.family == "prefix_lock":
            return [families.prefix_lock_problem(self.horizon, q, self.vocab_size, self.num_prompts)
                    for q in self.agree_probs]
        return [families.bit_agreement_problem(self.horizon, q, self.num_prompts) for q in self.agree_probs]

    def rlhf(self, method: RlhfConfig) -> RlhfConfig:
        """`method` with the sweep's eps, delta and enough rounds for rlhf_max_factor max(c_covs) samples."""
        rounds = math.ceil(self.rlhf_max_factor * max(self.c_covs) / (2 * method.pairs_per_round))
        return dataclasses.replace(method, num_rounds=rounds, eps=self.eps, delta=self.delta)

    def sft(self) -> SftConfig:
        return SftConfig(prompt_counts=self.sft_prompt_counts,
                         sample_sizes=geometric_grid(1, int(self.sft_max_factor * max(self.c_covs))),
                         num_steps=self.sft_num_steps, learning_rate=self.sft_learning_rate,
                         eps=self.eps, delta=self.delta)


_SMALL = dict(horizon=8, c_covs=(4.0, 16.0, 64.0), rlhf_max_factor=2.5)
_FULL = dict(horizon=12, c_covs=(4.0, 12.0, 36.0, 108.0, 324.0), num_seeds=16)
# q = C_cov^(-1/H) stays >= 0.59, where pi*_beta (beta = 0.05) puts > 0.99 on y* in both families.
EXPLORATION_PRESETS = {
    "small": ExplorationSweepConfig(**_SMALL, sft_prompt_counts=(1, 4), sft_max_factor=8.0),
    "full": ExplorationSweepConfig(**_FULL),
    "control_small": ExplorationSweepConfig(family="bit_agreement", **_SMALL, sft_prompt_counts=None),
    "control_full": ExplorationSweepConfig(family="bit_agreement", **_FULL, sft_prompt_counts=None),
}


@dataclasses.dataclass(frozen=True)
class ExplorationClaim:
    """The claim's thresholds: log-log slopes against C_cov of reward-DPO >= min_dpo_slope and of
    XPO <= max_xpo_slope, and reward-DPO's median over XPO's >= min_ratio at the largest C_cov."""

    min_dpo_slope: float = 0.7
    max_xpo_slope: float = 0.3
    min_ratio: float = 5.0


# The thresholds at both sizes; the small sweep (C_cov 4 to 64, 8 seeds) measured reward-DPO 0.91
# (90% CI [0.40, 1.16]), XPO 0.00, ratio 12.5x with the notebook's key.
CLAIMS = {"small": ExplorationClaim(), "full": ExplorationClaim()}


def _summary(key, c_cov_C, per_seed_CS) -> dict[str, Any]:
    k_ci, k_slope = jax.random.split(key)
    ci = median_with_ci(k_ci, per_seed_CS)
    slope = loglog_slope_with_ci(k_slope, c_cov_C, per_seed_CS)
    return {"per_seed": per_seed_CS, "median": ci["median"], "lo": ci["lo"], "hi": ci["hi"],
            "slope": slope["slope"], "slope_lo": slope["lo"], "slope_hi": slope["hi"]}


def exploration_sweep(config: ExplorationSweepConfig, key) -> dict[str, Any]:
    """Sample complexities of reward-DPO, XPO and (unless skipped) SFT-Sharpening against C_cov.

    Returns "family", "c_cov" [C] (exact, by enumeration), "agree_prob" [C]; for each method
    "reward_dpo", "xpo", "sft" (None when skipped) a dict of "per_seed" [C, S] (samples at the first
    sharpened grid point, inf when never), "median", "lo", "hi" [C] and "slope", "slope_lo",
    "slope_hi"; the RLHF methods also "first_target_draw" [C, S] (responses drawn until some y*(x)
    was drawn, the lower bound of reward-DPO on the prefix lock) and "grid" [R]; SFT "best_n" [C];
    "ratio" [C] = reward-DPO median / XPO median.
    """
    problems = config.problems()
    policy = problems[0].policy
    params_C = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[p.base_params for p in problems])
    mu_CX = jnp.stack([p.prompt_probs_X for p in problems])
    c_cov_C = np.array([p.c_cov for p in problems])
    out: dict[str, Any] = {"family": config.family, "c_cov": c_cov_C, "agree_prob": np.array(config.agree_probs)}
    keys = jax.random.split(key, 6)
    for name, method, k_run, k_stats in (("reward_dpo", config.reward_dpo, keys[0], keys[1]),
                                         ("xpo", config.xpo, keys[2], keys[3])):
        rl = config.rlhf(method)
        runs = run_rlhf_sharpening_stacked(k_run, policy, params_C, mu_CX, rl, config.num_seeds)
        per_seed_CS = np.stack([first_success(r["success"], r["samples"]) for r in runs])
        out[name] = {**_summary(k_stats, c_cov_C, per_seed_CS), "grid": rl.samples_after_round,
                     "first_target_draw": np.stack([first_success(r["target_drawn"], r["samples"]) for r in runs])}
    out["sft"] = None if config.sft_prompt_counts is None else _sft(keys[4], keys[5], config, policy, params_C,
                                                                    mu_CX, c_cov_C)
    out["ratio"] = out["reward_dpo"]["median"] / out["xpo"]["median"]
    return out


def _sft(k_run, k_stats, config, policy, params_C, mu_CX, c_cov_C) -> dict[str, Any]:
    """SFT-Sharpening at its best prompt count per C_cov (smallest median over seeds)."""
    sft = config.sft()
    runs = run_sft_sharpening_stacked(k_run, policy, params_C, mu_CX, sft, config.num_seeds)
    per_seed_CKS = np.stack([np.stack([first_success(r["success"][:, k], sft.total_samples_nN[k])
                                       for k in range(len(sft.prompt_counts))]) for r in runs])
    best_C = np.argmin(np.median(per_seed_CKS, axis=2), axis=1)
    per_seed_CS = per_seed_CKS[np.arange(len(runs)), best_C]
    return {**_summary(k_stats, c_cov_C, per_seed_CS), "best_n": np.array(sft.prompt_counts)[best_C]}


def check_claim(result: dict[str, Any], claim: ExplorationClaim = ExplorationClaim()) -> dict[str, Any]:
    """The claim's verdict on an `exploration_sweep` result: the measured slopes and ratio, one bool per
    threshold in "checks" (a NaN or infinite measurement fails), and "held" = all of them."""
    dpo_slope, xpo_slope = result["reward_dpo"]["slope"], result["xpo"]["slope"]
    ratio = float(result["ratio"][-1])
    checks = {"reward_dpo_slope": bool(dpo_slope >= claim.min_dpo_slope),
              "xpo_slope": bool(xpo_slope <= claim.max_xpo_slope),
              "ratio": bool(np.isfinite(ratio) and ratio >= claim.min_ratio)}
    return {"reward_dpo_slope": dpo_slope, "xpo_slope": xpo_slope, "ratio": ratio, "checks": checks,
            "held": all(checks.values())}
