"""The ONNX contracts other tools read (edgesam.manifest.CONTRACTS), checked by running those tools.

- The official ONNX example's flow (segment-anything's notebook, written out here: ResizeLongestSide
  for the coordinates, the padding point with label -1, float32 ``orig_im_size``, outputs unpacked by
  position) on a ``--decoder full`` bundle, against the official ``SamPredictor`` on the same weights.
- samexporter 0.5 (pinned, installed by ``make setup``; its runtime imports no torch) running the same
  bundle, against edgesam's own predictor.
- The provenance every ONNX file carries, read back by ``edgesam info FILE.onnx`` without ``onnx``.
- A version 2 full bundle (int32 ``orig_im_size``, the old output order) still runs.

The demo model's weights (trained) make the masks mean something; the images are the three samples:
landscape, a 2:3 portrait and a 6:1 panorama.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import DEMO_CHECKPOINT, REPO, one_line_error, run_cli
from edgesam.cli.demo import CLICKS
from edgesam.measure.parity import TOLERANCES
from edgesam.runtime.maskstats import mask_iou

pytest.importorskip("torch")
import torch  # noqa: E402

# samexporter is a test dependency (Makefile). A missing client is a failure, never a skip.
from samexporter.sam_onnx import SegmentAnythingONNX  # noqa: E402

IMAGES = sorted(CLICKS)  # landscape.png (640x427), panorama.png (1200x200, 6:1), portrait.png (400x600)


def _iou(a, b):
    return mask_iou(np.asarray(a, bool), np.asarray(b, bool))


def _image(name: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(REPO / "assets" / name).convert("RGB"))


def _prompts(name: str, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The demo's click on the sample's object, and a box around it (XYXY)."""
    h, w = img.shape[:2]
    fx, fy = CLICKS[name]
    pt = np.array([[w * fx, h * fy]])
    box = np.array([w * fx - 0.12 * w, h * fy - 0.15 * h, w * fx + 0.1 * w, h * fy + 0.14 * h])
    return pt, np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1])


