"""Loading straight into a mesh: each parameter lands in its train-layout sharding, logits unchanged."""

from __future__ import annotations

import json
import os

import numpy as np

from conftest import GOLDEN, run_with_devices


def test_load_into_eight_device_mesh_gives_golden_logits():
    code = f"""
import json, jax, numpy as np
from sharpen_jax import model, sharding, weights
mesh = sharding.make_mesh(data=2, fsdp=2, model=2)
config, params = weights.load({os.path.join(GOLDEN, "llama")!r}, mesh=mesh)
golden = np.load({os.path.join(GOLDEN, "llama", "logits.npz")!r})
logits, _ = model.forward(params, config, golden["input_ids"])
q = params["layers"]["attn"]["q_proj"]["kernel"]
print(json.dumps({{"err": float(np.abs(np.asarray(logits) - golden["logits"]).max()),
                  "q_spec": str(q.sharding.spec), "q_shard": list(q.addressable_shards[0].data.shape),
                  "embed_spec": str(params["embed"]["embedding"].sharding.spec)}}))
"""
    result = json.loads(run_with_devices(code).strip().splitlines()[-1])
    assert result["err"] < 1e-4
    assert result["q_spec"] == "P(None, 'fsdp', 'model')"
    assert result["q_shard"] == [2, 16, 16]  # [L, D/fsdp, N*H/model] of [2, 32, 32]
    assert result["embed_spec"] == "P('model', 'fsdp')"
