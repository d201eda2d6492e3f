"""SFT-Sharpening simulated with the project's sft_step: the MLE it reaches and its sample complexity."""

import jax
import numpy as np
import pytest

from sharpen_jax.theory import families, sweeps
from sharpen_jax.theory.sft_sharpening import SftConfig, run_sft_sharpening


def test_sft_step_reaches_the_tabular_maximum_likelihood_fit():
    """On one prompt the MLE over the tabular class is the empirical distribution of the best-of-N
    responses, so pi_hat(y*) must equal the fraction of training prompts whose best-of-N was y*."""
    problem = families.target_mass_problem([0.08], 64)
    config = SftConfig(prompt_counts=(10, 40), sample_sizes=(1, 4, 16, 64), num_steps=200, learning_rate=0.5)
    run = run_sft_sharpening(jax.random.key(0), problem, config, num_seeds=3)
    hit_rate = run["bon_hit_rate"]
    assert hit_rate.min() < 0.5 and hit_rate.max() == 1.0   # the grid spans misses and hits
    np.testing.assert_allclose(run["target_probs"][..., 0], hit_rate, atol=0.01)
    # Success (delta = 0.1, one prompt) exactly when at least 90% of the best-of-N responses were y*.
    clear = np.abs(hit_rate - 0.9) > 0.01
    np.testing.assert_array_equal(run["success"][clear], hit_rate[clear] > 0.9)


def test_sft_sample_complexity_grows_linearly_with_coverage():
    """Acceptance: the empirical sample complexity against C_cov over at least a 10x range has log-log
    slope 1 (paper: N ~ C_cov log(1/delta)/eps at fixed n). Thresholds from the measured 90% bootstrap
    interval (0.93, [0.90, 1.04], 8 seeds): the interval must contain 1 and be narrow enough (0.3) to
    exclude slopes 0.7 and 1.3, the point within 0.1 of 1."""
    config = sweeps.COVERAGE_PRESETS["small"]
    result = sweeps.sft_coverage_sweep(config, jax.random.key(0))
    c_cov = result["c_cov"]
    assert c_cov.max() / c_cov.min() >= 10
    assert np.all(np.isfinite(result["median"]))
    assert np.all(np.diff(result["median"]) > 0)
    assert abs(result["slope"] - 1) <= 0.1, result["slope"]
    assert result["slope_lo"] <= 1 <= result["slope_hi"], (result["slope_lo"], result["slope_hi"])
    assert result["slope_hi"] - result["slope_lo"] <= 0.3
    # The adaptive rule stops without y* at most delta/2 of the time: the bound itself, no slack (measured
    # <= 0.004 over 256 stops per C_cov), and on average after mu / p(x) samples: mean N(x) ~ mu C_cov.
    assert np.all(result["adaptive_miss_rate"] <= config.delta / 2), result["adaptive_miss_rate"]
    mu = np.log(2 / config.delta)
    np.testing.assert_allclose(result["adaptive_mean_samples"], mu * c_cov, rtol=0.05)


def test_a_diverging_simulation_fails_loudly():
    problem = families.target_mass_problem([0.2], 8)
    config = SftConfig(prompt_counts=(4,), sample_sizes=(2,), num_steps=5, learning_rate=3e38)
    with pytest.raises(FloatingPointError, match="non-finite"):
        run_sft_sharpening(jax.random.key(0), problem, config, num_seeds=1)


def test_bad_simulation_configs_are_rejected():
    with pytest.raises(ValueError, match="sample_sizes"):
        SftConfig(prompt_counts=(4,), sample_sizes=(0, 2))
    with pytest.raises(ValueError, match="delta"):
        SftConfig(prompt_counts=(4,), sample_sizes=(2,), delta=1.0)
