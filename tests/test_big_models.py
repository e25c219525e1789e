"""vit_b / vit_l / vit_h round trips: slow (minutes each, 8-16 GiB RAM). Run with `make test-slow`."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli

pytest.importorskip("torch")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["vit_b", "vit_l", "vit_h"])
def test_big_model_round_trip(tmp_path, model):
    out = tmp_path / model
    p = run_cli("convert", "--model", model, "--random-init", "0", "--out", out, "--precision", "fp32,fp16",
                timeout=5400)
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    assert m["parity"]["ok"] and m["model"] == model
    assert run_cli("info", out).returncode == 0
