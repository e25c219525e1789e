"""`edgesam parity` and `edgesam bench`: the matrix, a broken model caught, sane bench numbers."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import DEMO_CHECKPOINT, REPO, run_cli


def test_parity_passes_fp32_and_reports_fp16_int8(vit_t_bundle, tmp_path):
    p = run_cli("parity", vit_t_bundle, "--runtime-precision", "high", "--images", REPO / "assets" / "portrait.png",
                "--json", tmp_path / "p.json")
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads((tmp_path / "p.json").read_text())
    assert r["ok"] and r["reference"] == "onnx fp32"
    got = {(c["candidate"], c["stage"], c["output"]) for c in r["cells"]}
    for prec in ("fp32", "fp16", "int8"):
        for stage, out in (("encoder", "image_embeddings"), ("decoder", "low_res_masks"),
                           ("decoder", "iou_predictions"), ("end_to_end", "masks")):
            assert (f"mnn {prec}/high", stage, out) in got
    fp32 = [c for c in r["cells"] if c["candidate"] == "mnn fp32/high"]
    assert all(c["cosine"] > 0.9999 for c in fp32)
    assert [c["mask_iou"] for c in fp32 if c["stage"] == "end_to_end"][0] > 0.99
    assert "mnn int8/high" in p.stdout and "top-chg" in p.stdout


def test_parity_catches_transformer_fuse(vit_t_random_fp32, tmp_path):
    """An encoder converted with --transformerFuse must fail parity, exit 1. The fuse is wrong only
    for some weights: on the seeded random model it gives embedding cosine ~0.60, while on the
    trained demo model it happens to match (cosine 1.000000, measured), so this uses the random one."""
    from edgesam.bundle import file_record
    from edgesam.convert.mnn import _run_quiet

    src, made = vit_t_random_fp32
    assert made.returncode == 0, made.stderr[-2000:]
    b = tmp_path / "b"
    shutil.copytree(src, b)
    rc, log = _run_quiet(["mnnconvert", "-f", "ONNX", "--modelFile", str(b / "encoder.onnx"), "--MNNModel",
                          str(b / "encoder.fp32.mnn"), "--bizCode", "broken", "--keepInputFormat", "--transformerFuse"])
    assert "Converted Success" in log
    m = json.loads((b / "manifest.json").read_text())
    for i, f in enumerate(m["files"]):  # re-hash, as a buggy converter would have written it
        if f["path"] == "encoder.fp32.mnn":
            m["files"][i] = {**f, **file_record(b, f["path"])}
    (b / "manifest.json").write_text(json.dumps(m))
    p = run_cli("parity", b, "--runtime-precision", "high", "--images", REPO / "assets" / "portrait.png")
    assert p.returncode == 1, p.stderr[-2000:]
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("edgesam: error:") and "mnn fp32/high encoder image_embeddings: cosine" in last
    assert "decoder" not in last.split("|")[0]  # the first failure named is the encoder itself


@pytest.mark.slow  # 90 s; the default tier runs the bench CLI and its schema in test_openvino's sweep
def test_bench_stages_sane_and_schema(vit_t_bundle, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    p = run_cli("bench", vit_t_bundle, "--runs", "2", "--warmup", "1", "--batch", "4", "--backend", "mnn,ort",
                "--precision", "fp32,int8", "--threads", "1,2", "--json", tmp_path / "a.json")
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads((tmp_path / "a.json").read_text())
    schema = json.loads((REPO / "edgesam" / "schemas" / "bench.schema.json").read_text())
    jsonschema.validate(r, schema)
    keys = [x["key"] for x in r["results"]]
    # ort runs fp32 only: 2 mnn precisions x 2 threads + 1 ort x 2 threads
    assert keys == ["mnn fp32/high t1", "mnn fp32/high t2", "mnn int8/high t1", "mnn int8/high t2",
                    "ort fp32/- t1", "ort fp32/- t2"]
    for x in r["results"]:
        st = {k: v["p50_ms"] for k, v in x["stages"].items()}
        # Sanity only, with wide margins: stages are timed in separate runs on a shared machine,
        # so only orderings that hold by ~4x or more are checked (encoder ~15x a decoder call).
        assert all(0 < v < 60_000 for v in st.values())
        assert st["decoder_1"] < st["encoder"] and st["decoder_1"] < st["end_to_end"]
        assert st["decoder_batch"] > st["decoder_1"]  # 4 prompts cost more than 1
        assert 0 < x["fraction_of_matmul_peak"]["encoder"] < 1.5
    assert r["machine"]["cores"] >= 1 and "fp16" in r["machine"]["mnn_cpu_features"]
    assert "[bench] run" in p.stderr  # progress
    shutil.copy(tmp_path / "a.json", tmp_path / "b.json")
    c = run_cli("bench", "--compare", tmp_path / "a.json", tmp_path / "b.json")
    assert c.returncode == 0 and "mnn int8/high t2" in c.stdout and "ratio 1/0" in c.stdout


def test_parity_against_torch_reference(vit_t_bundle, tmp_path):
    pytest.importorskip("torch")
    p = run_cli("parity", vit_t_bundle, "--reference", "torch", "--checkpoint", DEMO_CHECKPOINT,
                "--runtime-precision", "high", "--images", REPO / "assets" / "panorama.png", "--json", tmp_path / "p.json")
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads((tmp_path / "p.json").read_text())
    assert r["reference"] == "torch"
    onnx_cells = [c for c in r["cells"] if c["candidate"] == "onnx fp32"]
    assert len(onnx_cells) == 4 and all(c["cosine"] > 0.99999 for c in onnx_cells)
