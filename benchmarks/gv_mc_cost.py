"""The MC verifier's cost against one teacher-forced scoring pass over the same question + response rows.

    python -m benchmarks.gv_mc_cost --json runs/bench/gv_mc_cost.json [--repeats 3] \
        [--shapes arithmetic:8x16,gsm8k:8x16] [--results runs/gv_gap_cpu/results.jsonl]

Workload "TASK:BxN": the first B prompts of TASK, N completions each, SmolLM2-135M-Instruct,
float32, verified with the gap experiment's cpu preset MC template (its `templates.mc`: the
template's 2-shot prefix with the question, then the completion and the reply cue; the generation's
k-shot prompt is not part of the verifier's rows). With `--results` (a gv_gap results.jsonl) the
questions and completions are the run's own samples, so the rows are exactly those its MC verifier
scored and the scores are checked against the ones it recorded (`max_abs_diff_vs_run`); without it,
arithmetic uses the first B 2-digit test questions with synthetic completions (the answer, or it
plus 1..9). Ours is `gv_verifiers.mc_verify`: each question's template prefix runs once into a KV
cache that its N response suffixes read, and only the last position's two answer words are read
from the head. The peer is `scoring.score_sequences` on the B * N full rows prefix ++ suffix
(right-padded to the longest row, `score_batch_size` rows per call as the verifier uses): one
ordinary scoring forward pass of the question and response, the yardstick issue 12 names. Both
count the same B * N * (prefix + suffix) row tokens. The two are timed alternately (MC, scoring,
MC, ...) so that a shared machine's changing load hits both alike; "ratio" = MC seconds / scoring
seconds (about 1 or below: MC costs about one scoring pass, as issue 12 asks).
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np

from benchmarks import common
from experiments.configs import gv_gap as gv_config
from sharpen_jax import scoring, tokenizer as tokenizer_lib, weights
from sharpen_jax.jsonl import read_jsonl
from sharpen_jax.selection import gv_verifiers
from sharpen_jax.selection.rewards import RewardInputs
from sharpen_jax.selection.verifiers import verifier_tokens
from sharpen_jax.tasks.arithmetic import Arithmetic
from sharpen_jax.tokenizer import pad_batch

MODEL = "smollm2-135m-instruct"


def _inputs(questions: list[str], completions: list[list[str]]) -> RewardInputs:
    b, n = len(questions), len(completions[0])
    return RewardInputs.build(questions, questions, completions, np.zeros((b, n, 1)), np.ones((b, n), np.int32),
                              [[None] * n for _ in questions])


def synthetic_arithmetic(b: int, n: int, seed: int = 0) -> RewardInputs:
    """The first B 2-digit arithmetic test questions, N completions each: the answer, or it plus 1..9."""
    examples = list(Arithmetic(digits=2).examples("test"))[:b]
    rng = np.random.default_rng(seed)
    return _inputs([ex.question for ex in examples],
                   [[f" {int(ex.answer) + (0 if j % 2 == 0 else int(rng.integers(1, 10)))}" for j in range(n)]
                    for ex in examples])


def run_samples(records: list[dict], task: str, b: int, n: int) -> tuple[RewardInputs, np.ndarray]:
    """The first B prompts of `task` in a gv_gap results.jsonl (by index), their first N samples, and
    the MC scores the run recorded for them, float64[B, N]."""
    rows = sorted((r for r in records if r["task"] == task), key=lambda r: r["index"])[:b]
    if len(rows) < b or any(len(r["samples"]) < n for r in rows):
        raise SystemExit(f"--results holds {len(rows)} prompts of task {task!r} (need {b} with {n} samples each)")
    scores_BN = np.array([[s["scores"]["mc"] for s in r["samples"][:n]] for r in rows], np.float64)
    return _inputs([r["question"] for r in rows], [[s["text"] for s in r["samples"][:n]] for r in rows]), scores_BN


def full_rows(tok, inputs: RewardInputs, template: str):
    """The verifier's rows prefix ++ suffix for every (question, completion), right-padded: tokens, valid."""
    prefixes, suffixes = verifier_tokens(inputs, tok, template)
    rows = [prefixes[i] + suffix for i, row in enumerate(suffixes) for suffix in row]
    return pad_batch(rows, tok.pad_id, "right", max(map(len, rows)))


def main() -> None:
    def extra(parser):
        parser.add_argument("--shapes", default="arithmetic:8x16")
        parser.add_argument("--results", default="", help="a gv_gap results.jsonl: benchmark on its real samples")

    args = common.parse_args(__doc__.splitlines()[0], extra)
    shapes = []
    for spec in args.shapes.split(","):
        task, _, bn = spec.rpartition(":")
        shapes.append((task or "arithmetic", *(int(x) for x in bn.split("x"))))
    unreal = [t for t, _, _ in shapes if t != "arithmetic" and not args.results]
    if unreal:
        raise SystemExit(f"--shapes names tasks {unreal}: only arithmetic has synthetic completions; give --results")
    records = read_jsonl(args.results) if args.results else []
    load_at_start = os.getloadavg()
    config, params = weights.load(MODEL)
    tok = tokenizer_lib.load(MODEL)
    cpu = gv_config.cpu()
    template, words, rows_per_call = cpu.templates.mc, tuple(cpu.mc_words), cpu.score_batch_size
    workloads = []
    for task, b, n in shapes:
        inputs, recorded_BN = run_samples(records, task, b, n) if records else (synthetic_arithmetic(b, n), None)
        batch = full_rows(tok, inputs, template)
        tokens = int(batch.valid.sum())
        out = {}

        def mc():
            out["scores_BN"] = gv_verifiers.mc_verify(params, config, tok, inputs, template=template, words=words,
                                                      batch_size=rows_per_call).scores_BN

        def score():
            total = 0.0
            for start in range(0, b * n, rows_per_call):
                t, v = jnp.asarray(batch.tokens[start:start + rows_per_call]), batch.valid[start:start + rows_per_call]
                target = v.copy()
                target[:, 0] = False
                total += float(scoring.score_sequences(params, config, t, jnp.asarray(v), jnp.asarray(target))
                               .sum_logprob.sum())
            return total

        timing = common.time_alternating({"mc": mc, "score": score}, args.repeats)
        ours, peer = timing["mc"], timing["score"]
        workloads.append({
            "name": f"smollm2-135m mc_verify {task} {b}x{n}", "unit": "tokens/s", "ours": tokens / ours["median_s"],
            "peers": {"score_sequences": tokens / peer["median_s"]},
            "peer_notes": {"score_sequences": f"one teacher-forced scoring pass over the {b * n} full rows "
                                              f"({batch.tokens.shape[1]} columns), {rows_per_call} rows per call"},
            "bound": None, "ratio": ours["median_s"] / peer["median_s"], "compile_s": ours["first_call_s"],
            "score_compile_s": peer["first_call_s"], "ours_median_s": ours["median_s"],
            "score_median_s": peer["median_s"], "ours_min_s": ours["min_s"], "score_min_s": peer["min_s"],
            "row_tokens": tokens, "rows_max_len": int(batch.tokens.shape[1]),
            "rows_mean_len": tokens / (b * n), "completions": "run samples" if records else "synthetic",
            "max_abs_diff_vs_run": (float(np.abs(out["scores_BN"] - recorded_BN).max())
                                    if recorded_BN is not None else None)})
    common.write_report(args.json, "gv_mc_cost", workloads,
                        {"load_average_at_start": [round(x, 2) for x in load_at_start],
                         "load_average_at_end": [round(x, 2) for x in os.getloadavg()]})


if __name__ == "__main__":
    main()
