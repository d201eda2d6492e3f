"""The method registry: every training loss is one `LossEntry`, and every method one module of entries.

A `LossEntry` says how to build the loss function that `training.make_train_step` trains
(`build(policy_logprob_fn, ref_logprob_fn, **hyperparameters) -> loss_fn(params, ref_params,
batch)`), which batch keys it reads, and where its batches come from: `draws` lists, per batch side,
which policy samples it and how many samples per prompt ("policy" = the current policy, "base" =
the frozen reference), the batch source of on-policy methods; a loss trained on a fixed dataset
has no draws. Adding a loss is one `register_loss` call in its method's module; adding a method is
one module listed in `sharpen_jax.methods.METHOD_MODULES`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import optax

from sharpen_jax.training.step import LossFn, StepFn, make_train_step
from sharpen_jax.training.train_state import LogprobFn

GROUP = "group_size"  # Draw.per_prompt value: as many samples per prompt as the loss's group_size


@dataclasses.dataclass(frozen=True)
class Draw:
    """One side of an on-policy batch: `side` rows come from `policy` ("policy" or "base"),
    `per_prompt` samples per prompt (an int, or GROUP for the loss's group size)."""

    side: str
    policy: str
    per_prompt: int | str = 1

    def __post_init__(self):
        if self.policy not in ("policy", "base"):
            raise ValueError(f"Draw.policy={self.policy!r}; expected 'policy' or 'base'")

    def samples(self, group_size: int) -> int:
        """Samples per prompt for this side."""
        return group_size if self.per_prompt == GROUP else int(self.per_prompt)


@dataclasses.dataclass(frozen=True)
class LossEntry:
    """A registered loss: its builder, batch contract and batch source (see the module docstring).

    hyperparameters: the keyword arguments `build` takes (validated by `build` itself).
    grouped: the batch rows come in consecutive groups of `group_size` samples of one prompt, which
    gradient accumulation must keep together.
    """

    name: str
    method: str
    build: Callable[..., LossFn]
    batch_keys: tuple[str, ...]
    draws: tuple[Draw, ...] = ()
    hyperparameters: tuple[str, ...] = ()
    grouped: bool = False
    description: str = ""

    def make_loss(self, logprob_fn: LogprobFn, ref_logprob_fn: LogprobFn | None = None, **hyperparameters: Any
                  ) -> LossFn:
        """The loss function with these hyperparameters; unknown ones are an error naming the valid ones."""
        unknown = sorted(set(hyperparameters) - set(self.hyperparameters))
        if unknown:
            raise ValueError(f"loss {self.name!r} takes hyperparameters {list(self.hyperparameters)}; got {unknown}")
        return self.build(logprob_fn, ref_logprob_fn or logprob_fn, **hyperparameters)

    def make_step(self, logprob_fn: LogprobFn, tx: optax.GradientTransformation, *,
                  ref_logprob_fn: LogprobFn | None = None, hyperparameters: Mapping[str, Any] | None = None,
                  **step_kwargs: Any) -> StepFn:
        """`training.make_train_step` over this loss: step(state, ref_params, batch) -> (state, metrics)."""
        hyperparameters = dict(hyperparameters or {})
        group = int(hyperparameters.get("group_size", 1)) if self.grouped else 1
        loss_fn = self.make_loss(logprob_fn, ref_logprob_fn, **hyperparameters)
        return make_train_step(loss_fn, tx, group_size=group, batch_keys=self.batch_keys, **step_kwargs)


_LOSSES: dict[str, LossEntry] = {}


def register_loss(entry: LossEntry) -> LossEntry:
    """Add `entry` to the registry; a second entry of the same name is an error."""
    if entry.name in _LOSSES and _LOSSES[entry.name] is not entry:
        raise ValueError(f"loss {entry.name!r} is already registered (by method {_LOSSES[entry.name].method!r})")
    _LOSSES[entry.name] = entry
    return entry


def unregister_loss(name: str) -> None:
    """Remove a registered loss (for tests that register a toy loss)."""
    _LOSSES.pop(name, None)


def registered() -> dict[str, LossEntry]:
    """The registered losses by name (a copy)."""
    return dict(_LOSSES)
