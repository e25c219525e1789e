"""The folded decoder graph (convert/sam_folded.py) computes the official decoder's function.

Reference: mobile_sam's own PromptEncoder + MaskDecoder.predict_masks (all four mask
tokens), on the trained demo checkpoint and on seeded random weights, for every prompt
kind the runtime sends; then the exported ONNX file on dynamic shapes in ONNX Runtime.
The observed error is float32 rounding: max abs ~1e-4 on logits of magnitude ~40 (the
official fp32 decoder itself is ~3e-5 from a float64 run), cosine 1 - 1e-11.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import chunk_sums

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.torch

LOGIT_ATOL = 1e-3
SCORE_ATOL = 1e-5
MIN_COSINE = 0.999999


def _official(sam, pts, labels, boxes, masks, emb):
    with torch.no_grad():
        pe = sam.prompt_encoder
        sparse, dense = pe(points=None if pts is None else (pts, labels), boxes=boxes, masks=masks)
        low, iou = sam.mask_decoder.predict_masks(emb, pe.get_dense_pe(), sparse, dense)
    return iou.numpy(), low.numpy()


def _feeds(emb, pts, labels, boxes, masks) -> dict[str, np.ndarray]:
    """The decoder inputs edgesam's runtime builds: points, then box corners (labels 2, 3), else a padding point."""
    b = (pts if pts is not None else boxes).shape[0]
    c, lab = [], []
    if pts is not None:
        c.append(pts.numpy())
        lab.append(labels.numpy())
    if boxes is not None:
        c.append(boxes.numpy().reshape(b, 2, 2))
        lab.append(np.tile(np.array([[2, 3]], np.float32), (b, 1)))
    else:
        c.append(np.zeros((b, 1, 2), np.float32))
        lab.append(-np.ones((b, 1), np.float32))
    m = masks.numpy() if masks is not None else np.zeros((1, 1, 256, 256), np.float32)
    has = np.full((m.shape[0],), float(masks is not None), np.float32)
    return {"image_embeddings": emb.numpy(), "point_coords": np.concatenate(c, 1).astype(np.float32),
            "point_labels": np.concatenate(lab, 1).astype(np.float32), "mask_input": m, "has_mask_input": has}


def _cases(seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    pts = lambda n, b=1: t(rng.uniform(30, 700, (b, n, 2)))  # noqa: E731
    lab = lambda n, b=1: t(rng.integers(0, 2, (b, n)))  # noqa: E731
    box = lambda b=1: t(np.sort(rng.uniform(30, 700, (b, 2, 2)), axis=1).reshape(b, 4))  # noqa: E731
    logits = lambda m: t(rng.normal(0, 8, (m, 1, 256, 256)))  # noqa: E731
    return {
        "one point": (pts(1), t([[1.0]]), None, None),
        "three points": (pts(3), lab(3), None, None),
        "box": (None, None, box(), None),
        "box and two points": (pts(2), lab(2), box(), None),
        "five boxes": (None, None, box(5), None),
        "point and mask_input": (pts(1), t([[1.0]]), None, logits(1)),
        "three boxes, three masks": (None, None, box(3), logits(3)),
        "twenty points (T > 16: folding no longer saves work, still exact)": (pts(20), lab(20), None, None),
    }


def _amg_batch(seed: int = 4):
    """64 single positive points in one call, as the automatic mask generator decodes them."""
    rng = np.random.default_rng(seed)
    return (torch.tensor(rng.uniform(30, 700, (64, 1, 2)), dtype=torch.float32), torch.ones(64, 1), None, None)


def _embedding(sam):
    from edgesam.convert.sam_export import EncoderWrapper
    from edgesam.convert.gate import gate_encoder_input
    from edgesam.synthetic.gate_inputs import gate_image

    with torch.no_grad():
        return EncoderWrapper(sam)(torch.from_numpy(gate_encoder_input(gate_image())))


def _check(got, want, what):
    for g, w, atol, name in ((got[0], want[0], SCORE_ATOL, "iou"), (got[1], want[1], LOGIT_ATOL, "logits")):
        assert g.shape == w.shape, (what, name, g.shape, w.shape)
        g64, w64 = g.astype(np.float64).ravel(), w.astype(np.float64).ravel()
        cos = g64 @ w64 / (np.linalg.norm(g64) * np.linalg.norm(w64))
        err = np.abs(g64 - w64).max()
        assert err <= atol and cos >= MIN_COSINE, f"{what} {name}: max abs {err:.2e}, cosine {cos:.9f}"


@pytest.fixture(scope="module", params=["demo checkpoint", pytest.param("random init", marks=pytest.mark.slow)])
def sam_and_embedding(request, vit_t_model):
    from edgesam.convert.sam_models import random_model

    sam = vit_t_model if request.param == "demo checkpoint" else random_model("vit_t", 0)
    torch.set_num_threads(2)
    return sam.eval(), _embedding(sam)


@pytest.mark.parametrize("mnn", [False, True], ids=["plain", "mnn-workarounds"])
def test_folded_wrapper_matches_official_decoder(sam_and_embedding, mnn):
    from edgesam.convert.sam_export import decoder_wrapper
    from edgesam.specs import DECODER_INPUTS

    sam, emb = sam_and_embedding
    folded = decoder_wrapper(sam, "folded", mnn=mnn)
    for what, case in _cases().items():
        f = _feeds(emb, *case)
        with torch.no_grad():
            got = [o.numpy() for o in folded(*(torch.from_numpy(f[k]) for k in DECODER_INPUTS))]
        _check(got, _official(sam, *case, emb), what)


@pytest.mark.parametrize("mnn", [False, True], ids=["plain", "mnn-workarounds"])
def test_folded_onnx_matches_official_decoder(sam_and_embedding, tmp_path, mnn):
    """Both exported graphs in ONNX Runtime, on single prompts and on batches (the plain graph
    broadcasts one image's keys over the prompt batch instead of expanding them)."""
    ort = pytest.importorskip("onnxruntime")
    from edgesam.convert.sam_export import export_decoder

    sam, emb = sam_and_embedding
    path = tmp_path / "decoder.onnx"
    export_decoder(sam, path, 17, "folded", mnn=mnn)
    import onnx

    graph = onnx.load(str(path)).graph
    # MNN's graph sums the three token->image products over the 4096 image keys in chunks (its ARM
    # fp16 MatMul accumulates in fp16) and expands the keys to the prompt batch; the plain one does neither.
    assert len(chunk_sums(graph)) == (3 if mnn else 0)
    # The plain graph skips the mask head behind an If when no prompt has a mask input; MNN's has no If.
    assert [n.op_type for n in graph.node].count("If") == (0 if mnn else 1)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for what, case in _cases(seed=2).items():
        iou, low = sess.run(["iou_predictions", "low_res_masks"], _feeds(emb, *case))
        _check((iou, low), _official(sam, *case, emb), f"onnx {what}")
    # One mask per prompt, some of them flagged absent (has_mask_input 0): each row is decoded as if alone.
    pts, lab, _, masks = _cases(seed=5)["point and mask_input"]
    rows = [(pts, lab, masks), (pts * 0.5, lab, None), (pts * 0.8, lab, masks * -1)]
    f = _feeds(emb, torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows]), None, None)
    f["mask_input"] = np.concatenate([(r[2] if r[2] is not None else torch.zeros_like(masks)).numpy() for r in rows])
    f["has_mask_input"] = np.array([1, 0, 1], np.float32)
    iou, low = sess.run(["iou_predictions", "low_res_masks"], f)
    for i, (p, lb, m) in enumerate(rows):
        want = _official(sam, p, lb, None, m, emb)
        _check((iou[i:i + 1], low[i:i + 1]), want, f"onnx mixed has_mask_input, row {i}")
    # Three prompts, three masks all flagged absent: the If's other branch, with M = B = 3.
    f["has_mask_input"] = np.zeros(3, np.float32)
    iou, low = sess.run(["iou_predictions", "low_res_masks"], f)
    for i, (p, lb, _) in enumerate(rows):
        _check((iou[i:i + 1], low[i:i + 1]), _official(sam, p, lb, None, None, emb), f"onnx has 0 x3, row {i}")


