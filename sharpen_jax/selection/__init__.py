"""The selection layer: self-rewards and verifiers behind one signature, best-of-N estimators, filters.

Every reward maps `RewardInputs` (B prompts x N completions: texts, reference log-probs, lengths,
extracted answers) to float64[B, N], higher is better. Inference-time best-of-N, SFT-Sharpening's
data selection and RLHF-Sharpening's rewards all read their scores from here, under one name each.
"""

from sharpen_jax.selection import best_of_n
from sharpen_jax.selection.rewards import (BUILTIN, LENGTH_NORMALIZED, LOG_LIKELIHOOD, MAJORITY, NAMES, Reward,
                                           RewardInputs, builtin_reward, check_reward_name)
from sharpen_jax.selection.verifiers import VERIFIER_TEMPLATE, make_verifier_reward

__all__ = ["best_of_n", "BUILTIN", "LENGTH_NORMALIZED", "LOG_LIKELIHOOD", "MAJORITY", "NAMES", "Reward",
           "RewardInputs", "builtin_reward", "check_reward_name", "VERIFIER_TEMPLATE", "make_verifier_reward"]
