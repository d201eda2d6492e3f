"""Data assembly: best-of-N selection, the SFT dataset and its resumable batch order, datasets from
the inference experiment's results file and from a sampler, and the on-the-fly PO batches."""

import json

import jax
import numpy as np
import pytest

from sharpen_jax.methods import get_loss, rlhf_sharpening, sft_sharpening
from sharpen_jax.rollouts import PromptSet
from sharpen_jax.selection import best_of_n, rewards
from sharpen_jax.testing import CharTokenizer
from sharpen_jax.training import SFTDataset


def test_best_of_n_picks_the_highest_self_reward():
    reward = np.array([[0.1, 3.0, -1.0], [2.0, 2.0, 1.0]])
    np.testing.assert_array_equal(best_of_n.select(reward), [1, 0])  # first maximum on ties
    picked = best_of_n.take_best({"y": np.array([[10, 11, 12], [20, 21, 22]])}, reward)
    np.testing.assert_array_equal(picked["y"], [11, 20])
    with pytest.raises(ValueError, match="scores_BN"):
        best_of_n.take_best({"y": np.zeros(3)}, np.zeros(3))


def test_empty_sft_dataset_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        SFTDataset({"tokens": np.zeros((0, 4), np.int32)})
    with pytest.raises(ValueError, match="disagree"):
        SFTDataset({"a": np.zeros(3), "b": np.zeros(4)})


def test_batch_order_is_a_pure_function_of_seed_and_step():
    dataset = SFTDataset({"x": np.arange(10)})
    stream = np.concatenate([dataset.batch(step, 4, seed=7)["seqs"]["x"] for step in range(5)])
    # Epochs are permutations: the first 10 and the next 10 each hold every example once.
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert not np.array_equal(stream[:10], stream[10:20])
    np.testing.assert_array_equal(dataset.batch(3, 4, seed=7)["seqs"]["x"], stream[12:16])  # resume at step 3
    assert not np.array_equal(dataset.batch(0, 4, seed=8)["seqs"]["x"], stream[:4])


def test_results_file_dataset_takes_the_best_sample_and_appends_the_stop(tmp_path):
    tok = CharTokenizer()
    path = tmp_path / "results.jsonl"
    records = [{"prompt": "Q: 1+1\nA:", "samples": [{"text": " 3", "rewards": {"log_likelihood": -5.0}},
                                                    {"text": " 2", "rewards": {"log_likelihood": -1.0}}]},
               {"prompt": "Q: 2+2\nA:", "completion": " 4\n"}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    dataset = sft_sharpening.results_file_dataset(str(path), tok, prompt_length=8, completion_length=4,
                                                  completion_suffix="\n")
    assert dataset.size == 2
    rows = dataset.seqs
    completion_0 = tok.decode(rows["tokens"][0][rows["target"][0]].tolist())
    assert completion_0 == " 2\n"
    assert tok.decode(rows["tokens"][1][rows["target"][1]].tolist()) == " 4\n"
    assert rows["valid"][0].sum() == len("Q: 1+1\nA:") + 3  # prompt longer than 8: widened, not cut
    with pytest.raises(ValueError, match="'verifier'"):
        sft_sharpening.results_file_dataset(str(path), tok, prompt_length=8, completion_length=4, reward="verifier")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        sft_sharpening.results_file_dataset(str(tmp_path / "empty.jsonl"), tok, prompt_length=8, completion_length=4)


class BosCharTokenizer(CharTokenizer):
    """CharTokenizer that, like Gemma's, puts a BOS id (the word "<bos>") before every encoded text by default."""

    def __init__(self):
        super().__init__(words=("<bos>",))
        self.bos_id = self.words["<bos>"]

    def encode(self, text, add_bos=None):
        return ([self.bos_id] if add_bos is None or add_bos else []) + super().encode(text)


def test_results_file_dataset_puts_bos_only_before_the_prompt(tmp_path):
    tok = BosCharTokenizer()
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"prompt": "Q: 2+2\nA:", "completion": " 4\n"}) + "\n")
    rows = sft_sharpening.results_file_dataset(str(path), tok, prompt_length=12, completion_length=4).seqs
    real = rows["tokens"][0][rows["valid"][0]].tolist()
    assert real == tok.encode("Q: 2+2\nA:") + tok.encode(" 4\n", add_bos=False)
    assert real.count(tok.bos_id) == 1 and tok.bos_id not in rows["tokens"][0][rows["target"][0]]


