"""Bad checkpoints fail with an error naming the file and the problem, and write nothing."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from conftest import GOLDEN
from sharpen_jax import weights
from sharpen_jax.gguf_reader import GGUFError


def _listing(directory):
    return sorted((p, os.path.getsize(os.path.join(directory, p))) for p in os.listdir(directory))


def test_missing_path_names_it():
    with pytest.raises(weights.WeightsError, match="does-not-exist.*does not exist"):
        weights.load("/tmp/does-not-exist")


def _golden_copy(tmp_path, arch, **config_changes):
    """A copy of a golden checkpoint with config.json keys changed (None deletes a key)."""
    target = tmp_path / "ckpt"
    shutil.copytree(os.path.join(GOLDEN, arch), target)
    config = json.loads((target / "config.json").read_text())
    for key, value in config_changes.items():
        if value is None:
            del config[key]
        else:
            config[key] = value
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_truncated_safetensors(tmp_path):
    target = _golden_copy(tmp_path, "llama")
    data = (target / "model.safetensors").read_bytes()
    (target / "model.safetensors").write_bytes(data[: len(data) // 2])
    before = _listing(target)
    with pytest.raises(weights.WeightsError, match="model.safetensors"):
        weights.load(str(target))
    assert _listing(target) == before


def test_config_with_missing_keys(tmp_path):
    target = _golden_copy(tmp_path, "qwen2", hidden_size=None, num_hidden_layers=None)
    before = _listing(target)
    with pytest.raises(weights.WeightsError, match=r"config.json: missing required keys \['hidden_size', "
                                                   r"'num_hidden_layers'\]"):
        weights.load(str(target))
    assert _listing(target) == before


def test_shape_mismatch_names_the_parameter(tmp_path):
    target = _golden_copy(tmp_path, "llama", intermediate_size=48)
    with pytest.raises(weights.WeightsError, match="gate_proj/kernel has shape"):
        weights.load(str(target))


def _write_gguf(path, arch):
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_with_unsupported_architecture(tmp_path):
    path = tmp_path / "model.gguf"
    _write_gguf(path, "falcon")
    before = _listing(tmp_path)
    with pytest.raises(GGUFError, match=r"model.gguf: architecture 'falcon' is not supported"):
        weights.load(str(path))
    assert _listing(tmp_path) == before


def test_corrupt_gguf(tmp_path):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    with pytest.raises(GGUFError, match="broken.gguf: not a readable GGUF file"):
        weights.load(str(path))


def test_unknown_file_kind(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x00")
    with pytest.raises(weights.WeightsError, match="expected a HF checkpoint directory or a .gguf file"):
        weights.load(str(path))
