"""Robustness: awkward images, fuzzed prompts, and no network."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from conftest import REPO, one_line_error, run_cli
from edgesam.errors import InputError
from edgesam.runtime import prompts as P

FUZZ = int(os.environ.get("EDGESAM_FUZZ_EXAMPLES", "60"))  # `slow` runs set thousands


# --- images --------------------------------------------------------------------------------

def _png(path, array, mode=None):
    from PIL import Image

    Image.fromarray(array, mode).save(path)
    return path


@pytest.mark.parametrize("kind", ["1x1", "grey", "rgba", "palette", "16bit", "bmp"])
def test_awkward_images_segment(vit_t_bundle, tmp_path, kind):
    pytest.importorskip("PIL")
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    path = tmp_path / f"{kind}.png"
    if kind == "1x1":
        _png(path, rgb[:1, :1])
    elif kind == "grey":
        _png(path, rgb[..., 0])
    elif kind == "rgba":
        _png(path, np.dstack([rgb, rgb[..., :1]]))
    elif kind == "palette":
        Image.fromarray(rgb).convert("P").save(path)
    elif kind == "16bit":
        Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(path)  # mode I;16
    else:
        path = tmp_path / "img.bmp"
        Image.fromarray(rgb).save(path)
    h, w = (1, 1) if kind == "1x1" else (48, 64)
    p = run_cli("segment", vit_t_bundle, path, "--point", "0,0", "--npz", tmp_path / "o.npz")
    assert p.returncode == 0, p.stderr[-1500:]
    assert np.load(tmp_path / "o.npz")["masks"].shape == (1, h, w)


def test_too_elongated_image_is_a_clear_error(vit_t_bundle, tmp_path):
    path = _png(tmp_path / "thin.png", np.zeros((2, 40000, 3), np.uint8))
    line = one_line_error(run_cli("segment", vit_t_bundle, path, "--point", "5,1"))
    assert "too elongated" in line


def _without_read_override(path) -> list[str]:
    """A command prefix under which ``path`` (mode 000) cannot be read. Root reads anything, so as
    root drop the two capabilities that bypass file permissions (setpriv, util-linux)."""
    if os.geteuid() != 0:
        return []
    exe = shutil.which("setpriv")
    prefix = [exe, "--bounding-set=-dac_override,-dac_read_search"] if exe else []
    probe = subprocess.run([*prefix, sys.executable, "-c", "import sys; open(sys.argv[1], 'rb')", str(path)],
                           capture_output=True)
    if not prefix or probe.returncode == 0:
        pytest.skip("cannot drop root's read-anything capability here (no setpriv)")
    return prefix


def test_unreadable_image(vit_t_bundle, tmp_path):
    path = _png(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))
    path.chmod(0)
    prefix = _without_read_override(path)
    proc = subprocess.run([*prefix, sys.executable, "-m", "edgesam.cli", "segment", str(vit_t_bundle), str(path),
                           "--point", "1,1"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert "permission denied" in one_line_error(proc)


# --- prompt transforms -------------------------------------------------------------------------

sizes = st.tuples(st.integers(1, 6000), st.integers(1, 6000))


@settings(max_examples=FUZZ * 10, deadline=None)
@given(size=sizes, xy=st.tuples(st.floats(-1e4, 1e4), st.floats(-1e4, 1e4)))
@example(size=(1, 6000), xy=(3.0, 0.5))  # short side resizes to 0: official and edgesam agree on 0
@example(size=(1333, 1), xy=(0.25, 1000.0))
@example(size=(3, 5), xy=(2.0, 1.0))  # 1024 x 1706.67 -> rounding on both axes
def test_apply_coords_is_the_official_per_axis_scale(size, xy):
    """preprocess_shape, apply_coords and apply_boxes give exactly what segment_anything's
    ResizeLongestSide gives (same float arithmetic, so bit for bit)."""
    transforms = pytest.importorskip("segment_anything.utils.transforms")
    official = transforms.ResizeLongestSide(1024)
    h, w = size
    nh, nw = P.preprocess_shape(h, w, 1024)
    assert (nh, nw) == official.get_preprocess_shape(h, w, 1024)
    assert max(nh, nw) == 1024
    if min(nh, nw) == 0:
        # The official shape is 0 here too (PIL then fails on it); edgesam's image preprocessing
        # refuses such images with "too elongated ... above 2048:1" (test_too_elongated_image_...).
        assert max(h, w) > 2048 * min(h, w)
    sam = P.sam_transform()
    got = sam.apply_coords(np.array([xy]), size)
    want = official.apply_coords(np.array([xy]), size)
    assert got.dtype == want.dtype == np.float64 and np.array_equal(got, want)
    boxes = np.array([[*xy, xy[0] + 7.5, xy[1] + 3.25], [*xy, *xy]])
    got_b, want_b = sam.apply_boxes(boxes, size), official.apply_boxes(boxes, size)
    assert got_b.shape == want_b.shape == (2, 4) and np.array_equal(got_b, want_b)


# --- predictor fuzz ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def predictor(vit_t_bundle):
    from edgesam.runtime import SamPredictor
    from edgesam.synthetic.scenes import make_scene

    p = SamPredictor(vit_t_bundle)
    p.set_image(make_scene(4, (120, 200), style="gate").image)
    return p


finite = st.floats(-500, 700, allow_nan=False)
anything = st.one_of(finite, st.just(float("nan")), st.just(float("inf")), st.floats(-1e9, 1e9))


def _prompt_is_valid(pc, pl, box) -> bool:
    """Whether predict must accept the prompt, decided here and not by the code under test.

    The official SamPredictor.predict takes Nx2 point_coords with N labels (1 foreground, 0
    background) and/or one XYXY box, and at least one of them. edgesam's documented rules
    (runtime/prompts.py) add: labels only with coords, no empty point list, finite numbers,
    labels exactly 0 or 1 (not the encoder's internal -1/2/3), and a box with x1 > x0, y1 > y0.
    Points outside the image are valid (test_out_of_image_points_are_valid_...).
    """
    if pc is None and pl is None and box is None:
        return False
    if (pc is None) != (pl is None):
        return False
    if pc is not None:
        if len(pc) != len(pl) or not all(np.isfinite(v) for xy in pc for v in xy):
            return False
        if not all(label in (0, 1) for label in pl):
            return False
    if box is not None:
        x0, y0, x1, y1 = box
        if not all(np.isfinite(v) for v in box) or not (x1 > x0 and y1 > y0):
            return False
    return True


# Half of the draws lean towards valid prompts, so that both branches are exercised.
labels_st = st.lists(st.one_of(st.integers(0, 1), st.integers(-1, 3)), min_size=4, max_size=4)
coords_st = st.lists(st.one_of(finite, anything), min_size=8, max_size=8)
box_st = st.one_of(st.none(), st.lists(anything, min_size=4, max_size=4),
                   st.tuples(finite, finite, st.floats(0.5, 300), st.floats(0.5, 300)).map(
                       lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]]))


@settings(max_examples=FUZZ, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(0, 4), m=st.one_of(st.none(), st.integers(0, 4)), coords=coords_st, labels=labels_st,
       box=box_st, multimask=st.booleans())
@example(n=2, m=None, coords=[10.0, 20.0, 150.0, 90.0] + [0.0] * 4, labels=[1, 0, 0, 0], box=None, multimask=True)
@example(n=0, m=None, coords=[0.0] * 8, labels=[1] * 4, box=[5.0, 5.0, 80.0, 60.0], multimask=False)
@example(n=1, m=None, coords=[-40.0, 500.0] + [0.0] * 6, labels=[0] * 4, box=[0.0, 0.0, 0.5, 0.5], multimask=True)
@example(n=1, m=None, coords=[10.0, 20.0] + [0.0] * 6, labels=[2] * 4, box=None, multimask=True)  # label 2
@example(n=0, m=None, coords=[0.0] * 8, labels=[1] * 4, box=[5.0, 5.0, 5.0, 60.0], multimask=True)  # 0 area
@example(n=0, m=None, coords=[0.0] * 8, labels=[1] * 4, box=None, multimask=True)  # nothing
def test_predict_valid_or_input_error(predictor, n, m, coords, labels, box, multimask):
    """A valid prompt gives official shapes and dtypes; an invalid one raises InputError; nothing
    else. m=None: as many labels as points."""
    m = n if m is None else m
    pc = [coords[2 * i:2 * i + 2] for i in range(n)] if n else None
    pl = labels[:m] if m else None
    call = (None if pc is None else np.array(pc).reshape(n, 2), None if pl is None else np.array(pl),
            None if box is None else np.array(box))
    valid = _prompt_is_valid(pc, pl, box)
    event("valid prompt" if valid else "invalid prompt")
    if not valid:
        with pytest.raises(InputError):
            predictor.predict(*call, None, multimask)
        return
    masks, scores, low = predictor.predict(*call, None, multimask)
    c = 3 if multimask else 1
    assert masks.shape == (c, 120, 200) and masks.dtype == bool
    assert scores.shape == (c,) and low.shape == (c, 256, 256) and np.all(np.isfinite(low))


# --- no network --------------------------------------------------------------------------------

def _unshare() -> list[str]:
    exe = shutil.which("unshare")
    if exe is None or subprocess.run([exe, "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -n is not available in this sandbox")
    return [exe, "-n"]


def test_runtime_and_convert_work_without_network(vit_t_bundle, tmp_path):
    pytest.importorskip("torch")
    prefix = _unshare()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    seg = subprocess.run([*prefix, sys.executable, "-m", "edgesam.cli", "segment", str(vit_t_bundle),
                          str(REPO / "assets/landscape.png"), "--point", "100,300", "--out", str(tmp_path / "m.png")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert seg.returncode == 0, seg.stderr[-2000:]
    conv = subprocess.run([*prefix, sys.executable, "-m", "edgesam.cli", "convert", "--model", "vit_t",
                           "--random-init", "5", "--precision", "int8", "--out", str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert conv.returncode == 0, conv.stderr[-2000:]
    assert (tmp_path / "b" / "manifest.json").is_file()


# --- soak ----------------------------------------------------------------------------------------

def _rss_mb() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


@pytest.mark.slow
def test_soak_rss_stays_flat(vit_t_bundle):
    """2,000 decoder calls on one embedding and 50 set_image calls: RSS may not keep growing."""
    from edgesam.runtime import SamPredictor
    from edgesam.synthetic.scenes import make_scene

    p = SamPredictor(vit_t_bundle)
    img = make_scene(2, (400, 600), style="gate").image
    p.set_image(img)
    rng = np.random.default_rng(0)
    for _ in range(50):  # warm-up: allocator pools and caches reach their size
        p.predict(rng.uniform(0, 400, (1, 2)), np.array([1]))
    base = _rss_mb()
    for i in range(2000):
        p.predict(rng.uniform(0, 400, (2, 2)), np.array([1, 0]), multimask_output=bool(i % 2))
    after_decode = _rss_mb()
    for i in range(50):
        p.set_image(make_scene(i, (300 + i, 500), style="gate").image)
    after_images = _rss_mb()
    print(f"soak RSS: start {base:.0f} MB, after 2000 predicts {after_decode:.0f} MB, after 50 set_image "
          f"{after_images:.0f} MB")
    assert after_decode - base < 50 and after_images - base < 100


# --- the same bad-input corpus through the Python API ------------------------------------------

def _bad_image(kind, tmp_path):
    src = REPO / "assets" / "landscape.png"
    if kind == "missing":
        return tmp_path / "nope.png"
    p = tmp_path / ("x.jpg" if kind == "text" else "x.png")
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("hello, I am not a picture")
    elif kind == "truncated":
        p.write_bytes(src.read_bytes()[:5000])
    elif kind == "dir":
        return tmp_path
    elif kind == "0px":
        return _png(p, np.zeros((2, 40000, 3), np.uint8))
    return p


@pytest.mark.parametrize("kind,match", [
    ("missing", "no such file"), ("empty", "0 bytes"), ("text", "not a JPEG, PNG or BMP"),
    ("truncated", "truncated PNG"), ("dir", "is a directory"), ("0px", "pixel"),
])
def test_bad_images_python_api(predictor, tmp_path, kind, match):
    """set_image_file raises the typed error (no crash, no MNN segfault) and keeps the old image."""
    from edgesam.errors import EdgesamError

    before = predictor.get_image_embedding().copy()
    with pytest.raises(EdgesamError, match=match):
        predictor.set_image_file(_bad_image(kind, tmp_path))
    assert np.array_equal(predictor.get_image_embedding(), before)


@pytest.mark.parametrize("kwargs,match", [
    (dict(point_coords=[[np.nan, 3]], point_labels=[1]), "NaN or inf"),
    (dict(point_coords=[[np.inf, 3]], point_labels=[1]), "NaN or inf"),
    (dict(point_coords=[[1, 3], [4, 5]], point_labels=[1]), "label"),
    (dict(point_coords=[[1, 3]], point_labels=[2]), "label"),
    (dict(point_coords=[[1, 3]]), "point_labels"),
    (dict(box=[100, 10, 50, 60]), "x1 >= x0"),
    (dict(box=[10, 10, 10, 60]), "zero area"),
    (dict(point_coords=[[1, 3]], point_labels=[1], mask_input=np.zeros((1, 128, 128), np.float32)), "1x256x256"),
    (dict(point_coords=[[1, 3]], point_labels=[1], mask_input=np.full((1, 256, 256), "a")), "dtype"),
    (dict(point_coords=[[1, 3]], point_labels=[1], mask_input=np.zeros((1, 256, 256), complex)), "dtype"),
])
def test_bad_prompts_python_api(predictor, kwargs, match):
    kwargs = {k: np.asarray(v) for k, v in kwargs.items()}
    with pytest.raises(InputError, match=match):
        predictor.predict(**kwargs)


@pytest.mark.parametrize("xy", [(-50.0, -20.0), (1e6, 3e5), (0.0, 0.0), (199.99, 119.99)])
def test_out_of_image_points_are_valid_as_in_segment_anything(predictor, xy):
    """The official predictor accepts points outside the image (they are just transformed);
    so does the runtime: official shapes, finite logits."""
    masks, scores, low = predictor.predict(np.array([xy]), np.array([1]))
    assert masks.shape == (3, 120, 200) and np.all(np.isfinite(low)) and np.all(np.isfinite(scores))
