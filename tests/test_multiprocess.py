"""Multi-process JAX with two local CPU processes (gloo collectives, coordinator on 127.0.0.1).

Fast (default suite): the harness bounds time and leaves no process behind; two processes with 2
devices each form one 4-device mesh on which a jitted sum of an array assembled from each
process's rows is right on both; launch settings are checked before JAX starts; loading a
safetensors checkpoint onto a mesh whose fsdp axis spans 2 processes, each process reads only the
elements of its own shards (counted), and the shards equal the full load bitwise; batches read
through `distributed.global_rows` are the same on 2 processes as on 1, each process reading only
its own half of the rows.

Slow: the sampler, the scorer, the SFT and policy-optimization steps through `train_loop` with
checkpoints, an interrupted and resumed run, and checkpoints restored across process counts, all
on 2 processes x 4 devices against 1 process x 8 devices on the same (data 2, fsdp 2, model 2) mesh.
"""

from __future__ import annotations

import json
import os
import textwrap
import time

import jax
import numpy as np
import pytest

from multiprocess_lib import alive, run_processes
from sharpen_jax import distributed
from sharpen_jax.config import TransformerConfig
from sharpen_jax.testing import random_params

ENGINE = textwrap.dedent("""
    import json
    import jax, numpy as np
    from sharpen_jax import distributed, sharding

    multi = distributed.initialize()
    mesh = distributed.global_mesh(data=-1)
    x_RD = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    rows = distributed.process_local_rows(8)
    local = distributed.from_process_local(x_RD[rows], sharding.batch_sharding(mesh))
    same = distributed.to_global(x_RD, sharding.batch_sharding(mesh))
    total = jax.jit(lambda a, b: (a * b).sum())(local, same)
    print(json.dumps({"multi": multi, "process": jax.process_index(), "processes": jax.process_count(),
                      "devices": jax.device_count(), "local_devices": jax.local_device_count(),
                      "mesh": dict(mesh.shape), "rows": [rows.start, rows.stop],
                      "local_shards": len(local.addressable_shards), "sum": float(total),
                      "gathered": distributed.to_host(local).tolist(),
                      "main": distributed.on_main(lambda: "written")}))
""")


def _records(outputs: list[str]) -> list[dict]:
    """The JSON line each process printed (its output also holds JAX's log lines)."""
    return [json.loads(next(line for line in out.splitlines() if line.startswith("{"))) for out in outputs]


def test_two_processes_form_one_mesh():
    x_RD = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    records = _records(run_processes(ENGINE, num_processes=2, devices_per_process=2, timeout=120))
    for i, r in enumerate(records):
        assert r["multi"] and r["process"] == i and r["processes"] == 2, r
        assert r["devices"] == 4 and r["local_devices"] == 2 and r["mesh"] == {"data": 4, "fsdp": 1, "model": 1}
        assert r["rows"] == [4 * i, 4 * i + 4] and r["local_shards"] == 2
        assert r["sum"] == float((x_RD * x_RD).sum())
        assert r["gathered"] == x_RD.tolist()
        assert r["main"] == ("written" if i == 0 else None)


def test_harness_kills_the_others_when_one_fails_and_leaves_nothing_behind(tmp_path):
    pids = tmp_path / "pids"
    code = textwrap.dedent(f"""
        import os, sys, time
        open({str(pids)!r} + os.environ["{distributed.PROCESS_ID_ENV}"], "w").write(str(os.getpid()))
        if os.environ["{distributed.PROCESS_ID_ENV}"] == "0":
            time.sleep(0.5)
            sys.exit(3)
        time.sleep(600)
    """)
    start = time.monotonic()
    with pytest.raises(AssertionError, match=r"a process failed; exit statuses \[3, -9\]"):
        run_processes(code, num_processes=2, timeout=60)
    assert time.monotonic() - start < 30
    for i in range(2):
        assert not alive(int((tmp_path / f"pids{i}").read_text()))


