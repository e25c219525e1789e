"""The TensorRT-ready export, verified as far as a host without a GPU can, and the clean refusal."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest

from conftest import REPO, one_line_error, run_cli

onnx = pytest.importorskip("onnx")
pytest.importorskip("torch")


def _small_profile():
    from edgesam.convert.tensorrt import TensorRTProfile

    # The default profile's max (64 prompts x 16 points) costs ~30 s of torch + ORT on two cores;
    # convert runs it, the slow test below checks that. The same graph paths run at 6 x 5 here.
    return TensorRTProfile(prompts=(1, 1, 6), points=(1, 2, 5))


@pytest.fixture(scope="module")
def prepared(vit_t_bundle, vit_t_model):
    """``tensorrt.prepare`` on the session bundle's ONNX files: (manifest section, parity cells)."""
    from edgesam.convert import gate, tensorrt
    from edgesam.synthetic.gate_inputs import gate_image

    return tensorrt.prepare(vit_t_model, vit_t_bundle / "encoder.onnx", vit_t_bundle / "decoder.onnx",
                            gate.gate_encoder_input(gate_image()), _small_profile(), 2, lambda m: None)


def test_profile_shapes_run_in_ort_and_match_torch(prepared):
    section, cells = prepared
    labels = {c.candidate for c in cells}
    assert labels == {"trt min B1 N1 M1", "trt opt B1 N2 M1", "trt max B6 N5 M6"}
    assert len(cells) == 6 and all(c.ok for c in cells), [c.failures for c in cells]
    assert all(c.cosine > 0.99999 for c in cells)
    v = section["verified"]
    assert v["onnx_checker"] and v["ort_profile_shapes_vs_torch"] and "not_verified" in v
    assert section["profile"]["shapes"]["max"]["point_coords"] == [6, 5, 2]


def test_trtexec_lines_and_fp32_layers(vit_t_bundle, prepared):
    from edgesam.convert.tensorrt import subgraphs

    section, _ = prepared
    for role in ("encoder", "decoder"):
        model = onnx.load(str(vit_t_bundle / f"{role}.onnx"))
        nodes = [n for g in (model.graph, *subgraphs(model.graph)) for n in g.node]  # with If branches
        names = {n.name for n in nodes}
        keep = section["fp32_layers"][role]
        assert set(keep) <= names  # every name given to trtexec is a real node of the ONNX it reads
        ln = {n.name for n in nodes if n.op_type == "LayerNormalization"}
        pows = {n.name for n in nodes if n.op_type == "Pow"}
        assert pows or role == "encoder"  # the decoder's mask head squares, inside its If
        assert ln and ln <= set(keep) and pows <= set(keep)  # LayerNorm and written-out LayerNorm2d
        fp16 = shlex.split(section["commands"][role]["fp16"])
        fp32 = shlex.split(section["commands"][role]["fp32"])
        assert fp16[0] == fp32[0] == "trtexec" and f"--onnx={role}.onnx" in fp16 and "--fp16" in fp16
        assert "--fp16" not in fp32 and "--precisionConstraints=obey" in fp16
        spec = next(a for a in fp16 if a.startswith("--layerPrecisions="))
        assert {s.rsplit(":", 1)[0] for s in spec.split("=", 1)[1].split(",")} == set(keep)
        assert all(s.endswith(":fp32") for s in spec.split("=", 1)[1].split(","))
        assert any(a.startswith("--layerOutputTypes=") for a in fp16)
    dec = shlex.split(section["commands"]["decoder"]["fp16"])
    assert "--minShapes=point_coords:1x1x2,point_labels:1x1,mask_input:1x1x256x256,has_mask_input:1" in dec
    assert "--maxShapes=point_coords:6x5x2,point_labels:6x5,mask_input:6x1x256x256,has_mask_input:6" in dec
    assert not any("Shapes" in a for a in shlex.split(section["commands"]["encoder"]["fp16"]))  # static encoder


def test_decoder_dims_named_for_tensorrt(vit_t_bundle):
    """TensorRT 10 treats equal dim names as equal: mask_input keeps its own M (not onnxslim's B)."""
    m = onnx.load(str(vit_t_bundle / "decoder.onnx"), load_external_data=False)
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in m.graph.input}
    assert dims["mask_input"][0] == "M" and dims["has_mask_input"] == ["M"]
    assert dims["point_coords"] == ["B", "N", 2] and dims["point_labels"] == ["B", "N"]


