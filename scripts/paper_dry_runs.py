"""Print the dry run of every paper preset, for docs/REPRODUCING.md, without any checkpoint.

    .venv/bin/python scripts/paper_dry_runs.py [--devices 8] [--tokens_per_s R]

It writes, in a temporary folder, the checkpoint directories that tests/test_paper_presets.py writes
(each model's published config.json beside unreadable weights) and the MATH/MMLU stand-in files,
points $SHARPEN_JAX_CHECKPOINTS and $SHARPEN_JAX_DATA_DIR at them, and prints what
`python -m experiments.<module> --config=...:<preset> --dry_run` prints with real checkpoints.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import pytest  # noqa: E402  (the test's fixture sets the environment through a MonkeyPatch)

import test_paper_presets  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--tokens_per_s", type=float, default=0.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as env:
        test_paper_presets.paper_world.__wrapped__(pathlib.Path(tmp), env)
        for module, configs, preset in test_paper_presets.PAPER_PRESETS:
            start = time.perf_counter()
            text = module.dry_run(configs.get_config(preset), devices=args.devices, tokens_per_s=args.tokens_per_s)
            print(f"== {module.__name__}:{preset} ({time.perf_counter() - start:.1f} s)")
            print(text.replace(os.path.join(tmp, "checkpoints") + os.sep, "$SHARPEN_JAX_CHECKPOINTS/"))


if __name__ == "__main__":
    main()
