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
    # the runtime refuses the damaged model before loading it
    line = one_line_error(run_cli("segment", b, "assets/landscape.png", "--point", "10,10", "--precision", "fp16",
                                  cwd=REPO))
    assert match in line
    if damage in ("flip", "truncate", "delete"):
        # ... and hashes only the models it opens: the fp32 files are intact, so fp32 runs
        p = run_cli("segment", b, "assets/landscape.png", "--point", "10,10", cwd=REPO)
        assert p.returncode == 0, p.stderr[-2000:]


def _manifest_edit(m: dict, case: str) -> str:
    """Corrupt a manifest in place; return what the one-line error must name."""
    if case == "missing_key":
        del m["files"][1]["sha256"]
        return "files[1].sha256' is missing"
    if case == "missing_path":
        del m["files"][2]["path"]
        return "files[2].path' is missing"
    if case == "bytes_many":
        m["files"][0]["bytes"] = "many"
        return "files[0].bytes' must be int"
    if case == "wrong_type":
        m["preprocess"]["pixel_mean"] = "imagenet"
        return "preprocess.pixel_mean"
    if case == "bad_token":
        m["decoder"]["multimask_tokens"] = [1, 2, 9]
        return "decoder.multimask_tokens"
    if case == "no_output_name":
        del m["decoder"]["outputs"]["scores"]
        return "decoder.outputs.scores' is missing"
    if case == "duplicate":
        dup = next(f for f in m["files"] if f["path"] == "encoder.fp32.mnn")
        m["files"].append(dict(dup))
        return "two mnn encoder files at precision fp32"
    if case == "unknown_family":
        m["family"] = "sam3"
        return "'family' is 'sam3'"
    if case == "no_family":
        del m["family"]
        return "'family' is missing"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing_key", "missing_path", "bytes_many", "wrong_type", "bad_token",
                                  "no_output_name", "duplicate", "unknown_family", "no_family"])
def test_corrupt_manifest_is_one_line_exit_2(vit_t_bundle, tmp_path, case):
    """Every command that reads a bundle refuses a corrupt manifest with exit 2 and one line naming
    the key, and writes nothing."""
    b = _copy(vit_t_bundle, tmp_path)
    m = json.loads((b / "manifest.json").read_text())
    assert m["version"] == 3
    what = _manifest_edit(m, case)
    (b / "manifest.json").write_text(json.dumps(m))
    out = tmp_path / "outputs"
    out.mkdir()
    for cmd in (("info", b), ("segment", b, "assets/landscape.png", "--point", "10,10", "--out", out / "m.png"),
                ("everything", b, "assets/landscape.png", "--points-per-side", "4", "--out", out / "e.json"),
                ("bench", b, "--runs", "1", "--warmup", "0", "--json", out / "b.json")):
        line = one_line_error(run_cli(*cmd, cwd=REPO))
        assert what in line, (cmd[0], line)
    assert list(out.iterdir()) == []


def test_version_1_manifest_still_loads(vit_t_bundle, tmp_path):
    """A bundle written by edgesam before manifest version 2 (no family, no tensor names, no token
    rule) reads as what version 1 meant, and gives the same masks."""
    import numpy as np

    from edgesam.bundle import load_bundle
    from edgesam.runtime import SamPredictor
    from edgesam.synthetic.scenes import make_scene

    b = _copy(vit_t_bundle, tmp_path)
    m = json.loads((b / "manifest.json").read_text())
    m["version"] = 1
    for key in ("family", "encoder"):
        del m[key]
    del m["preprocess"]["resize"]
    m["decoder"] = {"variant": "lowres", "multimask_outputs": 3}
    for f in m["files"]:
        f.pop("inputs", None), f.pop("outputs", None)
    (b / "manifest.json").write_text(json.dumps(m))
    spec = load_bundle(b).spec
    assert (spec.family, spec.preprocess.resize, spec.decoder.multimask_tokens) == ("mobilesam", "longest_side",
                                                                                     (1, 2, 3))
    img = make_scene(3, (300, 500), style="gate").image
    got = []
    for bundle in (vit_t_bundle, b):
        p = SamPredictor(bundle)
        p.set_image(img)
        got.append(p.predict(np.array([[200.0, 150.0]]), np.array([1]))[1])
    np.testing.assert_array_equal(got[0], got[1])


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
