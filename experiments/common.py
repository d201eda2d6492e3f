"""Shared experiment plumbing: config checks, workdir handling, the entry point.

An experiment module defines `run(config, workdir)` and ends with

    if __name__ == "__main__":
        common.main(run, configs)

which gives it the command line `python -m experiments.<name> --config=FILE:PRESET --workdir DIR`
(the config file is an ml_collections config file whose `get_config(preset)` builds the config;
`--config.key=value` overrides single entries).

Every config file has the same idiom: `defaults()` (every valid key), one function per preset,
`PRESETS` and `get_config(preset)`. Configs are checked against `defaults()` before any work starts:
an unknown key is an error naming the key and the valid ones (`check_keys`), and values are checked
with `check_int` / `check_float` / `check_choice`, whose errors name the key. Workdirs (the run's
identity, resumption, the lock) are `experiments.workdir`.

Multi-process runs (one process per host or per GPU over one global mesh, `sharpen_jax.distributed`):
every config has the key `distributed`; with it True, or when the environment names a multi-process
launch, `start_distributed` starts jax.distributed first, before anything else touches JAX (`main`
calls it before the run; each experiment's `run` calls it again, a no-op then). Every process runs
the same program; process 0 alone takes the workdir's lock and writes config, identity, results,
summaries, figures, metrics and TensorBoard (`write_on_main`), and every process prints its own
failures (`main`). A process that dies makes the others stop with an error within the heartbeat
timeout of `sharpen_jax.distributed.initialize`.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import sys
from typing import Any, Callable, Mapping, Sequence

import jax
import ml_collections

from sharpen_jax import checks, distributed


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


def _as_config_error(check: Callable[..., Any], config: Any, key: str, *args, **kwargs) -> Any:
    """Run a `sharpen_jax.checks` function on the entry at `key`; its error as a ConfigError naming config.key."""
    try:
        return check(f"config.{key}", value_at(config, key), *args, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None


def check_int(config: Any, key: str, minimum: int, maximum: int | None = None) -> int:
    """The integer at `key`, which must lie in [minimum, maximum]; a ConfigError naming it otherwise."""
    return _as_config_error(checks.integer, config, key, minimum, maximum)


def check_float(config: Any, key: str, *, minimum: float | None = None, maximum: float | None = None,
                strict_minimum: bool = False) -> float:
    """The finite number at `key` within the bounds (minimum excluded when `strict_minimum`)."""
    return _as_config_error(checks.number, config, key, minimum=minimum, maximum=maximum,
                            strict_minimum=strict_minimum)


def check_choice(config: Any, key: str, choices: Sequence[Any]) -> Any:
    """The entry at `key`, which must be one of `choices`."""
    return _as_config_error(checks.choice, config, key, choices)


DISTRIBUTED_KEY = "distributed"  # every config has it; it never changes results, so a resume may change it


def check_distributed(config: Any) -> bool:
    """config.distributed, which must be True or False; a ConfigError naming it otherwise."""
    value = value_at(config, DISTRIBUTED_KEY)
    if not isinstance(value, bool):
        raise ConfigError(f"config.{DISTRIBUTED_KEY}={value!r}; expected True or False")
    return value


def start_distributed(config: Any) -> bool:
    """Start jax.distributed for a run (`sharpen_jax.distributed.initialize`); True when the run spans
    several processes. Call it before anything else touches JAX. It starts when config.distributed
    is True (coordinator, process count and id from $JAX_COORDINATOR_ADDRESS,
    $SHARPEN_JAX_NUM_PROCESSES and $SHARPEN_JAX_PROCESS_ID, else JAX's own detection on TPU pod slices,
    SLURM and Open MPI) or when those variables name a launch of several processes; otherwise, and
    when already started, it does nothing."""
    enabled = check_distributed(config)
    try:
        return distributed.initialize(auto=enabled)
    except (ValueError, RuntimeError) as err:  # RuntimeError: JAX was used already, or no coordinator answered
        raise ConfigError(f"cannot start the multi-process run (config.{DISTRIBUTED_KEY}={enabled}): {err} (set "
                          f"${distributed.COORDINATOR_ENV}, ${distributed.NUM_PROCESSES_ENV} and "
                          f"${distributed.PROCESS_ID_ENV}, or run where JAX detects the cluster: TPU, SLURM, Open MPI; "
                          "a run called from Python must start before anything else uses JAX)") from None


def write_on_main(fn: Callable[..., Any], *args, **kwargs) -> Any:
    """fn(*args, **kwargs), a write of a run's outputs, on process 0 only (`distributed.on_main`)."""
    return distributed.on_main(fn, *args, **kwargs)


