"""Checkpointing: round trip, retention, mismatch errors naming the parameter, the non-finite stop,
and restoring a 1-device checkpoint onto an 8-device mesh."""

import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sharpen_jax.config import TransformerConfig
from sharpen_jax.jsonl import read_jsonl
from sharpen_jax.methods import get_loss
from sharpen_jax.testing import random_params
from sharpen_jax.training import (CheckpointMismatchError, Checkpointer, NonFiniteError, create_train_state,
                                  train_loop)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_state(dim=32, seed=0):
    params = random_params(TransformerConfig.tiny(dim=dim), seed, unit_norms=False)
    return create_train_state(params, optax.adamw(1e-3))


def _shift_floats(tree, delta):
    return jax.tree.map(lambda x: x + delta if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def test_round_trip_and_retention(tmp_path):
    state = _tiny_state()
    state = state.replace(step=jnp.int32(7), opt_state=_shift_floats(state.opt_state, 0.5))
    with Checkpointer(str(tmp_path), max_to_keep=2) as ckpt:
        for step in (3, 5, 7):
            ckpt.save(step, state.saved(), {"position": step})
        ckpt.wait()
        assert ckpt.all_steps() == [5, 7] and ckpt.latest_step() == 7
        tree, data = ckpt.restore(_tiny_state(seed=9).saved())
        restored = _tiny_state(seed=9).with_saved(tree)
        raw = ckpt.read_arrays(7)
    assert data == {"position": 7}
    chex.assert_trees_all_equal(restored, state)
    np.testing.assert_array_equal(raw["params"]["embed"]["embedding"], state.params["embed"]["embedding"])
    assert int(restored.step) == 7


def test_other_model_shape_names_the_mismatching_parameter(tmp_path):
    with Checkpointer(str(tmp_path)) as ckpt:
        ckpt.save(1, _tiny_state(dim=32).saved())
        ckpt.wait()
        with pytest.raises(CheckpointMismatchError, match=r"params\.embed\.embedding has shape \(97, 32\)"):
            ckpt.restore(_tiny_state(dim=64).saved())
        other_optimizer = _tiny_state().replace(opt_state=optax.sgd(0.1, momentum=0.9).init(_tiny_state().params))
        with pytest.raises(CheckpointMismatchError, match="opt_state"):
            ckpt.restore(other_optimizer.saved())


def test_restore_without_checkpoint_is_an_error(tmp_path):
    with Checkpointer(str(tmp_path)) as ckpt, pytest.raises(FileNotFoundError, match=str(tmp_path)):
        ckpt.restore(_tiny_state().saved())


def _tabular_logprob_fn(params, seqs):
    logp_BY = jax.nn.log_softmax(params["logits"][seqs["x"]], axis=-1)
    logp_B = jnp.take_along_axis(logp_BY, seqs["y"][:, None], axis=-1)[:, 0]
    return logp_B, jnp.ones_like(logp_B)


def test_non_finite_loss_stops_with_last_good_checkpoint_intact(tmp_path):
    tx = optax.adam(0.1)
    sft_step = get_loss("sft").make_step(_tabular_logprob_fn, tx)
    step_fn = lambda state, batch: sft_step(state, None, batch)  # noqa: E731
    seen = {}

    def update(state, step):
        weight = np.ones(8, np.float32)
        if step == 7:
            weight[0] = np.inf
        seen[step] = state
        batch = {"seqs": {"x": np.arange(8, dtype=np.int32) % 2, "y": np.arange(8, dtype=np.int32) % 3},
                 "weight": weight}
        return step_fn(state, batch)

    init = create_train_state({"logits": jnp.zeros((2, 3))}, tx)
    good = {}

    def eval_fn(state):
        good[int(state.step)] = np.asarray(state.params["logits"]).copy()
        return {"max_logit": jnp.max(state.params["logits"])}

    with pytest.raises(NonFiniteError, match=r"update 7 .*Last good checkpoint: step 5"):
        train_loop(init, update, workdir=str(tmp_path), num_steps=20, save_every=5, eval_every=5,
                   eval_fn=eval_fn, progress=False)
    with Checkpointer(str(tmp_path / "checkpoints")) as ckpt:
        assert ckpt.all_steps() == [5]
        tree, data = ckpt.restore(init.saved())
        restored = init.with_saved(tree)
    assert data == {"position": 5} and int(restored.step) == 5
    np.testing.assert_array_equal(restored.params["logits"], good[5])
    assert np.all(np.isfinite(restored.params["logits"]))
    records = read_jsonl(str(tmp_path / "metrics.jsonl"))
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, 8))


def test_checkpoint_restores_onto_eight_device_mesh(tmp_path):
    state = _tiny_state()
    state = state.replace(opt_state=_shift_floats(state.opt_state, 0.25))
    with Checkpointer(str(tmp_path / "ckpt")) as ckpt:
        ckpt.save(4, state.saved(), {"position": 4})
    np.savez(tmp_path / "expected.npz", *[np.asarray(x) for x in jax.tree.leaves(state.saved())])
    script = textwrap.dedent(f"""
        import jax, numpy as np, optax
        from sharpen_jax import sharding
        from sharpen_jax.training.checkpoint import Checkpointer
        from sharpen_jax.training.train_state import create_train_state, train_state_sharding
        from sharpen_jax.config import TransformerConfig
        from sharpen_jax.model import param_shapes
        assert jax.device_count() == 8
        mesh = sharding.make_mesh(data=2, fsdp=2, model=2)
        zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), param_shapes(TransformerConfig.tiny()))
        target = create_train_state(zeros, optax.adamw(1e-3))
        shardings = train_state_sharding(target, mesh, sharding.param_shardings(target.params, mesh))
        target = jax.device_put(target, shardings)
        with Checkpointer({str(tmp_path / "ckpt")!r}) as ckpt:
            tree, data = ckpt.restore(target.saved())
        restored = target.with_saved(tree)
        expected = np.load({str(tmp_path / "expected.npz")!r})
        leaves = jax.tree.leaves(restored.saved())
        assert len(leaves) == len(expected.files)
        for i, leaf in enumerate(leaves):
            np.testing.assert_array_equal(np.asarray(leaf), expected[f"arr_{{i}}"])
        q = restored.params["layers"]["attn"]["q_proj"]["kernel"]
        assert q.sharding.spec == shardings.params["layers"]["attn"]["q_proj"]["kernel"].spec
        assert len(q.addressable_shards) == 8 and q.addressable_shards[0].data.shape != q.shape
        mu = restored.opt_state[0].mu["layers"]["attn"]["q_proj"]["kernel"]
        assert mu.sharding.spec == q.sharding.spec
        print("OK", data, q.sharding.spec)
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": REPO}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK {'position': 4}" in out.stdout
