"""A workdir's identity check: the same model and data files resume from anywhere; other files refuse."""

import shutil

import ml_collections
import pytest

from experiments import workdir as workdir_lib


def _model_copy(folder, contents: bytes) -> str:
    folder.mkdir()
    path = folder / "model.gguf"
    path.write_bytes(contents)
    return str(path)


def _start(workdir, model_path: str, monkeypatch) -> bool:
    """Start or resume a run of the model spec "m", which resolves to `model_path` (as a short model name
    resolves to a file inside the virtual environment that installed it)."""
    monkeypatch.setattr(workdir_lib.weights, "resolve", lambda spec: model_path)
    config = ml_collections.ConfigDict({"seed": 0})
    identity = workdir_lib.run_identity({"m": workdir_lib.model_fingerprint("m")}, {})
    resumed = workdir_lib.prepare_workdir(str(workdir), config, identity)
    (workdir / "results.jsonl").touch()  # a started run has outputs, so the next call is a resume
    return resumed


def test_the_same_model_file_at_another_path_resumes(tmp_path, monkeypatch):
    contents = bytes(range(256)) * 5000
    first = _model_copy(tmp_path / "venv_a", contents)
    assert _start(tmp_path / "w", first, monkeypatch) is False
    second = _model_copy(tmp_path / "venv_b", contents)
    shutil.rmtree(tmp_path / "venv_a")
    assert _start(tmp_path / "w", second, monkeypatch) is True  # only the path changed: recorded, not compared


def test_a_different_model_file_at_the_same_path_is_refused(tmp_path, monkeypatch):
    path = _model_copy(tmp_path / "venv", bytes(range(256)) * 5000)
    _start(tmp_path / "w", path, monkeypatch)
    with open(path, "r+b") as f:
        f.write(b"\xff")  # the first byte changed: the fingerprint of the first MiB differs
    with pytest.raises(workdir_lib.WorkdirError, match=r"differs at \['identity\.models\.m\.files\.model\.gguf\.sha256'\]"):
        _start(tmp_path / "w", path, monkeypatch)
