"""The paper presets are the papers' protocols, and their dry runs plan them from config.json alone.

PROTOCOL below is written from Huang et al. 2024, App. A (../shared/papers/sharpening.md and issue 20),
not from the presets, so a drift in a preset fails here. The dry runs run on checkpoint directories
that this file writes: each a real model's config.json (shapes as published on the Hugging Face hub)
beside a weights file of garbage bytes, so a dry run that touched the weights would fail. Memory is
checked against a hand count of each architecture's parameters and KV cache.
"""

from __future__ import annotations

import gzip
import json
import os
import re

import pytest

from experiments import inference_sharpening, models, pit, plan, rlhf_sharpening, sft_sharpening
from experiments.configs import inference_sharpening as inference_configs
from experiments.configs import pit as pit_configs
from experiments.configs import rlhf_sharpening as rlhf_configs
from experiments.configs import sft_sharpening as sft_configs

SHARED_DATA = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "shared", "data"))

PROTOCOL = {  # Huang et al. 2024, App. A.1-A.3
    "inference_models": {"Phi-3-mini-4k-instruct", "Phi-3-medium-4k-instruct", "Phi-3.5-mini-instruct",
                         "Llama-3.2-3B-Instruct", "Mistral-7B-Instruct-v0.3"},  # Phi3-Small: unsupported
    "inference_tasks": {"math": 256, "gsm8k": 256, "prontoqa": 256, "game24": 256,
                        "college_biology": 144, "college_physics": 102, "college_chemistry": 100},
    "shots": {"game24": 0}, "default_shots": 1, "max_new_tokens": 512, "n_max": 50, "temperature": 1.0,
    "rewards": {"log_likelihood", "length_normalized", "majority"},
    "table1": {("Phi-3.5-mini-instruct", "math"), ("Phi-3.5-mini-instruct", "gsm8k"),
               ("Phi-3.5-mini-instruct", "prontoqa"), ("Mistral-7B-Instruct-v0.3", "math")},
    "lora_ranks": (8, 16), "learning_rate": 3e-4, "schedule": "linear", "grad_clip": 0.1, "batch_size": 4,
    "epochs": 30, "ablation_ns": {10, 25, 50},
}

_PHI3 = dict(architectures=["Phi3ForCausalLM"], model_type="phi3", vocab_size=32064, rms_norm_eps=1e-5,
             rope_theta=10000.0, hidden_act="silu", tie_word_embeddings=False, bos_token_id=1, eos_token_id=32000)
HF_CONFIGS = {  # the published config.json shapes
    "Phi-3-mini-4k-instruct": dict(_PHI3, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                                   num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                                   sliding_window=2047, rope_scaling=None),
    "Phi-3-medium-4k-instruct": dict(_PHI3, hidden_size=5120, intermediate_size=17920, num_hidden_layers=40,
                                     num_attention_heads=40, num_key_value_heads=10, max_position_embeddings=4096,
                                     sliding_window=2047, rope_scaling=None),
    "Phi-3.5-mini-instruct": dict(_PHI3, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                                  num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=131072,
                                  original_max_position_embeddings=4096, sliding_window=262144,
                                  rope_scaling={"type": "longrope", "short_factor": [1.0] * 48,
                                                "long_factor": [1.5] * 48}),
    "Llama-3.2-3B-Instruct": dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=128256,
                                  hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                                  num_attention_heads=24, num_key_value_heads=8, head_dim=128,
                                  max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
                                  rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                                  tie_word_embeddings=True, hidden_act="silu"),
    "Mistral-7B-Instruct-v0.3": dict(architectures=["MistralForCausalLM"], model_type="mistral", vocab_size=32768,
                                     hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                     num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                                     max_position_embeddings=32768, rms_norm_eps=1e-5, rope_theta=1e6,
                                     sliding_window=None, tie_word_embeddings=False, hidden_act="silu"),
}
PUBLISHED_PARAMETERS = {"Phi-3.5-mini-instruct": 3_821_079_552, "Mistral-7B-Instruct-v0.3": 7_248_023_552}


def hand_count(hf: dict) -> int:
    """Parameters of a llama-layout decoder from its config.json: embeddings, head, and per layer the
    q/k/v/o projections, the SwiGLU MLP and two norms."""
    d, f, layers, vocab = hf["hidden_size"], hf["intermediate_size"], hf["num_hidden_layers"], hf["vocab_size"]
    head_dim = hf.get("head_dim") or d // hf["num_attention_heads"]
    q, kv = hf["num_attention_heads"] * head_dim, hf["num_key_value_heads"] * head_dim
    per_layer = d * q + 2 * d * kv + q * d + 3 * d * f + 2 * d
    return vocab * d * (1 if hf["tie_word_embeddings"] else 2) + layers * per_layer + d


