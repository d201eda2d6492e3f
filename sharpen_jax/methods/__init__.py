"""Methods: one module per method, each holding its loss entries, batch source and reward.

    from sharpen_jax import methods
    entry = methods.get_loss("reward_dpo")         # a methods.registry.LossEntry
    step = entry.make_step(logprob_fn, tx, ref_logprob_fn=ref_fn, hyperparameters={"beta": 1.0})
    state, metrics = step(state, ref_params, batch)

The method modules are imported on first use of the registry, in the order of METHOD_MODULES;
adding a method is one module plus its name here.
"""

from __future__ import annotations

import importlib

from sharpen_jax.methods.registry import GROUP, Draw, LossEntry, register_loss, registered, unregister_loss

METHOD_MODULES = ("sft_sharpening", "rlhf_sharpening", "gv_gap", "pit")


def _load_methods() -> None:
    for name in METHOD_MODULES:
        importlib.import_module(f"sharpen_jax.methods.{name}")


def loss_names(method: str | None = None) -> tuple[str, ...]:
    """Names of the registered losses (of one method when given): by method in METHOD_MODULES order, then in
    registration order."""
    _load_methods()
    entries = registered()
    rank = {m: i for i, m in enumerate(METHOD_MODULES)}
    order = sorted(entries, key=lambda n: rank.get(entries[n].method, len(rank)))  # stable: registration order within
    return tuple(n for n in order if method is None or entries[n].method == method)


def get_loss(name: str, *, method: str | None = None) -> LossEntry:
    """The registered loss `name` (of `method` when given); an unknown name lists the valid ones."""
    names = loss_names(method)
    if name not in names:
        scope = f" of method {method!r}" if method else ""
        raise ValueError(f"loss={name!r} is not a registered loss{scope}; valid: {list(names)}")
    return registered()[name]


__all__ = ["GROUP", "Draw", "LossEntry", "METHOD_MODULES", "get_loss", "loss_names", "register_loss",
           "unregister_loss"]
