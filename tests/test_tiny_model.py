"""The test-only tiny model end to end on x86, and the ARM lane's checks where they can run here.

The lane itself (scripts/arm-lane.sh, qemu) runs in CI after the tests; see DEVELOPERS.md.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, one_line_error, run_cli

CHECKS = REPO / "scripts" / "arm_checks.py"
IMG = REPO / "assets" / "landscape.png"


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("tiny") / "bundle"
    subprocess.run([sys.executable, str(CHECKS), "convert-tiny", str(out)], check=True, capture_output=True)
    return out


def test_tiny_bundle_end_to_end(tiny_bundle):
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    assert m["model"] == "vit_tiny_test" and m["parity"]["ok"]
    assert {(f["role"], f["format"], f["precision"]) for f in m["files"]} >= {
        ("encoder", "mnn", "fp32"), ("decoder", "mnn", "fp16"), ("encoder", "onnx", "fp32")}
    # Same decoder FLOPs as vit_t (~3.6 GFLOP), an encoder an order of magnitude cheaper.
    # the default folded decoder graph: 2.0 GFLOP a prompt (3.7 in the reference graph)
    assert 1.7e9 < m["flops"]["decoder_per_prompt"] < 2.3e9 and m["flops"]["encoder"] < 10e9
    from edgesam.runtime import SamPredictor

    p = SamPredictor(tiny_bundle, precision="fp16")
    p.set_image_file(IMG)
    assert p.get_image_embedding().shape == (1, 256, 64, 64)
    masks, scores, low = p.predict(point_coords=np.array([[300, 200]]), point_labels=np.array([1]))
    assert masks.shape == (3, 427, 640) and scores.shape == (3,) and low.shape == (3, 256, 256)


def test_tiny_model_is_not_offered_by_the_cli(tmp_path):
    line = one_line_error(run_cli("convert", "--model", "vit_tiny_test", "--random-init", "0", "--out", tmp_path / "x"))
    assert "vit_tiny_test" in line and not (tmp_path / "x").exists()
    from edgesam.errors import InputError
    from edgesam.specs import get_spec

    with pytest.raises(InputError) as e:
        get_spec("vit_zz")
    assert "vit_tiny_test" not in str(e.value)  # hidden from the list of choices


def test_lane_checks_on_x86_pass_fp32_and_refuse_fake_fp16(tiny_bundle, tmp_path):
    """On x86, "segment" must agree with itself, and "fp16" must fail: MNN's "low" is fp32 here,
    and the check refuses fp32-sized differences rather than pass without fp16 arithmetic."""
    x86, arm = tmp_path / "x86", tmp_path / "arm"

    def run(*args):
        return subprocess.run([sys.executable, str(CHECKS), *map(str, args)], capture_output=True, text=True)

    assert run("reference", tiny_bundle, IMG, x86).returncode == 0
    seg = run("segment", tiny_bundle, IMG, x86, arm)
    assert seg.returncode == 0, seg.stderr[-2000:]
    r = json.loads((arm / "segment.json").read_text())
    assert r["ok"] and r["low_res_logits"]["agreement"] == 1.0
    f16 = run("fp16", tiny_bundle, x86, arm)
    r = json.loads((arm / "fp16.json").read_text())
    assert f16.returncode == 1 and any("fp16 arithmetic did not run" in f for f in r["failures"]), r
    assert run("platform", arm).returncode == 1  # x86: not aarch64, no fp16
    rep = run("report", arm, "--seconds", "1")
    assert rep.returncode == 1 and "ARM lane: FAILED" in rep.stdout and "notorch" in rep.stdout
