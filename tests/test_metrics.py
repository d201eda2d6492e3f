"""Training metrics reach both sinks: the JSONL log and TensorBoard event files, with the same values,
from `MetricsWriter` and from `train_loop` (loss, tokens/s, eval metrics); a resumed run's log drops
the records after its restart step."""

import glob
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sharpen_jax.jsonl import read_jsonl
from sharpen_jax.methods import get_loss
from sharpen_jax.metrics import MetricsWriter, _import_tensorboardx
from sharpen_jax.training import create_train_state, train_loop


def read_tensorboard_scalars(workdir):
    """{(tag, step): value} from the TFRecord event files under workdir/tensorboard."""
    event_pb2 = _import_tensorboardx().proto.event_pb2
    scalars = {}
    for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            raw = f.read()
        offset = 0
        while offset < len(raw):  # record: u64 length, u32 crc, payload, u32 crc
            (length,) = struct.unpack("<Q", raw[offset:offset + 8])
            event = event_pb2.Event.FromString(raw[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars[(value.tag, event.step)] = value.simple_value
    return scalars


def test_writer_logs_to_jsonl_and_tensorboard(tmp_path):
    workdir = str(tmp_path)
    with MetricsWriter(workdir, total_steps=3, progress=False) as writer:
        writer.write(1, {"loss": 2.5, "kl": np.float32(0.125)})
        writer.write(2, {"loss": jnp.asarray(1.5), "grad_norm": float("nan")})
        writer.write(2, {"accuracy": 0.75}, split="eval")
    records = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    assert records == [{"step": 1, "split": "train", "loss": 2.5, "kl": 0.125},
                       {"step": 2, "split": "train", "loss": 1.5, "grad_norm": "nan"},  # valid JSON, not NaN
                       {"step": 2, "split": "eval", "accuracy": 0.75}]
    scalars = read_tensorboard_scalars(workdir)
    assert {k: v for k, v in scalars.items() if k != ("train/grad_norm", 2)} == {
        ("train/loss", 1): 2.5, ("train/kl", 1): 0.125, ("train/loss", 2): 1.5, ("eval/accuracy", 2): 0.75}
    assert np.isnan(scalars[("train/grad_norm", 2)])

    with MetricsWriter(workdir, resume_step=1, progress=False) as writer:  # a run resumed at step 1
        writer.write(2, {"loss": 1.25})
    assert read_jsonl(os.path.join(workdir, "metrics.jsonl")) == [
        {"step": 1, "split": "train", "loss": 2.5, "kl": 0.125}, {"step": 2, "split": "train", "loss": 1.25}]


def _tabular_logprob_fn(params, seqs):
    logp_BY = jax.nn.log_softmax(params["logits"][seqs["x"]], axis=-1)
    logp_B = jnp.take_along_axis(logp_BY, seqs["y"][:, None], axis=-1)[:, 0]
    return logp_B, jnp.ones_like(logp_B)


def test_train_loop_writes_loss_tokens_per_second_and_eval_to_both_sinks(tmp_path):
    workdir = str(tmp_path)
    tx = optax.sgd(0.5)
    sft_step = get_loss("sft").make_step(_tabular_logprob_fn, tx)
    batch = {"seqs": {"x": np.zeros(8, np.int32), "y": np.arange(8, dtype=np.int32) % 2}}

    def update(state, step):
        state, metrics = sft_step(state, None, batch)
        return state, {**metrics, "num_tokens": 8.0}

    def eval_fn(state):
        return {"p_first": jax.nn.softmax(state.params["logits"][0])[0]}

    init = create_train_state({"logits": jnp.asarray([[2.0, 0.0, 0.0]])}, tx)
    train_loop(init, update, workdir=workdir, num_steps=4, save_every=2, log_every=2, eval_every=2,
               eval_fn=eval_fn, progress=False)
    records = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    train = [r for r in records if r["split"] == "train"]
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in train] == [2, 4] and [r["step"] for r in evals] == [0, 2, 4]
    assert all(r["tokens_per_s"] > 0 and r["seconds_per_step"] > 0 and r["grad_norm"] > 0 for r in train)
    # numpy oracle: SGD(0.5) on logits [2, 0, 0] toward targets y = 0, 1 (half each). The loss logged at
    # update k is the one computed before it (after k - 1 updates); eval at step k is after k updates.
    logits, losses, p_first, norms = np.array([2.0, 0.0, 0.0]), [], [], []
    for _ in range(4):
        p_first.append(np.exp(logits[0]) / np.exp(logits).sum())
        p = np.exp(logits) / np.exp(logits).sum()
        losses.append(-(np.log(p[0]) + np.log(p[1])) / 2)
        grad = p - np.array([0.5, 0.5, 0.0])
        norms.append(np.linalg.norm(grad))
        logits = logits - 0.5 * grad
    p_first.append(np.exp(logits[0]) / np.exp(logits).sum())
    np.testing.assert_allclose([r["loss"] for r in train], [losses[1], losses[3]], rtol=1e-5)
    np.testing.assert_allclose([r["grad_norm"] for r in train], [norms[1], norms[3]], rtol=1e-5)
    np.testing.assert_allclose([r["p_first"] for r in evals], [p_first[0], p_first[2], p_first[4]], rtol=1e-5)
    scalars = read_tensorboard_scalars(workdir)
    for record in records:
        for name, value in record.items():
            if name not in ("step", "split"):
                np.testing.assert_allclose(scalars[(f"{record['split']}/{name}", record["step"])], value,
                                           rtol=1e-6)
