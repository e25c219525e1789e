"""The `make test` tier requires what `make setup` installs: a missing or broken package fails the run
at the start, where outside that tier its tests would skip."""
from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO


def _pytest(tmp_path, require: bool):
    fake = tmp_path / "site"
    (fake / "sam2").mkdir(parents=True)
    (fake / "sam2" / "__init__.py").write_text("raise ImportError('a broken sam2 build')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(REPO / "tests")])}
    env.pop("EDGESAM_REQUIRE_SETUP", None)
    if require:
        env["EDGESAM_REQUIRE_SETUP"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(REPO / "tests" / "test_prompts.py"), "-k", "sam_transform_is"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


def test_a_broken_setup_dependency_fails_the_make_test_tier(tmp_path):
    p = _pytest(tmp_path, require=True)
    assert p.returncode == 3, p.stdout[-2000:] + p.stderr[-2000:]
    assert "missing or broken: sam2 (ImportError: a broken sam2 build)" in p.stdout + p.stderr


def test_outside_the_tier_the_same_run_goes_on(tmp_path):
    p = _pytest(tmp_path, require=False)
    assert p.returncode == 0 and "1 passed" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]
