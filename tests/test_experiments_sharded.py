"""The training experiments under a mesh: the SFT smoke run on 8 fake CPU devices with
config.mesh = (data 2, fsdp 2, model 2) takes the sharded train step and gives the losses, gradient
norms and held-out metrics of the single-device run; a mesh that does not fit the devices is a config error."""

import textwrap

import pytest

from conftest import MESH_SPY, run_with_devices
from experiments import common, sft_sharpening
from experiments.configs import sft_sharpening as sft_configs

SCRIPT = MESH_SPY + textwrap.dedent("""
    import json, os, tempfile
    import numpy as np
    from experiments import sft_sharpening
    from experiments.configs import sft_sharpening as configs

    def run(mesh):
        config = configs.get_config("smoke")
        config.mesh.update(mesh)
        workdir = tempfile.mkdtemp()
        sft_sharpening.run(config, workdir)
        results = json.load(open(os.path.join(workdir, "results.json")))
        train = [r for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl"))) if r["split"] == "train"]
        return results, np.asarray([[r["loss"], r["grad_norm"]] for r in train])

    single, single_losses = run(dict(data=1, fsdp=1, model=1))
    sharded, sharded_losses = run(dict(data=2, fsdp=2, model=2))
    assert meshes == [None, {"data": 2, "fsdp": 2, "model": 2}], meshes
    assert len(single_losses) >= 3 and single_losses.shape == sharded_losses.shape
    # losses and gradient norms (Adam's update hides a gradient off by a constant factor; the norm does not)
    np.testing.assert_allclose(sharded_losses, single_losses, rtol=1e-4, atol=1e-5)
    for phase in ("before", "after"):
        for key, value in single[phase].items():
            np.testing.assert_allclose(sharded[phase][key], value, rtol=1e-3, atol=1e-4, err_msg=f"{phase}/{key}")
    print("OK", len(single_losses))
""")


def test_sft_smoke_on_a_mesh_matches_one_device():
    assert "OK" in run_with_devices(SCRIPT, num_devices=8)


@pytest.mark.parametrize("mesh, message", [
    (dict(data=3), r"config\.mesh=\{'data': 3, 'fsdp': 1, 'model': 1\} does not fit the 1 devices here"),
    (dict(data=-1, fsdp=-1), r"at most one axis may be -1"),
    (dict(model=0), r"config\.mesh\.model=0; expected an integer >= 1"),
])
def test_bad_mesh_is_a_config_error(mesh, message, tmp_path):
    config = sft_configs.get_config("smoke")
    config.mesh.update(mesh)
    with pytest.raises(common.ConfigError, match=message):
        sft_sharpening.run(config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()