def test_harness_kills_every_process_at_the_deadline(tmp_path):
    code = f"import os, time; open({str(tmp_path)!r} + '/p' + os.environ['{distributed.PROCESS_ID_ENV}'], 'w')" \
           ".write(str(os.getpid())); time.sleep(600)"
    start = time.monotonic()
    with pytest.raises(AssertionError, match=r"timed out after 2 s; exit statuses \[-9, -9\]"):
        run_processes(code, num_processes=2, timeout=2)
    assert time.monotonic() - start < 20
    for i in range(2):
        assert not alive(int((tmp_path / f"p{i}").read_text()))


def test_a_dead_process_stops_the_other_in_bounded_time():
    # process 1 dies right after start-up; process 0, waiting in a collective for it, must fail by itself
    code = textwrap.dedent("""
        import os, sys, time
        import jax, numpy as np
        from jax.experimental import multihost_utils
        from sharpen_jax import distributed
        distributed.initialize(heartbeat_timeout_s=5, shutdown_timeout_s=5)
        multihost_utils.sync_global_devices("started")
        if jax.process_index() == 1:
            os._exit(7)
        start = time.monotonic()
        try:
            for _ in range(1000):
                multihost_utils.process_allgather(np.ones(2))
                time.sleep(0.01)
        finally:
            print(f"stopped after {time.monotonic() - start:.1f} s", flush=True)
    """)
    start = time.monotonic()
    with pytest.raises(AssertionError) as failure:
        run_processes(code, num_processes=2, devices_per_process=1, timeout=90, kill_on_failure=False)
    elapsed = time.monotonic() - start
    message = str(failure.value)
    assert "a process failed" in message and "timed out" not in message, message
    codes = [int(c) for c in message.split("exit statuses [")[1].split("]")[0].split(",")]
    assert codes[1] == 7 and codes[0] != 0, message
    assert elapsed < 60, elapsed


