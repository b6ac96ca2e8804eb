"""pyproject.toml declares what gateway/ and models/build.py import; constraints.txt pins it.

Imports are read from the source (top-level names of every ``import`` statement), mapped to the
installed distribution that owns the imported module, and compared with the declared
requirements: the server's own imports must be core dependencies, an optional tool's may be an
extra, and every declared requirement has a pin in constraints.txt that satisfies it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

from tests.conftest import ROOT

PACKAGE = ROOT / "gateway"

#: Declared but never imported by gateway/, and why.
USED_WITHOUT_IMPORT = {
    "pyarrow": "pandas reads Parquet samples through it (gateway convert)",
    "onnxscript": "torch.onnx's exporter (torch.export) is built on it",
    "scikit-learn": "gateway convert --sklearn unpickles estimators, which imports it",
}


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()  # PEP 503


def _pyproject() -> dict[str, list[Requirement]]:
    """Requirements by group: "" for the core dependencies, else the extra's name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"": project["dependencies"], **project["optional-dependencies"]}
    return {group: [Requirement(r) for r in reqs] for group, reqs in groups.items()}


def _declared(group: str | None = None) -> dict[str, Requirement]:
    """Third-party requirements (by normalised name) of one group, or of all groups."""
    found: dict[str, Requirement] = {}
    for name, requirements in _pyproject().items():
        if group is not None and name != group:
            continue
        for req in requirements:
            if _name(req.name) != "prediction-gateway":  # the dev extra names the others
                found[_name(req.name)] = req
    return found


@cache
def _module_owners() -> dict[str, str]:
    """Module name -> the installed distribution whose files define it."""
    owners: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = _name(dist.metadata["Name"])
        for file in dist.files or ():
            parts = Path(str(file)).with_suffix("").parts
            if file.suffix not in (".py", ".so", ".pyd") or ".." in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            module = ".".join(p.split(".")[0] for p in parts)  # _ext.cpython-311-x86_64 -> _ext
            owners.setdefault(module, name)
    return owners


def _owner(module: str) -> str:
    """The distribution of ``module``: its own file's, or its nearest package's."""
    owners = _module_owners()
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        owner = owners.get(".".join(parts[:end]))
        if owner is not None:
            return owner
    raise AssertionError(f"no installed distribution provides {module!r}")


def _imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """The distributions of the third-party modules ``path`` imports (at module level only, if
    asked)."""

    def walk(node: ast.AST, nested: bool) -> Iterator[str]:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            wanted = not (top_level_only and nested)
            if isinstance(child, ast.Import) and wanted:
                yield from (alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and wanted and child.level == 0:
                # `from a import b`: b may be a module (a namespace package's part).
                yield from (f"{child.module}.{alias.name}" for alias in child.names)
            yield from walk(child, inner)

    modules = walk(ast.parse(path.read_text(encoding="utf-8")), False)
    return {
        _owner(module)
        for module in modules
        if module.split(".")[0] not in (*sys.stdlib_module_names, "gateway", "__future__")
    }


def _sources() -> list[Path]:
    # models/build.py: the train extra is what rebuilding the example models takes.
    return [*sorted(PACKAGE.rglob("*.py")), ROOT / "models" / "build.py"]


def test_every_distribution_gateway_imports_is_declared() -> None:
    declared = _declared()
    missing = {
        f"{path.relative_to(ROOT)} imports {dist}"
        for path in _sources()
        for dist in _imports(path)
        if dist not in declared
    }
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"


def test_what_the_server_imports_is_a_core_dependency() -> None:
    # The modules `gateway serve` loads (a fresh interpreter: this one has loaded everything).
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, gateway.cli, gateway.app; print(json.dumps(sorted(sys.modules)))",
        ],
        capture_output=True,
        check=True,
        text=True,
        cwd=ROOT,
    )
    modules = [m for m in json.loads(loaded.stdout) if m.split(".")[0] == "gateway"]
    core = _declared("")
    extra_only: set[str] = set()
    for module in modules:
        path = PACKAGE.joinpath(*module.split(".")[1:])
        source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        extra_only |= {
            f"{module} imports {dist}"
            for dist in _imports(source, top_level_only=True)
            if dist not in core
        }
    assert not extra_only, (
        f"the server imports these, which are not core dependencies: {extra_only}"
    )


def test_every_declared_dependency_is_imported() -> None:
    imported = {dist for path in _sources() for dist in _imports(path)}
    for group, requirements in _pyproject().items():
        if group == "dev":  # the test suite's tools
            continue
        for req in requirements:
            name = _name(req.name)
            assert name in imported or name in USED_WITHOUT_IMPORT, (
                f"{req} ([{group or 'core'}]) is declared but gateway/ never imports it"
            )


def test_constraints_pin_every_declared_dependency_within_its_bounds() -> None:
    pins: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep:
            pins[_name(name.strip())] = Version(version.strip())
    for name, req in _declared().items():
        assert name in pins, f"{req} has no pin in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject.toml's {req}"
        )


def test_graphql_core_is_declared_at_the_version_the_compiled_path_needs() -> None:
    # gateway.api.execute uses graphql-core 3.3's VariableValues and variable signatures.
    (req,) = [r for r in _pyproject()[""] if _name(r.name) == "graphql-core"]
    assert not req.specifier.contains("3.2.99") and req.specifier.contains("3.3.0")
