"""Seeded synthetic scenes with exact instance masks (numpy only).

The demo model is trained and evaluated on these (no downloaded data): several
to a few dozen objects per image (ellipses, convex polygons, stars, rings) with
solid, gradient, striped, checked or noisy fills, painted in order so later
objects occlude earlier ones, on a textured background. Each object's mask is
exactly the set of pixels it owns in the final image, so overlap and occlusion
are encoded in the ground truth. Same seed, same scene, on any host.

This module lives in the runtime (not the training code) so that the quality
check can also run on a device: it needs nothing beyond numpy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("ellipse", "polygon", "star", "ring")
ASPECTS = (1.0, 4 / 3, 3 / 4, 16 / 9, 9 / 16, 2.0, 0.5, 3.0)


@dataclass
class Scene:
    image: np.ndarray          # H x W x 3 uint8 RGB
    masks: np.ndarray          # K x H x W bool, disjoint, each the visible part of one object
    kinds: list[str]           # shape kind per mask
    seed: int


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int, channels: int = 1) -> np.ndarray:
    """Value noise: a coarse random grid upsampled bilinearly to h x w (values in [0, 1])."""
    gh, gw = h // cell + 2, w // cell + 2
    grid = rng.random((gh, gw, channels), dtype=np.float32)
    ys = np.arange(h, dtype=np.float32) / cell
    xs = np.arange(w, dtype=np.float32) / cell
    y0, x0 = ys.astype(np.int64), xs.astype(np.int64)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    a = grid[y0][:, x0]
    b = grid[y0][:, x0 + 1]
    c = grid[y0 + 1][:, x0]
    d = grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3).astype(np.float32)


def _texture(rng: np.random.Generator, h: int, w: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """An h x w x 3 float fill: solid, gradient, stripes, checks or noise, from two colours."""
    c1, c2 = _colour(rng), _colour(rng)
    kind = rng.integers(0, 5)
    if kind == 0:
        t = np.zeros((h, w, 1), np.float32)
    elif kind == 1:  # linear gradient in a random direction
        a = rng.uniform(0, np.pi)
        p = np.cos(a) * xx + np.sin(a) * yy
        t = ((p - p.min()) / max(float(np.ptp(p)), 1.0))[..., None]
    elif kind == 2:  # stripes
        a, period = rng.uniform(0, np.pi), rng.uniform(6, 40)
        t = (0.5 + 0.5 * np.sin((np.cos(a) * xx + np.sin(a) * yy) * 2 * np.pi / period))[..., None]
    elif kind == 3:  # checks
        s = rng.uniform(6, 30)
        t = (((xx // s).astype(np.int64) + (yy // s).astype(np.int64)) % 2).astype(np.float32)[..., None]
    else:  # blotchy noise
        t = _smooth_noise(rng, h, w, int(rng.integers(4, 24)))
    fill = c1 * (1 - t) + c2 * t
    return fill + rng.normal(0, rng.uniform(0, 10), (h, w, 1)).astype(np.float32)


def _shape_mask(rng: np.random.Generator, kind: str, yy: np.ndarray, xx: np.ndarray,
                cy: float, cx: float, r: float) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    if kind in ("ellipse", "ring"):
        th = rng.uniform(0, np.pi)
        a, b = r, r * rng.uniform(0.35, 1.0)
        u = (np.cos(th) * dx + np.sin(th) * dy) / a
        v = (-np.sin(th) * dx + np.cos(th) * dy) / b
        d = u * u + v * v
        if kind == "ellipse":
            return d <= 1.0
        inner = rng.uniform(0.3, 0.7)
        return (d <= 1.0) & (d >= inner * inner)
    if kind == "polygon":  # convex: intersection of half-planes through vertices on an ellipse
        n = int(rng.integers(3, 9))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        squash = rng.uniform(0.5, 1.0)
        vx, vy = r * np.cos(ang), r * squash * np.sin(ang)
        inside = np.ones(dx.shape, bool)
        for i in range(n):
            j = (i + 1) % n
            ex, ey = vx[j] - vx[i], vy[j] - vy[i]
            inside &= (ex * (dy - vy[i]) - ey * (dx - vx[i])) >= 0
        return inside
    # star: radius oscillates with angle between an inner and the outer radius
    k = int(rng.integers(4, 9))
    inner = rng.uniform(0.35, 0.65)
    phase = rng.uniform(0, 2 * np.pi)
    phi = np.arctan2(dy, dx) + phase
    tri = np.abs(((phi * k / (2 * np.pi)) % 1.0) * 2 - 1)  # 1 at tips, 0 between
    rad = r * (inner + (1 - inner) * tri)
    return dx * dx + dy * dy <= rad * rad


def make_scene(seed: int, size: tuple[int, int] | None = None, n_objects: int | None = None,
               min_area: int | None = None) -> Scene:
    """A seeded scene. ``size`` is (H, W); by default a random aspect ratio and a long side of 320-1024."""
    rng = np.random.default_rng(seed)
    if size is None:
        long_side = int(rng.integers(320, 1025))
        aspect = float(rng.choice(ASPECTS))  # W / H
        if aspect >= 1:
            size = (max(16, round(long_side / aspect)), long_side)
        else:
            size = (long_side, max(16, round(long_side * aspect)))
    h, w = size
    if n_objects is None:
        n_objects = int(rng.integers(3, 31))
    if min_area is None:
        min_area = max(48, int(h * w * 0.0008))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = _texture(rng, h, w, yy, xx) * 0.6 + _smooth_noise(rng, h, w, int(rng.integers(8, 64)), 3) * 100
    owner = np.full((h, w), -1, np.int32)
    kinds = []
    short = min(h, w)
    for i in range(n_objects):
        kind = str(rng.choice(KINDS))
        r = float(rng.uniform(0.04, 0.3) * short * (1.6 if n_objects < 8 else 1.0))
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        y0, y1 = max(0, int(cy - r) - 1), min(h, int(cy + r) + 2)
        x0, x1 = max(0, int(cx - r) - 1), min(w, int(cx + r) + 2)
        if y1 - y0 < 2 or x1 - x0 < 2:
            kinds.append(kind)
            continue
        sub_y, sub_x = yy[y0:y1, x0:x1], xx[y0:y1, x0:x1]
        m = _shape_mask(rng, kind, sub_y, sub_x, cy, cx, r)
        fill = _texture(rng, y1 - y0, x1 - x0, sub_y, sub_x)
        image[y0:y1, x0:x1][m] = fill[m]
        owner[y0:y1, x0:x1][m] = i
        kinds.append(kind)
    image = np.clip(image, 0, 255).astype(np.uint8)
    masks, kept = [], []
    for i in range(n_objects):
        m = owner == i
        if int(m.sum()) >= min_area:
            masks.append(m)
            kept.append(kinds[i])
    stack = np.stack(masks) if masks else np.zeros((0, h, w), bool)
    return Scene(image=image, masks=stack, kinds=kept, seed=seed)


def depth(mask: np.ndarray) -> np.ndarray:
    """City-block distance of every mask pixel to the nearest pixel outside it (the image border
    counts as outside): how many 4-neighbour erosions the pixel survives, plus one.

    Two 1-D passes per axis (exact for the L1 metric), each a loop over rows with numpy across
    them, on the mask's bounding box only."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    sub = mask[y0:y1, x0:x1]
    h, w = sub.shape
    d = np.pad(np.where(sub, h + w + 2, 0).astype(np.int32), 1)

    def passes(a: np.ndarray) -> np.ndarray:  # along axis 0, both directions, in place
        for i in range(1, a.shape[0]):
            np.minimum(a[i], a[i - 1] + 1, out=a[i])
        for i in range(a.shape[0] - 2, -1, -1):
            np.minimum(a[i], a[i + 1] + 1, out=a[i])
        return a

    d = passes(passes(d).T.copy()).T
    out = np.zeros(mask.shape, np.int32)
    out[y0:y1, x0:x1] = d[1:-1, 1:-1]
    return out


def interior_point(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of a pixel deepest inside ``mask`` (largest ``depth``), nearest the mask's centroid
    among equally deep ones. Deterministic; used as the "one point" prompt."""
    dep = depth(mask)
    ys, xs = np.nonzero(dep == dep.max())
    cy, cx = np.nonzero(mask)
    my, mx = cy.mean(), cx.mean()
    k = int(np.argmin((ys - my) ** 2 + (xs - mx) ** 2))
    return float(xs[k]), float(ys[k])


def mask_box(mask: np.ndarray) -> np.ndarray:
    """XYXY box of a non-empty mask, in pixel-edge coordinates as SAM's boxes are given (the far
    corner one past the last pixel; runtime.maskstats.mask_boxes gives the last pixel itself)."""
    from edgesam.runtime.maskstats import mask_boxes

    return (mask_boxes(np.asarray(mask, bool)[None])[0] + (0, 0, 1, 1)).astype(np.float32)