def process_label() -> str:
    """" (process I of N)" in a multi-process run, else ""; for messages every process prints."""
    if not jax.distributed.is_initialized() or jax.process_count() == 1:
        return ""
    return f" (process {jax.process_index()} of {jax.process_count()})"


def jax_device_count() -> int:
    """The number of devices of the run (every process's, in a multi-process run)."""
    return jax.device_count()


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


VERBOSE_ENV = "SHARPEN_JAX_VERBOSE"
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # holds experiments/


def resolve_config_path(spec: str) -> str:
    """`--config` value with FILE made absolute: as given when it exists, else relative to the directory
    holding the installed `experiments` package (so `experiments/configs/X.py:cpu` works from anywhere)."""
    path, sep, preset = spec.partition(":")
    if not os.path.exists(path) and not os.path.isabs(path) and os.path.exists(os.path.join(PACKAGE_ROOT, path)):
        path = os.path.join(PACKAGE_ROOT, path)
    return path + sep + preset


def usage(module_doc: str, configs: Any, name: str) -> str:
    """The --help text: the command, what the experiment does, the flags, the presets, where keys are documented."""
    config_file = os.path.relpath(configs.__file__, PACKAGE_ROOT)
    presets = ", ".join(configs.PRESETS)
    summary = (module_doc or "").strip().split("\n\n")[0]
    return "\n".join([
        f"usage: python -m {name} --config={config_file}:PRESET --workdir=DIR [--config.KEY=VALUE ...] [--verbose]",
        "", summary, "",
        "flags:",
        f"  --config=FILE:PRESET   an ml_collections config file and one of its presets ({config_file}: {presets})",
        "  --config.KEY=VALUE     override one entry of the config, e.g. --config.seed=1",
        "  --workdir=DIR          where results, summaries, figures and checkpoints go; the same command resumes",
        f"  --verbose              print the full traceback of an error (or set {VERBOSE_ENV}=1)",
        "  --dry_run              validate, then print the plan, memory per device and a time estimate; loads no",
        "                         weights, needs no --workdir (--devices=N plans for N devices, --tokens_per_s=R)",
        "",
        f"Every key is documented where defaults() in {config_file} sets it; an unknown key is an error.",
    ])


def _define_flags():
    from absl import flags
    from ml_collections import config_flags

    if "workdir" not in flags.FLAGS:
        config_flags.DEFINE_config_file("config", None, "ml_collections config file and preset: FILE:PRESET",
                                        lock_config=True)
        flags.DEFINE_string("workdir", None, "directory for results, summary and figures (resumes if it exists)")
        flags.DEFINE_bool("dry_run", False, "validate the config and print the plan, memory per device and a "
                                            "time estimate, loading no weights (experiments.plan)")
        flags.DEFINE_integer("devices", 0, "with --dry_run: plan for this many devices (0 = those present)")
        flags.DEFINE_float("tokens_per_s", 0.0, "with --dry_run: decoded tokens/s per device for the time estimate "
                                                "(0 = the stated assumption of experiments.plan)")
    return flags