def kv_bytes_per_token(hf: dict, bytes_per_value: int = 2) -> int:
    head_dim = hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]
    return hf["num_hidden_layers"] * 2 * hf["num_key_value_heads"] * head_dim * bytes_per_value


def write_math(folder, num_train: int, num_test: int) -> None:
    folder.mkdir(parents=True)
    for split, count in (("train", num_train), ("test", num_test)):
        rows = [{"problem": f"What is {i} + {i}?", "solution": f"{i} + {i} = \\boxed{{{2 * i}}}", "answer": str(2 * i)}
                for i in range(count)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")


def write_mmlu(folder) -> None:
    for split, sizes in (("dev", {s: 5 for s in inference_configs.MMLU_SUBJECTS}),
                         ("test", inference_configs.MMLU_SUBJECTS)):
        (folder / split).mkdir(parents=True)
        for subject, size in sizes.items():
            rows = "".join(f"Question {i} of {subject}?,a,b,c,d,{'ABCD'[i % 4]}\n" for i in range(size))
            (folder / split / f"{subject}_{split}.csv").write_text(rows, "utf-8")


def write_hh_rlhf(folder) -> None:
    """Two HH-RLHF subsets (shards) of one-turn dialogues: 9,000 training and 600 test lines each."""
    for subset in ("harmless-base", "helpful-base"):
        (folder / subset).mkdir(parents=True)
        for split, size in (("train", 9000), ("test", 600)):
            with gzip.open(folder / subset / f"{split}.jsonl.gz", "wt") as f:
                for i in range(size):
                    turn = f"\n\nHuman: {subset} question {i}?\n\nAssistant:"
                    f.write(json.dumps({"chosen": f"{turn} A helpful answer.", "rejected": f"{turn} No."}) + "\n")


@pytest.fixture()
def paper_world(tmp_path, monkeypatch):
    """$SHARPEN_JAX_CHECKPOINTS with every paper model's config.json (and unreadable weights), and a
    data dir with MATH and MMLU files written here beside links to the shared GSM8K and Game of 24."""
    checkpoints, data = tmp_path / "checkpoints", tmp_path / "data"
    for name, hf in HF_CONFIGS.items():
        (checkpoints / name).mkdir(parents=True)
        (checkpoints / name / "config.json").write_text(json.dumps(hf), "utf-8")
        (checkpoints / name / "model.safetensors").write_bytes(b"not a safetensors file")
    write_math(data / "math", 300, 300)
    write_mmlu(data / "mmlu")
    for task in ("gsm8k", "game24"):
        os.symlink(os.path.join(SHARED_DATA, task), data / task)
    write_hh_rlhf(data / "hh-rlhf")
    monkeypatch.setenv(models.CHECKPOINTS_ENV, str(checkpoints))
    monkeypatch.setenv("SHARPEN_JAX_DATA_DIR", str(data))
    return checkpoints


def test_inference_paper_preset_is_the_protocol(paper_world):
    c = inference_configs.get_config("paper")
    assert {os.path.basename(m) for m in c.models} == PROTOCOL["inference_models"]
    assert all(os.path.dirname(m) == str(paper_world) for m in c.models)
    prompts = {e.options.subjects[0] if (e.task or k) == "mmlu" else (e.task or k): e.num_prompts
               for k, e in c.tasks.items()}
    assert prompts == PROTOCOL["inference_tasks"]
    for name, entry in c.tasks.items():
        assert entry.num_shots == PROTOCOL["shots"].get(name, PROTOCOL["default_shots"]), name
        assert entry.max_new_tokens == PROTOCOL["max_new_tokens"], name
    assert (c.num_samples, c.temperature, c.top_k, c.top_p) == (PROTOCOL["n_max"], PROTOCOL["temperature"], 0, 1.0)
    assert c.ns[0] == 1 and c.ns[-1] == PROTOCOL["n_max"] and list(c.ns) == sorted(set(c.ns))
    assert set(c.rewards) == PROTOCOL["rewards"]
    assert (c.dtype, c.shard, c.reward_model) == ("bfloat16", True, "")


def test_sft_paper_presets_are_table_1_and_its_n_ablation(paper_world):
    names = {n for n in sft_configs.PRESETS if n.startswith("paper_")}
    configs = {n: sft_configs.get_config(n) for n in names}
    runs = {(os.path.basename(c.model), c.task.name) for c in configs.values() if c.sampling.num_samples == 50}
    assert runs == PROTOCOL["table1"] and len(runs) == len(names) - len(PROTOCOL["ablation_ns"]) + 1
    ablation = [c.sampling.num_samples for c in configs.values()
                if (os.path.basename(c.model), c.task.name) == ("Phi-3.5-mini-instruct", "math")]
    assert sorted(ablation) == sorted(PROTOCOL["ablation_ns"])
    for name in names:
        c = sft_configs.get_config(name)
        assert c.self_reward == "log_likelihood" and c.sampling.temperature == PROTOCOL["temperature"], name
        assert PROTOCOL["lora_ranks"][0] <= c.lora.rank <= PROTOCOL["lora_ranks"][1], name
        assert (c.optim.learning_rate, c.optim.schedule, c.optim.grad_clip) == (
            PROTOCOL["learning_rate"], PROTOCOL["schedule"], PROTOCOL["grad_clip"]), name
        assert (c.train.batch_size, c.train.epochs, c.train.num_steps) == (
            PROTOCOL["batch_size"], PROTOCOL["epochs"], 0), name
        assert (c.task.num_shots, c.sampling.max_new_tokens) == (PROTOCOL["default_shots"],
                                                                 PROTOCOL["max_new_tokens"]), name
        assert (c.dtype, c.mesh.data, c.mesh.fsdp, c.mesh.model) == ("bfloat16", -1, 1, 1), name
    same = [sft_configs.get_config(n).to_dict() for n in ("paper", "paper_phi35_math")]
    assert [dict(c, preset="") for c in same] == [dict(same[1], preset="")] * 2


def test_rlhf_paper_preset_says_it_is_our_extension_and_uses_table_1_training(paper_world):
    doc = " ".join(rlhf_configs.__doc__.split())
    assert "OUR EXTENSION" in doc and "no RLHF-Sharpening experiment on real models" in doc
    for source in ("App. A.3", "Rafailov et al. 2023", "chosen here"):
        assert source in doc
    c = rlhf_configs.get_config("paper")
    assert os.path.basename(c.model) == "Phi-3.5-mini-instruct" and c.po.loss == "xpo"
    assert (c.lora.rank, c.optim.learning_rate, c.optim.grad_clip) == (8, PROTOCOL["learning_rate"],
                                                                       PROTOCOL["grad_clip"])
    assert c.po.prompts_per_step == PROTOCOL["batch_size"]
    assert c.train.num_steps == PROTOCOL["epochs"] * c.task.num_train_prompts // PROTOCOL["batch_size"]
    assert (c.dtype, c.mesh.data) == ("bfloat16", -1)


def test_pit_paper_preset_reads_hh_rlhf_shards_and_plans_every_iteration(paper_world):
    """PIT (Wang et al. 2023, Sec. 4): HH-RLHF, T = 5, both curriculum stages, Fig. 3's temperatures;
    the dry run reads the shards (both subsets) and counts the completions by hand: M_P's samples for
    stage 1, the RL rollouts, and per temperature and held-out prompt y^0 plus T for each of PIT,
    Self-Refine and the base model."""
    c = pit_configs.get_config("paper")
    assert (c.pit.preference_format, c.pit.kinds, c.task.name) == ("hh_rlhf", "file", "preference_file")
    assert c.pit.num_iterations == 5 and c.pit.stages == "stage0,stage1"
    temperatures = [float(t) for t in c.pit.temperatures.split(",")]
    assert {0.4, 0.6, 0.8} <= set(temperatures) and (c.dtype, c.mesh.fsdp) == ("bfloat16", -1)
    task = pit.validate(c)
    assert len(task.pairs("train")) == c.task.num_train_prompts and len(task.pairs("test")) == c.task.num_eval_prompts
    assert {p.prompt.split()[1] for p in task.pairs("train")} == {"harmless-base", "helpful-base"}
    text = pit.dry_run(c, devices=8)
    generated = int(re.search(r"tokens to generate: ([\d,]+)", text).group(1).replace(",", ""))
    rollouts = 2 * c.rl.steps * c.rl.prompts_per_step * c.pit.group_size
    iterations = len(temperatures) * c.task.num_eval_prompts * (1 + 3 * 5)
    assert generated == (c.task.num_train_prompts + rollouts + iterations) * c.sampling.max_new_tokens


PAPER_PRESETS = [(inference_sharpening, inference_configs, "paper"), (rlhf_sharpening, rlhf_configs, "paper"),
                 (pit, pit_configs, "paper"),
                 *((sft_sharpening, sft_configs, n) for n in sft_configs.PRESETS if n.startswith("paper_"))]


@pytest.mark.parametrize("module, configs, preset", PAPER_PRESETS,
                         ids=[f"{m.__name__.split('.')[-1]}:{p}" for m, _, p in PAPER_PRESETS])
def test_dry_run_of_every_paper_preset_plans_from_config_json(paper_world, module, configs, preset):
    text = module.dry_run(configs.get_config(preset), devices=8)
    assert text.startswith("plan:") and "memory per device" in text and "hours on 8 device(s)" in text
    generated = int(re.search(r"tokens to generate: ([\d,]+)", text).group(1).replace(",", ""))
    assert generated > 0
    if module is inference_sharpening:  # every model, every prompt: greedy + N samples of up to 512 tokens
        assert generated == (len(PROTOCOL["inference_models"]) * sum(PROTOCOL["inference_tasks"].values())
                             * (1 + PROTOCOL["n_max"]) * PROTOCOL["max_new_tokens"])
    totals = [float(x) for x in re.findall(r"total\s+([\d.]+) GiB", text)]
    assert totals and all(t > 1.0 for t in totals)  # at least the bf16 parameters of a >= 3B model


def test_inference_dry_run_memory_is_the_hand_count(paper_world):
    """Parameters (bf16, replicated over the data axis) and the sampler cache (PROMPT_TOKENS-slot
    prompt caches shared by N samples plus 512 slots per sample, rows split over 8 devices)."""
    c = inference_configs.get_config("paper")
    c.models = tuple(os.path.join(str(paper_world), name) for name in PUBLISHED_PARAMETERS)
    text = inference_sharpening.dry_run(c, devices=8)
    prompts_per_batch = c.max_rows // c.num_samples
    for name, published in PUBLISHED_PARAMETERS.items():
        hf = HF_CONFIGS[name]
        assert hand_count(hf) == published
        block = text.split(os.path.join(str(paper_world), name) + ":\n")[-1]
        parameters = float(re.search(r"parameters\s+([\d.]+) GiB", block).group(1)) * 2**30
        assert parameters == pytest.approx(2 * published, rel=0.01)
        cache = float(re.search(r"KV cache\s+([\d.]+) GiB", block).group(1)) * 2**30
        tokens_per_device = (prompts_per_batch * plan.PROMPT_TOKENS / 4  # 20 prompt caches over gcd(20, 8) = 4
                             + prompts_per_batch * c.num_samples * 512 / 8)
        assert cache == pytest.approx(tokens_per_device * kv_bytes_per_token(hf), rel=0.01)


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMETERS))
def test_training_dry_run_memory_is_the_hand_count(paper_world, name):
    """LoRA rank 8 on the seven projections: r (in + out) float32 values per adapted matrix, each
    with a gradient and two Adam moments; the bf16 base parameters replicated (mesh data = all)."""
    hf = HF_CONFIGS[name]
    config = plan.model_config(os.path.join(str(paper_world), name), dtype="bfloat16")
    mesh = plan.mesh_for(8, data=-1)
    memory = plan.training_memory(config, mesh, 8, tuple(sft_configs.sharpening_training.LORA_TARGETS.split(",")), 0)
    d, f = hf["hidden_size"], hf["intermediate_size"]
    head_dim = hf.get("head_dim") or d // hf["num_attention_heads"]
    q, kv = hf["num_attention_heads"] * head_dim, hf["num_key_value_heads"] * head_dim
    adapters = 8 * ((d + q) * 2 + 2 * (d + kv) + 3 * (d + f)) * hf["num_hidden_layers"]
    assert memory["parameters"] == pytest.approx(2 * PUBLISHED_PARAMETERS[name], rel=0.01)
    assert memory["LoRA adapters (float32)"] == pytest.approx(4 * adapters, rel=0.01)
    assert memory["gradients"] == memory["LoRA adapters (float32)"]
    assert memory["Adam moments"] == pytest.approx(8 * adapters, rel=0.01)


def test_dry_run_command_line_needs_no_workdir_and_takes_a_throughput(paper_world):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-m", "experiments.sft_sharpening",
                          "--config=experiments/configs/sft_sharpening.py:paper_mistral_math", "--dry_run",
                          "--devices=8", "--tokens_per_s=2500"], cwd=root, capture_output=True, text=True,
                         env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Mistral-7B-Instruct-v0.3" in out.stdout and "at 2500 decoded tokens/s per device (given" in out.stdout
    assert "1,920 updates of 4 rows" in out.stdout  # 30 epochs x 256 prompts / batch 4
