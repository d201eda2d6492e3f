"""JSON and JSON-lines files: the one reader and the crash-safe writers every layer uses.

A JSON-lines file here is one JSON object per line. Writers append whole records in one flushed,
fsynced write, so a process killed mid-write leaves at most a cut last line, which `read_jsonl`
drops with a warning. Any other unreadable line (bad JSON, not an object, bad UTF-8) is an error
naming `path:line`. Whole-file JSON is written atomically (a temporary file renamed over the
target), so a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import gzip
import json
import os
import warnings
from typing import Any, Sequence


class JsonlError(ValueError):
    """A JSON or JSON-lines file that cannot be read; the message names the file (and line)."""


def read_jsonl(path: str | os.PathLike, *, missing_ok: bool = True,
               error: type[ValueError] = JsonlError) -> list[dict]:
    """The records of a JSON-lines file ([] when it does not exist and `missing_ok`).

    Blank lines are skipped. A last line without its newline that does not parse (a write cut by
    a crash) is dropped with a warning; any other bad line raises `error` naming path:line.
    """
    return [record for _, record in read_numbered_jsonl(path, missing_ok=missing_ok, error=error)]


def read_numbered_jsonl(path: str | os.PathLike, *, missing_ok: bool = True,
                        error: type[ValueError] = JsonlError) -> list[tuple[int, dict]]:
    """(1-based line number, record) for each record of a JSON-lines file (gzip-compressed when its name
    ends in .gz); see `read_jsonl`."""
    path = os.fspath(path)
    if not os.path.exists(path):
        if missing_ok:
            return []
        raise error(f"{path}: no such file")
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        raw = f.read()
    lines = raw.split(b"\n")
    cut_last = not raw.endswith(b"\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            if cut_last and number == len(lines):
                warnings.warn(f"{path}:{number}: dropping a cut last line (an interrupted write): {err}",
                              stacklevel=2)
                break
            kind = "not UTF-8 text" if isinstance(err, UnicodeDecodeError) else "malformed JSON"
            raise error(f"{path}:{number}: {kind} ({err})") from None
        if not isinstance(record, dict):
            raise error(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append((number, record))
    return records


def append_jsonl(path: str | os.PathLike, records: Sequence[dict]) -> None:
    """Append records in one write, flushed and fsynced; a failed write leaves no partial record.

    The text is encoded before the file is opened, and on an OS error (disk full) the file is cut
    back to its length before the write, then the error is raised naming the file.
    """
    path = os.fspath(path)
    data = "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:  # unbuffered: a short write is retried, a failed one is undone below
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as err:
            os.ftruncate(fd, start)
            raise OSError(err.errno, f"could not append {len(records)} record(s) to {path}: {err.strerror}") from err
    finally:
        os.close(fd)


def rewrite_jsonl(path: str | os.PathLike, records: Sequence[dict]) -> None:
    """Replace a JSON-lines file atomically with `records`."""
    _atomic_write(os.fspath(path), "".join(json.dumps(r) + "\n" for r in records))


def write_json(path: str | os.PathLike, value: Any, *, indent: int | None = 1) -> None:
    """Write `value` as JSON atomically (a temporary file renamed over `path`)."""
    _atomic_write(os.fspath(path), json.dumps(value, indent=indent, sort_keys=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` atomically (a temporary file renamed over `path`)."""
    _atomic_write(os.fspath(path), text)


def read_json(path: str | os.PathLike, *, error: type[ValueError] = JsonlError) -> Any:
    """The JSON value of a whole file; unreadable content raises `error` naming the file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise error(f"{path}: not a JSON file ({err})") from None


def _atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