def _example_setup(bundle: Path, official, name: str):
    """The official example's start: the image, its prompts, an ONNX Runtime session on the bundle's
    decoder.onnx and the official predictor's embedding."""
    import onnxruntime

    image = _image(name)
    pt, box = _prompts(name, image)
    session = onnxruntime.InferenceSession(str(bundle / "decoder.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        official.set_image(image)
        embedding = official.get_image_embedding().cpu().numpy()
    return image, pt, box, session, embedding


@pytest.fixture(scope="module")
def official():
    from mobile_sam import SamPredictor

    from edgesam.convert.sam_models import model_from_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SamPredictor(model_from_checkpoint("vit_t", DEMO_CHECKPOINT))


def test_full_decoder_has_the_official_signature(vit_t_full_bundle):
    """Names, dtypes, shapes and output order of segment-anything's SamOnnxModel; the manifest says
    which contract each file follows and is version 3."""
    import onnx

    bundle, m = vit_t_full_bundle
    g = onnx.load(str(bundle / "decoder.onnx")).graph
    f32 = onnx.TensorProto.FLOAT

    def sig(values):
        return [(v.name, v.type.tensor_type.elem_type,
                 [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values]

    assert sig(g.input) == [("image_embeddings", f32, [1, 256, 64, 64]), ("point_coords", f32, ["B", "N", 2]),
                            ("point_labels", f32, ["B", "N"]), ("mask_input", f32, ["M", 1, 256, 256]),
                            ("has_mask_input", f32, ["M"]), ("orig_im_size", f32, [2])]
    assert [(n, t) for n, t, _ in sig(g.output)] == [("masks", f32), ("iou_predictions", f32),
                                                     ("low_res_masks", f32)]
    assert m["version"] == 3
    assert (m["encoder"]["contract"], m["decoder"]["contract"]) == ("sam-encoder", "sam-onnx-model")


@pytest.mark.parametrize("name", IMAGES)
def test_official_onnx_example_flow_matches_official_predictor(vit_t_full_bundle, official, name):
    """segment-anything's ONNX example, step by step, on edgesam's full decoder.onnx: a point, a box
    with a background point, and a refinement step from the low-res logits, against the official
    predictor on the same weights and image (every aspect ratio: the official 1.0 export is exact only
    at its dummy image's)."""
    image, pt, box, ort_session, image_embedding = _example_setup(vit_t_full_bundle[0], official, name)

    def run(coords, labels, mask_input=None):
        onnx_coord = official.transform.apply_coords(coords[None], image.shape[:2]).astype(np.float32)
        ort_inputs = {
            "image_embeddings": image_embedding,
            "point_coords": onnx_coord,
            "point_labels": labels[None].astype(np.float32),
            "mask_input": np.zeros((1, 1, 256, 256), np.float32) if mask_input is None else mask_input,
            "has_mask_input": np.array([0.0 if mask_input is None else 1.0], np.float32),
            "orig_im_size": np.array(image.shape[:2], dtype=np.float32),
        }
        masks, scores, low_res_logits = ort_session.run(None, ort_inputs)  # by position, as the example
        return masks > official.model.mask_threshold, scores, low_res_logits

    def official_predict(**kw):
        with torch.no_grad():
            return official.predict(**kw, multimask_output=True), official.predict(**kw, multimask_output=False)

    tol = TOLERANCES["fp32"]
    # 1. a point, with the padding point (label -1) the example appends when there is no box
    masks, scores, low = run(np.concatenate([pt, [[0.0, 0.0]]]), np.array([1, -1]))
    assert masks.shape == (1, 4, *image.shape[:2])
    (multi, multi_s, multi_low), (single, single_s, _) = official_predict(point_coords=pt, point_labels=np.array([1]))
    for got, want in zip(masks[0], np.concatenate([single, multi])):
        assert _iou(got, want) >= tol.mask_iou, (name, "point", _iou(got, want))
    np.testing.assert_allclose(scores[0], np.concatenate([single_s, multi_s]), atol=tol.score_abs)
    # 2. a box and a background point: the corners take labels 2 and 3, and no padding point
    bg = np.array([[box[0] + 2, box[1] + 2]])
    masks, _, _ = run(np.concatenate([bg, box.reshape(2, 2)]), np.array([0, 2, 3]))
    (multi_b, _, _), (single_b, _, _) = official_predict(point_coords=bg, point_labels=np.array([0]), box=box)
    for got, want in zip(masks[0], np.concatenate([single_b, multi_b])):
        assert _iou(got, want) >= tol.mask_iou, (name, "box", _iou(got, want))
    # 3. refinement: the best multimask token's low-res logits fed back with a second point
    best = 1 + int(np.argmax(scores[0, 1:]))
    pts = np.concatenate([pt, pt + [[3.0, 2.0]]])
    masks, _, _ = run(np.concatenate([pts, [[0.0, 0.0]]]), np.array([1, 1, -1]), low[:, best:best + 1])
    (_, _, _), (single_r, _, _) = official_predict(point_coords=pts, point_labels=np.array([1, 1]),
                                                   mask_input=multi_low[best - 1][None])
    assert _iou(masks[0, 0], single_r[0]) >= tol.mask_iou, (name, "refine")


@pytest.fixture(scope="module")
def samexporter_model(vit_t_full_bundle):
    bundle, _ = vit_t_full_bundle
    return SegmentAnythingONNX(str(bundle / "encoder.onnx"), str(bundle / "decoder.onnx"),
                               providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", IMAGES)
def test_samexporter_runs_full_bundle(vit_t_full_bundle, samexporter_model, official, name):
    """samexporter's SegmentAnythingONNX, unchanged, on the bundle's encoder.onnx and decoder.onnx.

    A point: its 4 masks against edgesam's own predictor (MNN fp32, the default), IoU >= 0.98 each.
    A box: samexporter appends a padding point (label -1) to every prompt, boxes included, where the
    official predictor adds none to a box; that extra token changes the demo model's box masks (single-mask
    token IoU 0.41-0.52, multimask tokens 0.0-0.86, against the official box-only masks), and edgesam's predictor, like the official one,
    takes no label -1 from its caller. So its box masks are checked against edgesam's runtime given
    the same tokens (its MNN decoder on those feeds, then its upscale) and against the official
    predictor given them, IoU >= 0.98 each.
    """
    from edgesam.runtime import SamPredictor

    bundle, _ = vit_t_full_bundle
    image = _image(name)
    pt, box = _prompts(name, image)
    emb = samexporter_model.encode(np.ascontiguousarray(image[:, :, ::-1]))  # it takes BGR, as cv2.imread gives
    sx_point = samexporter_model.predict_masks(emb, [{"type": "point", "data": pt[0].tolist(), "label": 1}]) > 0
    sx_box = samexporter_model.predict_masks(emb, [{"type": "rectangle", "data": box.tolist()}]) > 0
    assert sx_point.shape == sx_box.shape == (1, 4, *image.shape[:2])

    p = SamPredictor(bundle)
    p.set_image(image)
    multi, _, _ = p.predict(pt, np.array([1]), multimask_output=True)
    single, _, _ = p.predict(pt, np.array([1]), multimask_output=False)
    ious = [_iou(a, b) for a, b in zip(sx_point[0], np.concatenate([single, multi]))]
    assert min(ious) >= 0.98, (name, "point", ious)
    d = p.decoder_spec
    tokens = p.transform.apply_coords(np.concatenate([box.reshape(2, 2), [[0.0, 0.0]]]), image.shape[:2])
    out = p.decoder.run({**p._encoded, d.inputs["point_coords"]: tokens[None].astype(np.float32),
                         d.inputs["point_labels"]: np.array([[2, 3, -1]], np.float32),
                         d.inputs["mask_input"]: np.zeros((1, 1, 256, 256), np.float32),
                         d.inputs["has_mask_input"]: np.zeros(1, np.float32)})
    own = p.upscale(out[d.outputs["low_res_logits"]])
    ious = [_iou(a, b) for a, b in zip(sx_box[0], own[0])]
    assert min(ious) >= 0.98, (name, "box, edgesam", ious)

    with torch.no_grad():
        official.set_image(image)
        kw = dict(point_coords=np.array([[0.0, 0.0]]), point_labels=np.array([-1]), box=box)
        multi, _, _ = official.predict(**kw, multimask_output=True)
        single, _, _ = official.predict(**kw, multimask_output=False)
    ious = [_iou(a, b) for a, b in zip(sx_box[0], np.concatenate([single, multi]))]
    assert min(ious) >= 0.98, (name, "box, official", ious)


def test_every_onnx_file_says_what_it_is(vit_t_full_bundle, tmp_path):
    """metadata_props on each ONNX file (model, role, contract, checkpoint sha256, edgesam version),
    printed by ``edgesam info FILE.onnx``, which reads them without the onnx package."""
    import onnx

    from edgesam import __version__
    from edgesam.bundle import sha256_file

    bundle, _ = vit_t_full_bundle
    want_sha = sha256_file(DEMO_CHECKPOINT)
    for role, contract in (("encoder", "sam-encoder"), ("decoder", "sam-onnx-model")):
        props = {p.key: p.value for p in onnx.load(str(bundle / f"{role}.onnx"), load_external_data=False)
                 .metadata_props}
        assert {k: props[k] for k in ("model", "role", "contract", "checkpoint_sha256", "edgesam_version")} == \
            {"model": "vit_t", "role": role, "contract": contract, "checkpoint_sha256": want_sha,
             "edgesam_version": __version__}
    proc = run_cli("info", bundle / "decoder.onnx", "--json", tmp_path / "i.json")
    assert proc.returncode == 0, proc.stderr
    assert "contract: sam-onnx-model" in proc.stdout and want_sha in proc.stdout
    assert "outputs: masks float32[B,4,H,W], iou_predictions float32[B,4], low_res_masks" in proc.stdout
    data = json.loads((tmp_path / "i.json").read_text())
    assert data["metadata"]["contract"] == "sam-onnx-model"
    assert [i["name"] for i in data["inputs"]][-1] == "orig_im_size" and data["inputs"][-1]["dtype"] == "float32"
    # no onnx, no torch, no MNN: a file found alone can be identified on the device
    code = ("import sys; from edgesam.cli.info import onnx_file_summary; "
            f"t, d = onnx_file_summary(r'{bundle / 'encoder.onnx'}'); "
            "print(d['metadata']['contract'], sorted(m for m in ('onnx', 'torch', 'MNN') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["sam-encoder", "[]"]


def test_info_refuses_what_is_not_onnx(vit_t_full_bundle, tmp_path):
    bundle, _ = vit_t_full_bundle
    cut = tmp_path / "cut.onnx"
    cut.write_bytes((bundle / "decoder.onnx").read_bytes()[:5000])
    assert "not an ONNX model" in one_line_error(run_cli("info", cut))
    png = tmp_path / "picture.onnx"
    shutil.copy(REPO / "assets" / "portrait.png", png)
    assert "not an ONNX model" in one_line_error(run_cli("info", png))
    assert "cannot read" in one_line_error(run_cli("info", tmp_path / "missing.onnx"))


def test_version_2_full_bundle_still_runs(vit_t_full_bundle, tmp_path):
    """Before manifest version 3, a full decoder took int32 orig_im_size and listed its outputs as
    iou_predictions, low_res_masks, masks. Such a bundle (rebuilt here from the v3 one) still loads, is
    fed int32, and gives the same masks on ONNX Runtime (which refuses a wrong dtype)."""
    import onnx

    from edgesam.bundle import sha256_file
    from edgesam.runtime import SamPredictor

    bundle, _ = vit_t_full_bundle
    old = tmp_path / "v2"
    shutil.copytree(bundle, old)
    model = onnx.load(str(old / "decoder.onnx"))
    size = next(i for i in model.graph.input if i.name == "orig_im_size")
    size.type.tensor_type.elem_type = onnx.TensorProto.INT32
    outs = {o.name: o for o in model.graph.output}
    order = [onnx.ValueInfoProto() for _ in range(3)]
    for o, name in zip(order, ("iou_predictions", "low_res_masks", "masks")):
        o.CopyFrom(outs[name])
    del model.graph.output[:]
    model.graph.output.extend(order)
    onnx.checker.check_model(model)
    onnx.save(model, str(old / "decoder.onnx"))
    m = json.loads((old / "manifest.json").read_text())
    m["version"] = 2
    for f in m["files"]:
        if f["path"] == "decoder.onnx":
            f["sha256"], f["bytes"] = sha256_file(old / "decoder.onnx"), (old / "decoder.onnx").stat().st_size
    (old / "manifest.json").write_text(json.dumps(m))

    image = _image("portrait.png")
    pt, _ = _prompts("portrait.png", image)
    got = []
    for b in (bundle, old):
        p = SamPredictor(b, backend="ort")
        assert p.decoder_spec.orig_im_size_dtype == ("float32" if b == bundle else "int32")
        p.set_image(image)
        got.append(p.predict(pt, np.array([1])))
    np.testing.assert_array_equal(got[0][0], got[1][0])
    np.testing.assert_array_equal(got[0][1], got[1][1])


def test_info_into_a_closed_pipe_is_quiet(vit_t_full_bundle):
    """`edgesam info B | head -1`: the reader leaves early; no traceback file, no error line."""
    bundle, _ = vit_t_full_bundle
    cmd = f"{sys.executable} -m edgesam.cli info '{bundle}' | head -c 10"
    for _ in range(3):  # the race (all written before head exits, or not) goes both ways; neither may complain
        proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=REPO)
        assert proc.stdout == f"bundle {bundle}"[:10] and proc.stderr == "", proc.stderr


@pytest.fixture(scope="module")
def single_mask_bundle(tmp_path_factory) -> tuple[Path, dict]:
    """``--decoder full --single-mask``: the official notebook's export (one mask per prompt)."""
    from edgesam.convert.pipeline import ConvertOptions, convert

    out = tmp_path_factory.mktemp("bundles") / "single"
    m = convert(ConvertOptions(model="vit_t", out=out, checkpoint=DEMO_CHECKPOINT, decoder="full", single_mask=True,
                               precisions=("fp32",)), log=lambda s: None)
    return out, m


@pytest.mark.parametrize("name", IMAGES)
def test_official_notebook_flow_on_single_mask_export(single_mask_bundle, official, name):
    """The notebook's code as it is, including its display step, which reshapes ``masks`` to one HxW
    image: a point (the best multimask token, as its 2 tokens select), a box with a point and a
    refinement with two points (token 0, from 3 tokens), against the official predictor."""
    image, pt, box, ort_session, image_embedding = _example_setup(single_mask_bundle[0], official, name)

    def notebook(onnx_coord, onnx_label, onnx_mask_input, onnx_has_mask_input):
        onnx_coord = official.transform.apply_coords(onnx_coord, image.shape[:2]).astype(np.float32)
        ort_inputs = {"image_embeddings": image_embedding, "point_coords": onnx_coord, "point_labels": onnx_label,
                      "mask_input": onnx_mask_input, "has_mask_input": onnx_has_mask_input,
                      "orig_im_size": np.array(image.shape[:2], dtype=np.float32)}
        masks, _, low_res_logits = ort_session.run(None, ort_inputs)
        masks = masks > official.model.mask_threshold
        h, w = masks.shape[-2:]
        return masks.reshape(h, w), low_res_logits  # show_mask's reshape: one mask, or it raises

    tol = TOLERANCES["fp32"]
    no_mask, no_has = np.zeros((1, 1, 256, 256), np.float32), np.zeros(1, np.float32)
    got, low = notebook(np.concatenate([pt, [[0.0, 0.0]]])[None], np.array([[1, -1]], np.float32), no_mask, no_has)
    with torch.no_grad():
        multi, scores, multi_low = official.predict(point_coords=pt, point_labels=np.array([1]))
    assert _iou(got, multi[np.argmax(scores)]) >= tol.mask_iou, (name, "point")
    np.testing.assert_allclose(low[0, 0], multi_low[np.argmax(scores)], atol=1e-3)

    bg = np.array([[box[0] + 2, box[1] + 2]])
    got_b, _ = notebook(np.concatenate([bg, box.reshape(2, 2)])[None], np.array([[0, 2, 3]], np.float32), no_mask,
                        no_has)
    with torch.no_grad():
        want_b = official.predict(point_coords=bg, point_labels=np.array([0]), box=box, multimask_output=False)[0][0]
    assert _iou(got_b, want_b) >= tol.mask_iou, (name, "box")

    pts = np.concatenate([pt, pt + [[3.0, 2.0]]])
    got_r, _ = notebook(np.concatenate([pts, [[0.0, 0.0]]])[None], np.array([[1, 1, -1]], np.float32), low,
                        np.ones(1, np.float32))
    with torch.no_grad():
        want_r = official.predict(point_coords=pts, point_labels=np.array([1, 1]), mask_input=low[0],
                                  multimask_output=False)[0][0]
    assert _iou(got_r, want_r) >= tol.mask_iou, (name, "refine")


def test_single_mask_bundle_runs_on_mnn_and_refuses_ort(single_mask_bundle, tmp_path):
    """The one-mask decoder.onnx is for other tools: the manifest marks it, its metadata names its
    contract; edgesam runs the bundle from its MNN files (4 tokens) and refuses ONNX Runtime in one
    line. The gate compared it with the official SamOnnxModel(return_single_mask=True)."""
    import onnx

    bundle, m = single_mask_bundle
    rec = {(f["format"], f["role"]): f for f in m["files"]}
    assert rec[("onnx", "decoder")]["single_mask"] == "SamOnnxModel"
    assert rec[("onnx", "decoder")]["outputs"]["masks"][1] == 1 and rec[("mnn", "decoder")]["outputs"]["masks"][1] == 4
    cells = [c for c in m["parity"]["cells"] if c["stage"] == "single_mask"]
    assert len(cells) == 24 and all(c["ok"] for c in cells) and {c["reference"] for c in cells} == {"SamOnnxModel"}
    props = {p.key: p.value for p in onnx.load(str(bundle / "decoder.onnx")).metadata_props}
    assert props["contract"] == "sam-onnx-model-single-mask"
    img = str(REPO / "assets" / "portrait.png")
    ok = run_cli("segment", bundle, img, "--point", "260,120", "--out", tmp_path / "m.png")
    assert ok.returncode == 0, ok.stderr
    line = one_line_error(run_cli("segment", bundle, img, "--point", "260,120", "--backend", "ort",
                                  "--out", tmp_path / "o.png"))
    assert "one mask per prompt" in line and not (tmp_path / "o.png").exists()
    for args, needle in ((["--single-mask"], "add --decoder full"),
                         (["--single-mask", "--decoder", "full", "--format", "onnx,tensorrt"], "TensorRT")):
        line = one_line_error(run_cli("convert", "--model", "vit_t", "--random-init", "0", "--out", tmp_path / "x",
                                      *args))
        assert needle in line and not (tmp_path / "x").exists()
