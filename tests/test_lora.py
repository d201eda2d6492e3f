"""LoRA adapters: zero-initialized adapters leave the model unchanged, the unmerged path equals the
merged kernels, and an SFT step trains only the adapters."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sharpen_jax.methods import get_loss
from sharpen_jax.testing import random_params
from sharpen_jax.training import create_train_state, lora
from sharpen_jax.training.policies import make_policy, pack_token_lists
from sharpen_jax.config import TransformerConfig

CONFIG = TransformerConfig.tiny()


def _random_params(seed=0, scale=0.1):
    return random_params(CONFIG, seed, scale=scale, unit_norms=False)


def _seqs(seed=0, b=4, t=12):
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(1, 97, rng.integers(2, 5)).tolist() for _ in range(b)]
    completions = [rng.integers(1, 97, rng.integers(1, 7)).tolist() for _ in range(b)]
    return {k: jnp.asarray(v) for k, v in pack_token_lists(prompts, completions, completion_length=t - 4,
                                                             prompt_length=4).items()}


def _random_adapters(base, rank=4, seed=1):
    adapters = lora.init_lora(base, rank, jax.random.key(seed))
    keys = iter(jax.random.split(jax.random.key(seed + 1), 100))
    return jax.tree_util.tree_map_with_path(
        lambda path, x: jax.random.normal(next(keys), x.shape) * 0.2 if path[-1].key == "lora_b" else x, adapters)


def test_adapters_zero_at_init_and_equal_to_merged_kernels_for_any_scale():
    base = _random_params()
    seqs = _seqs(1)
    ref_fn = make_policy(CONFIG)[0]
    unadapted, ntok = ref_fn(base, seqs)
    # Freshly initialized adapters (B = 0) leave the model unchanged.
    policy_fn = make_policy(CONFIG, lora_rank=4, lora_alpha=8.0)[0]
    logp, lora_ntok = policy_fn({"frozen": base, "trainable": lora.init_lora(base, 4, jax.random.key(0))}, seqs)
    np.testing.assert_array_equal(logp, unadapted)
    np.testing.assert_array_equal(lora_ntok, ntok)
    # Trained adapters: the unmerged low-rank path equals the merged kernels. The model's forward is
    # jitted and cached by parameter structure; the second scale must not reuse the first one's.
    adapters = _random_adapters(base)
    for alpha in (8.0, 2.0):
        policy_fn = make_policy(CONFIG, lora_rank=4, lora_alpha=alpha)[0]
        logp, _ = policy_fn({"frozen": base, "trainable": adapters}, seqs)
        merged, _ = ref_fn(lora.merge_adapters(base, adapters, alpha / 4), seqs)
        assert float(jnp.max(jnp.abs(logp - unadapted))) > 1e-2  # the adapters do change the model
        np.testing.assert_allclose(logp, merged, rtol=2e-5, atol=2e-5)


def test_sft_step_trains_only_the_adapters():
    base = _random_params()
    base_copy = jax.tree.map(np.asarray, base)
    policy_fn, _ = make_policy(CONFIG, lora_rank=2, lora_alpha=4.0)
    adapters = lora.init_lora(base, 2, jax.random.key(3), targets=("q_proj", "v_proj", "down_proj"))
    tx = optax.adam(0.2)
    state = create_train_state(adapters, tx, frozen=base)
    step = get_loss("sft").make_step(policy_fn, tx)
    batch = {"seqs": _seqs(2)}
    losses = []
    for _ in range(6):
        state, metrics = step(state, None, batch)
        losses.append(float(metrics["loss"]))
    assert np.all(np.diff(losses) < 0) and losses[-1] < losses[0] - 0.05
    chex.assert_trees_all_equal(state.frozen, base_copy)
    chex.assert_trees_all_equal_structs(state.opt_state[0].mu, adapters)
    assert sorted(state.params["layers"]["attn"]) == ["q_proj", "v_proj"]
    assert float(jnp.abs(state.params["layers"]["mlp"]["down_proj"]["lora_b"]).max()) > 0


def test_bad_lora_settings_are_rejected():
    base = _random_params()
    with pytest.raises(ValueError, match="qkv"):
        lora.init_lora(base, 4, jax.random.key(0), targets=("qkv",))
    with pytest.raises(ValueError, match="rank=0"):
        lora.init_lora(base, 0, jax.random.key(0))
