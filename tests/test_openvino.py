"""The OpenVINO backend: IR round trip on vit_t against ONNX fp32, parity, bench sweep, clean refusals."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, one_line_error, run_cli, scene

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def ov_bundle(vit_t_bundle, tmp_path_factory):
    """The session vit_t bundle plus OpenVINO IR fp32/fp16, written by the converter's own function
    and recorded as ``convert --format ...,openvino`` records them (no second torch export)."""
    from edgesam.bundle import file_record, write_manifest
    from edgesam.convert.openvino import onnx_to_openvino

    out = tmp_path_factory.mktemp("ov") / "vit_t_ov"
    shutil.copytree(vit_t_bundle, out)
    m = json.loads((out / "manifest.json").read_text())
    for role in ("encoder", "decoder"):
        onnx_rec = next(f for f in m["files"] if f["role"] == role and f["format"] == "onnx")
        for prec in ("fp32", "fp16"):
            info = onnx_to_openvino(out / f"{role}.onnx", out / f"{role}.{prec}.xml", prec)
            m["files"].append(file_record(out, info["xml"], role=role, format="openvino", precision=prec,
                                          inputs=onnx_rec["inputs"], outputs=onnx_rec["outputs"], weights=info["bin"]))
            m["files"].append(file_record(out, info["bin"], role=role, format="openvino_weights", precision=prec))
    write_manifest(out, m)
    return out


def _prompts(h: int, w: int, prev: np.ndarray) -> dict:
    """Every prompt kind predict takes, as keyword arguments."""
    return {
        "point": dict(point_coords=np.array([[w * 0.3, h * 0.4]]), point_labels=np.array([1])),
        "points_pos_neg": dict(point_coords=np.array([[w * 0.5, h * 0.5], [w * 0.8, h * 0.2]]),
                               point_labels=np.array([1, 0])),
        "box": dict(box=np.array([w * 0.1, h * 0.2, w * 0.6, h * 0.9])),
        "box_point": dict(point_coords=np.array([[w * 0.4, h * 0.5]]), point_labels=np.array([1]),
                          box=np.array([w * 0.2, h * 0.1, w * 0.7, h * 0.8])),
        "point_mask_input": dict(point_coords=np.array([[w * 0.3, h * 0.4]]), point_labels=np.array([1]),
                                 mask_input=prev),
        "single_mask": dict(point_coords=np.array([[w * 0.6, h * 0.6]]), point_labels=np.array([1]),
                            multimask_output=False),
    }


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_openvino_predictor_matches_onnx_every_prompt_kind(ov_bundle, precision):
    from edgesam.runtime import SamPredictor
    from edgesam.measure.parity import TOLERANCES, compare, logits_iou

    img = scene(480, 640, seed=4)
    ref, got = SamPredictor(ov_bundle, backend="ort"), SamPredictor(ov_bundle, backend="openvino", precision=precision)
    assert got.encoder.inference_precision == "f32"  # pinned: this CPU's plugin default would be bf16
    ref.set_image(img)
    got.set_image(img)
    c = compare("encoder", "image_embeddings", ref.features, got.features, precision, "openvino", "onnx")
    assert c.ok, c.failures
    _, scores, logits = ref.predict(np.array([[200, 150]]), np.array([1]))
    prev = logits[np.argmax(scores)][None]  # the official loop: best low-res logits back in as mask_input
    for kind, kw in _prompts(480, 640, prev).items():
        m_r, s_r, l_r = ref.predict(**kw)
        m_g, s_g, l_g = got.predict(**kw)
        assert m_g.shape == m_r.shape and m_g.dtype == bool and s_g.dtype == np.float32, kind
        for cell in (compare("decoder", "low_res_logits", l_r, l_g, precision, "openvino", "onnx", "logits"),
                     compare("decoder", "scores", s_r, s_g, precision, "openvino", "onnx", "scores")):
            assert cell.ok, (kind, cell.output, cell.failures)
        assert logits_iou(m_r.astype(np.float32), m_g.astype(np.float32)) >= TOLERANCES[precision].mask_iou, kind
    # A batch of boxes in one decoder call
    boxes = np.array([[0, 0, 320, 240], [200, 100, 640, 480], [10, 20, 300, 200]])
    r = ref.predict_batch(boxes=boxes, multimask_output=True)
    g = got.predict_batch(boxes=boxes, multimask_output=True)
    assert g[0].shape == r[0].shape == (3, 3, 480, 640)
    assert compare("decoder", "batch", r[2], g[2], precision, "openvino", "onnx", "logits").ok


def test_parity_matrix_includes_openvino(ov_bundle, tmp_path):
    """OpenVINO at f32 and at the plugin's low precision (bf16 on CPUs with AVX512-BF16 or AMX), each
    held to its arithmetic's row."""
    from edgesam.runtime.backends import openvino_low_arithmetic

    p = run_cli("parity", ov_bundle, "--runtime-precision", "high,low", "--images", REPO / "assets" / "landscape.png",
                "--json", tmp_path / "p.json")
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads((tmp_path / "p.json").read_text())
    ov = [c for c in r["cells"] if c["candidate"].startswith("openvino")]
    assert {c["candidate"] for c in ov} == {"openvino fp32", "openvino fp16", "openvino fp32/low",
                                            "openvino fp16/low"} and len(ov) == 16
    assert all(c["ok"] for c in ov) and r["skipped"] == []
    assert {c["precision"] for c in ov if c["candidate"] == "openvino fp32/low"} == {openvino_low_arithmetic()}
    assert all(c["cosine"] > 0.99999 for c in ov if c["candidate"] == "openvino fp32")
    assert "openvino fp16" in p.stdout


