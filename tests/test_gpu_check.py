"""scripts/gpu_check.sh: its CPU dry run (tiny shapes) goes through every step and reports both
fractions of the bounds from the JSON reports it wrote; a bad argument is refused."""

import json
import os
import re
import subprocess

import pytest

from conftest import REPO

SCRIPT = os.path.join(REPO, "scripts", "gpu_check.sh")


def test_bad_argument_is_refused():
    result = subprocess.run(["bash", SCRIPT, "--fast"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "unknown argument --fast (expected --dry-run or --out DIR)" in result.stderr


@pytest.mark.slow
def test_dry_run_goes_through_every_step(tmp_path):
    result = subprocess.run(["bash", SCRIPT, "--dry-run", "--out", str(tmp_path)], capture_output=True, text=True,
                            timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    steps = re.findall(r"^== (\d)\.", result.stdout, flags=re.M)
    assert steps == ["1", "2", "3", "4"], result.stdout
    assert re.search(r"tests/test_sampling.py::test_sampler_logprobs_equal_scoring", result.stdout)
    printed = dict(re.findall(r"^(decoding: fraction of the HBM-bandwidth bound|training: MFU): ([0-9.]+) ",
                              result.stdout, flags=re.M))
    for name, label in (("sampling", "decoding: fraction of the HBM-bandwidth bound"), ("training", "training: MFU")):
        with open(tmp_path / f"{name}.json") as f:
            doc = json.load(f)
        fractions = [w["fraction_of_bound"] for w in doc["workloads"] if "fraction_of_bound" in w]
        assert fractions and all(f > 0 for f in fractions), doc
        for w in doc["workloads"]:  # the fraction is the measured rate over the bound the report states
            if "fraction_of_bound" in w:
                assert w["fraction_of_bound"] == pytest.approx(w["ours"] / w["bound"]["value"], rel=1e-9), w
        assert float(printed[label]) == pytest.approx(fractions[-1], abs=1e-3)
        assert doc["workloads"][0]["name"].startswith("tiny")
