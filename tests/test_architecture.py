"""The layer order of docs/ARCHITECTURE.md holds: no module imports from a higher layer, and every module
of the package is in a layer. The test reads the table from the document itself."""

import ast
import os
import re

import pytest

from conftest import REPO

ROOTS = ("sharpen_jax", "experiments", "benchmarks")


def layer_table() -> dict[str, int]:
    """{module prefix: layer number} from the layer table of docs/ARCHITECTURE.md."""
    with open(os.path.join(REPO, "docs", "ARCHITECTURE.md")) as f:
        text = f.read()
    table = {}
    for number, modules in re.findall(r"^\| (\d+) [^|]*\| ([^|]*) \|", text, flags=re.M):
        for name in re.findall(r"`([\w.]+)`", modules):
            table[name] = int(number)
    return table


def module_files():
    """(module name, path) of every Python file under the package, experiments and benchmarks."""
    for root in ROOTS:
        for folder, _, files in os.walk(os.path.join(REPO, root)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    module = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".").removesuffix(".__init__")
                    yield module, path


def layer_of(module: str, table: dict[str, int]) -> int | None:
    """The layer of the longest table prefix of `module` (None when no entry covers it)."""
    matches = [prefix for prefix in table if module == prefix or module.startswith(prefix + ".")]
    return table[max(matches, key=len)] if matches else None


def imported_modules(path: str, module: str):
    """Every module name imported anywhere in the file (function-level imports included), absolute."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[:-node.level] if not path.endswith("__init__.py") else \
                    module.split(".")[:len(module.split(".")) - node.level + 1]
                base = ".".join(package + ([base] if base else []))
            yield base, node.lineno
            for alias in node.names:  # `from sharpen_jax import sampling` imports sharpen_jax.sampling
                yield f"{base}.{alias.name}", node.lineno


def upward_imports(table):
    found = []
    for module, path in module_files():
        if module == "sharpen_jax":
            continue  # the lazy public namespace
        own = layer_of(module, table)
        for imported, line in imported_modules(path, module):
            other = layer_of(imported, table)
            if other is not None and own is not None and other > own:
                found.append(f"{os.path.relpath(path, REPO)}:{line}: {module} (layer {own}) imports {imported} "
                             f"(layer {other})")
    return found


def test_every_module_is_in_a_layer():
    table = layer_table()
    assert len(table) >= 15, table
    missing = [m for m, _ in module_files() if m != "sharpen_jax" and layer_of(m, table) is None]
    assert not missing, f"modules missing from the layer table of docs/ARCHITECTURE.md: {missing}"


def test_no_module_imports_from_a_higher_layer():
    assert upward_imports(layer_table()) == []


def test_the_check_sees_an_upward_import():
    """Negative control: with training moved to layer 0, its imports of the core are upward imports, and
    the check reports each of them with file, line and both layers."""
    found = upward_imports({**layer_table(), "sharpen_jax.training": 0})
    assert found and all(line.startswith("sharpen_jax/training/") for line in found)
    assert any("imports sharpen_jax.sharding (layer 1)" in line for line in found)


@pytest.mark.parametrize("name", ["jsonl", "testing", "selection", "training", "rollouts", "methods"])
def test_new_packages_have_a_row(name):
    assert f"sharpen_jax.{name}" in layer_table()
