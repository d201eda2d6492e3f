"""Training metrics: TensorBoard event files, a JSONL log, and a console progress bar.

Every record is one JSON object per line, {"step": s, "split": "train" | "eval" | ..., name: value}.
A resumed run first drops the records after its restart step, so the log of a run that was killed
and resumed is the log of an uninterrupted run (TensorBoard shows the overlap as rewritten points).
In a multi-process run only process 0 writes (and shows the bar); the others compute the same records.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Mapping

import numpy as np
import tqdm

from sharpen_jax import distributed
from sharpen_jax.jsonl import read_jsonl, rewrite_jsonl


def _import_tensorboardx():
    """tensorboardX, imported without PyTorch.

    tensorboardX imports torch at import time when it is installed (here it is, for the peer
    benchmarks), which costs ~10 s on a small CPU; scalar logging never needs it, so torch is hidden
    for the import unless something already loaded it.
    """
    if "torch" in sys.modules:
        import tensorboardX
        return tensorboardX
    sys.modules["torch"] = None  # makes `import torch` raise ImportError, which tensorboardX tolerates
    try:
        import tensorboardX
    finally:
        del sys.modules["torch"]
    return tensorboardX


def _to_float(value: Any) -> float:
    return float(np.asarray(value))


class MetricsWriter:
    """Writes scalars to `workdir/metrics.jsonl` and TensorBoard events under `workdir/tensorboard`."""

    def __init__(self, workdir: str, *, resume_step: int = 0, total_steps: int | None = None,
                 progress: bool = True):
        self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = distributed.is_main_process()
        if not self.enabled:
            self._jsonl = self._tb = None
            self._bar = tqdm.tqdm(disable=True)
            return
        os.makedirs(workdir, exist_ok=True)
        rewrite_jsonl(self.jsonl_path, [r for r in read_jsonl(self.jsonl_path) if r.get("step", 0) <= resume_step])
        self._jsonl = open(self.jsonl_path, "a")
        self._tb = _import_tensorboardx().SummaryWriter(os.path.join(workdir, "tensorboard"))
        self._bar = tqdm.tqdm(total=total_steps, initial=resume_step, disable=not progress, dynamic_ncols=True,
                              desc="train")

    def write(self, step: int, metrics: Mapping[str, Any], split: str = "train") -> dict:
        """Log scalar `metrics` at `step` under `split`; returns the record as floats."""
        record = {"step": int(step), "split": split}
        for name, value in metrics.items():
            number = _to_float(value)
            record[name] = number if math.isfinite(number) else str(number)
            if self.enabled:
                self._tb.add_scalar(f"{split}/{name}", number, int(step))
        if self.enabled:
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()
        return record

    def advance(self, steps: int, postfix: Mapping[str, float] | None = None) -> None:
        """Move the progress bar by `steps` and show `postfix` (e.g. loss, tokens/s)."""
        if postfix:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
        self._bar.update(steps)

    def close(self) -> None:
        """Flush and close the progress bar, TensorBoard and JSONL writers."""
        self._bar.close()
        if self.enabled:
            self._tb.close()
            self._jsonl.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def plot_training_curves(jsonl_path: str, out_path: str, train_keys=("loss",), eval_keys=()) -> str:
    """A PNG with one panel per metric: train metrics against step, eval metrics with markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_jsonl(jsonl_path)
    panels = [("train", k) for k in train_keys] + [("eval", k) for k in eval_keys]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3), squeeze=False)
    for ax, (split, key) in zip(axes[0], panels):
        points = [(r["step"], r[key]) for r in records if r.get("split") == split and isinstance(r.get(key), float)]
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, marker="o" if split == "eval" else None)
        ax.set_title(f"{split}/{key}")
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
