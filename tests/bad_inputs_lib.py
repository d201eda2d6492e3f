"""The bad-input corpus's machinery: a case is a call that must fail, and `check_case` asserts what
the corpus promises for every case:

* the exception type (or CLI exit status);
* the message names the input and what was expected (a regex per case);
* nothing expensive started first: no model was loaded and no sampler, scorer or train step ran
  (counted by hooks on the functions that do that work, not by a timer);
* no file that existed before the call changed, and a workdir that did not exist was not created.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from typing import Any, Callable

import pytest

# (module, attribute) of every function that starts expensive work, as the code under test calls it.
EXPENSIVE = (
    ("sharpen_jax.weights", "load"),
    ("sharpen_jax.testing", "random_model"),
    ("sharpen_jax.sampling", "_prefill"),
    ("sharpen_jax.sampling", "_decode"),
    ("sharpen_jax.scoring", "forward_hidden"),
    ("sharpen_jax.rollouts", "score_completions"),
    ("sharpen_jax.methods.registry", "make_train_step"),
)


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input: `call(tmp_path)` must raise `error` with a message matching `message`."""

    id: str
    call: Callable[[Any], Any]
    error: type[BaseException]
    message: str
    workdir: str | None = None  # a path (relative to tmp_path) that must not be created

    def __repr__(self) -> str:
        return self.id


class ExpensiveWork(AssertionError):
    """Raised by a hook: the call reached expensive work before reporting the bad input."""


def install_hooks(monkeypatch) -> list[str]:
    """Replace every EXPENSIVE function by one that records the call and raises ExpensiveWork."""
    import importlib

    calls: list[str] = []
    for module_name, attribute in EXPENSIVE:
        module = importlib.import_module(module_name)

        def hook(*args, _name=f"{module_name}.{attribute}", **kwargs):
            calls.append(_name)
            raise ExpensiveWork(f"{_name} was called before the bad input was reported")

        monkeypatch.setattr(module, attribute, hook)
    return calls


def snapshot(root: str) -> dict[str, str]:
    """{relative path: sha256 of content} of every file under `root`."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def check_case(case: Case, tmp_path, monkeypatch) -> BaseException:
    """Run one case and assert the corpus's promises (module docstring); returns the exception."""
    before = snapshot(str(tmp_path))
    calls = install_hooks(monkeypatch)
    with pytest.raises(BaseException) as info:
        case.call(tmp_path)
    err = info.value
    assert not isinstance(err, ExpensiveWork), f"{case.id}: {err}"
    assert not calls, f"{case.id}: expensive work started before the error: {calls}"
    assert isinstance(err, case.error), f"{case.id}: raised {type(err).__name__}: {err}"
    text = str(err) if not isinstance(err, SystemExit) else getattr(err, "stderr_text", "")
    assert re.search(case.message, text, flags=re.S), f"{case.id}: message {text!r} does not match {case.message!r}"
    after = snapshot(str(tmp_path))
    changed = [p for p, digest in before.items() if after.get(p) != digest]
    assert not changed, f"{case.id}: files changed or removed: {changed}"
    if case.workdir is not None:
        assert not os.path.exists(os.path.join(tmp_path, case.workdir)), f"{case.id}: created {case.workdir}"
    return err


def ids(cases) -> list[str]:
    """Case ids, checked unique (a corpus of distinct inputs)."""
    names = [c.id for c in cases]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"duplicate case ids: {duplicates}"
    return names