def flag_error_message(err: Exception) -> str:
    """absl's message for a bad flag, in one line: where ml_collections wrapped an exception raised while
    loading the config file (e.g. an unknown preset), the flag and that exception's own message, without
    the traceback text it embeds."""
    text = str(err)
    if "Traceback (most recent call last)" not in text:
        return text
    flag = text.split("Error whilst parsing config file", 1)[0].rstrip(": ")
    last = [line for line in text.splitlines() if line.strip()][-1]
    exception, sep, message = last.partition(": ")
    return f"{flag}: {message if sep and exception.replace('.', '').replace('_', '').isalnum() else last}"


def main(run: Callable[[ml_collections.ConfigDict, str], Any], configs: Any,
         dry_run: Callable[..., str] | None = None) -> None:
    """The command line of an experiment module: parses --config=FILE:PRESET (and --config.KEY=VALUE) and
    --workdir, starts jax.distributed where the config or the environment asks for it
    (`start_distributed`), then calls run(config, workdir). With --dry_run it prints dry_run(config, devices=,
    tokens_per_s=) instead (`experiments.plan`: the plan, memory per device, a time estimate;
    --devices=N plans for N devices, --tokens_per_s for a measured throughput); no workdir needed.

    `--help` prints `usage` and exits 0. A bad input (a ValueError, such as every ConfigError, or an
    OSError) prints one line naming it and a hint, and exits with status 2; the traceback only with
    --verbose or $SHARPEN_JAX_VERBOSE. An interrupt exits with status 130 (the same command resumes).
    """
    name = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = name.name if name is not None else "experiments"
    module_doc = getattr(sys.modules.get("__main__"), "__doc__", "")
    argv = [a for a in sys.argv if a != "--verbose"]
    verbose = len(argv) != len(sys.argv) or bool(os.environ.get(VERBOSE_ENV))
    if any(a in ("--help", "-h", "--helpfull") for a in argv[1:]):
        print(usage(module_doc, configs, name))
        sys.exit(0)
    argv = [f"--config={resolve_config_path(a.split('=', 1)[1])}" if a.startswith("--config=") else a for a in argv]
    try:
        flags = _define_flags()
        dry = dry_run is not None and "--dry_run" in argv
        if not any(a.startswith("--config=") for a in argv[1:]) or not (dry or any(
                a.startswith("--workdir") for a in argv[1:])):
            raise ConfigError("--config=FILE:PRESET and --workdir=DIR are required (see --help)")
        config_path = next(a.split("=", 1)[1] for a in argv if a.startswith("--config=")).partition(":")[0]
        if not os.path.isfile(config_path):
            raise ConfigError(f"config file {config_path!r} does not exist (--config=FILE:PRESET)")
        check_overrides(argv)
        try:
            rest = flags.FLAGS(argv)
        except flags.Error as err:
            raise ConfigError(flag_error_message(err)) from None
        if len(rest) > 1:
            raise ConfigError(f"unexpected positional arguments: {rest[1:]}")
        start_distributed(flags.FLAGS.config)
        if flags.FLAGS.dry_run:
            if dry_run is None:
                raise ConfigError(f"{name} has no --dry_run")
            print(dry_run(flags.FLAGS.config, devices=flags.FLAGS.devices or jax_device_count(),
                          tokens_per_s=flags.FLAGS.tokens_per_s))
            return
        run(flags.FLAGS.config, flags.FLAGS.workdir)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        sys.exit(130)
    except (ValueError, OSError) as err:
        if verbose:
            import traceback

            traceback.print_exc()
        print(f"error{process_label()}: {err}", file=sys.stderr)
        if not verbose:
            print(f"(for the traceback run again with --verbose or {VERBOSE_ENV}=1; the flags: --help)", file=sys.stderr)
        sys.exit(2)
    except Exception as err:  # every process of a multi-process run says that it failed, and why
        if process_label():
            print(f"error{process_label()}: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        raise
