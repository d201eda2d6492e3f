"""Empirical sample complexity over seeds, and the sweeps behind notebooks 2 and 3 and the acceptance tests.

`sft_coverage_sweep`: SFT-Sharpening on the spiked tabular family over a range of C_cov. The
paper's bound N ~ C_cov log(1/delta)/eps (n fixed) predicts that the empirical sample complexity
m = n N* grows linearly in C_cov: log-log slope 1.

`separation_sweep`: SFT-Sharpening, reward-DPO and XPO on the bit-agreement linear-softmax family,
where C_cov = q^(-d) grows exponentially in the dimension d. The paper predicts that SFT-Sharpening
needs ~C_cov samples, while XPO needs a number polynomial in d (its guarantee depends on the
class, not on C_cov).

The empirical sample complexity of one seed is the number of samples at the first grid point where
the learned policy is (eps, delta)-sharpened (infinity when none is). Across seeds we report the
median and a percentile-bootstrap confidence interval of the median; a log-log slope is the
least-squares fit of log(median) on log(C_cov), with a bootstrap interval over seeds.
Grids are set from the theory's prediction before any measurement: sample sizes run geometrically
well past C_cov log(1/delta)/eps.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sharpen_jax.theory import exact, families
from sharpen_jax.theory.rlhf_sharpening import RlhfConfig, run_rlhf_sharpening
from sharpen_jax.theory.sampling import adaptive_sample_sizes
from sharpen_jax.theory.sft_sharpening import SftConfig, run_sft_sharpening, run_sft_sharpening_stacked


def first_success(success_SG, samples_G) -> np.ndarray:
    """Samples at the first grid point where `success_SG` holds, per seed; inf where it never holds."""
    success_SG = np.asarray(success_SG, bool)
    samples_G = np.asarray(samples_G, np.float64)
    if success_SG.shape[-1] != samples_G.shape[0]:
        raise ValueError(f"success_SG has {success_SG.shape[-1]} grid points but samples_G has {samples_G.shape[0]}")
    first = np.argmax(success_SG, axis=-1)
    return np.where(success_SG.any(axis=-1), samples_G[first], np.inf)


@functools.partial(jax.jit, static_argnames=("num_boot",))
def _bootstrap_medians(key, values_CS, num_boot):
    num_c, num_s = values_CS.shape
    idx_BCS = jax.random.randint(key, (num_boot, num_c, num_s), 0, num_s)
    resampled_BCS = jnp.take_along_axis(values_CS[None], idx_BCS, axis=2)
    return jnp.median(resampled_BCS, axis=2)


def median_with_ci(key, values_CS, level: float = 0.9, num_boot: int = 2000) -> dict[str, np.ndarray]:
    """Median over seeds of each row of `values_CS` and its percentile-bootstrap interval at `level`."""
    values_CS = np.atleast_2d(np.asarray(values_CS, np.float64))
    boot_BC = np.asarray(_bootstrap_medians(key, jnp.asarray(values_CS), num_boot), np.float64)
    tail = 100 * (1 - level) / 2
    return {"median": np.median(values_CS, axis=1), "lo": np.percentile(boot_BC, tail, axis=0),
            "hi": np.percentile(boot_BC, 100 - tail, axis=0)}


def loglog_slope(x_C, y_C) -> float:
    """Least-squares slope of log y on log x; NaN when any y is not finite and positive or x has < 2 points."""
    x_C, y_C = np.asarray(x_C, np.float64), np.asarray(y_C, np.float64)
    if x_C.size < 2 or not np.all(np.isfinite(y_C) & (y_C > 0)):
        return float("nan")
    return float(np.polyfit(np.log(x_C), np.log(y_C), 1)[0])


def loglog_slope_with_ci(key, x_C, values_CS, level: float = 0.9, num_boot: int = 2000) -> dict[str, float]:
    """Slope of log median_s(values[c, s]) on log x[c], with a bootstrap interval resampling seeds."""
    values_CS = np.asarray(values_CS, np.float64)
    medians_C = np.median(values_CS, axis=1)
    boot_BC = np.asarray(_bootstrap_medians(key, jnp.asarray(values_CS), num_boot), np.float64)
    finite = np.all(np.isfinite(boot_BC) & (boot_BC > 0), axis=1)
    if not finite.any():
        return {"slope": loglog_slope(x_C, medians_C), "lo": float("nan"), "hi": float("nan")}
    log_x = np.log(np.asarray(x_C, np.float64))
    slopes = np.polyfit(log_x, np.log(boot_BC[finite]).T, 1)[0]
    tail = 100 * (1 - level) / 2
    return {"slope": loglog_slope(x_C, medians_C), "lo": float(np.percentile(slopes, tail)),
            "hi": float(np.percentile(slopes, 100 - tail))}


def geometric_grid(low: int, high: int, per_octave: int = 3) -> tuple[int, ...]:
    """Distinct integers round(2^(k/per_octave)) covering [low, high]."""
    k_lo, k_hi = math.floor(per_octave * math.log2(low)), math.ceil(per_octave * math.log2(high))
    return tuple(sorted({max(1, round(2 ** (k / per_octave))) for k in range(k_lo, k_hi + 1)}))


@dataclasses.dataclass(frozen=True)
class CoverageSweepConfig:
    """SFT-Sharpening on `families.spiked_problem` for each C_cov in `c_covs`; the slope uses n = max(prompt_counts)."""

    c_covs: tuple[float, ...] = (4.0, 8.0, 16.0, 32.0, 64.0)
    num_prompts: int = 8
    num_responses: int = 128
    spread: float = 1.5
    prompt_counts: tuple[int, ...] = (128,)
    max_samples_per_prompt: int = 1625
    num_seeds: int = 8
    num_steps: int = 40
    learning_rate: float = 0.8
    eps: float = 0.1
    delta: float = 0.1
    adaptive_repeats: int = 32

    def sft_config(self) -> SftConfig:
        return SftConfig(prompt_counts=self.prompt_counts,
                         sample_sizes=geometric_grid(2, self.max_samples_per_prompt),
                         num_steps=self.num_steps, learning_rate=self.learning_rate, eps=self.eps, delta=self.delta)


COVERAGE_PRESETS = {
    "small": CoverageSweepConfig(),
    "full": CoverageSweepConfig(c_covs=(4.0, 8.0, 16.0, 32.0, 64.0, 128.0), num_prompts=16, num_responses=512,
                                spread=2.0, prompt_counts=(32, 64, 128, 256), max_samples_per_prompt=3250,
                                num_seeds=16, num_steps=60, learning_rate=0.5),
}


def sft_coverage_sweep(config: CoverageSweepConfig, key) -> dict[str, Any]:
    """Empirical SFT-Sharpening sample complexity against C_cov, with the adaptive variant alongside.

    Returns numpy arrays/floats: "c_cov" [C]; "samples" [C, K, S] (m = n N* per seed and prompt count,
    inf when never sharpened); "median", "lo", "hi" [C] for n = max(prompt_counts); "slope",
    "slope_lo", "slope_hi"; "bound_samples" [C] = n C_cov log(1/delta)/eps; "sharpness_median" [C, K, G]
    with "grid_samples" [K, G]; "adaptive_mean_samples" [C] (mean N(x) of the adaptive rule) and
    "adaptive_miss_rate" [C] (fraction of stops without y*, the paper bounds it by delta/2).
    """
    sft = config.sft_config()
    problems = [families.spiked_problem(c, config.num_prompts, config.num_responses, config.spread)
                for c in config.c_covs]
    c_cov_C = np.array([p.c_cov for p in problems])
    params_C = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[p.base_params for p in problems])
    mu_CX = jnp.stack([p.prompt_probs_X for p in problems])
    k_sft, k_adapt, k_boot, k_slope = jax.random.split(key, 4)
    runs = run_sft_sharpening_stacked(k_sft, problems[0].policy, params_C, mu_CX, sft, config.num_seeds)
    samples_CKS = np.stack([np.stack([first_success(run["success"][:, k], sft.total_samples_nN[k])
                                      for k in range(len(sft.prompt_counts))]) for run in runs])
    main = int(np.argmax(sft.prompt_counts))
    summary = median_with_ci(k_boot, samples_CKS[:, main])
    slope = loglog_slope_with_ci(k_slope, c_cov_C, samples_CKS[:, main])
    adaptive = _adaptive_summary(k_adapt, problems, config)
    return {"c_cov": c_cov_C, "samples": samples_CKS, "prompt_counts": np.array(sft.prompt_counts),
            "median": summary["median"], "lo": summary["lo"], "hi": summary["hi"],
            "slope": slope["slope"], "slope_lo": slope["lo"], "slope_hi": slope["hi"],
            "bound_samples": max(sft.prompt_counts) * c_cov_C * math.log(1 / config.delta) / config.eps,
            "sharpness_median": np.stack([np.median(run["sharpness"], axis=0) for run in runs]),
            "grid_samples": sft.total_samples_nN, **adaptive}


def _adaptive_summary(key, problems, config: CoverageSweepConfig) -> dict[str, np.ndarray]:
    mean_n, miss = [], []
    x_B = jnp.tile(jnp.arange(config.num_prompts), config.adaptive_repeats)
    for problem, k in zip(problems, jax.random.split(key, len(problems))):
        out = adaptive_sample_sizes(k, problem.base_logp_XY, x_B, config.delta, 2 * config.max_samples_per_prompt)
        mean_n.append(float(jnp.mean(out["num_samples"])))
        miss.append(float(jnp.mean(out["best"] != problem.y_star_X[x_B])))
    return {"adaptive_mean_samples": np.array(mean_n), "adaptive_miss_rate": np.array(miss)}


@dataclasses.dataclass(frozen=True)
class SeparationSweepConfig:
    """SFT-Sharpening vs reward-DPO vs XPO on `families.bit_agreement_problem` for each d in `dims`.

    SFT is given its best prompt count: for each n its median sample complexity over seeds, then the
    smallest over n. Its sample sizes run up to `sft_max_factor` C_cov per prompt. reward_dpo=None
    skips reward-DPO (each method and dimension is one more compilation).
    """

    dims: tuple[int, ...] = (6, 10, 14)
    agree_prob: float = 0.6
    num_prompts: int = 8
    sft_prompt_counts: tuple[int, ...] = (1, 2, 4, 8)
    sft_max_factor: float = 16.0
    sft_num_steps: int = 150
    sft_learning_rate: float = 0.3
    num_seeds: int = 8
    xpo: RlhfConfig = RlhfConfig(loss="xpo", beta=0.05, alpha=0.01, on_policy=True, num_rounds=30)
    reward_dpo: RlhfConfig | None = RlhfConfig(loss="reward_dpo", beta=0.05, on_policy=False, num_rounds=30)
    beta_sweep: tuple[float, ...] = ()
    beta_sweep_dim: int = 10
    eps: float = 0.1
    delta: float = 0.1


SEPARATION_PRESETS = {
    "small": SeparationSweepConfig(dims=(6, 14), reward_dpo=None),
    "test": SeparationSweepConfig(dims=(14,), reward_dpo=None),
    "full": SeparationSweepConfig(dims=(4, 6, 8, 10, 12, 14, 16), num_seeds=16, beta_sweep=(0.02, 0.05, 0.1, 0.2)),
}


def _method_summary(key, success_SG, samples_G) -> dict[str, Any]:
    per_seed_S = first_success(success_SG, samples_G)
    ci = median_with_ci(key, per_seed_S[None])
    return {"per_seed": per_seed_S, "median": float(ci["median"][0]), "lo": float(ci["lo"][0]),
            "hi": float(ci["hi"][0])}


def _sft_summary(key, run, sft: SftConfig) -> dict[str, Any]:
    by_n = [_method_summary(k, run["success"][:, i], sft.total_samples_nN[i])
            for i, k in enumerate(jax.random.split(key, len(sft.prompt_counts)))]
    best = int(np.argmin([s["median"] for s in by_n]))
    return {**by_n[best], "best_n": sft.prompt_counts[best], "median_by_n": [s["median"] for s in by_n]}


def separation_sweep(config: SeparationSweepConfig, key) -> dict[str, Any]:
    """Sample complexities of SFT-Sharpening, reward-DPO and XPO against d and C_cov = q^(-d).

    Returns "dims", "c_cov" [D]; for each method "sft", "xpo", "reward_dpo" (empty when skipped) a list over d of
    {"median", "lo", "hi", "per_seed"} (SFT also "best_n", "median_by_n"); "ratio" [D] = SFT median /
    XPO median; and, when `beta_sweep` is set, "beta" [B] with "learned_target_prob" [B] (mean over
    seeds and prompts of the final XPO policy's pi(y*|x)) and "closed_form_target_prob" [B] (pi*_beta(y*|x)).
    """
    out: dict[str, Any] = {"dims": np.array(config.dims), "c_cov": [], "sft": [], "reward_dpo": [], "xpo": []}
    for d, k_d in zip(config.dims, jax.random.split(key, len(config.dims))):
        problem = families.bit_agreement_problem(d, config.agree_prob, config.num_prompts)
        c_cov = problem.c_cov
        sft = SftConfig(prompt_counts=config.sft_prompt_counts,
                        sample_sizes=geometric_grid(1, int(config.sft_max_factor * c_cov)),
                        num_steps=config.sft_num_steps, learning_rate=config.sft_learning_rate,
                        eps=config.eps, delta=config.delta)
        k_sft, k_xpo, k_dpo, k_stats = jax.random.split(k_d, 4)
        ks = jax.random.split(k_stats, 3)
        out["c_cov"].append(c_cov)
        out["sft"].append(_sft_summary(ks[0], run_sft_sharpening(k_sft, problem, sft, config.num_seeds), sft))
        methods = (("xpo", config.xpo, k_xpo, ks[1]), ("reward_dpo", config.reward_dpo, k_dpo, ks[2]))
        for name, rl, k_run, k_ci in methods:
            if rl is None:
                continue
            rl = dataclasses.replace(rl, eps=config.eps, delta=config.delta)
            run = run_rlhf_sharpening(k_run, problem, rl, config.num_seeds)
            out[name].append(_method_summary(k_ci, run["success"], run["samples"]))
    out["c_cov"] = np.array(out["c_cov"])
    out["ratio"] = np.array([s["median"] / x["median"] for s, x in zip(out["sft"], out["xpo"])])
    if config.beta_sweep:
        out.update(_beta_sweep(jax.random.fold_in(key, 1), config))
    return out


def _beta_sweep(key, config: SeparationSweepConfig) -> dict[str, np.ndarray]:
    problem = families.bit_agreement_problem(config.beta_sweep_dim, config.agree_prob, config.num_prompts)
    learned, closed = [], []
    for beta in config.beta_sweep:
        rl = dataclasses.replace(config.xpo, beta=beta, eps=config.eps, delta=config.delta)
        run = run_rlhf_sharpening(key, problem, rl, config.num_seeds)
        learned.append(float(np.mean(run["target_probs"][:, -1])))
        closed.append(float(jnp.mean(exact.target_probabilities(
            exact.sharpened_logprobs(problem.base_logp_XY, beta), problem.y_star_X))))
    return {"beta": np.array(config.beta_sweep), "learned_target_prob": np.array(learned),
            "closed_form_target_prob": np.array(closed)}
