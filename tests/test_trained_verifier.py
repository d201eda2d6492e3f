"""A finished training workdir as a model spec (`experiments.models`): cross-verification in the gap
experiment with the SFT-sharpened checkpoint verifying the base model (issue 12)."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from experiments import common, gv_gap, sft_sharpening
from experiments.configs import gv_gap as gv_configs, sft_sharpening as sft_configs
from experiments.models import check_model_spec, load_model
from experiments.workdir import model_fingerprint
from sharpen_jax import testing
from sharpen_jax.jsonl import read_jsonl, write_json
from sharpen_jax.selection import gv_verifiers
from sharpen_jax.selection.rewards import RewardInputs
from sharpen_jax.training import lora
from sharpen_jax.training.checkpoint import Checkpointer

TOKENIZER = "smollm2-135m-instruct"


def fake_workdir(path: str, rank: int, *, finished: bool = True) -> tuple[dict, dict]:
    """A training workdir as experiments.training_run leaves it (config.json, checkpoints/, results.json),
    with random trained parameters instead of a training run: (base params, saved params)."""
    cfg = sft_configs.smoke()
    cfg.lora.rank = rank
    base = load_model(cfg.model, tokenizer_spec=cfg.tokenizer, random_shape=cfg.random_model.to_dict())
    rng = np.random.default_rng(1)
    perturb = lambda x: np.asarray(x) + 0.1 * rng.standard_normal(x.shape).astype(x.dtype)  # noqa: E731
    # LoRA: B = 0 at init, so perturb it too (W' != W); full fine-tuning: perturbed base weights
    trained = jax.tree.map(perturb, lora.init_lora(base.params, rank, jax.random.key(1)) if rank else base.params)
    os.makedirs(path)
    write_json(os.path.join(path, "config.json"), common.to_plain(cfg))
    with Checkpointer(os.path.join(path, "checkpoints"), async_save=False) as checkpointer:
        checkpointer.save(6, {"step": np.int32(6), "params": trained, "opt_state": {}})
    if finished:
        write_json(os.path.join(path, "results.json"), {"before": {}, "after": {}})
    return base.params, trained


def _allclose(a: dict, b: dict) -> bool:
    return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.allclose(x, y, atol=1e-6)), a, b)))


@pytest.mark.parametrize("rank", [4, 0], ids=["lora", "full"])
def test_a_training_workdir_loads_as_its_trained_policy(tmp_path, rank):
    workdir = str(tmp_path / "sft")
    base_params, trained = fake_workdir(workdir, rank)
    check_model_spec(workdir, "", where="config.verifier_model")
    loaded = load_model(workdir, tokenizer_spec="ignored: the run's own tokenizer applies")
    expected = lora.merge_adapters(base_params, trained, 16.0 / rank) if rank else trained
    assert _allclose(loaded.params, expected)  # W + (alpha / r) A B, or the saved full weights
    assert not _allclose(loaded.params, base_params)
    assert isinstance(loaded.tokenizer, testing.CharTokenizer)  # the SFT smoke run's tokenizer, not the caller's
    files = model_fingerprint(workdir)["files"]
    assert "config.json" in files and any(name.startswith("checkpoints/") for name in files)


def test_an_unfinished_workdir_is_named_before_any_model_loads(tmp_path):
    workdir = str(tmp_path / "sft")
    fake_workdir(workdir, 4, finished=False)
    config = gv_configs.smoke()
    config.verifier_model = workdir
    with pytest.raises(common.ConfigError, match=r"config.verifier_model.*has not finished"):
        gv_gap.validate(config)


def test_the_cpu_cross_preset_validates_against_a_finished_sft_workdir(tmp_path, monkeypatch):
    standin = str(tmp_path / "sft_cpu")  # the SFT cpu preset's config.json, a finished marker, no weights
    os.makedirs(os.path.join(standin, "checkpoints"))
    write_json(os.path.join(standin, "config.json"), common.to_plain(sft_configs.get_config("cpu")))
    monkeypatch.setenv(gv_configs.SFT_WORKDIR_ENV, str(tmp_path / "absent"))
    with pytest.raises(common.ConfigError, match=r"config.verifier_model"):
        gv_gap.validate(gv_configs.get_config("cpu_cross"))
    monkeypatch.setenv(gv_configs.SFT_WORKDIR_ENV, standin)
    with pytest.raises(common.ConfigError, match=r"has not finished"):
        gv_gap.validate(gv_configs.get_config("cpu_cross"))
    write_json(os.path.join(standin, "results.json"), {"before": {}, "after": {}})
    config = gv_configs.get_config("cpu_cross")
    assert config.verifier_model == standin and list(config.tasks) == ["arithmetic"]
    assert config.tasks.arithmetic == gv_configs.get_config("cpu").tasks.arithmetic  # the cpu run's samples
    plan = gv_gap.dry_run(config, devices=1)
    assert f"verifier model: {standin}" in plan and "verifier model parameters" in plan


@pytest.mark.slow  # trains the SFT smoke preset, then runs a gap experiment: about a minute on 2 cores
def test_cross_verification_by_the_sft_sharpened_checkpoint(tmp_path):
    sft = sft_configs.smoke()
    sft.tokenizer = TOKENIZER  # the gap experiment's smoke tokenizer: " Yes" / " No" are single tokens in it
    sft.progress = False
    sft_dir = str(tmp_path / "sft")
    sft_sharpening.run(sft, sft_dir)

    def gap_config(verifier_model: str):
        config = gv_configs.smoke()
        config.update(verifiers=("mc",), ensembles=(), verifier_model=verifier_model)
        config.tasks = type(config.tasks)({"arithmetic": config.tasks.arithmetic})
        config.rounds.arms = ()
        return config

    self_dir, cross_dir = str(tmp_path / "self"), str(tmp_path / "cross")
    gv_gap.run(gap_config(""), self_dir)
    gv_gap.run(gap_config(sft_dir), cross_dir)
    self_records, cross_records = (read_jsonl(os.path.join(d, gv_gap.RESULTS)) for d in (self_dir, cross_dir))
    texts = [[s["text"] for s in r["samples"]] for r in cross_records]
    assert texts == [[s["text"] for s in r["samples"]] for r in self_records]  # the same generator samples
    cross_BN = np.array([[s["scores"]["mc"] for s in r["samples"]] for r in cross_records])
    self_BN = np.array([[s["scores"]["mc"] for s in r["samples"]] for r in self_records])
    assert not np.allclose(cross_BN, self_BN)
    judge = load_model(sft_dir)
    questions = [r["question"] for r in cross_records]
    inputs = RewardInputs.build(questions, questions, texts, np.zeros((*cross_BN.shape, 1)),
                                np.ones(cross_BN.shape, np.int32), [[None] * cross_BN.shape[1] for _ in questions])
    config = gap_config(sft_dir)
    direct = gv_verifiers.mc_verify(judge.params, judge.config, judge.tokenizer, inputs, template=config.templates.mc,
                                    words=tuple(config.mc_words), batch_size=config.score_batch_size)
    np.testing.assert_allclose(cross_BN, direct.scores_BN, atol=1e-5)
