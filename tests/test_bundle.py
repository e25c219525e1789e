"""Bundle integrity: tampering is caught by hash before any model is parsed."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import REPO, one_line_error, run_cli
from edgesam.bundle import atomic_dir


def _copy(src, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(src, dst)
    return dst


def test_atomic_dir_removes_temp_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "out") as t:
            (t / "x").write_text("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage,match", [
    ("flip", "sha256 does not match"), ("truncate", "bytes, manifest says"), ("delete", "missing"),
    ("no_manifest", "missing manifest.json"), ("bad_json", "invalid JSON"), ("future", "newer than"),
    ("escape", "outside the bundle"),
])
def test_info_catches_damage(vit_t_bundle, tmp_path, damage, match):
    b = _copy(vit_t_bundle, tmp_path)
    f = b / "decoder.fp16.mnn"
    if damage == "flip":
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    elif damage == "truncate":
        f.write_bytes(f.read_bytes()[:-100])
    elif damage == "delete":
        f.unlink()
    elif damage == "no_manifest":
        (b / "manifest.json").unlink()
    elif damage == "bad_json":
        (b / "manifest.json").write_text("{not json")
    elif damage == "future":
        m = json.loads((b / "manifest.json").read_text())
        m["version"] = 99
        (b / "manifest.json").write_text(json.dumps(m))
    elif damage == "escape":
        outside = tmp_path / "outside.mnn"
        shutil.copy(f, outside)
        f.unlink()
        f.symlink_to(outside)
    line = one_line_error(run_cli("info", b))
    assert match in line
    # the runtime refuses the same bundle before loading any model
    line = one_line_error(run_cli("segment", b, "assets/landscape.png", "--point", "10,10",
                                  cwd=REPO))
    assert match in line


def test_atomic_outputs_get_normal_permissions(tmp_path):
    """mkdtemp/mkstemp create 0700/0600; what is renamed into place follows the umask instead."""
    import os

    from edgesam.bundle import atomic_write_bytes

    mask = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "out") as t:
            (t / "x").write_text("data")
        atomic_write_bytes(tmp_path / "r.json", b"{}")
    finally:
        os.umask(mask)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "out" / "x").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644


def test_models_from_different_bundles_are_refused(vit_t_bundle, tmp_path):
    """A decoder swapped in from another conversion, together with its manifest record (so size
    and hash agree), is still refused: every record names the weights it was made from."""
    b = _copy(vit_t_bundle, tmp_path)
    m = json.loads((b / "manifest.json").read_text())
    assert m["source"] and all(f["source"] == m["source"] for f in m["files"])
    rec = next(f for f in m["files"] if f["path"] == "decoder.fp32.mnn")
    rec["source"] = "random-init:vit_t:7"  # what a record copied from `--random-init 7` carries
    (b / "manifest.json").write_text(json.dumps(m))
    for cmd in (("info", b), ("segment", b, "assets/landscape.png", "--point", "10,10")):
        line = one_line_error(run_cli(*cmd, cwd=REPO))
        assert "made from other weights" in line and "decoder.fp32.mnn" in line
    from edgesam.errors import BundleError
    from edgesam.runtime.predictor import SamPredictor

    with pytest.raises(BundleError, match="one conversion"):
        SamPredictor(b)
