"""Exact small sharpening problems on which the statements of Huang et al. (2024) are checked numerically.

Modules:
    exact           closed forms: y*, C_cov, pi*_beta ∝ pi_base^(1+1/beta), KL, (eps, delta)-sharpness, bounds
    policies        enumerable policy classes: tabular, autoregressive over V^H, linear softmax
    families        problems with known answers (spiked tabular, bit-agreement and prefix-lock linear softmax,
                    greedy threshold)
    sampling        samplers with explicit keys, best-of-N, the adaptive sample-size rule
    sft_sharpening  SFT-Sharpening trained with the "sft" loss of `sharpen_jax.methods`
    rlhf_sharpening reward-DPO and XPO trained with their `sharpen_jax.methods` loss entries
    sweeps          empirical sample complexity over seeds, the C_cov and separation sweeps
    exploration     XPO vs reward-DPO on a class that cannot extrapolate (the prefix lock), and its control
    validation      direct optimization, greedy and best-of-N scans, the notebooks' size flag
"""
