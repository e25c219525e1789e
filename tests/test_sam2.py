"""SAM 2.1 end to end: convert (the gate), the runtime's SAM2ImagePredictor and SAM2AutomaticMaskGenerator
against the official ``sam2`` classes on the same seeded random weights, the pieces SAM 2 adds
(square preprocessing, the stability-based single-mask rule, hole and sprinkle filling), the CLI on
a SAM 2 bundle, and bad SAM 2 inputs.

``sam2.1_hiera_t`` runs on every backend and precision; ``sam2_tiny_test`` (a 5-block Hiera with
SAM 2.1's decoder) covers the quicker checks. The runtime runs in fresh interpreters without torch
(sam2_worker.py); the official classes run here.
"""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import one_line_error, run_cli, scene
from edgesam.measure.parity import OFFICIAL_MAX_FLIP_RATE, SAM2_OFFICIAL_FP32_MASK_IOU, TOLERANCES
from edgesam.runtime.maskstats import mask_iou
from sam2_worker import SIZES, prompts

pytest.importorskip("torch")
pytest.importorskip("sam2")

import torch  # noqa: E402

WORKER = Path(__file__).with_name("sam2_worker.py")
CONFIGS = [("mnn", "fp32"), ("ort", "fp32"), ("openvino", "fp32"), ("mnn", "fp16"), ("mnn", "int8")]


def _iou(a, b):
    return mask_iou(np.asarray(a, bool), np.asarray(b, bool))


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


@pytest.fixture(scope="session")
def sam2_t_model():
    from edgesam.convert.sam2_family import random_model

    return random_model("sam2.1_hiera_t", 0)


