"""`edgesam demo` on its built-in default: the README's first command, end to end."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, run_cli


def test_demo_default_converts_checks_and_segments(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "demo"
    p = run_cli("demo", "--out", out)
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["parity_ok"] is True and report["untrained"] is False
    assert (out / "bundle" / "manifest.json").is_file()
    samples = {x.name for x in (REPO / "assets").glob("*.png")}
    assert {Path(seg["image"]).name for seg in report["segments"]} == samples and len(samples) >= 3
    for seg in report["segments"]:
        assert seg["areas"] and min(seg["areas"]) > 0  # the trained model finds something at each click
        assert len(seg["written"]) == 2  # mask and overlay
        for f in seg["written"]:
            assert Path(f).stat().st_size > 1000 and Path(f).parent == out
            assert f in p.stdout  # the output names the files it wrote
    assert "synthetic shapes" in p.stdout + p.stderr  # says what the default model is (and is not)
