"""docs/SCALING.md's memory table is what `python -m experiments.plan` prints, and its figures are
hand counts: bfloat16 parameters (2 bytes each), float32 trainable copy + gradients + Adam moments
(16 bytes per parameter), divided over the fsdp axis."""

import contextlib
import io
import os
import re

import pytest

from conftest import REPO
from experiments import plan
from sharpen_jax.config import TransformerConfig


def printed_table() -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        plan.main([])
    return out.getvalue().strip()


def test_the_documented_table_is_the_commands_output():
    with open(os.path.join(REPO, "docs", "SCALING.md")) as f:
        doc = f.read()
    assert "`python -m experiments.plan` prints this table" in doc
    assert printed_table() in doc


def test_table_figures_are_hand_counts():
    rows = [line.split(" | ") for line in printed_table().splitlines()[2:]]
    by_key = {(r[0][2:], r[1], r[2], r[3]): [float(x) for x in r[4:8]] for r in rows}
    n = TransformerConfig.llama3_1_8b().num_params()
    params, optimizer, _, _ = by_key[("Llama-3.1-8B", "8x H100 80GB", "(8, 1, 1)", "full fine-tuning")]
    assert params == pytest.approx(2 * n / 2**30, abs=0.05)
    assert optimizer == pytest.approx(16 * n / 2**30, abs=0.05)
    params, optimizer, _, _ = by_key[("Llama-3.1-8B", "v5p-8", "(1, 4, 1)", "full fine-tuning")]
    assert params == pytest.approx(2 * n / 4 / 2**30, abs=0.1) and optimizer == pytest.approx(16 * n / 4 / 2**30, abs=0.1)
    fits = {k: r[-1].strip(" |") for k, r in zip(by_key, rows)}
    assert fits[("Mistral-7B", "8x H100 80GB", "(8, 1, 1)", "full fine-tuning")] == "no"
    assert fits[("Mistral-7B", "8x H100 80GB", "(1, 8, 1)", "full fine-tuning")] == "yes"


def test_bad_mesh_option_is_an_error_naming_it(capsys):
    with pytest.raises(SystemExit):
        plan.main(["--mesh", "rows=2"])
    assert re.search(r"--mesh 'rows=2'; expected AXIS=SIZE pairs", capsys.readouterr().err)
