"""Seeded synthetic scenes with exact instance masks (numpy only): the one scene generator.

Everything synthetic in the project is drawn here, by ``make_scene(seed, size, style=...)``:

- ``"shapes"`` (the default): what the demo model is trained and evaluated on (no downloaded data).
  Several to a few dozen objects per image (ellipses, convex polygons, stars, rings) with solid,
  gradient, striped, checked or noisy fills, on a textured background;
- ``"gate"``: gradients, six discs and a bar, the image of the convert parity gate, ``edgesam parity``
  and most tests (``upsampled_scene`` enlarges it cheaply for 12 MP cases);
- ``"sky"``: sky, ground and shaded ellipses, the style of the committed sample images in assets/
  (``edgesam.synthetic.samples``); these pixels must never change;
- ``"labels"``: grey rectangles and discs whose red channel / 20 is the object's label, for the
  automatic mask generator's fake-decoder tests.

Every style paints on a ``Canvas`` in order, so later objects occlude earlier ones, and each object's
mask is exactly the set of pixels it owns in the final image. Same seed, same scene, on any host.
Not part of the device runtime: nothing in ``edgesam.runtime`` imports it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import numpy as np

KINDS = ("ellipse", "polygon", "star", "ring")
ASPECTS = (1.0, 4 / 3, 3 / 4, 16 / 9, 9 / 16, 2.0, 0.5, 3.0)


@dataclass
class Scene:
    """A drawn image and who owns each pixel. ``masks`` (K x H x W bool, disjoint, each the visible part
    of one object) and ``kinds`` (one per mask) keep the objects that own at least ``min_area`` pixels."""
    image: np.ndarray          # H x W x 3 uint8 RGB
    owner: np.ndarray          # H x W int32: index into ``painted`` of the pixel's object, -1 for background
    painted: list[str]         # kind of every object painted, in painting order (some may be hidden)
    seed: int
    min_area: int = 1

    @cached_property
    def kept(self) -> list[int]:
        counts = np.bincount(self.owner.ravel() + 1, minlength=len(self.painted) + 1)[1:]
        return [i for i in range(len(self.painted)) if counts[i] >= self.min_area]

    @cached_property
    def masks(self) -> np.ndarray:
        h, w = self.owner.shape
        return np.stack([self.owner == i for i in self.kept]) if self.kept else np.zeros((0, h, w), bool)

    @property
    def kinds(self) -> list[str]:
        return [self.painted[i] for i in self.kept]

    def object_at(self, x: float, y: float) -> np.ndarray | None:
        """The mask of the kept object that owns pixel (x, y), or None on the background."""
        i = int(self.owner[int(y), int(x)])
        return self.owner == i if i in self.kept else None


@dataclass
class Canvas:
    """A float RGB image and an owner map: ``paint`` puts one object over what is there."""
    image: np.ndarray                       # H x W x 3 float; its dtype is the style's
    owner: np.ndarray = field(init=False)
    painted: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.owner = np.full(self.image.shape[:2], -1, np.int32)

    def paint(self, kind: str, mask: np.ndarray | None, fill, at: tuple[int, int] = (0, 0)) -> None:
        """Paint object ``kind`` where ``mask`` (a window placed at ``at`` = (y0, x0)) is set. ``fill`` is
        one colour, one colour per masked pixel (N x 3), or a window-sized image. A None mask records
        an object that was drawn off the image (it keeps its index)."""
        index = len(self.painted)
        self.painted.append(kind)
        if mask is None:
            return
        (y0, x0), (h, w) = at, mask.shape
        region = self.image[y0:y0 + h, x0:x0 + w]
        region[mask] = fill[mask] if np.ndim(fill) == 3 else fill
        self.owner[y0:y0 + h, x0:x0 + w][mask] = index

    def scene(self, seed: int, min_area: int = 1) -> Scene:
        image = np.clip(self.image, 0, 255).astype(np.uint8)
        return Scene(image=image, owner=self.owner, painted=self.painted, seed=seed, min_area=min_area)


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


def _random_size(rng: np.random.Generator) -> tuple[int, int]:
    long_side = int(rng.integers(320, 1025))
    aspect = float(rng.choice(ASPECTS))  # W / H
    if aspect >= 1:
        return max(16, round(long_side / aspect)), long_side
    return long_side, max(16, round(long_side * aspect))


def _paint_shapes(rng: np.random.Generator, h: int, w: int, n_objects: int | None) -> Canvas:
    if n_objects is None:
        n_objects = int(rng.integers(3, 31))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    canvas = Canvas(_texture(rng, h, w, yy, xx) * 0.6 + _smooth_noise(rng, h, w, int(rng.integers(8, 64)), 3) * 100)
    short = min(h, w)
    for _ in range(n_objects):
        kind = str(rng.choice(KINDS))
        r = float(rng.uniform(0.04, 0.3) * short * (1.6 if n_objects < 8 else 1.0))
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        y0, y1 = max(0, int(cy - r) - 1), min(h, int(cy + r) + 2)
        x0, x1 = max(0, int(cx - r) - 1), min(w, int(cx + r) + 2)
        if y1 - y0 < 2 or x1 - x0 < 2:
            canvas.paint(kind, None, None)
            continue
        sub_y, sub_x = yy[y0:y1, x0:x1], xx[y0:y1, x0:x1]
        m = _shape_mask(rng, kind, sub_y, sub_x, cy, cx, r)
        canvas.paint(kind, m, _texture(rng, y1 - y0, x1 - x0, sub_y, sub_x), at=(y0, x0))
    return canvas


def _paint_gate(rng: np.random.Generator, h: int, w: int) -> Canvas:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    canvas = Canvas(np.stack([xx / w * 200, yy / h * 180, (xx + yy) / (h + w) * 120], -1) + 30)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(40, 180)
        canvas.paint("disc", (yy - cy) ** 2 + (xx - cx) ** 2 < r * r, rng.uniform(0, 255, 3))
    bar = np.ones((min(40, h - h // 3), w), bool)  # rows h//3 .. h//3+39, cut at the bottom edge
    canvas.paint("bar", bar, (240, 240, 20), at=(h // 3, 0))
    canvas.image += rng.normal(0, 6, canvas.image.shape)
    return canvas


def _paint_sky(rng: np.random.Generator, h: int, w: int) -> Canvas:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sky = np.stack([90 + 60 * yy / h, 140 + 50 * yy / h, 200 + 0 * yy], -1)
    canvas = Canvas(sky + rng.normal(0, 4, (h, w, 3)))
    ground = yy > h * rng.uniform(0.55, 0.7)
    canvas.paint("ground", ground, np.array([70, 120, 60]) + rng.normal(0, 10, (int(ground.sum()), 3)))
    for _ in range(rng.integers(5, 9)):
        cy, cx = rng.uniform(0.2, 0.9) * h, rng.uniform(0.05, 0.95) * w
        ry, rx = rng.uniform(0.05, 0.2) * h, rng.uniform(0.03, 0.15) * w
        colour = rng.uniform(20, 250, 3)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        shade = 0.75 + 0.25 * np.clip((cx - xx) / rx, -1, 1)[..., None]
        canvas.paint("ellipse", inside, colour * shade)
    return canvas


def _paint_labels(rng: np.random.Generator, h: int, w: int) -> Canvas:
    canvas = Canvas(np.zeros((h, w, 3), np.float32))
    yy, xx = np.ogrid[:h, :w]
    for k in range(1, 12):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.04, 0.3) * h, rng.uniform(0.04, 0.3) * w
        if k % 2:
            canvas.paint("ellipse", ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1, k * 20)
        else:
            canvas.paint("rectangle", (abs(yy - cy) < ry) & (abs(xx - cx) < rx), k * 20)
    canvas.paint("speck", rng.random((h, w)) < 0.0005, 240)  # small islands for min_mask_region_area
    return canvas


STYLES: dict[str, Callable[[np.random.Generator, int, int], Canvas]] = {
    "gate": _paint_gate, "sky": _paint_sky, "labels": _paint_labels}


def make_scene(seed: int, size: tuple[int, int] | None = None, *, style: str = "shapes",
               n_objects: int | None = None, min_area: int | None = None) -> Scene:
    """A seeded scene of ``style`` (see the module's docstring). ``size`` is (H, W); ``"shapes"`` picks a
    random aspect ratio and a long side of 320-1024 when it is None, and 3-30 objects unless
    ``n_objects`` is given. ``masks`` keep objects of at least ``min_area`` visible pixels (by default
    0.08 % of the image, at least 48, for ``"shapes"``; 1 for the others)."""
    rng = np.random.default_rng(seed)
    if style == "shapes":
        h, w = _random_size(rng) if size is None else size
        canvas = _paint_shapes(rng, h, w, n_objects)
        default_area = max(48, int(h * w * 0.0008))
    elif style in STYLES:
        if size is None or n_objects is not None:
            raise ValueError(f"style {style!r} needs a size and draws its own number of objects")
        h, w = size
        canvas, default_area = STYLES[style](rng, h, w), 1
    else:
        raise ValueError(f"unknown style {style!r}; expected 'shapes' or one of {sorted(STYLES)}")
    return canvas.scene(seed, default_area if min_area is None else min_area)


def upsampled_scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """The ``"gate"`` scene at any size, cheaply (12 MP in a fraction of a second): drawn at 256x256,
    enlarged (nearest), plus mild noise. A photo-like RGB uint8 image for the large-image tests."""
    base = make_scene(seed, (256, 256), style="gate").image.astype(np.float32)
    ys = (np.arange(h) * 256 // h).clip(0, 255)
    xs = (np.arange(w) * 256 // w).clip(0, 255)
    img = base[ys][:, xs]
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


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
