"""Training-time sharpening: the SFT and KL-regularized policy-optimization steps, their losses,
training state, data assembly and LoRA adapters."""

from sharpen_jax.algorithms.losses import (kl_policy_gradient_loss, online_dpo_loss, reward_dpo_loss, sft_loss,
                                           xpo_loss)
from sharpen_jax.algorithms.policy_optimization import make_po_step
from sharpen_jax.algorithms.sft import make_sft_step
from sharpen_jax.algorithms.train_state import TrainState, create_train_state

__all__ = ["TrainState", "create_train_state", "make_sft_step", "make_po_step", "sft_loss", "reward_dpo_loss",
           "xpo_loss", "online_dpo_loss", "kl_policy_gradient_loss"]
