"""The device side never imports torch, torchvision, timm or onnx: proven in fresh interpreters."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO

HEAVY = ("torch", "torchvision", "timm", "onnx")


def test_import_runtime_pulls_no_heavy_modules():
    code = ("import sys, edgesam.runtime, edgesam.runtime.predictor, edgesam.cli.segment, "
            "edgesam.runtime.postprocess, edgesam.runtime.imageio, edgesam.measure.paritymatrix, "
            "edgesam.measure.bench, edgesam.runtime.amg, edgesam.cli.everything, edgesam.runtime.rle, "
            "edgesam.runtime.regions, edgesam.runtime.maskstats, edgesam.runtime.sam2_predictor, edgesam.cli, "
            "edgesam.dataset.commands, edgesam.onnxinfo, edgesam.cli.info, edgesam.serve, edgesam.cli.track, "
            "edgesam.runtime.sam2_video_predictor, edgesam.runtime.video_memory; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "[]"


def test_segment_cli_imports_no_heavy_modules(vit_t_bundle, tmp_path):
    code = ("import sys; from edgesam.cli import main; "
            f"rc = main(['segment', r'{vit_t_bundle}', r'{REPO / 'assets/landscape.png'}', '--point', '100,300', "
            f"'--out', r'{tmp_path / 'm.png'}']); "
            f"print(rc, [m for m in {HEAVY!r} if m in sys.modules])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "0 []"
    assert (tmp_path / "m.png").stat().st_size > 0


@pytest.mark.skipif(os.environ.get("EDGESAM_SKIP_VENV") == "1", reason="EDGESAM_SKIP_VENV=1")
def test_base_install_venv_runs_segment(vit_t_bundle, base_venv, tmp_path):
    """A plain install of this checkout (runtime only: MNN, numpy, threadpoolctl) in a new venv,
    then `edgesam segment`; the dependency wheels come from a cache (network on the first run only)."""
    py = base_venv
    env_dir = py.parent.parent
    out = subprocess.run([str(py), "-c", "import importlib.util as u; print([m for m in ('torch','onnx','onnxruntime') "
                          "if u.find_spec(m)])"], capture_output=True, text=True)
    assert out.stdout.strip() == "[]"
    p = subprocess.run([str(env_dir / "bin" / "edgesam"), "segment", str(vit_t_bundle),
                        str(REPO / "assets/portrait.png"), "--point", "200,400", "--box", "50,50,300,500",
                        "--npz", str(tmp_path / "o.npz"), "--overlay", str(tmp_path / "o.png")],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    import numpy as np

    z = np.load(tmp_path / "o.npz")
    assert z["masks"].shape == (1, 600, 400) and z["masks"].dtype == bool
    assert z["scores"].shape == (1,) and z["low_res_logits"].shape == (1, 256, 256)
    # parity and bench also run on a board-like install: no torch, no onnxruntime
    p = subprocess.run([str(env_dir / "bin" / "edgesam"), "parity", str(vit_t_bundle), "--runtime-precision", "high",
                        "--images", str(REPO / "assets/portrait.png")], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "reference: mnn fp32/high (onnxruntime not installed)" in p.stdout and "mnn int8/high" in p.stdout
    p = subprocess.run([str(env_dir / "bin" / "edgesam"), "bench", str(vit_t_bundle), "--runs", "1", "--warmup", "0",
                        "--batch", "2", "--json", str(tmp_path / "b.json")], capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    import json

    assert json.loads((tmp_path / "b.json").read_text())["results"][0]["stages"]["encoder"]["p50_ms"] > 0
    # the dataset form runs here too (local engine); Ray is an extra: asked for, one line on how to get it
    p = subprocess.run([str(env_dir / "bin" / "edgesam"), "everything", str(vit_t_bundle), str(REPO / "assets"),
                        "--out", str(tmp_path / "ds"), "--points-per-side", "4", "--quiet"],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0 and "3 done now" in p.stdout, p.stderr[-3000:]
    p = subprocess.run([str(env_dir / "bin" / "edgesam"), "everything", str(vit_t_bundle), str(REPO / "assets"),
                        "--out", str(tmp_path / "dr"), "--engine", "ray"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and p.stderr.strip() == ("edgesam: error: --engine ray needs Ray Data: pip install "
                                                      "'edgesam[ray]' (or use --engine local --workers N)"), p.stderr
    assert not (tmp_path / "dr").exists()


def test_version_answers_without_numpy():
    """`edgesam --version` is answered before the parser (whose defaults import numpy) is built."""
    code = "import sys; from edgesam.cli import main; rc = main(['--version']); print(rc, 'numpy' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    from edgesam import __version__

    assert p.stdout.splitlines() == [f"edgesam {__version__}", "0 False"]
