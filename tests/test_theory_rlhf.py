"""RLHF-Sharpening simulated with the project's po_step: closed form reached, and the separation from SFT."""

import math

import jax
import numpy as np
import pytest

from sharpen_jax.theory import exact, families, sweeps
from sharpen_jax.theory.rlhf_sharpening import RlhfConfig, run_rlhf_sharpening


@pytest.mark.parametrize("loss,on_policy", [("reward_dpo", False), ("xpo", True)])
def test_po_step_reaches_the_closed_form_sharpened_policy(loss, on_policy):
    """Eq. 4's minimizer in the linear-softmax class is theta = (1 + 1/beta) theta_base, i.e. pi*_beta."""
    beta, q = 0.5, 0.7
    problem = families.bit_agreement_problem(4, agree_prob=q, num_prompts=3)
    config = RlhfConfig(loss=loss, beta=beta, alpha=0.0, on_policy=on_policy, num_rounds=8, pairs_per_round=4,
                        steps_per_round=60, learning_rate=0.05)
    run = run_rlhf_sharpening(jax.random.key(0), problem, config, num_seeds=2)
    theta = np.asarray(run["final_params"]["theta"])
    np.testing.assert_allclose(theta, (1 + 1 / beta) * math.log(q / (1 - q)), rtol=0.02)
    closed = exact.target_probabilities(exact.sharpened_logprobs(problem.base_logp_XY, beta), problem.y_star_X)
    np.testing.assert_allclose(run["target_probs"][:, -1], np.broadcast_to(closed, (2, 3)), atol=0.01)


def test_xpo_needs_far_fewer_samples_than_sft_at_large_coverage():
    """Acceptance: on the bit-agreement family (C_cov = q^-d), XPO reaches (eps, delta)-sharpness with
    far fewer samples than SFT-Sharpening (given its best prompt count) at the largest C_cov. Measured
    at d = 14 (C_cov = 1276): SFT 1669, XPO 38, 44x. The ratio is taken from the 90% bootstrap
    intervals, SFT's low end over XPO's high end, so seed noise cannot carry it; SFT needs at least
    C_cov / 2 samples (the lower bound the separation rests on), XPO a few samples per dimension."""
    result = sweeps.separation_sweep(sweeps.SEPARATION_PRESETS["test"], jax.random.key(1))
    c_cov, d = result["c_cov"][-1], result["dims"][-1]
    sft, xpo = result["sft"][-1], result["xpo"][-1]
    assert c_cov > 1000
    assert math.isfinite(xpo["hi"]) and math.isfinite(sft["lo"])
    assert sft["lo"] / xpo["hi"] >= 10, (sft, xpo)
    assert sft["median"] >= 0.5 * c_cov, sft
    assert xpo["hi"] <= 8 * d, xpo
