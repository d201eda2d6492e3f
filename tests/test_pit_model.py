"""R_PIT on the decoder: shared-prefix scoring of N candidates equals N separate forwards, the gap and
Bradley-Terry reward models train through `make_train_step` (full and LoRA), and the improver SFT loss
is exactly the y_w token log-probabilities."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sharpen_jax import methods, rollouts, tasks
from sharpen_jax.config import TransformerConfig
from sharpen_jax.methods import pit, rlhf_sharpening
from sharpen_jax.model import forward
from sharpen_jax.tasks import preferences
from sharpen_jax.tasks.preferences import PreferencePair
from sharpen_jax.testing import CharTokenizer, random_params
from sharpen_jax.tokenizer import pad_batch
from sharpen_jax.training import create_train_state, reward_model
from sharpen_jax.training.policies import make_transformer_logprob_fn

CONFIG = TransformerConfig.tiny(max_seq_len=256)
TOKENIZER = CharTokenizer()
PAIRS = [PreferencePair(f"Question: {a} + {b}?\nAnswer:", f" {a + b}", f" {a + b + d}")
         for a, b, d in [(2, 3, 1), (4, 4, 2), (7, 1, -3), (5, 9, 10), (6, 2, 1), (3, 8, -2), (1, 1, 5), (9, 9, 1)]]


@pytest.fixture(scope="module")
def backbone():
    return random_params(CONFIG, 0, scale=0.1, unit_norms=False)


def _head(seed=1):
    return reward_model.init_head(CONFIG, jax.random.key(seed), scale=0.5)


@pytest.mark.parametrize("template", [pit.GAP_LAYOUT, "Reference:{y_ref}\nCandidate:{y}\nQuestion:{x}"])
def test_shared_prefix_scoring_equals_separate_forwards(backbone, template):
    layout = pit.gap_layout(template)
    assert layout.shares_prefix == (template == pit.GAP_LAYOUT)
    contexts = [(p.prompt, p.rejected) for p in PAIRS[:3]]
    candidates = [[" 5", " 12", " 5 is the sum"], [" 8", " 80", " 0"], [" 1", " 8", " eight"]]
    head = _head()
    shared = pit.score_against_references(backbone, head, CONFIG, TOKENIZER, contexts, candidates, layout)
    rows = [pit.row_tokens(TOKENIZER, layout, x=x, y_ref=y_ref, y=y) for (x, y_ref), ys in zip(contexts, candidates)
            for y in ys]  # every row whole, prefix included: the N separate forwards
    encoded = pad_batch(rows, TOKENIZER.pad_id, "right")
    direct = reward_model.make_reward_fn(CONFIG)({"backbone": backbone, "head": head},
                                                 {"tokens": jnp.asarray(encoded.tokens), "valid": jnp.asarray(encoded.valid)})
    np.testing.assert_allclose(shared, np.asarray(direct).reshape(3, 3), atol=2e-5, rtol=1e-5)
    assert np.std(shared) > 1e-3  # the rewards differ, so equality is not trivial


def test_reward_reads_the_last_real_token_under_either_padding(backbone):
    batch = pit.gap_reward_batch(TOKENIZER, PAIRS[:4])["wl"]
    fn = reward_model.make_reward_fn(CONFIG)
    params = {"backbone": backbone, "head": _head()}
    right = fn(params, jax.tree.map(jnp.asarray, batch))
    shift = [np.roll(t, int((~v).sum())) for t, v in zip(batch["tokens"], batch["valid"])]
    left = {"tokens": jnp.asarray(np.stack(shift)), "valid": jnp.asarray(np.sort(batch["valid"], axis=1))}
    np.testing.assert_allclose(fn(params, left), right, atol=2e-5)


def _train(entry, batch, reward_fn, state, steps, tx):
    step = methods.get_loss(entry).make_step(reward_fn, tx)
    batch = jax.tree.map(jnp.asarray, batch)
    history = []
    for _ in range(steps):
        state, metrics = step(state, None, batch)
        history.append({k: float(v) for k, v in metrics.items()})
    return state, history


@pytest.mark.slow
@pytest.mark.parametrize("lora_rank", [0, 4])
def test_gap_reward_model_trains_through_the_step(backbone, lora_rank):
    tx = optax.adam(3e-2)
    reward_fn, state = reward_model.make_reward_state(CONFIG, backbone, tx, jax.random.key(2), lora_rank=lora_rank)
    frozen_before = jax.tree.map(np.asarray, state.frozen)
    state, history = _train("pit_gap_reward", pit.gap_reward_batch(TOKENIZER, PAIRS), reward_fn, state, 25, tx)
    assert history[-1]["loss"] < 0.8 * history[0]["loss"], (history[0], history[-1])
    if not lora_rank:  # full fine-tuning orders every training pair within these steps
        assert history[-1]["pair_accuracy"] == 1.0 and history[-1]["ordering"] >= 0.5, history[-1]
    if lora_rank:  # the base weights are not trained
        jax.tree.map(np.testing.assert_array_equal, frozen_before, jax.tree.map(np.asarray, state.frozen))
        backbone_params, head = reward_model.scoring_params(state, lora_rank=lora_rank)
        r = pit.score_against_references(backbone_params, head, CONFIG, TOKENIZER,
                                         [(p.prompt, p.rejected) for p in PAIRS], [[p.chosen] for p in PAIRS])
        wl = reward_fn({"frozen": state.frozen, "trainable": state.params},
                       jax.tree.map(jnp.asarray, pit.gap_reward_batch(TOKENIZER, PAIRS)["wl"]))
        np.testing.assert_allclose(r[:, 0], wl, atol=1e-4)  # merged adapters score like the training path


@pytest.mark.slow
def test_bradley_terry_reward_model_trains_through_the_step(backbone):
    tx = optax.adam(3e-2)
    reward_fn, state = reward_model.make_reward_state(CONFIG, backbone, tx, jax.random.key(3))
    _, history = _train("bt_reward", pit.bt_reward_batch(TOKENIZER, PAIRS), reward_fn, state, 25, tx)
    assert history[-1]["loss"] < 0.8 * history[0]["loss"], (history[0], history[-1])


def test_improver_sft_loss_is_the_y_w_token_logprob_sum(backbone):
    data = pit.improver_dataset(TOKENIZER, PAIRS[:4], completion_length=8)
    seqs = {k: jnp.asarray(v) for k, v in data.seqs.items()}
    loss_fn = methods.get_loss("pit_improver_sft").make_loss(make_transformer_logprob_fn(CONFIG))
    loss, metrics = loss_fn(backbone, None, {"seqs": seqs})
    prompts = [TOKENIZER.encode(pit.improver_prompt(p.prompt, p.rejected)) for p in PAIRS[:4]]
    y_ws = [TOKENIZER.encode(p.chosen) for p in PAIRS[:4]]
    # One direct forward of the unpadded rows prompt ++ y_w, right-padded (causal: padding after a row's
    # tokens cannot change their logits), log-softmax, the y_w tokens' entries summed.
    width = max(len(p) + len(y) for p, y in zip(prompts, y_ws))
    rows = np.zeros((4, width), np.int32)
    for i, (p, y) in enumerate(zip(prompts, y_ws)):
        rows[i, :len(p) + len(y)] = p + y
    logits, _ = forward(backbone, CONFIG, jnp.asarray(rows))
    logp = np.asarray(jax.nn.log_softmax(logits, -1), np.float64)
    direct = [sum(logp[i, len(p) + j - 1, tok] for j, tok in enumerate(y)) for i, (p, y) in enumerate(zip(prompts, y_ws))]
    np.testing.assert_allclose(loss, -np.mean(direct), rtol=1e-5)
    assert float(metrics["denominator"]) == 4
    # Only y_w's tokens are targets: x and y_l (the prompt part of each row) carry no loss term.
    assert data.seqs["target"].sum(axis=1).tolist() == [len(TOKENIZER.encode(p.chosen)) for p in PAIRS[:4]]
    prompt_width = data.seqs["tokens"].shape[1] - 8
    assert not data.seqs["target"][:, :prompt_width].any()


@pytest.mark.parametrize("template,missing", [("{x}{y}", "y_ref"), ("{x}{y_ref}{y}{y}", "'y'"),
                                              ("{x}{y_ref}{y}{z}", "unknown: \\['z'\\]")])
def test_a_layout_missing_a_placeholder_is_an_error(template, missing):
    with pytest.raises(ValueError, match=f"gap_layout=.*{missing}"):
        pit.gap_layout(template)
    with pytest.raises(ValueError, match="improver_layout=.*y_ref"):
        pit.improver_prompt("x", "y", "{x} improve this")


@pytest.mark.slow
def test_rl_batch_of_the_improver_is_scored_by_the_gap_reward_and_trains(backbone):
    """Stage 0: contexts (x, y_ref = y_l); K = 2 improver samples per context through the RL entry's batch
    source (`rlhf_sharpening.draw_batch`), rewarded by r_gap of the decoded sample; one pit_rl step."""
    sample_fn = rollouts.make_sampler(CONFIG, TOKENIZER, max_new_tokens=4)
    contexts = pit.rl_reward_inputs(PAIRS[:2], "stage0")
    prompts = pit.improver_prompts(TOKENIZER, contexts)
    head = _head()
    batch = rlhf_sharpening.draw_batch(
        pit.RL, sample_fn, backbone, backbone, prompts, jax.random.key(0), temperature=1.0,
        score_fn=pit.gap_score_fn(backbone, head, CONFIG, TOKENIZER), group_size=2,
        base_token_logprobs_fn=lambda p, v, tokens, valid: np.zeros(np.shape(tokens), np.float32))
    reward_fn = reward_model.make_reward_fn(CONFIG)
    seqs = batch["seqs"]
    for row in range(4):
        context = contexts[row // 2]
        y = TOKENIZER.decode(seqs["tokens"][row][seqs["target"][row]].tolist())
        tokens = jnp.asarray([pit.row_tokens(TOKENIZER, pit.gap_layout(), x=context["x"], y_ref=context["y_ref"], y=y)])
        direct = reward_fn({"backbone": backbone, "head": head}, {"tokens": tokens, "valid": tokens >= 0})
        np.testing.assert_allclose(batch["reward"][row], direct[0], atol=2e-5, rtol=1e-5)
    assert seqs["tokens"][0][seqs["valid"][0] & ~seqs["target"][0]].tolist() == \
        [t for t in prompts.tokens[0][prompts.valid[0]].tolist()]  # the row conditions on (x, y_ref)
    tx = optax.sgd(1e-2)
    step = pit.RL.make_step(make_transformer_logprob_fn(CONFIG), tx, hyperparameters={"beta": 0.5, "group_size": 2})
    state, metrics = step(create_train_state(backbone, tx), backbone, jax.tree.map(jnp.asarray, batch))
    assert bool(metrics["finite"]) and int(state.step) == 1


@pytest.mark.slow
def test_solver_preference_set_from_model_samples_is_written_once(backbone, tmp_path):
    task = tasks.get("arithmetic", digits=1, ops=("+",), num_train=4, num_test=6)
    examples = task.examples("test")
    prompts = rollouts.encode_prompts(TOKENIZER, task, examples, num_shots=0)
    sample_fn = rollouts.make_sampler(CONFIG, TOKENIZER, max_new_tokens=4, stop_strings=task.stop)
    samples = pit.sampled_texts(sample_fn, backbone, TOKENIZER, prompts, jax.random.key(1), num_samples=3,
                                temperature=1.0, batch_size=4, stop_strings=task.stop)
    assert len(samples) == 6 and all(len(s) == 3 for s in samples)
    path = tmp_path / "arithmetic-solver-seed1.jsonl"
    pairs = preferences.cached_pairs(path, lambda: preferences.build_pairs("solver", task, examples, samples))
    by_id = {e.id: (e, s) for e, s in zip(examples, samples)}
    assert pairs and len(pairs) == sum(any(not task.grade(e, y).correct for y in s) for e, s in zip(examples, samples))
    for pair in pairs:
        example, drawn = by_id[pair.metadata["id"]]
        assert task.grade(example, pair.chosen).correct and not task.grade(example, pair.rejected).correct
        assert pair.rejected in drawn
    assert preferences.cached_pairs(path, lambda: pytest.fail("the cached set was rebuilt")) == pairs
