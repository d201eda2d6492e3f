"""PIT's RL stage and inference: the KL-regularised RL entry reaches π* ∝ π_SFT exp(r_gap / β) on an
enumerable set, iterated improvement under a fixed kernel follows μ_0 K^t q (non-monotone on purpose),
Δ from win/lose counts is the accuracy difference, and bad settings fail before any work."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bad_inputs_lib import Case, check_case, ids
from sharpen_jax import methods
from sharpen_jax.methods import pit, pit_inference
from sharpen_jax.tasks import preferences
from sharpen_jax.tasks.preferences import PreferencePair
from sharpen_jax.testing import CharTokenizer
from sharpen_jax.training import create_train_state

CONTEXTS, RESPONSES = 6, 5  # (x, y_ref) contexts: 2 prompts x 3 reference responses


def tabular_logprob_fn(params, seqs):
    """log M(y | context) = log softmax(logits[context])[y], one token per response."""
    logp_BY = jax.nn.log_softmax(params["logits"][seqs["x"]], axis=-1)
    return jnp.take_along_axis(logp_BY, seqs["y"][:, None], axis=-1)[:, 0], jnp.ones(seqs["x"].shape)


def test_rl_on_the_gap_reward_reaches_the_closed_form():
    beta, group, steps = 0.5, 32, 500
    keys = jax.random.split(jax.random.key(11), 2)
    sft_logits = jax.random.normal(keys[0], (CONTEXTS, RESPONSES)) * 0.8
    r_gap = jax.random.uniform(keys[1], (CONTEXTS, RESPONSES), minval=-1.0, maxval=1.0)
    target = jax.nn.softmax(jax.nn.log_softmax(sft_logits, -1) + r_gap / beta, -1)
    tv = lambda p: float(jnp.max(0.5 * jnp.sum(jnp.abs(p - target), -1)))  # noqa: E731
    assert tv(jax.nn.softmax(sft_logits, -1)) > 0.1  # far from the start

    tx = optax.adam(optax.cosine_decay_schedule(0.05, steps, alpha=0.05))
    state = create_train_state({"logits": sft_logits}, tx)
    entry = methods.get_loss("pit_rl")
    assert entry.draws[0].policy == "policy" and entry.grouped
    step = entry.make_step(tabular_logprob_fn, tx, hyperparameters={"beta": beta, "group_size": group})
    x = jnp.repeat(jnp.arange(CONTEXTS), group)
    sample = jax.jit(lambda key, logits: jax.random.categorical(key, logits[x]))
    for t in range(steps):
        y = sample(jax.random.fold_in(jax.random.key(0), t), state.params["logits"])
        state, metrics = step(state, {"logits": sft_logits}, {"seqs": {"x": x, "y": y}, "reward": r_gap[x, y]})
    assert bool(metrics["finite"])
    assert tv(jax.nn.softmax(state.params["logits"], -1)) < 0.02


KERNEL = np.array([[0.1, 0.9, 0.0], [0.0, 0.2, 0.8], [0.6, 0.2, 0.2]])
QUALITY = np.array([0.0, 1.0, 0.3])


def test_iterated_inference_follows_the_markov_chain():
    mu0 = np.array([0.8, 0.1, 0.1])
    exact = pit_inference.markov_quality_curve(mu0, KERNEL, QUALITY, 5)
    oracle = [mu0 @ np.linalg.matrix_power(KERNEL, t) @ QUALITY for t in range(6)]
    np.testing.assert_allclose(exact, oracle, rtol=1e-12)
    steps = np.diff(exact)
    assert (steps > 0).any() and (steps < 0).any()  # quality is not monotone in t

    rng = np.random.default_rng(0)
    n = 20000
    y0 = list(rng.choice(3, size=n, p=mu0))
    cumulative = np.cumsum(KERNEL, axis=1)

    def improve(current, t):
        u = rng.random(len(current))
        return list((u[:, None] > cumulative[np.asarray(current)]).sum(axis=1))

    history, stopped = pit_inference.iterate_improvement(improve, y0, 5)
    assert len(history) == 6 and (stopped == 5).all()
    for t, ys in enumerate(history):
        q = QUALITY[np.asarray(ys)]
        assert abs(q.mean() - exact[t]) < 4 * q.std() / np.sqrt(n) + 1e-9, (t, q.mean(), exact[t])


def test_stopping_rule_keeps_the_last_improving_response():
    chains = {0: [1, 2, 0, 1, 1], 1: [2, 1, 2, 2, 2]}  # the proposal at each t for two prompts, states 0..2

    def improve(current, t):
        return [chains[b][t] for b in range(2)]

    gap = lambda new, old: QUALITY[np.asarray(new)] - QUALITY[np.asarray(old)]  # noqa: E731
    history, stopped = pit_inference.iterate_improvement(improve, [0, 0], 5, gap=gap)
    # prompt 0: 0 -> 1 (+1), then 1 -> 2 (-0.7): stops at t = 1 and keeps 1. prompt 1: 0 -> 2 (+0.3),
    # 2 -> 1 (+0.7), 1 -> 2 (-0.7): stops at t = 2 and keeps 1.
    assert stopped.tolist() == [1, 2]
    assert [h[0] for h in history] == [0, 1, 1, 1, 1, 1] and [h[1] for h in history] == [0, 2, 1, 1, 1, 1]


def test_delta_from_win_lose_counts_is_the_accuracy_difference():
    rng = np.random.default_rng(3)
    for n in (1, 7, 1000):
        before, after = rng.random(n) < 0.4, rng.random(n) < 0.6
        wins, losses, total = pit_inference.win_lose_counts(before, after)
        assert wins == np.sum(~before & after) and losses == np.sum(before & ~after) and total == n
        assert pit_inference.improvement_rate(before, after) == (after.sum() - before.sum()) / n
    assert pit_inference.improvement_rate([True, False, False], [False, True, True]) == pytest.approx(1 / 3)


def test_curriculum_stage_contexts():
    pairs = [PreferencePair("x1", "good", "bad"), PreferencePair("x2", "fine", "poor")]
    assert pit.rl_reward_inputs(pairs, "stage0") == [{"x": "x1", "y_ref": "bad"}, {"x": "x2", "y_ref": "poor"}]
    assert pit.rl_reward_inputs(pairs, "stage1", ["s1", "s2"])[1] == {"x": "x2", "y_ref": "s2"}
    assert pit.check_stages(["stage1"]) == ("stage1",)


CASES = [
    Case("unknown stage", lambda tmp: pit.check_stages(["stage0", "stage2"]), ValueError,
         r"stages=\['stage0', 'stage2'\]; expected distinct stages among \['stage0', 'stage1'\]"),
    Case("stage1 without policy samples", lambda tmp: pit.rl_reward_inputs([PreferencePair("x", "a", "b")], "stage1"),
         ValueError, r"stage1 needs one policy sample"),
    Case("beta zero", lambda tmp: methods.get_loss("pit_rl").make_step(
        tabular_logprob_fn, optax.sgd(0.1), hyperparameters={"beta": 0.0, "group_size": 2}), ValueError,
        r"beta=0.0; the KL coefficient must be a positive"),
    Case("beta negative", lambda tmp: methods.get_loss("pit_rl").make_step(
        tabular_logprob_fn, optax.sgd(0.1), hyperparameters={"beta": -1.0, "group_size": 2}), ValueError, r"beta=-1.0"),
    Case("empty preference set (reward)", lambda tmp: pit.gap_reward_batch(CharTokenizer(), []), ValueError,
         r"preference set is empty"),
    Case("empty preference set (improver)", lambda tmp: pit.improver_dataset(CharTokenizer(), [], completion_length=4),
         ValueError, r"preference set is empty"),
    Case("layout missing y_ref", lambda tmp: pit.gap_layout("{x} then {y}"), ValueError, r"gap_layout=.*y_ref"),
    Case("unknown preference kind", lambda tmp: preferences.build_pairs("teacher", None, []), ValueError,
         r"kind='teacher'; expected one of \['solver', 'self', 'corruption', 'gold'\]"),
    Case("self-sampled set without samples", lambda tmp: preferences.build_pairs("self", None, []), ValueError,
         r"'self' pairs model samples; none were given"),
    Case("T zero", lambda tmp: pit_inference.iterate_improvement(lambda c, t: c, [0], 0), ValueError,
         r"num_iterations=0; expected an integer >= 1"),
    Case("T not an integer", lambda tmp: pit_inference.check_iterations(2.5), ValueError, r"num_iterations=2.5"),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_bad_pit_input_fails_before_any_work(case, tmp_path, monkeypatch):
    check_case(case, tmp_path, monkeypatch)
