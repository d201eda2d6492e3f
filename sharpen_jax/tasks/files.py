"""Finding and reading raw task files (JSONL, CSV) with errors that name the file and line.

Data for file-backed tasks lives wherever the user keeps it. `resolve_data_dir` picks, in order:
the `data_dir` argument, the ``SHARPEN_JAX_DATA_DIR`` environment variable, then the project's
shared data folder ``<repo>/../shared/data``. Within that folder a task looks either directly at
its files or in its own sub-folder (``gsm8k/``, ``math500/``, ``game24/``, ...), so both
``data_dir=".../shared/data"`` and ``data_dir=".../shared/data/gsm8k"`` work.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sharpen_jax.jsonl import read_numbered_jsonl

DATA_DIR_ENV = "SHARPEN_JAX_DATA_DIR"
PROJECT_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"


class TaskDataError(ValueError):
    """A task file exists but its content is not what the task expects."""


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The root data directory: `data_dir`, else $SHARPEN_JAX_DATA_DIR, else the project's data."""
    if data_dir is not None:
        chosen, origin = Path(data_dir).expanduser(), "data_dir"
    elif os.environ.get(DATA_DIR_ENV):
        chosen, origin = Path(os.environ[DATA_DIR_ENV]).expanduser(), f"${DATA_DIR_ENV}"
    else:
        chosen, origin = PROJECT_DATA_DIR, "the default project data directory"
    if not chosen.exists():
        raise FileNotFoundError(
            f"{origin} {str(chosen)!r} does not exist; pass data_dir=<folder holding the task's "
            f"files> or set ${DATA_DIR_ENV}"
        )
    return chosen


def find_task_files(
    data_dir: str | os.PathLike | None, subdir: str, file_names: Sequence[str]
) -> tuple[Path, dict[str, Path]]:
    """(folder, {file name: path}) for the present `file_names`, in `data_dir` or `data_dir/subdir`.

    Raises FileNotFoundError listing the places searched when none of `file_names` is found.
    """
    root = resolve_data_dir(data_dir)
    if root.is_file():
        raise NotADirectoryError(
            f"data_dir {str(root)!r} is a file; pass the folder holding {list(file_names)}, "
            f"or map splits to files with files={{split: path}}"
        )
    for folder in (root, root / subdir):
        found = {name: folder / name for name in file_names if (folder / name).is_file()}
        if found:
            return folder, found
    raise FileNotFoundError(
        f"none of {list(file_names)} found in {str(root)!r} or {str(root / subdir)!r}"
    )


def check_file(path: str | os.PathLike, what: str) -> Path:
    """`path` as a Path, or FileNotFoundError naming `what` was expected there."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist")
    return path


def check_split_files(
    files: Mapping[str, str | os.PathLike], what: str
) -> dict[str, Path]:
    """{split: existing file} from a user mapping; empty mappings and missing files are errors."""
    if not files:
        raise ValueError(f"files for {what} must map at least one split name to a path")
    return {split: check_file(path, f"{what} {split}") for split, path in files.items()}


def read_jsonl(
    path: str | os.PathLike, required: Iterable[str]
) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each JSON object of a JSONL file, checked for `required` strings.

    Reading follows `sharpen_jax.jsonl.read_numbered_jsonl` (blank lines skipped, a bad line is a
    TaskDataError naming path:line); a row lacking a required string field is one too.
    """
    path = check_file(path, "JSONL")
    required = tuple(required)
    rows = read_numbered_jsonl(path, missing_ok=False, error=TaskDataError)
    for line_number, row in rows:
        missing = [key for key in required if not isinstance(row.get(key), str)]
        if missing:
            raise TaskDataError(
                f"{path}:{line_number}: expected string field(s) {missing}; "
                f"the line has keys {sorted(row)}"
            )
    return rows


def read_csv_rows(path: str | os.PathLike) -> list[tuple[int, list[str]]]:
    """(line number, cells) for each non-empty row of a CSV file (quoted newlines allowed)."""
    path = check_file(path, "CSV")
    rows = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        start = 1
        for cells in reader:
            if any(cell.strip() for cell in cells):
                rows.append((start, cells))
            start = reader.line_num + 1
    return rows