def test_folded_graph_does_less_work(vit_t_model):
    from edgesam.convert.sam_export import count_flops

    ref, folded = count_flops(vit_t_model, "reference"), count_flops(vit_t_model, "folded")
    assert folded["decoder_per_prompt"] < 0.6 * ref["decoder_per_prompt"]


def test_folded_mnn_matches_official_on_prompt_batches(vit_t_model, tmp_path):
    """MNN 3.6 computes batched MatMuls wrongly when it must broadcast one operand over a batch above 1;
    the folded graph expands those operands. Batches of 3 with one shared mask and with one mask each."""
    from edgesam.convert.sam_export import export_decoder
    from edgesam.convert.mnn import onnx_to_mnn
    from edgesam.runtime.backends import MNNBackend
    from edgesam.specs import DECODER_INPUTS, DECODER_OUTPUTS

    sam = vit_t_model.eval()
    emb = _embedding(sam)
    export_decoder(sam, tmp_path / "decoder.onnx", 17, "folded", mnn=True)
    onnx_to_mnn(tmp_path / "decoder.onnx", tmp_path / "decoder.mnn", "fp32")
    mnn = MNNBackend(tmp_path / "decoder.mnn", list(DECODER_INPUTS), list(DECODER_OUTPUTS), "high", 2)
    cases = {**_cases(seed=3), "64 single points (an AMG batch)": _amg_batch()}
    for what in ("five boxes", "three boxes, three masks", "one point", "64 single points (an AMG batch)"):
        out = mnn.run(_feeds(emb, *cases[what]))
        want = _official(sam, *cases[what], emb)
        got = (out["iou_predictions"], out["low_res_masks"])
        assert np.isfinite(got[1]).all(), what
        # MNN's fp32 kernels are held to the project's fp32 tolerance (edgesam/measure/parity.py): cosine and
        # max error relative to the largest reference value (observed: ~1.5e-4 relative, 6e-3 absolute).
        for g, w in zip(got, want):
            g64, w64 = g.astype(np.float64).ravel(), w.astype(np.float64).ravel()
            cos = g64 @ w64 / (np.linalg.norm(g64) * np.linalg.norm(w64))
            rel = np.abs(g64 - w64).max() / np.abs(w64).max()
            assert cos >= 0.9999 and rel <= 5e-3, (what, cos, rel)
