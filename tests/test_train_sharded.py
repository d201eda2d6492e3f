"""The steps under a mesh: 8 fake CPU devices, sharded parameters, optimizer state and batch, with
gradient accumulation, give the same parameters and gradient norms as the single-device steps (Adam
would hide a gradient off by a constant factor), and keep the layout."""

import textwrap

from conftest import run_with_devices

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import NamedSharding, PartitionSpec as P
    from sharpen_jax import sharding
    from sharpen_jax.methods import get_loss
    from sharpen_jax.training.train_state import create_train_state, train_state_sharding

    X, Y = 8, 8
    def logprob_fn(params, seqs):
        logp = jax.nn.log_softmax(params["logits"][seqs["x"]], -1)
        logp = jnp.take_along_axis(logp, seqs["y"][:, None], -1)[:, 0]
        return logp, (seqs["y"] + 1).astype(jnp.float32)

    base = {"logits": jax.random.normal(jax.random.key(0), (X, Y))}
    tx = optax.adam(0.1)
    rng = np.random.default_rng(0)
    sft_batch = {"seqs": {"x": rng.integers(0, X, 32).astype(np.int32), "y": rng.integers(0, Y, 32).astype(np.int32)},
                 "weight": rng.uniform(0.5, 1.5, 32).astype(np.float32)}
    x = np.repeat(np.arange(X), 4).astype(np.int32)
    pg_batch = {"seqs": {"x": x, "y": rng.integers(0, Y, 32).astype(np.int32)},
                "reward": rng.normal(size=32).astype(np.float32)}

    def train(mesh):
        state = create_train_state(base, tx)
        kwargs, ref = {}, {}
        if mesh is not None:
            shardings = train_state_sharding(state, mesh, {"logits": NamedSharding(mesh, P("fsdp", "model"))})
            state = jax.device_put(state, shardings)
            kwargs, ref = dict(mesh=mesh, state_sharding=shardings), dict(ref_sharding=shardings.params)
        sft = get_loss("sft").make_step(logprob_fn, tx, grad_accum_steps=2, **kwargs, **ref)
        pg = get_loss("kl_pg").make_step(logprob_fn, tx, hyperparameters={"beta": 0.5, "group_size": 4},
                                         grad_accum_steps=2, **kwargs, **ref)
        for i in range(3):
            state, m1 = sft(state, base, sft_batch)
            state, m2 = pg(state, base, pg_batch)
        return state, m1, m2

    mesh = sharding.make_mesh(data=2, fsdp=2, model=2)
    single, s1, s2 = train(None)
    sharded, m1, m2 = train(mesh)
    np.testing.assert_allclose(np.asarray(sharded.params["logits"]), np.asarray(single.params["logits"]),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(m1["loss"]), float(s1["loss"]), rtol=1e-5)
    np.testing.assert_allclose(float(m2["loss"]), float(s2["loss"]), rtol=1e-5)
    # Adam's update is invariant to the gradient's scale, so equal parameters do not show equal gradients:
    # the gradient norms must agree too (a sharded gradient off by a constant factor fails here).
    np.testing.assert_allclose(float(m1["grad_norm"]), float(s1["grad_norm"]), rtol=1e-5)
    np.testing.assert_allclose(float(m2["grad_norm"]), float(s2["grad_norm"]), rtol=1e-5)
    spec = sharded.params["logits"].sharding.spec
    mu_spec = sharded.opt_state[0].mu["logits"].sharding.spec
    assert spec == P("fsdp", "model") and mu_spec == spec, (spec, mu_spec)
    assert len(sharded.params["logits"].addressable_shards) == 8
    print("OK", spec)
""")


def test_sharded_steps_match_single_device():
    assert "OK" in run_with_devices(SCRIPT, num_devices=8)
