"""`edgesam segment`: outputs, and every bad input as one line with exit code 2."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import REPO, one_line_error, run_cli

IMG = str(REPO / "assets" / "landscape.png")


def test_segment_writes_outputs(vit_t_bundle, tmp_path):
    p = run_cli("segment", vit_t_bundle, IMG, "--point", "200,350", "--point", "500,100,0", "--multimask",
                "--out", tmp_path / "m.png", "--overlay", tmp_path / "o.png", "--npz", tmp_path / "r.npz",
                "--json", tmp_path / "r.json", "--precision", "fp16")
    assert p.returncode == 0, p.stderr
    z = np.load(tmp_path / "r.npz")
    assert z["masks"].shape == (3, 427, 640) and z["scores"].shape == (3,)
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["untrained"] is False and len(r["scores"]) == 3
    assert "untrained" not in p.stdout.lower()  # the demo model is trained (random ones say so)
    for f in ("m.png", "o.png"):
        assert (tmp_path / f).stat().st_size > 1000


@pytest.mark.parametrize("extra,expected", [
    ((), {"encoder": "high", "decoder": "high"}),
    (("--runtime-precision", "low"), {"encoder": "low", "decoder": "low"}),
    (("--runtime-precision", "low", "--decoder-runtime-precision", "high"), {"encoder": "low", "decoder": "high"}),
])
def test_decoder_runtime_precision_follows_unless_given(vit_t_bundle, tmp_path, extra, expected):
    """The decoder runs at the encoder's arithmetic precision unless told otherwise; the JSON says
    what ran."""
    p = run_cli("segment", vit_t_bundle, IMG, "--point", "200,350", "--json", tmp_path / "r.json", *extra)
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "r.json").read_text())["runtime_precision"] == expected


def test_segment_many_boxes_one_call(vit_t_bundle, tmp_path):
    p = run_cli("segment", vit_t_bundle, IMG, "--box", "10,10,200,200", "--box", "300,200,600,420",
                "--npz", tmp_path / "r.npz", "--backend", "ort")
    assert p.returncode == 0, p.stderr
    assert np.load(tmp_path / "r.npz")["masks"].shape == (2, 427, 640)


@pytest.mark.parametrize("case,match", [
    ("missing", "no such file"), ("empty", "0 bytes"), ("text", "not a JPEG, PNG or BMP"),
    ("truncated", "truncated PNG"), ("dir", "is a directory"), ("nan", "NaN or inf"),
    ("inverted", "x1 >= x0"), ("maskshape", "1x256x256"), ("precision", "no mnn encoder at precision fp64"),
    ("noprompt", "empty prompt"), ("badpoint", "expected 2 or 3 numbers"), ("outdir", "does not exist"),
])
def test_bad_input_one_line_exit_2(vit_t_bundle, tmp_path, case, match):
    img, extra = IMG, ["--point", "10,10"]
    if case == "missing":
        img = str(tmp_path / "nope.jpg")
    elif case == "empty":
        img = tmp_path / "e.png"
        img.write_bytes(b"")
    elif case == "text":
        img = tmp_path / "t.jpg"
        img.write_text("hello, I am not a picture")
    elif case == "truncated":
        img = tmp_path / "t.png"
        img.write_bytes(open(IMG, "rb").read()[:5000])
    elif case == "dir":
        img = tmp_path
    elif case == "nan":
        extra = ["--point", "nan,3"]
    elif case == "inverted":
        extra = ["--box", "100,10,50,60"]
    elif case == "maskshape":
        np.save(tmp_path / "m.npy", np.zeros((1, 64, 64), np.float32))
        extra += ["--mask-input", str(tmp_path / "m.npy")]
    elif case == "precision":
        extra += ["--precision", "fp64"]
    elif case == "noprompt":
        extra = []
    elif case == "badpoint":
        extra = ["--point", "1,2,3,4"]
    elif case == "outdir":
        extra += ["--out", str(tmp_path / "no" / "such" / "m.png")]
    line = one_line_error(run_cli("segment", vit_t_bundle, img, *extra))
    assert match in line, line