@pytest.fixture(scope="session")
def sam2_t_bundle(tmp_path_factory) -> Path:
    """``edgesam convert --model sam2.1_hiera_t --random-init 0`` with every precision, ONNX, MNN and
    OpenVINO, through the CLI (the gate must pass for it to exist); image graphs only (its video graphs
    are test_sam2_video.py's slow test: their gate tracks a clip through 4 memory-attention layers)."""
    out = tmp_path_factory.mktemp("bundles") / "sam2_t"
    proc = run_cli("convert", "--model", "sam2.1_hiera_t", "--random-init", "0", "--out", out,
                   "--format", "onnx,mnn,openvino", "--no-video", timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    from edgesam.convert.pipeline import ConvertOptions, convert

    out = tmp_path_factory.mktemp("bundles") / "sam2_tiny"
    # with ONNX Runtime's SAM 2 files too (--ort-sam2: gated against the official predictor); the
    # runtime does not open them, so the other tests see a plain bundle
    convert(ConvertOptions(model="sam2_tiny_test", out=out, random_init=0, precisions=("fp32",), ort_sam2=True,
                           video=False),
            log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def tiny_model():
    from edgesam.convert.sam2_family import random_model

    return random_model("sam2_tiny_test", 0)


# --- the bundle -----------------------------------------------------------------------------

def test_bundle_follows_the_sam2_contract(sam2_t_bundle):
    """Tensor names and order as samexporter's SAM 2 classes read them (ONNX Runtime's scripts: --ort-sam2)."""
    import onnx

    m = json.loads((sam2_t_bundle / "manifest.json").read_text())
    assert m["family"] == "sam2" and m["untrained"] and m["parity"]["ok"]
    assert m["preprocess"]["resize"] == "square" and m["decoder"]["single_mask"] == "stability"
    cells = m["parity"]["cells"]
    assert {c["candidate"] for c in cells} >= {"onnx fp32", "mnn fp32", "mnn fp16", "mnn int8", "openvino fp32",
                                               "openvino fp32 low", "openvino fp16"}
    assert {c["output"] for c in cells if c["stage"] == "encoder"} == {"high_res_feats_0", "high_res_feats_1",
                                                                       "image_embed"}
    enc = onnx.load(str(sam2_t_bundle / "encoder.onnx"), load_external_data=False)
    dec = onnx.load(str(sam2_t_bundle / "decoder.onnx"), load_external_data=False)
    dims = {o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in enc.graph.output}
    assert [i.name for i in enc.graph.input] == ["image"]
    assert dims == {"high_res_feats_0": [1, 32, 256, 256], "high_res_feats_1": [1, 64, 128, 128],
                    "image_embed": [1, 256, 64, 64]}
    assert list(dims) == ["high_res_feats_0", "high_res_feats_1", "image_embed"]
    assert [i.name for i in dec.graph.input] == ["image_embed", "high_res_feats_0", "high_res_feats_1",
                                                 "point_coords", "point_labels", "mask_input", "has_mask_input"]
    assert [o.name for o in dec.graph.output] == ["masks", "iou_predictions"]
    assert {f["precision"] for f in m["files"] if f["format"] == "mnn"} == {"fp32", "fp16", "int8"}


# --- the predictor against the official one -------------------------------------------------

@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    for name, (h, w) in SIZES.items():
        np.save(d / f"{name}.npy", scene(h, w, seed=len(name)))
    return d


@pytest.fixture(scope="module")
def official(sam2_t_model, images):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    p = SAM2ImagePredictor(sam2_t_model)
    ref = {}
    for name, (h, w) in SIZES.items():
        _quiet(p.set_image, np.load(images / f"{name}.npy"))
        ref[f"{name}/image_embed"] = p.get_image_embedding().numpy()
        for pname, kw in prompts(h, w, name).items():
            m, s, low = _quiet(p.predict, **kw)
            m2 = _quiet(p.predict, **kw, mask_input=low[np.argmax(s)][None])[0] if low.ndim == 3 else None
            ref[f"{name}/{pname}"] = (m, s, low, m2)
        ref[f"{name}/logits"] = _quiet(p.predict, **prompts(h, w)["point"], return_logits=True)[0][:, ::7, ::7]
    return ref


@pytest.fixture(scope="module", params=CONFIGS, ids=[f"{b}-{p}" for b, p in CONFIGS])
def runtime(request, sam2_t_bundle, images, tmp_path_factory):
    backend, precision = request.param
    out = tmp_path_factory.mktemp("worker") / "out.npz"
    proc = subprocess.run([sys.executable, str(WORKER), str(sam2_t_bundle), backend, precision, str(images),
                           str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return precision, np.load(out)


def test_runtime_ran_without_torch(runtime):
    assert runtime[1]["heavy_modules"].tolist() == [""]


@pytest.mark.parametrize("name", list(SIZES))
def test_matches_official_sam2_predictor(official, runtime, name):
    """Bar (parity.py): mask IoU >= SAM2_OFFICIAL_FP32_MASK_IOU on every prompt at fp32, the precision's
    mask-IoU tolerance otherwise (or fewer than OFFICIAL_MAX_FLIP_RATE of the pixels differ); scores
    within the precision's tolerance; shapes and dtypes exactly."""
    precision, res = runtime
    tol = TOLERANCES[precision]
    bar = SAM2_OFFICIAL_FP32_MASK_IOU if precision == "fp32" else tol.mask_iou
    h, w = SIZES[name]
    e_ref, e = official[f"{name}/image_embed"], res[f"{name}/image_embed"]
    cos = float(np.dot(e_ref.ravel(), e.ravel()) / np.linalg.norm(e_ref) / np.linalg.norm(e))
    assert cos >= tol.cosine, cos
    report = []
    for pname in prompts(h, w, name):
        m_ref, s_ref, l_ref, m2_ref = official[f"{name}/{pname}"]
        key = f"{name}/{pname}"
        shape = tuple(res[key + "/shape"])
        m = np.unpackbits(res[key + "/masks"], count=int(np.prod(shape))).reshape(shape).astype(bool)
        s, low = res[key + "/scores"], res[key + "/low"]
        assert m.shape == m_ref.shape and s.shape == s_ref.shape and low.shape == l_ref.shape, pname
        assert res[key + "/dtypes"].tolist() == ["float32", "float32", "float32"]
        assert np.abs(low).max() <= 32.0  # clamped as the official predictor clamps them
        pairs = list(zip(m.reshape(-1, h, w), m_ref.reshape(-1, h, w) > 0.5))
        iou = min(_iou(a, b) for a, b in pairs)
        flips = max(float((a ^ b).mean()) for a, b in pairs)
        report.append((pname, round(iou, 4), round(flips, 5), float(np.abs(s - s_ref).max())))
        assert iou >= bar or flips < OFFICIAL_MAX_FLIP_RATE, report
        assert float(np.abs(s - s_ref).max()) <= tol.score_abs, report
        if m2_ref is not None:
            m2 = np.unpackbits(res[key + "/masks_refined"], count=m2_ref.size).reshape(m2_ref.shape).astype(bool)
            pairs = list(zip(m2, m2_ref > 0.5))
            iou2, flips2 = min(_iou(a, b) for a, b in pairs), max(float((a ^ b).mean()) for a, b in pairs)
            assert iou2 >= bar or flips2 < OFFICIAL_MAX_FLIP_RATE, (pname, "refined", iou2, flips2)
    corr = np.corrcoef(res[f"{name}/logits_sample"].ravel(), official[f"{name}/logits"].ravel())[0, 1]
    assert corr > (0.999 if precision == "fp32" else 0.99)


# --- the pieces SAM 2 adds ------------------------------------------------------------------

@pytest.mark.parametrize("hw", [(683, 1024), (1500, 400), (37, 300), (400, 2400), (3000, 4000), (1024, 1024)])
def test_square_preprocessing_matches_sam2_transforms(hw):
    """MNN.cv's square resize against SAM2Transforms (antialiased bilinear on 0-1 floats, ImageNet
    mean/std). Measured (normalised units; one grey level is about 0.017): mean abs error 0.004
    (upscales: the uint8 rounding) to 0.016 (12 MP), bias under 0.003."""
    from sam2.utils.transforms import SAM2Transforms

    from edgesam.manifest import parse_sections, sam2_sections
    from edgesam.runtime.preprocess import preprocess

    spec = parse_sections(sam2_sections(), "test")[0]
    img = scene(*hw, seed=3)
    want = _quiet(SAM2Transforms(1024, 0.0), img)[None].numpy()
    got, size = preprocess(img, spec)
    assert got.shape == (1, 3, 1024, 1024) and size == (1024, 1024)
    err = np.abs(got - want)
    assert err.mean() < 0.02 and abs(float((got - want).mean())) < 0.005, (err.mean(), (got - want).mean())


def test_stability_rule_matches_official_decoder(tiny_model):
    """select_tokens on logits where token 0 is stable for some prompts and not for others, against
    MaskDecoder._dynamic_multimask_via_stability on the same arrays."""
    from edgesam.manifest import parse_sections, sam2_sections
    from edgesam.runtime.predictor import select_tokens

    spec = parse_sections(sam2_sections(), "test")[2]
    rng = np.random.default_rng(0)
    low = rng.normal(0, 3, (6, 4, 256, 256)).astype(np.float32)
    low[:3, 0] = np.where(low[:3, 0] > 0, 5.0, -5.0)  # nothing within +-0.05 of 0: stable
    low[5, 0] = -1.0  # nothing above -delta: stability 1 by definition
    scores = rng.uniform(0, 1, (6, 4)).astype(np.float32)
    got_low, got_s = select_tokens(low, scores, False, spec)
    want_low, want_s = tiny_model.sam_mask_decoder._dynamic_multimask_via_stability(torch.from_numpy(low),
                                                                                     torch.from_numpy(scores))
    np.testing.assert_array_equal(got_low, want_low.numpy())
    np.testing.assert_array_equal(got_s, want_s.numpy())
    assert (got_low[:3] == low[:3, :1]).all() and not (got_low[3:5] == low[3:5, :1]).all()
    multi_low, multi_s = select_tokens(low, scores, True, spec)
    assert multi_low.shape == (6, 3, 256, 256) and (multi_s == scores[:, 1:]).all()


def test_hole_and_sprinkle_filling_matches_opencv():
    """SAM 2's clean-up rule (8-connected components of at most N pixels, border ones included),
    checked against OpenCV's connected components: the official code needs a CUDA extension for it."""
    import cv2

    from edgesam.runtime.postprocess import fill_holes_and_sprinkles

    rng = np.random.default_rng(1)
    low = np.where(rng.random((2, 1, 64, 64)) < 0.55, 3.0, -3.0).astype(np.float32)
    got = fill_holes_and_sprinkles(low, 0.0, 6, 4)
    want = low.copy()
    for m in want.reshape(-1, 64, 64):
        for fg, value, area in ((False, 10.0, 6), (True, -10.0, 4)):
            sel = (m > 0) if fg else (m <= 0)
            n, labels, stats, _ = cv2.connectedComponentsWithStats(sel.astype(np.uint8), connectivity=8)
            small = np.zeros(n, bool)
            small[1:] = stats[1:, cv2.CC_STAT_AREA] <= area
            m[small[labels]] = value
    np.testing.assert_array_equal(got, want)
    assert (got != low).any()
    assert fill_holes_and_sprinkles(low, 0.0, 0, 0) is low


def test_tiny_bundle_runs_through_sam_predictor_too(tiny_bundle):
    """SamPredictor(bundle) serves a SAM 2 bundle: the same masks as SAM2ImagePredictor (bool there)."""
    from edgesam.runtime import SAM2ImagePredictor, SamPredictor

    img = scene(300, 500, seed=2)
    a, b = SamPredictor(tiny_bundle), SAM2ImagePredictor(tiny_bundle)
    a.set_image(img)
    b.set_image(img)
    kw = dict(point_coords=np.array([[100.0, 120.0]]), point_labels=np.array([1]))
    ma, sa, la = a.predict(**kw)
    mb, sb, lb = b.predict(**kw)
    assert ma.dtype == bool and mb.dtype == np.float32
    np.testing.assert_array_equal(ma, mb > 0.5)
    np.testing.assert_array_equal(sa, sb)
    np.testing.assert_array_equal(la, lb)


def test_automatic_mask_generator_matches_official(tiny_model, tiny_bundle):
    """SAM2AutomaticMaskGenerator with the official keywords against the official generator: the same
    records (keys, count, boxes, scores) with mask IoU >= 0.9, with and without use_m2m."""
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator as Official

    from edgesam.runtime import SAM2AutomaticMaskGenerator

    img = scene(240, 320, seed=4)
    # Seeded random weights make unstable masks (stability 0 at the default offset), so the filters
    # are off: what is compared is every candidate's mask, score and the NMS that follows.
    for kw in (dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0),
               dict(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0, use_m2m=True,
                    points_per_batch=5)):
        want = _quiet(Official(tiny_model, **kw).generate, img)
        got = SAM2AutomaticMaskGenerator(str(tiny_bundle), **kw).generate(img)
        assert want, "the official generator kept nothing: the test proves nothing"
        assert len(got) == len(want), (len(got), len(want))
        assert set(got[0]) == set(want[0])
        want = sorted(want, key=lambda r: r["predicted_iou"])
        got = sorted(got, key=lambda r: r["predicted_iou"])
        for g, w in zip(got, want):
            assert abs(g["predicted_iou"] - w["predicted_iou"]) < 5e-3
            assert _iou(g["segmentation"], w["segmentation"]) >= 0.9
            assert g["segmentation"].dtype == bool and g["segmentation"].shape == img.shape[:2]
    defaults = SAM2AutomaticMaskGenerator(str(tiny_bundle))
    assert (defaults.pred_iou_thresh, defaults.use_m2m, defaults.multimask_output) == (0.8, False, True)


def test_sam2_predictor_refuses_a_sam_bundle(vit_t_random_fp32):
    from edgesam.errors import BundleError
    from edgesam.runtime import SAM2ImagePredictor

    bundle, proc = vit_t_random_fp32
    assert proc.returncode == 0, proc.stderr[-2000:]
    with pytest.raises(BundleError, match="SAM 2 bundles"):
        SAM2ImagePredictor(bundle)


# --- the CLI on a SAM 2 bundle, and bad SAM 2 inputs -----------------------------------------

def test_cli_segment_everything_info_on_sam2(tiny_bundle, tmp_path):
    import cv2

    img = scene(200, 300, seed=5)
    path = tmp_path / "in.png"
    cv2.imwrite(str(path), img[:, :, ::-1])
    proc = run_cli("segment", tiny_bundle, path, "--point", "100,80", "--npz", tmp_path / "o.npz")
    assert proc.returncode == 0, proc.stderr
    z = np.load(tmp_path / "o.npz")
    assert z["masks"].shape == (1, 200, 300) and z["low_res_logits"].shape == (1, 256, 256)
    proc = run_cli("everything", tiny_bundle, path, "--points-per-side", "4", "--pred-iou-thresh", "0",
                   "--stability-score-thresh", "0", "--out", tmp_path / "m.json")
    assert proc.returncode == 0, proc.stderr
    records = json.loads((tmp_path / "m.json").read_text())
    assert isinstance(records, list) and records, records  # with both filters off, the NMS survivors
    assert all({"segmentation", "area", "bbox", "predicted_iou", "stability_score"} <= set(r) for r in records)
    assert all(r["segmentation"]["size"] == [200, 300] for r in records)
    proc = run_cli("info", tiny_bundle)
    assert proc.returncode == 0 and "sam2" in proc.stdout, proc.stdout + proc.stderr


def test_everything_request_defaults_to_the_family_threshold(tiny_bundle, vit_t_random_fp32):
    """A Python-API EverythingRequest (what edgesam demo builds) left at its defaults gets the official
    pred_iou_thresh of the bundle's family, as the CLI does: 0.8 for SAM 2, 0.88 for SAM."""
    from edgesam.bundle import load_bundle
    from edgesam.cli.everything import EverythingRequest
    from edgesam.runtime.amg import bundle_options

    for bundle, want in ((tiny_bundle, 0.8), (vit_t_random_fp32[0], 0.88)):
        req = EverythingRequest(bundle=str(bundle), image="unused.png")
        assert bundle_options(load_bundle(bundle, verify=False), req.options).pred_iou_thresh == want


def test_the_manifest_decides_thresholds(tiny_bundle, tmp_path):
    """A keyword left out means the bundle's value: SAM2ImagePredictor's mask_threshold is the
    manifest's decoder.mask_threshold, the generator's pred_iou_thresh its "amg" section's; a
    keyword given keeps the official meaning."""
    import shutil

    from edgesam.bundle import load_bundle
    from edgesam.runtime import SAM2ImagePredictor
    from edgesam.runtime.amg import AmgOptions, bundle_options

    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    m = json.loads((b / "manifest.json").read_text())
    assert m["amg"] == {"pred_iou_thresh": 0.8, "mask_threshold": 0.0, "predictor_fills_holes": True}
    m["decoder"]["mask_threshold"] = 0.7
    m["amg"]["pred_iou_thresh"] = 0.55
    (b / "manifest.json").write_text(json.dumps(m))
    assert SAM2ImagePredictor(b).mask_threshold == 0.7
    assert SAM2ImagePredictor(b, mask_threshold=0.0).mask_threshold == 0.0
    bundle = load_bundle(b, verify=False)
    assert bundle_options(bundle, AmgOptions(pred_iou_thresh=None)).pred_iou_thresh == 0.55
    assert bundle_options(bundle, AmgOptions(pred_iou_thresh=0.9)).pred_iou_thresh == 0.9
    del m["amg"]  # a bundle written before the key: its family's official generator
    (b / "manifest.json").write_text(json.dumps(m))
    assert bundle_options(load_bundle(b, verify=False), AmgOptions(pred_iou_thresh=None)).pred_iou_thresh == 0.8


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Official-format checkpoints ({"model": state_dict}) of seeded random models, saved here."""
    from edgesam.convert.sam_models import random_model as sam1_random
    from edgesam.convert.sam2_family import random_model

    d = tmp_path_factory.mktemp("ckpt")
    torch.save({"model": random_model("sam2_hiera_t", 1).state_dict()}, d / "sam2_hiera_tiny.pt")
    torch.save(sam1_random("vit_t", 1).state_dict(), d / "mobile_sam.pt")
    data = (d / "sam2_hiera_tiny.pt").read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 2])
    return d


@pytest.mark.parametrize("ckpt, needle", [("mobile_sam.pt", "looks like vit_t"),
                                           ("sam2_hiera_tiny.pt", "looks like sam2_hiera_t"),
                                           ("truncated.pt", "corrupt or truncated")])
def test_bad_sam2_checkpoints_are_one_line(checkpoints, tmp_path, ckpt, needle):
    line = one_line_error(run_cli("convert", "--model", "sam2.1_hiera_t", "--checkpoint", checkpoints / ckpt,
                                  "--out", tmp_path / "b"))
    assert needle in line, line
    assert not (tmp_path / "b").exists()


def test_official_checkpoint_loads(checkpoints):
    """A SAM 2.0 official-format checkpoint loads strictly, weights_only, into the same tensors."""
    from edgesam.convert.sam2_family import Sam2Family, random_model

    model = Sam2Family().build("sam2_hiera_t", checkpoint=checkpoints / "sam2_hiera_tiny.pt")
    want = random_model("sam2_hiera_t", 1).state_dict()
    got = model.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


def test_sam2_refuses_full_decoder_and_tensorrt(tmp_path):
    for extra in (["--decoder", "full"], ["--format", "onnx,tensorrt"]):
        line = one_line_error(run_cli("convert", "--model", "sam2.1_hiera_t", "--random-init", "0",
                                      "--out", tmp_path / "b", *extra))
        assert "SAM 2" in line, line
    line = one_line_error(run_cli("convert", "--model", "vit_t", "--random-init", "0", "--out", tmp_path / "b",
                                  "--ort-sam2"))
    assert "--ort-sam2 is for SAM 2" in line and not (tmp_path / "b").exists(), line


def test_onnx_runtime_sam2_predictor_runs_the_bundle(tiny_bundle, tiny_model):
    """ONNX Runtime's own ``SAM2ImageOnnxPredictor`` (shipped in the onnxruntime wheel, unchanged; on
    the CPU) loads encoder.onnx and the two ort_image_decoder files and, called as the official
    predictor is, returns the official ``SAM2ImagePredictor``'s masks, scores and low-res logits and
    edgesam's own masks, at three aspect ratios, for a point (multimask on and off: the stability
    rule), a box, a batch of boxes and a mask-input refinement."""
    import onnxruntime.transformers.models.sam2 as ort_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor as Official

    from edgesam.runtime import SAM2ImagePredictor

    sys.path.insert(0, ort_sam2.__path__[0])  # its modules import each other by top-level name
    try:
        from sam2_image_onnx_predictor import SAM2ImageOnnxPredictor
    finally:
        sys.path.remove(ort_sam2.__path__[0])
    from edgesam.convert.sam2_ort import ORT_DECODER_INPUTS, ORT_DECODER_OUTPUTS, ORT_ENCODER_OUTPUTS
    from edgesam.onnxinfo import read_onnx_summary

    b = tiny_bundle
    for name in ("ort_image_decoder.onnx", "ort_image_decoder_multi.onnx"):  # names, order and dtypes
        info = read_onnx_summary(b / name)
        assert [i[0] for i in info.inputs] == list(ORT_DECODER_INPUTS)
        assert [o[0] for o in info.outputs] == list(ORT_DECODER_OUTPUTS)
        dtypes = {n: t for n, t, _ in info.inputs + info.outputs}
        assert (dtypes["point_labels"], dtypes["original_image_size"], dtypes["masks"]) == ("int32", "int32", "bool")
        assert info.metadata["contract"] == ("ort-sam2-decoder-multi" if "multi" in name else "ort-sam2-decoder")
    assert [o[0] for o in read_onnx_summary(b / "encoder.onnx").outputs][3:] == list(ORT_ENCODER_OUTPUTS)
    ort = SAM2ImageOnnxPredictor(tiny_model, str(b / "encoder.onnx"), str(b / "ort_image_decoder.onnx"),
                                 str(b / "ort_image_decoder_multi.onnx"), provider="CPUExecutionProvider",
                                 device="cpu")
    official, own = Official(tiny_model), SAM2ImagePredictor(b, backend="ort")
    checked = 0
    for h, w in ((427, 640), (600, 400), (200, 1200)):
        img = scene(h, w, seed=w)
        _quiet(ort.set_image, img)
        _quiet(official.set_image, img)
        own.set_image(img)
        box = np.array([0.2 * w, 0.3 * h, 0.7 * w, 0.8 * h])
        point = dict(point_coords=np.array([[0.4 * w, 0.5 * h]]), point_labels=np.array([1]))
        calls = [dict(point, multimask_output=True), dict(point, multimask_output=False),
                 dict(box=box, multimask_output=False), dict(box=np.stack([box, box * 0.6]), multimask_output=False)]
        first = _quiet(official.predict, **calls[0])
        calls.append(dict(point, mask_input=first[2][np.argmax(first[1])][None], multimask_output=False))
        for kw in calls:
            got, want, mine = _quiet(ort.predict, **kw), _quiet(official.predict, **kw), own.predict(**kw)
            assert got[0].shape == want[0].shape == mine[0].shape, (h, w, list(kw))
            assert _iou(got[0] > 0, want[0] > 0) >= 0.98 and _iou(got[0] > 0, mine[0] > 0) >= 0.98, (h, w, list(kw))
            np.testing.assert_allclose(got[1], want[1], atol=TOLERANCES["fp32"].score_abs, rtol=0)
            np.testing.assert_allclose(got[2], want[2], atol=1e-3, rtol=0)
            checked += 1
    assert checked == 15


def test_onnx_runtime_sam2_gate_refuses_wrong_files(tiny_bundle, tiny_model, tmp_path):
    """The gate of the --ort-sam2 files can fail: a decoder exported from other weights (seed 1), or
    the multimask file where the single-mask one belongs, is out of tolerance."""
    import shutil

    from edgesam.convert import sam2_ort
    from edgesam.convert.sam2_family import random_model

    def failing(bundle):
        return [c for c in sam2_ort.ort_cells(tiny_model, bundle / "encoder.onnx", bundle, None) if not c.ok]

    assert not failing(tiny_bundle)
    other = tmp_path / "other"
    shutil.copytree(tiny_bundle, other)
    sam2_ort.export_ort_decoder(random_model("sam2_tiny_test", 1), other / "ort_image_decoder.onnx", 17, False)
    bad = failing(other)
    assert bad and all("multi" not in c.candidate for c in bad), [c.output for c in bad]
    shutil.copy(tiny_bundle / "ort_image_decoder_multi.onnx", other / "ort_image_decoder.onnx")
    assert any("shape" in f for c in failing(other) for f in c.failures)


def test_demo_model_other_than_vit_t_needs_weights(tmp_path):
    line = one_line_error(run_cli("demo", "--model", "sam2.1_hiera_t", "--out", tmp_path / "d"))
    assert "--checkpoint" in line and "--untrained" in line, line


@pytest.mark.slow
@pytest.mark.parametrize("model", ["sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l", "sam2_hiera_t"])
def test_other_sizes_match_official(model, tmp_path):
    """The other sizes (and SAM 2.0): convert (fp32, the gate), then MNN fp32 against the official
    predictor on a landscape and a panorama, every prompt kind."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor as Official

    from edgesam.convert.pipeline import ConvertOptions, convert
    from edgesam.convert.sam2_family import random_model
    from edgesam.runtime import SAM2ImagePredictor

    out = tmp_path / "b"
    convert(ConvertOptions(model=model, out=out, random_init=0, precisions=("fp32",)), log=lambda m: None)
    ref, mine = Official(random_model(model, 0)), SAM2ImagePredictor(out)
    for h, w in ((400, 600), (150, 1000)):
        img = scene(h, w, seed=1)
        _quiet(ref.set_image, img)
        mine.set_image(img)
        for pname, kw in prompts(h, w).items():
            want, got = _quiet(ref.predict, **kw)[0], mine.predict(**kw)[0]
            pairs = list(zip(got.reshape(-1, h, w) > 0.5, want.reshape(-1, h, w) > 0.5))
            iou = min(_iou(a, b) for a, b in pairs)
            flips = max(float((a ^ b).mean()) for a, b in pairs)
            assert iou >= 0.98 or flips < OFFICIAL_MAX_FLIP_RATE, (model, h, w, pname, iou, flips)


def test_image_batch_matches_official(tiny_model, tiny_bundle):
    """set_image_batch + predict_batch (one prompt set per image), called as the official class is."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor as Official

    from edgesam.runtime import SAM2ImagePredictor

    images = [scene(200, 300, seed=6), scene(350, 120, seed=7)]
    pts = [np.array([[100.0, 50.0]]), np.array([[60.0, 200.0], [20.0, 30.0]])]
    labels = [np.array([1]), np.array([1, 0])]
    boxes = [None, np.array([10, 20, 100, 300])]
    ref, mine = Official(tiny_model), SAM2ImagePredictor(tiny_bundle)
    _quiet(ref.set_image_batch, images)
    mine.set_image_batch(images)
    want = _quiet(ref.predict_batch, pts, labels, box_batch=boxes, multimask_output=True)
    got = mine.predict_batch(pts, labels, box_batch=boxes, multimask_output=True)
    assert len(got) == 3 and all(len(x) == 2 for x in got)
    for i, img in enumerate(images):
        assert got[0][i].shape == want[0][i].shape == (3, *img.shape[:2]) and got[0][i].dtype == np.float32
        assert np.abs(got[1][i] - want[1][i]).max() < 5e-3
        iou = min(_iou(a > 0.5, b > 0.5) for a, b in zip(got[0][i], want[0][i]))
        flips = max(float(((a > 0.5) ^ (b > 0.5)).mean()) for a, b in zip(got[0][i], want[0][i]))
        assert iou >= 0.98 or flips < OFFICIAL_MAX_FLIP_RATE, (i, iou, flips)


def test_generator_cleans_masks_as_the_official_one_builds_its_predictor(tiny_bundle):
    """min_mask_region_area also sets the predictor's max_hole_area / max_sprinkle_area (the official
    generator builds its SAM2ImagePredictor so), and the low-res logits are cleaned before filtering."""
    from edgesam.runtime import SAM2AutomaticMaskGenerator

    img = scene(240, 320, seed=4)
    kw = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    plain = SAM2AutomaticMaskGenerator(str(tiny_bundle), **kw)
    cleaned = SAM2AutomaticMaskGenerator(str(tiny_bundle), min_mask_region_area=300, **kw)
    assert cleaned.predictor.max_hole_area == cleaned.predictor.max_sprinkle_area == 300.0
    plain.predictor.set_image(img)
    low, _ = plain.predictor.decode(np.array([[[100.0, 80.0]]]), np.ones((1, 1)))
    assert not np.array_equal(cleaned._clean(low), low)  # random logits are speckled: something is filled
    assert np.array_equal(plain._clean(low), low)
    records = cleaned.generate(img)
    assert records and all(r["segmentation"].shape == img.shape[:2] for r in records)


def test_samexporter_sam2_classes_run_the_bundle(sam2_t_bundle):
    """samexporter 0.5's SAM 2 classes, unchanged, load the bundle's encoder.onnx and decoder.onnx (they
    take tensors by position) and run; given the same encoder outputs and points, its decoder's
    outputs equal edgesam's (every multimask token's low-res logits and scores), and its final mask
    (the best-scoring token, resized by OpenCV) is edgesam's upscale of that token."""
    from samexporter.sam2_onnx import SegmentAnything2ONNX

    from edgesam.runtime import SAM2ImagePredictor

    sx = SegmentAnything2ONNX(str(sam2_t_bundle / "encoder.onnx"), str(sam2_t_bundle / "decoder.onnx"),
                              providers=["CPUExecutionProvider"])
    p = SAM2ImagePredictor(sam2_t_bundle, backend="ort")
    for h, w in ((427, 640), (600, 400), (200, 1200)):
        img = scene(h, w, seed=w)
        own = sx.encode(np.ascontiguousarray(img[:, :, ::-1]))  # its own preprocessing (BGR in, no antialias)
        assert [own[k].shape for k in ("high_res_feats_0", "high_res_feats_1", "image_embedding")] == \
            [(1, 32, 256, 256), (1, 64, 128, 128), (1, 256, 64, 64)]
        p.set_image(img)
        enc = p._encoded
        pts = np.array([[0.4 * w, 0.55 * h], [0.7 * w, 0.3 * h]], np.float32)
        labels = np.array([1, 0], np.float32)
        sx.decoder.set_image_size((h, w))
        raw = sx.decoder.infer(sx.decoder.prepare_inputs(enc["image_embed"], enc["high_res_feats_0"],
                                                         enc["high_res_feats_1"], pts, labels))
        low, scores = p.decode(pts, labels, multimask_output=True)
        np.testing.assert_allclose(raw[0][:, 1:], low, atol=1e-3, rtol=0)
        np.testing.assert_allclose(raw[1][:, 1:], scores, atol=1e-5, rtol=0)
        best, _ = sx.decoder.process_output(raw)
        k = int(np.argmax(raw[1][0]))  # samexporter keeps the best of all four tokens
        want = p.upscale(raw[0][:, k:k + 1])[0, 0]
        assert best.shape == (1, 1, h, w) and want.any()
        assert _iou(best[0, 0] > 0, want) >= 0.98, (h, w, k)
