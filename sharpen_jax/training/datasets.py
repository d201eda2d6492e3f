"""Fixed training sets held in host memory, and their resumable batch order.

The batch order is a pure function of (seed, step): the example stream is the concatenation of one
random permutation per epoch, and batch `step` is its slice [step*B, (step+1)*B). Resuming at a
step therefore needs no iterator state beyond the step number, which the checkpoint records as the
data position.
"""

from __future__ import annotations

import os

import numpy as np


class SFTDataset:
    """A fixed set of training sequences: a dict of arrays with leading axis M, and optional weights."""

    def __init__(self, seqs: dict[str, np.ndarray], weight: np.ndarray | None = None):
        sizes = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in seqs.items()}
        if not sizes:
            raise ValueError("SFT dataset has no arrays; expected a dict of per-sequence arrays")
        if len(set(sizes.values())) != 1 or None in sizes.values():
            raise ValueError(f"SFT dataset arrays disagree on the number of sequences: {sizes}")
        self.size = next(iter(sizes.values()))
        if self.size == 0:
            raise ValueError("SFT dataset is empty: best-of-N selection produced no training sequences")
        self.seqs = {k: np.asarray(v) for k, v in seqs.items()}
        self.weight = None if weight is None else np.asarray(weight, np.float32)
        if self.weight is not None and self.weight.shape != (self.size,):
            raise ValueError(f"SFT dataset weight has shape {self.weight.shape}; expected ({self.size},)")

    def batch(self, step: int, batch_size: int, seed: int) -> dict:
        """Batch number `step` of the epoch-permuted stream (see the module docstring)."""
        return self.rows(stream_indices(self.size, batch_size, seed, step))

    def rows(self, idx: np.ndarray) -> dict:
        """The training rows `idx` ({"seqs": ..., "weight": ...}); `distributed.global_rows` reads a
        multi-process batch through it, each process its own rows."""
        out = {"seqs": {k: v[idx] for k, v in self.seqs.items()}}
        if self.weight is not None:
            out["weight"] = self.weight[idx]
        return out

    def steps_per_epoch(self, batch_size: int) -> int:
        """Batches of `batch_size` per pass over the data (the last one partial, filled from the next epoch)."""
        return max(1, -(-self.size // batch_size))

    def save(self, path: str) -> None:
        """Write the sequences (and weights) to an .npz file atomically."""
        arrays = dict(self.seqs) if self.weight is None else {**self.seqs, "__weight__": self.weight}
        with open(path + ".tmp", "wb") as f:
            np.savez(f, **arrays)
        os.replace(path + ".tmp", path)

    @classmethod
    def load(cls, path: str) -> SFTDataset:
        """A dataset written by `save`."""
        with np.load(path) as arrays:
            seqs = {k: arrays[k] for k in arrays.files if k != "__weight__"}
            weight = arrays["__weight__"] if "__weight__" in arrays.files else None
        return cls(seqs, weight)


def stream_indices(size: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Indices [step*B, (step+1)*B) of the stream perm_0 ++ perm_1 ++ ..., perm_e a permutation of
    range(size) drawn from (seed, e)."""
    if size <= 0:
        raise ValueError(f"cannot draw batches from a dataset of {size} examples")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; expected >= 1")
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), size)
        perm = np.random.default_rng([seed, epoch]).permutation(size)
        out.extend(perm[offset:offset + batch_size - len(out)].tolist())
    return np.asarray(out, np.int64)