def test_bench_sweeps_mnn_ort_openvino(ov_bundle, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    p = run_cli("bench", ov_bundle, "--backend", "mnn,ort,openvino", "--precision", "fp32", "--runs", "1",
                "--warmup", "0", "--batch", "2", "--json", tmp_path / "b.json")
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads((tmp_path / "b.json").read_text())
    jsonschema.validate(r, json.loads((REPO / "edgesam" / "schemas" / "bench.schema.json").read_text()))
    assert [x["key"] for x in r["results"]] == ["mnn fp32/high t2", "ort fp32/- t2", "openvino fp32/high t2"]
    assert set(r["backend_versions"]) == {"mnn", "ort", "openvino"}
    assert all(x["inference_precision"] == "f32" for x in r["results"] if x["backend"] == "openvino")
    assert "openvino fp32/high t2" in p.stdout


def test_openvino_absent_is_one_line(ov_bundle, tmp_path):
    """Without the package, `segment --backend openvino` says how to install it (exit 2)."""
    code = ("import sys; sys.modules['openvino'] = None; from edgesam.cli import main; "
            f"sys.exit(main(['segment', r'{ov_bundle}', r'{REPO / 'assets/portrait.png'}', '--point', '10,10', "
            "'--backend', 'openvino']))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    line = one_line_error(p)
    assert "pip install 'edgesam[openvino]'" in line


def test_openvino_precision_missing_is_bundle_error(ov_bundle):
    line = one_line_error(run_cli("segment", ov_bundle, REPO / "assets/portrait.png", "--point", "10,10",
                                  "--backend", "openvino", "--precision", "int8"))
    assert "no openvino encoder at precision int8" in line and "fp32, fp16" in line


def test_convert_format_usage_errors(tmp_path):
    for fmt, match in (("mnn", "includes onnx"), ("onnx,tflite", "tflite")):
        line = one_line_error(run_cli("convert", "--model", "vit_t", "--random-init", "0", "--out", tmp_path / "x",
                                      "--format", fmt))
        assert match in line
    line = one_line_error(run_cli("convert", "--model", "vit_t", "--random-init", "0", "--out", tmp_path / "x",
                                  "--format", "onnx,openvino", "--precision", "int8"))
    assert "fp32 or fp16" in line
    assert not (tmp_path / "x").exists()


def test_automatic_mask_generator_on_openvino(ov_bundle):
    """SamAutomaticMaskGenerator runs unchanged on the openvino backend and agrees with ONNX Runtime."""
    amg = pytest.importorskip("edgesam.runtime.amg")
    from edgesam.runtime import SamPredictor

    img = scene(240, 320, seed=2)
    recs = {}
    for backend in ("ort", "openvino"):
        g = amg.SamAutomaticMaskGenerator(SamPredictor(ov_bundle, backend=backend), points_per_side=4,
                                          pred_iou_thresh=-10.0, stability_score_thresh=0.0)
        recs[backend] = g.generate(img)
    ref, got = recs["ort"], recs["openvino"]
    assert ref and abs(len(got) - len(ref)) <= max(1, len(ref) // 10)  # NMS near-ties may flip one
    assert all(r["segmentation"].shape == (240, 320) for r in got)
    matched = 0
    for r in ref:  # each reference mask has a near-identical openvino mask with a near-equal score
        ious = [np.count_nonzero(r["segmentation"] & g["segmentation"])
                / max(1, np.count_nonzero(r["segmentation"] | g["segmentation"])) for g in got]
        best = int(np.argmax(ious))
        matched += ious[best] > 0.98 and abs(r["predicted_iou"] - got[best]["predicted_iou"]) < 5e-3
    assert matched >= 0.9 * len(ref)
