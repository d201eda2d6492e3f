"""PIT on a user's preference file (the `paper` preset's mode; Wang et al. 2023, Sec. 4): HH-RLHF or
TL;DR-format pairs read from config.pit.preference_file instead of pairs built from a task.

What changes against a task run (`experiments.pit`):
* the prompts x and the pairs (x, y_w, y_l) come from the file (`tasks.preference_file`):
  config.task.num_eval_prompts of them held out by a seeded split, config.task.num_train_prompts
  of the rest for training (or the first of config.pit.held_out_file, a test split, held out);
  config.task.name must be "preference_file" and config.pit.kinds "file"; relative paths are
  under the data directory;
* there is no grader, so the base model's Table-1 metrics are not computed, and the iterated
  improvement y^0..y^T is judged by R_PIT itself: per iteration the mean r_gap(x, y^t, y^{t-1}) and
  r_gap(x, y^t, y^0) with standard errors, and Δ_t = P(r_gap(x, y^t, y^0) > 0) - P(< 0), the
  analogue of the paper's Tab. 1 improvement over the original response. The paper judged with
  GPT-4 and a separate DeBERTa reward model; R_PIT is also the RL reward here, so it favours PIT
  (docs/PIT.md): read its Δ for PIT as an upper bound, and compare R_PIT's held-out accuracy;
* R_PIT's accuracy is r_gap(x, y_w, y_l) > r_gap(x, y_l, y_w) on the held-out pairs.
"""

from __future__ import annotations

import os

import numpy as np

from experiments import common
from experiments.workdir import file_fingerprint
from sharpen_jax.methods import pit
from sharpen_jax.tasks import files, preference_file, preferences

FILE_KIND = "file"  # config.pit.kinds of a file run
TASK_NAME = "preference_file"  # config.task.name of a file run


def is_file_run(cfg) -> bool:
    """Whether the run reads its pairs from config.pit.preference_file."""
    return bool(cfg.pit.preference_file)


def resolve_files(cfg, pattern: str) -> str:
    """`pattern` with each relative comma-separated part taken under the data directory
    (config.task.data_dir, else $SHARPEN_JAX_DATA_DIR, else the project's data; `tasks.files`)."""
    parts = [p.strip() for p in pattern.split(",")]
    if all(os.path.isabs(os.path.expanduser(p)) for p in parts):
        return pattern
    root = files.resolve_data_dir(cfg.task.data_dir or None)
    return ",".join(p if os.path.isabs(os.path.expanduser(p)) else os.path.join(root, p) for p in parts)


def load_task(cfg) -> preference_file.PreferenceFileTask:
    """The preference-file task of a file run, read and split before any model loads: the first
    config.task.num_train_prompts training pairs and config.task.num_eval_prompts held-out pairs
    (from config.pit.held_out_file, or a seeded split of config.pit.preference_file when it is "").
    A ConfigError names the key of a bad format, count, kind or file (a bad row names path:line)."""
    common.check_choice(cfg, "pit.preference_format", tuple(preferences.FORMATS))
    common.check_int(cfg, "task.num_train_prompts", 1)
    common.check_int(cfg, "task.num_eval_prompts", 1)
    expected = {"task.name": TASK_NAME, "pit.kinds": FILE_KIND, "task.num_shots": 0}
    for key, value in expected.items():
        if common.value_at(cfg, key) != value:
            raise common.ConfigError(f"config.{key}={common.value_at(cfg, key)!r}; a run on config.pit.preference_file "
                                     f"takes its prompts and pairs from the file: expected {value!r}")
    key = "pit.preference_file"
    try:
        train_files = resolve_files(cfg, cfg.pit.preference_file)
        key = "pit.held_out_file"
        held_out_files = resolve_files(cfg, cfg.pit.held_out_file) if cfg.pit.held_out_file else ""
        if held_out_files:
            preferences.preference_files(held_out_files)  # a bad row names its own path:line below
        key = "pit.preference_file"
        return preference_file.load_preference_task(train_files, cfg.pit.preference_format,
                                                    num_held_out=cfg.task.num_eval_prompts,
                                                    num_train=cfg.task.num_train_prompts, seed=cfg.seed,
                                                    held_out_pattern=held_out_files)
    except (FileNotFoundError, ValueError) as err:
        raise common.ConfigError(f"config.{key}={common.value_at(cfg, key)!r}: {err}") from None


def file_identity(cfg) -> dict:
    """Fingerprints (`workdir.file_fingerprint`) of every file of the run's preference files."""
    patterns = [resolve_files(cfg, p) for p in (cfg.pit.preference_file, cfg.pit.held_out_file) if p]
    return {"preference_files": [{"name": os.path.basename(path), **file_fingerprint(path)}
                                 for pattern in patterns for path in preferences.preference_files(pattern)]}


def judge(cfg, setup, backbone, head, contexts: list[tuple[str, str]], responses: list[str]) -> np.ndarray:
    """r_gap(x, y, y_ref) of R_PIT for each (x, y_ref) context and response y, float32[B], scored
    config.sampling.batch_size contexts at a time."""
    size = cfg.sampling.batch_size
    return np.concatenate([pit.score_against_references(
        backbone, head, setup.config, setup.tokenizer, contexts[i:i + size], [[y] for y in responses[i:i + size]],
        pit.gap_layout(cfg.pit.gap_layout))[:, 0] for i in range(0, len(contexts), size)])


def _mean_and_stderr(values_B: np.ndarray) -> tuple[float, float]:
    return float(values_B.mean()), float(values_B.std(ddof=1) / np.sqrt(len(values_B))) if len(values_B) > 1 else 0.0


def judged_iterates(cfg, setup, backbone, head, history: list[list[str]]) -> dict:
    """R_PIT's verdicts on y^0..y^T (`history`, one list of responses per iteration) of the held-out
    prompts: per t >= 1 the mean r_gap against y^{t-1} and against y^0 with standard errors, and
    Δ_t = P(r_gap(x, y^t, y^0) > 0) - P(r_gap(x, y^t, y^0) < 0)."""
    prompts = list(setup.eval_prompts.texts)
    row = {"gap_vs_previous": [], "gap_vs_previous_stderr": [], "gap_vs_first": [], "gap_vs_first_stderr": [],
           "delta_vs_first": []}
    for before, now in zip(history, history[1:]):
        previous = judge(cfg, setup, backbone, head, list(zip(prompts, before)), now)
        first = judge(cfg, setup, backbone, head, list(zip(prompts, history[0])), now)
        for name, values in (("gap_vs_previous", previous), ("gap_vs_first", first)):
            mean, stderr = _mean_and_stderr(values)
            row[name].append(mean)
            row[f"{name}_stderr"].append(stderr)
        row["delta_vs_first"].append(float(np.mean(first > 0) - np.mean(first < 0)))
    return row


def held_out_accuracy(cfg, setup, backbone, head) -> dict:
    """R_PIT's pairwise accuracy r_gap(x, y_w, y_l) > r_gap(x, y_l, y_w) on the held-out pairs."""
    pairs = setup.task.pairs("test")
    better = judge(cfg, setup, backbone, head, [(p.prompt, p.rejected) for p in pairs], [p.chosen for p in pairs])
    worse = judge(cfg, setup, backbone, head, [(p.prompt, p.chosen) for p in pairs], [p.rejected for p in pairs])
    return {"pairs": len(pairs), "accuracy": float(np.mean(better > worse))}
