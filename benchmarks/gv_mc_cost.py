"""The MC verifier's cost against one teacher-forced scoring pass over the same question + response rows.

    python -m benchmarks.gv_mc_cost --json runs/bench/gv_mc_cost.json [--repeats 5] [--shapes 8x16,32x16]

Workload "BxN": B arithmetic questions of the gap experiment's cpu preset (2-digit, test split), N
completions each, SmolLM2-135M-Instruct, float32. Ours is `gv_verifiers.mc_verify` with the cpu
preset's MC template: each question's template prefix runs once into a KV cache that its N
response suffixes read, and only the last position's two answer words are read from the head. The
peer is `scoring.score_sequences` on the B * N full rows prefix ++ suffix (right-padded to the
longest row, `score_batch_size` rows per call as the verifier uses): the cost of one ordinary
scoring forward pass of the question and response, the yardstick issue 12 names. Both count the
same B * N * (prefix + suffix) row tokens, so "ratio" = scoring seconds / MC seconds (> 1: MC is
cheaper than one scoring pass).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from benchmarks import common
from experiments.configs import gv_gap as gv_config
from sharpen_jax import scoring, tokenizer as tokenizer_lib, weights
from sharpen_jax.selection import gv_verifiers
from sharpen_jax.selection.rewards import RewardInputs
from sharpen_jax.selection.verifiers import verifier_tokens
from sharpen_jax.tasks.arithmetic import Arithmetic
from sharpen_jax.tokenizer import pad_batch

MODEL = "smollm2-135m-instruct"


def arithmetic_inputs(b: int, n: int, seed: int = 0) -> RewardInputs:
    """The first B 2-digit arithmetic test questions, N completions each: the answer, or it plus 1..9."""
    examples = list(Arithmetic(digits=2).examples("test"))[:b]
    rng = np.random.default_rng(seed)
    completions = [[f" {int(ex.answer) + (0 if j % 2 == 0 else int(rng.integers(1, 10)))}" for j in range(n)]
                   for ex in examples]
    return RewardInputs.build([ex.question for ex in examples], [ex.question for ex in examples], completions,
                              np.zeros((b, n, 1)), np.ones((b, n), np.int32), [[None] * n for _ in examples])


def full_rows(tok, inputs: RewardInputs, template: str):
    """The verifier's rows prefix ++ suffix for every (question, completion), right-padded: tokens, valid."""
    prefixes, suffixes = verifier_tokens(inputs, tok, template)
    rows = [prefixes[i] + suffix for i, row in enumerate(suffixes) for suffix in row]
    return pad_batch(rows, tok.pad_id, "right", max(map(len, rows)))


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], lambda p: p.add_argument("--shapes", default="8x16,32x16"))
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    config, params = weights.load(MODEL)
    tok = tokenizer_lib.load(MODEL)
    cpu = gv_config.cpu()
    template, words, rows_per_call = cpu.templates.mc, tuple(cpu.mc_words), cpu.score_batch_size
    workloads = []
    for b, n in shapes:
        inputs = arithmetic_inputs(b, n)
        batch = full_rows(tok, inputs, template)
        tokens = int(batch.valid.sum())

        def mc():
            return gv_verifiers.mc_verify(params, config, tok, inputs, template=template, words=words,
                                          batch_size=rows_per_call)

        def score():
            total = 0.0
            for start in range(0, b * n, rows_per_call):
                t, v = jnp.asarray(batch.tokens[start:start + rows_per_call]), batch.valid[start:start + rows_per_call]
                target = v.copy()
                target[:, 0] = False
                total += float(scoring.score_sequences(params, config, t, jnp.asarray(v), jnp.asarray(target))
                               .sum_logprob.sum())
            return total

        ours, peer = (common.time_call(fn, repeats=args.repeats) for fn in (mc, score))
        workloads.append({
            "name": f"smollm2-135m mc_verify {b}x{n}", "unit": "tokens/s", "ours": tokens / ours["median_s"],
            "peers": {"score_sequences": tokens / peer["median_s"]},
            "peer_notes": {"score_sequences": f"one teacher-forced scoring pass over the {b * n} full rows "
                                              f"({batch.tokens.shape[1]} columns), {rows_per_call} rows per call"},
            "bound": None, "ratio": peer["median_s"] / ours["median_s"], "compile_s": ours["first_call_s"],
            "ours_median_s": ours["median_s"], "score_median_s": peer["median_s"], "row_tokens": tokens})
    common.write_report(args.json, "gv_mc_cost", workloads)


if __name__ == "__main__":
    main()
