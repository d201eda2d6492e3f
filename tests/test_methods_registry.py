"""The method registry: a new loss is one entry, trained through the one `make_train_step`; the
documented example method (docs/ARCHITECTURE.md) trains to its closed form; registry errors name
the valid choices."""

import importlib.util
import os
import re

import jax
import jax.numpy as jnp
import optax
import pytest

from conftest import REPO
from sharpen_jax import methods
from sharpen_jax.methods.registry import Draw, LossEntry
from sharpen_jax.training import create_train_state

X, Y = 3, 6


def tabular_logprob_fn(params, seqs):
    """log softmax(logits[x])[y], one token per sequence."""
    logp_BY = jax.nn.log_softmax(params["logits"][seqs["x"]], axis=-1)
    return jnp.take_along_axis(logp_BY, seqs["y"][:, None], axis=-1)[:, 0], jnp.ones(seqs["x"].shape)


def documented_example_source() -> str:
    """The first Python block of the "Adding a method" section of docs/ARCHITECTURE.md."""
    with open(os.path.join(REPO, "docs", "ARCHITECTURE.md")) as f:
        section = f.read().split("## Adding a method", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


@pytest.fixture
def example_method(tmp_path):
    path = tmp_path / "reward_weighted.py"
    path.write_text(documented_example_source())
    spec = importlib.util.spec_from_file_location("reward_weighted_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # registers the "rwr" loss
    yield module
    methods.unregister_loss("rwr")


def test_the_documented_example_method_trains_to_its_optimum(example_method):
    """RWR on pi_base samples with r = log pi_base reaches pi_base^(1 + 1/beta) (the closed form)."""
    beta, steps = 1.0, 300
    entry = methods.get_loss("rwr")
    assert entry is example_method.RWR and entry.draws == (Draw("seqs", "base"),)
    base_logits = jax.random.normal(jax.random.key(7), (X, Y)) * 1.2
    base_logp = jax.nn.log_softmax(base_logits, -1)
    tx = optax.adam(optax.linear_schedule(0.05, 0.005, steps))
    state = create_train_state({"logits": base_logits}, tx)
    step = entry.make_step(tabular_logprob_fn, tx, hyperparameters={"beta": beta}, grad_accum_steps=2)
    for t in range(steps):
        kx, ky = jax.random.split(jax.random.fold_in(jax.random.key(0), t))
        x = jax.random.randint(kx, (512,), 0, X)
        y = jax.random.categorical(ky, base_logits[x])
        state, metrics = step(state, None, {"seqs": {"x": x, "y": y}, "reward": base_logp[x, y]})
    assert bool(metrics["finite"]) and int(state.step) == steps
    policy = jax.nn.softmax(state.params["logits"], -1)
    target = jax.nn.softmax((1 + 1 / beta) * base_logp, -1)
    tv = float(jnp.max(0.5 * jnp.sum(jnp.abs(policy - target), -1)))
    assert tv < 0.02
    # The target is far from where training started (pi_base), so the match is not the initial state.
    assert float(jnp.max(0.5 * jnp.sum(jnp.abs(jnp.exp(base_logp) - target), -1))) > 0.1
    with pytest.raises(ValueError, match="beta"):
        entry.make_step(tabular_logprob_fn, tx, hyperparameters={"beta": 0.0})


def test_registry_lists_and_rejects_by_name():
    assert methods.loss_names("rlhf_sharpening") == ("reward_dpo", "xpo", "online_dpo", "kl_pg")
    assert methods.loss_names("sft_sharpening") == ("sft",)
    with pytest.raises(ValueError, match=r"loss='ppo' is not a registered loss; valid: \['sft', 'reward_dpo'"):
        methods.get_loss("ppo")
    with pytest.raises(ValueError, match="of method 'sft_sharpening'"):
        methods.get_loss("xpo", method="sft_sharpening")
    with pytest.raises(ValueError, match=r"takes hyperparameters \['beta'\]; got \['alpha'\]"):
        methods.get_loss("reward_dpo").make_loss(tabular_logprob_fn, alpha=1.0, beta=1.0)
    duplicate = LossEntry("sft", "another_method", lambda *a, **k: None, ("seqs",))
    with pytest.raises(ValueError, match="already registered"):
        methods.register_loss(duplicate)
    with pytest.raises(ValueError, match="Draw.policy='teacher'"):
        Draw("a", "teacher")
