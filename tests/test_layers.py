"""The import graph points one way: the CLI above everything, the converter above the parity engine,
the runtime below both. Read from the source (every import, lazy ones inside functions included)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

# folder -> the package it is installed as
PACKAGES = {"edgesam": "edgesam", "convert": "edgesam.convert", "runtime": "edgesam.runtime"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _modules():
    for folder, package in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO / folder).with_suffix("")
            yield package + "." + ".".join(rel.parts), path


def _offenders(is_lower, forbidden: str) -> list[str]:
    return [f"{mod} imports {name}" for mod, path in _modules() if is_lower(mod)
            for name in sorted(_imports(path)) if name == forbidden or name.startswith(forbidden + ".")]


def test_library_code_never_imports_the_cli():
    assert _offenders(lambda m: not m.startswith("edgesam.cli."), "edgesam.cli") == []


@pytest.mark.parametrize("lower", ["edgesam.measure", "edgesam.runtime", "edgesam.dataset", "edgesam.synthetic"])
def test_lower_layers_never_import_the_converter(lower):
    assert _offenders(lambda m: m.startswith(lower + "."), "edgesam.convert") == []


def test_the_check_sees_lazy_imports(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("def f():\n    from edgesam.cli.everything import x\n    import edgesam.convert.sam_export\n")
    assert _imports(p) == {"edgesam.cli.everything", "edgesam.convert.sam_export"}