@pytest.mark.parametrize("kwargs, env, message", [
    (dict(coordinator="localhost"), {}, r"coordinator='localhost' \(or \$JAX_COORDINATOR_ADDRESS\); expected HOST:PORT"),
    (dict(num_processes=0), {}, r"num_processes=0; expected an integer >= 1"),
    (dict(num_processes=2, process_id=2), {}, r"process_id=2; expected an integer >= 0 and <= 1"),
    ({}, {distributed.NUM_PROCESSES_ENV: "two"}, r"\$SHARPEN_JAX_NUM_PROCESSES='two'; expected an integer"),
    ({}, {distributed.NUM_PROCESSES_ENV: "2"}, r"needs the coordinator address, the number of processes and the "
                                               r"process id \(got None, 2, None\)"),
    (dict(coordinator="127.0.0.1:1", num_processes=2, process_id=0, heartbeat_timeout_s=0), {},
     r"heartbeat_timeout_s=0; expected an integer >= 1"),
])
def test_bad_launch_settings_fail_before_jax_starts(kwargs, env, message, monkeypatch):
    for name in (distributed.COORDINATOR_ENV, distributed.NUM_PROCESSES_ENV, distributed.PROCESS_ID_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        distributed.initialize(**kwargs)
    assert not jax.distributed.is_initialized()


def test_one_process_launch_is_a_no_op(monkeypatch):
    for name in (distributed.COORDINATOR_ENV, distributed.PROCESS_ID_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(distributed.NUM_PROCESSES_ENV, "1")
    assert distributed.initialize() is False
    assert not jax.distributed.is_initialized()


# One worker for both launches: `phase[:arg]` words run in order, each process saving what it computed
# (gathered to full numpy arrays) as OUT/<phase>-p<process>.npz. The mesh is (data 2, fsdp 2, model 2)
# over 8 devices: 1 process x 8 or 2 processes x 4.
WORKER = textwrap.dedent("""
    import json, os, sys
    import jax, numpy as np, optax
    from sharpen_jax import distributed, rollouts, sampling, sharding
    from sharpen_jax.config import TransformerConfig
    from sharpen_jax.methods import get_loss
    from sharpen_jax.testing import random_params
    from sharpen_jax.tokenizer import pad_batch
    from sharpen_jax.training import Checkpointer, create_train_state, train_loop
    from sharpen_jax.training.policies import make_transformer_logprob_fn, pack_token_lists
    from sharpen_jax.training.train_state import train_state_sharding

    distributed.initialize()
    out, phases = sys.argv[1], sys.argv[2:]
    mesh = distributed.global_mesh(data=2, fsdp=2, model=2)
    CONFIG = TransformerConfig.tiny()
    base = random_params(CONFIG, 0, scale=0.1, unit_norms=False)
    train_params = distributed.to_global(base, sharding.param_shardings(base, mesh))

    def save(name, **arrays):
        np.savez(os.path.join(out, f"{name}-p{jax.process_index()}.npz"), **distributed.to_host(arrays))

    def flat(tree):
        return {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(tree)}

    def sample():
        rng = np.random.default_rng(0)
        prompts = [rng.integers(1, CONFIG.vocab_size, n).tolist() for n in (3, 5, 7, 4, 6, 2, 8, 5)]
        decode_params = distributed.to_global(base, sharding.param_shardings(base, mesh, decode=True))
        got = sampling.sample(decode_params, CONFIG, prompts, num_samples=4, max_new_tokens=10, temperature=1.0,
                              top_k=20, rng=jax.random.key(1), mesh=mesh, max_rows=16)
        padded = pad_batch(prompts, 0, "left")
        valid = np.arange(got.tokens.shape[-1]) < got.lengths[..., None]
        rescored = rollouts.rescore(train_params, CONFIG, padded.tokens, padded.valid, got.tokens, valid, batch_size=16)
        save("sample", tokens=got.tokens, lengths=got.lengths, sampling_logprobs=got.sampling_logprobs,
             model_logprobs=got.model_logprobs, rescored=rescored)

    tx = optax.adamw(3e-3)
    logprob_fn = make_transformer_logprob_fn(CONFIG, chunk_size=8)
    init = create_train_state(train_params, tx)
    state_sharding = train_state_sharding(init, mesh, sharding.param_shardings(base, mesh))
    init = jax.device_put(init, state_sharding)
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), init.saved())
    kwargs = dict(mesh=mesh, state_sharding=state_sharding, ref_sharding=state_sharding.params, grad_accum_steps=2)
    sft = get_loss("sft").make_step(logprob_fn, tx, **kwargs)
    pg = get_loss("kl_pg").make_step(logprob_fn, tx, hyperparameters={"beta": 0.1, "group_size": 4}, **kwargs)

    def batch(step):
        # update `step`'s rows, drawn on every process from the seed and the step (as the batch sources do)
        rng = np.random.default_rng(100 + step)
        prompts = [rng.integers(1, CONFIG.vocab_size, 1 + i % 4).tolist() for i in range(16)]
        completions = [rng.integers(1, CONFIG.vocab_size, 1 + i % 6).tolist() for i in range(16)]
        seqs = pack_token_lists(prompts, completions, completion_length=6)
        return {"seqs": seqs, "weight": rng.uniform(0.5, 1.5, 16).astype(np.float32),
                "reward": rng.normal(size=16).astype(np.float32)}

    def update(state, step):
        rows = batch(step)
        if step % 2 == 0:
            return sft(state, train_params, {"seqs": rows["seqs"], "weight": rows["weight"]})
        return pg(state, train_params, {"seqs": rows["seqs"], "reward": rows["reward"]})

    def train(workdir, num_steps):
        run = train_loop(init, update, workdir=workdir, num_steps=int(num_steps), save_every=2, progress=False)
        save(f"train{num_steps}", **flat(run.state.params), step=run.state.step)

    def restore(directory, tag):
        with Checkpointer(directory) as checkpointer:
            tree, data = checkpointer.restore(target)
        assert all(x.sharding == s for x, s in zip(jax.tree.leaves(tree["params"]),
                                                   jax.tree.leaves(state_sharding.params)))
        save(f"restore-{tag}", **flat(tree["params"]), step=tree["step"], position=np.asarray(data["position"]))

    for phase in phases:
        name, _, arg = phase.partition(":")
        if name == "sample":
            sample()
        elif name == "train":
            workdir, num_steps = arg.split(",")
            train(workdir, num_steps)
        elif name == "restore":
            directory, tag = arg.split(",")
            restore(directory, tag)
    print("OK", jax.process_count(), jax.device_count())
""")


def _load(out, name: str, process: int = 0) -> dict[str, np.ndarray]:
    with np.load(os.path.join(out, f"{name}-p{process}.npz")) as f:
        return dict(f)


def _assert_trees(got: dict, want: dict, **tolerance) -> None:
    assert sorted(got) == sorted(want)
    for key in want:
        if tolerance:
            np.testing.assert_allclose(got[key], want[key], err_msg=key, **tolerance)
        else:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def _train_records(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["split"] == "train"]


@pytest.mark.slow
def test_two_processes_sample_score_train_and_checkpoint_like_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    w1, w2 = str(tmp_path / "w1"), str(tmp_path / "w2")
    run_processes(WORKER, 1, 8, args=(str(one), "sample", f"train:{w1},4"))
    # the 2-process run is interrupted after 2 updates (the processes exit) and resumed by a new launch
    run_processes(WORKER, 2, 4, args=(str(two), "sample", f"train:{w2},2"))
    run_processes(WORKER, 2, 4, args=(str(two), f"train:{w2},4", f"restore:{w1}/checkpoints,from1"))
    run_processes(WORKER, 1, 8, args=(str(one), f"restore:{w2}/checkpoints,from2"))

    ref = _load(one, "sample")
    for p in range(2):
        got = _load(two, "sample", p)
        for key in ("tokens", "lengths"):
            np.testing.assert_array_equal(got[key], ref[key], err_msg=key)
        _assert_trees(got, ref, rtol=0, atol=1e-6)
    assert ref["lengths"].min() >= 1 and len(np.unique(ref["tokens"][:, :, 0])) > 4  # real, varied samples
    valid = np.arange(ref["tokens"].shape[-1]) < ref["lengths"][..., None]
    np.testing.assert_allclose(ref["rescored"], np.where(valid, ref["model_logprobs"], 0), atol=1e-5)

    trained = _load(one, "train4")
    assert int(trained["step"]) == 4
    base = {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(
        random_params(TransformerConfig.tiny(), 0, scale=0.1, unit_norms=False))}
    assert max(np.abs(trained[k] - base[k]).max() for k in base) > 1e-3  # the updates did move the parameters
    for p in range(2):
        _assert_trees(_load(two, "train4", p), trained, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose([r["loss"] for r in _train_records(w2)], [r["loss"] for r in _train_records(w1)],
                               rtol=1e-6)
    assert [r["step"] for r in _train_records(w2)] == [1, 2, 3, 4]  # process 0 alone wrote, once per update
    with open(os.path.join(w2, "invocations.jsonl")) as f:
        invocations = [json.loads(line) for line in f]
    assert [(i["start_step"], i["updates"], i["resumed"]) for i in invocations] == [(0, 2, False), (2, 2, True)]

    for p in range(2):  # written by 1 process, restored onto 2: bitwise the 1-process parameters
        restored = _load(two, "restore-from1", p)
        assert int(restored.pop("position")) == 4
        _assert_trees(restored, trained)
    restored = _load(one, "restore-from2")  # written by 2 processes, restored onto 1
    assert int(restored.pop("position")) == 4
    _assert_trees(restored, _load(two, "train4"))


SHARD_READS = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from sharpen_jax import distributed, sharded_read, weights

    distributed.initialize()
    read_elements = []
    real_reader = sharded_read.safetensors_reader

    class Counted:  # a lazily indexed tensor that counts the elements each index read returns
        def __init__(self, tensor):
            self.tensor, self.shape = tensor, tensor.shape

        def __getitem__(self, index):
            out = self.tensor[index]
            read_elements.append(out.size)
            return out

    def counting_reader(directory):
        read = real_reader(directory)
        return lambda name: None if read(name) is None else Counted(read(name))

    sharded_read.safetensors_reader = counting_reader
    _, full = weights.load(sys.argv[1])  # on this process's first device: every element, once
    full_elements, read_elements[:] = sum(read_elements), []
    mesh = distributed.global_mesh(data=1, fsdp=2, model=4)  # fsdp spans the processes
    _, params = weights.load(sys.argv[1], mesh=mesh)
    leaves, full_leaves = jax.tree.leaves(params), jax.tree.leaves(full)
    own = sum(sum(int(np.prod(s.data.shape)) for s in {str(s.index): s for s in x.addressable_shards}.values())
              for x in leaves)
    equal = all(np.array_equal(np.asarray(s.data), np.asarray(f)[s.index]) for x, f in zip(leaves, full_leaves)
                for s in x.addressable_shards)
    gathered = all(np.array_equal(g, np.asarray(f)) for g, f in zip(distributed.to_host(leaves), full_leaves))
    print(json.dumps({"read": sum(read_elements), "own": own, "full": full_elements,
                      "total": sum(x.size for x in leaves), "equal": equal, "gathered": gathered}))
""")


def test_each_process_reads_only_the_weight_shards_its_devices_hold():
    from conftest import GOLDEN

    records = _records(run_processes(SHARD_READS, 2, 4, args=(os.path.join(GOLDEN, "llama"),), timeout=180))
    for r in records:
        assert r["full"] == r["total"]  # the 1-device load reads every element once
        assert r["read"] == r["own"] < r["total"], r  # only this process's distinct shards, each once
        assert r["equal"] and r["gathered"], r  # bitwise the full load
    assert records[0]["read"] + records[1]["read"] > records[0]["total"]  # some parameters are replicated


GLOBAL_ROWS = textwrap.dedent("""
    import json
    import jax, numpy as np
    from sharpen_jax import distributed, sharding
    from sharpen_jax.training import SFTDataset, stream_indices

    distributed.initialize()
    mesh = distributed.global_mesh(data=-1)
    rng = np.random.default_rng(0)
    dataset = SFTDataset({"tokens": rng.integers(0, 50, (20, 5)), "valid": rng.random((20, 5)) < 0.7},
                         rng.random(20))
    asked = []

    def rows(idx):
        asked.extend(int(i) for i in idx)
        return dataset.rows(idx)

    batches = [distributed.to_host(distributed.global_rows(rows, stream_indices(20, 8, 3, step),
                                                           sharding.batch_sharding(mesh)))
               for step in range(4)]
    print(json.dumps({"asked": asked, "batches": jax.tree.map(lambda x: x.tolist(), batches)}))
""")


def test_each_process_reads_its_own_rows_and_the_global_batch_does_not_depend_on_the_process_count():
    one = _records(run_processes(GLOBAL_ROWS, 1, 4, timeout=120))[0]
    two = _records(run_processes(GLOBAL_ROWS, 2, 2, timeout=120))
    for r in two:
        assert r["batches"] == one["batches"]  # the same global batches as one process assembles
    assert len(one["asked"]) == 4 * 8  # one process reads every row of every batch once
    halves = [[one["asked"][8 * s + 4 * p: 8 * s + 4 * p + 4] for s in range(4)] for p in range(2)]
    for p, r in enumerate(two):  # process p reads only rows [4p, 4p + 4) of each batch
        assert r["asked"] == [i for h in halves[p] for i in h]
