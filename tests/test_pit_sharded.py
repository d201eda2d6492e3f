"""The PIT experiment on a mesh: the smoke preset on a preference file, on 8 fake CPU devices with
config.mesh = (data 2, fsdp 2, model 2), gives every stage's training losses and gradient norms of the
single-device run and the same held-out R_PIT accuracy (every stage's step takes the mesh); a batch that does not split over the mesh's
batch axes is a config error before any model loads."""

import textwrap

import pytest

from conftest import MESH_SPY, run_with_devices

SCRIPT = MESH_SPY + textwrap.dedent("""
    import json, os, tempfile
    import numpy as np
    from experiments import pit
    from experiments.common import ConfigError
    from experiments.configs import pit as configs

    folder = tempfile.mkdtemp()
    with open(os.path.join(folder, "pairs.jsonl"), "w") as f:
        for i in range(24):
            f.write(json.dumps({"prompt": f"{i % 9}+1=", "chosen": f"{i % 9 + 1}", "rejected": f"{i % 9 + 2}"}) + "\\n")

    def config(mesh):
        c = configs.get_config("smoke")
        c.task.update(name="preference_file", num_shots=0, num_train_prompts=16, num_eval_prompts=8, options={})
        c.pit.update(kinds="file", preference_file=os.path.join(folder, "pairs.jsonl"), preference_format="jsonl")
        c.mesh.update(mesh)
        return c

    def run(mesh):
        workdir = tempfile.mkdtemp()
        results = pit.run(config(mesh), workdir)
        curves = {}
        for stage in ("reward_model", "improver_sft", "rl_stage0", "rl_stage1"):
            rows = [json.loads(line) for line in open(os.path.join(workdir, stage, "metrics.jsonl"))]
            curves[stage] = np.asarray([[r["loss"], r["grad_norm"]] for r in rows if r["split"] == "train"])
        return results, curves

    mesh = dict(data=2, fsdp=2, model=2)
    bad = config(mesh)
    bad.reward.batch_size = 3
    try:
        pit.validate(bad)
        raise AssertionError("reward.batch_size=3 on a 4-way batch split was accepted")
    except ConfigError as err:
        assert "config.reward.batch_size=3" in str(err) and "multiple of 4" in str(err), err
    single, single_curves = run(dict(data=1, fsdp=1, model=1))
    sharded, sharded_curves = run(mesh)
    assert meshes == [None] * 4 + [mesh] * 4, meshes  # every stage's step: R_PIT, improver SFT, RL 0 and 1
    for stage, values in single_curves.items():
        assert len(values) >= 2 and values.shape == sharded_curves[stage].shape, stage
        np.testing.assert_allclose(sharded_curves[stage], values, rtol=1e-4, atol=1e-5, err_msg=stage)
    assert sharded["reward_model"] == single["reward_model"]
    print("OK", {stage: len(v) for stage, v in single_curves.items()})
""")


@pytest.mark.slow  # two smoke runs in a fresh process: about 3 minutes on 2 cores
def test_pit_file_run_on_a_mesh_matches_one_device():
    assert "OK" in run_with_devices(SCRIPT, num_devices=8, timeout=1200)