def test_fp16_range_scan_flags_large_outputs():
    from onnx import TensorProto, helper

    import numpy as np

    from edgesam.convert import tensorrt

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    g = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["sq"], name="/blk/square"),
                           helper.make_node("Sqrt", ["sq"], ["y"], name="/blk/root")], "g", [x], [y])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    peaks = tensorrt.activation_peaks(model, {"x": np.array([1, -3, 300, 2], np.float32)}, 1)
    assert peaks == {"/blk/square": 90000.0, "/blk/root": 300.0}
    keep = tensorrt.fp32_layers(model, peaks)
    assert list(keep) == ["/blk/square"] and "90000" in keep["/blk/square"]


@pytest.mark.parametrize("argv", [["bench", "{b}", "--backend", "tensorrt"],
                                  ["bench", "{b}", "--backend", "mnn,tensorrt", "--runs", "1"]])
def test_tensorrt_backend_refused_cleanly(vit_t_bundle, argv):
    pytest.importorskip("MNN")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt imports here: the refusal is for hosts without it")
    except ImportError:
        pass
    p = run_cli(*[a.format(b=vit_t_bundle) for a in argv])
    line = one_line_error(p)
    assert "backend 'tensorrt' needs NVIDIA TensorRT" in line and "trtexec" in line
    assert "[bench] run" not in p.stderr  # refused before any model loaded


def test_tensorrt_refused_in_python_api(vit_t_bundle):
    """SamPredictor(backend="tensorrt") raises the same BackendError, also when the import is blocked."""
    code = ("import sys; sys.modules['tensorrt'] = None\n"
            "from edgesam.errors import BackendError\nfrom edgesam.runtime import SamPredictor\n"
            f"try:\n    SamPredictor(r'{vit_t_bundle}', backend='tensorrt')\n"
            "except BackendError as e:\n    print('refused:', e)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.startswith("refused: backend 'tensorrt' needs NVIDIA TensorRT")


@pytest.mark.slow
def test_convert_full_variant_with_openvino_and_tensorrt(tmp_path):
    """End to end through the CLI: a full-decoder bundle with OpenVINO IR and the default TensorRT profile;
    no OpenVINO telemetry module is imported on the way."""
    pytest.importorskip("openvino")
    out = tmp_path / "b"
    code = ("import sys; from edgesam.cli import main; "
            f"rc = main(['convert', '--model', 'vit_t', '--random-init', '5', '--out', r'{out}', '--decoder', 'full', "
            "'--format', 'onnx,mnn,openvino,tensorrt', '--precision', 'fp32,fp16']); "
            "print(rc, sorted(m for m in sys.modules if 'telemetry' in m or m.startswith('openvino.tools')))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip().splitlines()[-1] == "0 []"
    m = json.loads((out / "manifest.json").read_text())
    kinds = {(f["role"], f["format"], f["precision"]) for f in m["files"]}
    assert ("decoder", "openvino", "fp16") in kinds and ("decoder", "onnx_lowres", "fp32") in kinds
    cells = m["parity"]["cells"]
    assert {c["candidate"] for c in cells if c["stage"] == "full_post"} >= {"openvino fp32", "openvino fp16"}
    prof = [c for c in cells if c["stage"] == "profile"]
    assert {c["candidate"] for c in prof} == {"trt min B1 N1 M1", "trt opt B1 N2 M1", "trt max B64 N16 M64"}
    assert all(c["ok"] for c in cells)
    trt = m["tensorrt"]
    assert trt["files"]["decoder"] == "decoder.lowres.onnx"
    lowres = onnx.load(str(out / "decoder.lowres.onnx"))
    assert "orig_im_size" not in {i.name for i in lowres.graph.input}
    assert "--onnx=decoder.lowres.onnx" in trt["commands"]["decoder"]["fp16"]
    info = run_cli("info", out)
    assert info.returncode == 0 and "openvino_weights" in info.stdout
    seg = run_cli("segment", out, REPO / "assets/panorama.png", "--box", "100,50,900,250", "--backend", "openvino",
                  "--precision", "fp16", "--npz", tmp_path / "o.npz")
    assert seg.returncode == 0, seg.stderr[-2000:]
