"""The training core: train state, the one `make_train_step(loss_fn, tx, ...)`, losses, gradient
accumulation, LoRA, the transformer policy, the loop, checkpoints and optimizers.

It imports nothing from the layers above it (selection, rollouts, methods); a method is a loss
function handed to `make_train_step` (see `sharpen_jax.methods`).
"""

from sharpen_jax.training.checkpoint import CheckpointError, CheckpointMismatchError, Checkpointer
from sharpen_jax.training.datasets import SFTDataset, stream_indices
from sharpen_jax.training.loop import NonFiniteError, TrainRun, train_loop
from sharpen_jax.training.optim import make_optimizer
from sharpen_jax.training.step import make_train_step
from sharpen_jax.training.train_state import TrainState, create_train_state, policy_params

__all__ = ["CheckpointError", "CheckpointMismatchError", "Checkpointer", "SFTDataset", "stream_indices",
           "NonFiniteError", "TrainRun", "train_loop", "make_optimizer", "make_train_step", "TrainState",
           "create_train_state", "policy_params"]