def _fake_sampler(params, prompt_tokens_BP, prompt_valid_BP, key, num_samples, temperature):
    """Completion n of each prompt is [n + 1] * 2 with log-prob -(n - 2)^2 per token: sample 2 is best."""
    b = len(prompt_tokens_BP)
    tokens = np.broadcast_to(np.arange(1, num_samples + 1)[None, :, None], (b, num_samples, 2)).astype(np.int32)
    logp = np.broadcast_to(-((np.arange(num_samples) - 2.0) ** 2)[None, :, None], (b, num_samples, 2))
    return tokens, np.ones((b, num_samples, 2), bool), logp.astype(np.float32)


def _score(reward):
    """score_fn of a model-free selection reward over the samples' token log-probs (no texts or answers)."""
    def score_fn(prompts, tokens_BNC, valid_BNC, logp_BNC):
        b, n = np.shape(tokens_BNC)[:2]
        inputs = rewards.RewardInputs.build([""] * b, [""] * b, [[""] * n] * b, logp_BNC,
                                            np.asarray(valid_BNC).sum(-1), [[None] * n] * b)
        return reward(inputs)
    return score_fn


def _prompts(n=5):
    tokens = np.zeros((n, 3), np.int32)
    tokens[:, 1:] = [[7, 8]] * n
    valid = tokens > 0
    return PromptSet(tokens, valid, tuple(range(n)))


def test_best_of_n_dataset_from_a_sampler():
    dataset = sft_sharpening.best_of_n_dataset(_fake_sampler, None, _prompts(), jax.random.key(0), num_samples=5,
                                               temperature=1.0, batch_size=2, score_fn=_score(rewards.LOG_LIKELIHOOD))
    assert dataset.size == 5
    np.testing.assert_array_equal(dataset.seqs["tokens"][:, 3:], [[3, 3]] * 5)  # sample 2 -> tokens [3, 3]
    np.testing.assert_array_equal(dataset.seqs["target"][0], [False, False, False, True, True])
    np.testing.assert_array_equal(dataset.seqs["valid"][0], [False, True, True, True, True])
    with pytest.raises(ValueError, match="empty"):
        sft_sharpening.best_of_n_dataset(_fake_sampler, None, _prompts(5).take(np.arange(0)), jax.random.key(0),
                                         num_samples=5, temperature=1.0, batch_size=2,
                                         score_fn=_score(rewards.LOG_LIKELIHOOD))


def test_po_batches_draw_each_side_from_the_right_policy():
    calls = []

    def sampler(params, *args):
        calls.append((params, args[-2]))
        return _fake_sampler(params, *args)

    base_scores = lambda p, v, tokens, valid: -np.asarray(tokens).astype(np.float32)  # noqa: E731 (per token)
    prompts = _prompts(4)
    draw = lambda loss, reward=rewards.LOG_LIKELIHOOD, **kw: rlhf_sharpening.draw_batch(  # noqa: E731
        get_loss(loss), sampler, "POLICY", "BASE", prompts, jax.random.key(0), temperature=1.0,
        score_fn=_score(reward), base_token_logprobs_fn=base_scores, **kw)
    batch = draw("xpo")
    assert [c[0] for c in calls] == ["POLICY", "BASE"]
    np.testing.assert_array_equal(batch["reward_a"], [-2.0] * 4)  # policy sample scored by the base scorer
    np.testing.assert_array_equal(batch["reward_b"], [-8.0] * 4)  # base sample: its own log-probs (-(0-2)^2 * 2)
    assert batch["a"]["tokens"].shape == (4, 5) and batch["a"]["target"][:, 3:].all()
    calls.clear()
    batch = draw("kl_pg", group_size=3)
    assert calls == [("POLICY", 3)] and "group_size" not in batch  # the group size is the loss's, not the batch's
    np.testing.assert_array_equal(batch["reward"], np.tile([-2.0, -4.0, -6.0], 4))
    np.testing.assert_array_equal(batch["seqs"]["tokens"][:3, 3], [1, 2, 3])  # samples of a prompt consecutive
    calls.clear()
    batch = draw("reward_dpo")
    assert calls == [("BASE", 2)]  # both sides from pi_base in one call; rewards are its own log-probs
    np.testing.assert_array_equal(batch["reward_a"], [-8.0] * 4)
    np.testing.assert_array_equal(batch["reward_b"], [-2.0] * 4)
    np.testing.assert_array_equal(batch["b"]["tokens"][:, 3:], [[2, 2]] * 4)
    calls.clear()
    batch = draw("online_dpo", rewards.LENGTH_NORMALIZED)
    assert calls == [("POLICY", 2)]  # both sides from pi, scored by the base scorer, per token
    np.testing.assert_array_equal(batch["reward_a"], [-1.0] * 4)
    np.testing.assert_array_equal(batch["reward_b"], [-2.0] * 4)
    with pytest.raises(ValueError, match="loss='dpo'"):
        draw("dpo")
    with pytest.raises(ValueError, match="fixed dataset"):
        draw("sft")
