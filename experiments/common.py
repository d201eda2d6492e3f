"""Shared experiment plumbing: config checks, workdir handling, the entry point.

An experiment module defines `run(config, workdir)` and ends with

    if __name__ == "__main__":
        common.main(run)

which gives it the command line `python -m experiments.<name> --config=FILE:PRESET --workdir DIR`
(the config file is an ml_collections config file whose `get_config(preset)` builds the config;
`--config.key=value` overrides single entries).

Every config file has the same idiom: `defaults()` (every valid key), one function per preset,
`PRESETS` and `get_config(preset)`. Configs are checked against `defaults()` before any work starts:
an unknown key is an error naming the key and the valid ones (`check_keys`), and values are checked
with `check_int` / `check_float` / `check_choice`, whose errors name the key. A workdir remembers the
config it was started with (`config.json`); resuming with a config that differs in a key that
changes results is an error naming the differing keys (`prepare_workdir`).
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import math
import os
import sys
from typing import Any, Callable, Iterable, Mapping, Sequence

import ml_collections

from sharpen_jax.jsonl import read_json, write_json

CONFIG_FILE = "config.json"


class ConfigError(ValueError):
    """A config or workdir that cannot be used; the message names the offending key or path."""


def _is_mapping(value: Any) -> bool:
    return isinstance(value, (Mapping, ml_collections.ConfigDict))


def _keys(value: Any) -> list[str]:
    return list(value.keys())


def check_keys(config: Any, reference: Any, *, path: str = "config", each: Mapping[str, Any] | None = None,
               free: Sequence[str] = ()) -> None:
    """Raise ConfigError for the first key of `config` that `reference` does not have.

    Nested dicts are checked recursively. `each` maps a dotted-path pattern (fnmatch, e.g.
    "config.tasks") to a template that every child of a dict at that path is checked against
    (dicts keyed by user-chosen names, such as task names); dicts at paths matching a pattern in
    `free` may hold any keys (they are validated elsewhere, e.g. task options).
    """
    each = dict(each or {})
    if any(fnmatch.fnmatchcase(path, pattern) for pattern in free) or not _is_mapping(config):
        return
    template = next((t for pattern, t in each.items() if fnmatch.fnmatchcase(path, pattern)), None)
    for key in _keys(config):
        child_path = f"{path}.{key}"
        if template is not None:
            check_keys(config[key], template, path=child_path, each=each, free=free)
            continue
        if not _is_mapping(reference) or key not in _keys(reference):
            valid = sorted(_keys(reference)) if _is_mapping(reference) else []
            raise ConfigError(f"unknown config key {child_path!r}; valid keys of {path!r}: {valid}")
        check_keys(config[key], reference[key], path=child_path, each=each, free=free)


def value_at(config: Any, key: str) -> Any:
    """The entry at dotted path `key` ("train.batch_size") of a config."""
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def _fail(key: str, value: Any, expected: str) -> None:
    raise ConfigError(f"config.{key}={value!r}; expected {expected}")


def check_int(config: Any, key: str, minimum: int, maximum: int | None = None) -> int:
    """The integer at `key`, which must lie in [minimum, maximum]; a ConfigError naming it otherwise."""
    value = value_at(config, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
            maximum is not None and value > maximum):
        _fail(key, value, f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else ""))
    return value


def check_float(config: Any, key: str, *, minimum: float | None = None, maximum: float | None = None,
                strict_minimum: bool = False) -> float:
    """The finite number at `key` within the bounds (minimum excluded when `strict_minimum`)."""
    value = value_at(config, key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if strict_minimum else value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        bounds = []
        if minimum is not None:
            bounds.append(f"{'>' if strict_minimum else '>='} {minimum}")
        if maximum is not None:
            bounds.append(f"<= {maximum}")
        _fail(key, value, "a finite number" + (" " + " and ".join(bounds) if bounds else ""))
    return float(value)


def check_choice(config: Any, key: str, choices: Sequence[Any]) -> Any:
    """The entry at `key`, which must be one of `choices`."""
    value = value_at(config, key)
    if value not in tuple(choices):
        _fail(key, value, f"one of {list(choices)}")
    return value


def select_preset(preset: str | None, presets: Mapping[str, Callable[[], ml_collections.ConfigDict]],
                  default: str) -> ml_collections.ConfigDict:
    """The config of preset `preset` (`default` when None or empty), with its name in the config's
    "preset" key when it has one; unknown names list the valid ones."""
    name = preset or default
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {sorted(presets)}")
    config = presets[name]()
    if "preset" in config:
        config.preset = name
    return config


def to_plain(value: Any) -> Any:
    """A ConfigDict (or nested dicts / tuples) as plain JSON-ready Python values."""
    if _is_mapping(value):
        return {str(k): to_plain(value[k]) for k in _keys(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def _differences(old: Any, new: Any, path: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{path}.{key}")
        return out
    return [] if old == new else [path]


def prepare_workdir(workdir: str, config: Any, *, ignore: Iterable[str] = ()) -> bool:
    """Create `workdir` and record the config; True when it already held a run with this config.

    `ignore` names top-level keys that do not change results (progress bars, how much work one
    invocation does); they may differ between a run and its resumption.
    """
    if not workdir:
        raise ConfigError("workdir is empty; pass --workdir DIR")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"workdir {workdir!r} exists and is not a directory")
    os.makedirs(workdir, exist_ok=True)
    ignore = set(ignore)
    current = {k: v for k, v in to_plain(config).items() if k not in ignore}
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.exists(path):
        previous = read_json(path, error=ConfigError)
        differing = _differences(previous, json.loads(json.dumps(current)), "config")
        if differing:
            raise ConfigError(f"workdir {workdir!r} holds a run started with a different config (differs at "
                              f"{differing}); resume with the same config or use a new workdir")
        return True
    write_json(path, current)
    return False


def config_from_file(spec: str) -> ml_collections.ConfigDict:
    """The config that `--config=FILE[:PRESET]` names: FILE's get_config(PRESET)."""
    path, _, preset = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_experiment_config", path)
    if module_spec is None or not os.path.exists(path):
        raise ConfigError(f"config file {path!r} does not exist")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(preset) if preset else module.get_config()


def check_overrides(argv: Sequence[str]) -> None:
    """ConfigError naming the key and the valid ones for a `--config.a.b=value` whose path does not exist."""
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    overrides = [a[len("--config."):].split("=", 1)[0] for a in argv if a.startswith("--config.")]
    if spec is None or not overrides:
        return
    config = config_from_file(spec)
    for override in overrides:
        node, path = config, "config"
        for key in override.split("."):
            if not _is_mapping(node) or key not in _keys(node):
                valid = sorted(_keys(node)) if _is_mapping(node) else []
                raise ConfigError(f"unknown config key {path + '.' + key!r} (from --config.{override}); valid keys "
                                  f"of {path!r}: {valid}")
            node, path = node[key], f"{path}.{key}"


def main(run: Callable[[ml_collections.ConfigDict, str], Any]) -> None:
    """absl entry point: parses --config=FILE:PRESET (and --config.key=value) and --workdir, calls run."""
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "ml_collections config file and preset: FILE:PRESET",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "directory for results, summary and figures (resumes if it exists)")
    flags.mark_flags_as_required(["config", "workdir"])

    def _main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected positional arguments: {argv[1:]}")
        run(flags.FLAGS.config, flags.FLAGS.workdir)

    check_overrides(sys.argv)
    app.run(_main)
