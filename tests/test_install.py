"""The layout trap: pyproject maps edgesam.runtime -> runtime/ and edgesam.convert -> convert/.

After a plain (non-editable) install, ``python -c "import edgesam.runtime"`` run from the
checkout root finds the checkout's edgesam/ first (the current folder leads sys.path), and that
folder has no runtime/ inside it. edgesam/__init__.py maps the two subpackages to the sibling
folders when, and only when, edgesam/ sits in a checkout.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

CODE = ("import json, sys, edgesam, edgesam.runtime, edgesam.convert; "
        "from edgesam.runtime import SamPredictor; from edgesam.runtime.prompts import preprocess_shape; "
        "print(json.dumps([edgesam.__file__, edgesam.runtime.__file__, edgesam.convert.__file__, "
        "SamPredictor.__module__, preprocess_shape(3, 4, 1024), "
        "[type(f).__name__ for f in sys.meta_path if getattr(f, 'edgesam_checkout', None)]]))")


def _where(python: Path | str, cwd: Path) -> list:
    p = subprocess.run([str(python), "-c", CODE], capture_output=True, text=True, cwd=cwd, timeout=300,
                       env={**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONWARNINGS": "ignore"})
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(os.environ.get("EDGESAM_SKIP_VENV") == "1", reason="EDGESAM_SKIP_VENV=1")
@pytest.mark.parametrize("cwd", ["checkout root", "elsewhere"])
def test_non_editable_install_imports_from_any_folder(base_venv, tmp_path, cwd):
    site = Path(subprocess.run([str(base_venv), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, cwd=tmp_path).stdout.strip())
    files, module, shape, finders = (lambda f: (list(map(Path, f[:3])), f[3], f[4], f[5]))(
        _where(base_venv, REPO if cwd == "checkout root" else tmp_path))
    assert module == "edgesam.runtime.predictor" and shape == [768, 1024]
    if cwd == "checkout root":  # the checkout's edgesam/ shadows the install: all three from the checkout
        assert files == [REPO / "edgesam/__init__.py", REPO / "runtime/__init__.py", REPO / "convert/__init__.py"]
        assert finders  # the mapping is in place
    else:  # the installed package, untouched: no mapping added
        assert files == [site / "edgesam/__init__.py", site / "edgesam/runtime/__init__.py",
                         site / "edgesam/convert/__init__.py"]
        assert finders == []


def test_editable_install_unchanged(tmp_path):
    """The development install (pip install -e) resolves the same folders as before, from anywhere."""
    import sysconfig

    if not any(Path(sysconfig.get_paths()["purelib"]).glob("__editable__*edgesam*")):
        pytest.skip("edgesam is not installed editable (pip install -e) in this environment")
    for cwd in (REPO, tmp_path):
        files = _where(sys.executable, cwd)[:3]
        assert list(map(Path, files)) == [REPO / "edgesam/__init__.py", REPO / "runtime/__init__.py",
                                          REPO / "convert/__init__.py"], cwd
