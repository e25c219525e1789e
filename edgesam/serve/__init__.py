"""``edgesam serve``: a browser page and an HTTP API that segment images with a bundle, on the device.

The server is the standard library's ``ThreadingHTTPServer``; the page is static files inside the
package (no CDN, no build step: the device may be offline). One predictor is opened at start; each
uploaded image is decoded in memory (never written to disk), embedded once and its embedding kept
(the ``max_images`` most recently used), so a click costs one decoder run. The API (JSON;
coordinates in original-image pixels; masks as COCO RLE):

- ``GET /api/info``: model, family, backend, precision, threads, version;
- ``GET /api/samples``: the sample images' names; ``GET /api/samples/NAME``: one, as PNG;
- ``POST /api/images`` (body: the image file's bytes) -> ``{"id", "width", "height", "embed_ms"}``;
- ``POST /api/images/ID/predict`` with ``{"points": [[x, y, label], ...], "box": [x0, y0, x1, y1] | null,
  "multimask": bool, "mask_input": "previous" | null, "previous_index": int | null}`` ->
  ``{"masks": [RLE, ...], "scores": [...], "decode_ms"}``: ``SamPredictor.predict`` on that prompt;
  "previous" feeds back the low-res logits of the last prediction on this image (the mask at
  ``previous_index``, default the highest score), as the official refinement does;
- ``POST /api/images/ID/everything`` with the generator's keywords -> ``{"records", "ms"}``, the
  records ``edgesam everything`` writes; ``GET /api/images/ID/progress`` while it runs;
- errors: a 4xx status with ``{"error": "one line"}``.

With ``token`` set (``--token`` or ``EDGESAM_SERVE_TOKEN``), the page and every API call need it:
``Authorization: Bearer TOKEN``, ``?token=TOKEN``, or the cookie the page gets when opened with it.
"""
from __future__ import annotations

import json
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, urlparse

import numpy as np

from edgesam import __version__
from edgesam.errors import EdgesamError, InputError
from edgesam.runtime.options import RunOptions

STATIC = Path(__file__).with_name("static")
MAX_IMAGES = 8  # embeddings kept by default; the least recently used is dropped
MAX_BODY = 64 * 2**20  # bytes of an upload
TOKEN_ENV = "EDGESAM_SERVE_TOKEN"
COOKIE = "edgesam_token"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    bundle: str
    host: str = "127.0.0.1"
    port: int = 8000
    run: RunOptions = field(default_factory=RunOptions)
    token: Optional[str] = None
    max_images: int = MAX_IMAGES

    def __post_init__(self) -> None:
        if self.max_images < 1:
            raise InputError(f"--max-images must be >= 1, not {self.max_images}")
        if not 0 <= self.port < 65536:
            raise InputError(f"--port must be between 0 and 65535, not {self.port}")


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Images:
    """The embedded images: the predictor's image state per id (its encoder outputs and sizes), the
    decoded pixels (for everything) and the last prediction's low-res logits (for refinement)."""

    STATE = ("_encoded", "features", "input_size", "original_size", "is_image_set")

    def __init__(self, predictor, capacity: int = MAX_IMAGES) -> None:
        self.predictor, self.capacity = predictor, capacity
        self.items: "OrderedDict[str, dict]" = OrderedDict()
        self.lock = threading.Lock()  # one predictor: one request at a time uses it
        self.progress: dict[str, dict] = {}

    def add(self, image: np.ndarray) -> dict:
        with self.lock:
            t0 = time.perf_counter()
            self.predictor.set_image(image)
            ms = (time.perf_counter() - t0) * 1000
            iid = secrets.token_hex(8)
            self.items[iid] = {"state": {k: getattr(self.predictor, k) for k in self.STATE}, "image": image,
                               "previous": None}
            while len(self.items) > self.capacity:
                self.items.popitem(last=False)
        h, w = image.shape[:2]
        return {"id": iid, "width": int(w), "height": int(h), "embed_ms": round(ms, 1)}

    def get(self, iid: str) -> dict:
        item = self.items.get(iid)
        if item is None:
            raise HTTPError(404, f"no image {iid!r} (upload it again: the server keeps the {self.capacity} "
                                 "most recently used)")
        self.items.move_to_end(iid)  # least recently used goes first
        return item

    def use(self, item: dict) -> None:
        for k, v in item["state"].items():
            setattr(self.predictor, k, v)


def _rles(masks: np.ndarray) -> list[dict]:
    from edgesam.runtime.rle import coco_encode_rle, mask_to_rle

    return [coco_encode_rle(r) for r in mask_to_rle(masks)]


def _prompt(body: Any) -> dict:
    """The predict request's JSON -> SamPredictor.predict keywords (validated by the predictor)."""
    if not isinstance(body, dict):
        raise HTTPError(400, "the request body must be a JSON object")
    unknown = set(body) - {"points", "box", "multimask", "mask_input", "previous_index"}
    if unknown:
        raise HTTPError(400, f"unknown keys: {', '.join(sorted(unknown))}")
    pts = body.get("points") or []
    if not isinstance(pts, list) or not all(isinstance(p, list) and len(p) == 3 for p in pts):
        raise HTTPError(400, "points must be a list of [x, y, label]")
    box = body.get("box")
    if not pts and box is None:
        raise HTTPError(400, "empty prompt: give points or a box")
    kw: dict[str, Any] = {"multimask_output": bool(body.get("multimask", True))}
    if pts:
        kw["point_coords"] = np.array([p[:2] for p in pts], np.float64)
        kw["point_labels"] = np.array([p[2] for p in pts], np.float64)
    if box is not None:
        kw["box"] = np.array(box, np.float64)
    if body.get("mask_input") not in (None, "previous"):
        raise HTTPError(400, "mask_input must be \"previous\" or null")
    return kw


def _amg_options(body: Any, bundle) -> Any:
    from edgesam.runtime.amg import AmgOptions, bundle_options

    if not isinstance(body, dict):
        raise HTTPError(400, "the request body must be a JSON object of the generator's keywords")
    names = {f.name for f in fields(AmgOptions)} - {"point_grids", "output_mode"}
    unknown = set(body) - names
    if unknown:
        raise HTTPError(400, f"unknown generator keywords: {', '.join(sorted(unknown))}")
    opts = AmgOptions(**{"pred_iou_thresh": None, **body, "output_mode": "coco_rle"})  # None: the bundle's
    return bundle_options(bundle, opts)


class App:
    """The bundle's predictor and the images it has embedded: what the handler calls."""

    def __init__(self, opts: ServeOptions) -> None:
        from edgesam.bundle import load_bundle

        self.opts = opts
        self.bundle = load_bundle(opts.bundle, verify=False)
        self.predictor = opts.run.predictor(self.bundle)
        self.images = Images(self.predictor, opts.max_images)

    def info(self) -> dict:
        spec = self.bundle.spec
        return {"model": spec.model, "family": spec.family, "backend": self.opts.run.backend,
                "precision": self.opts.run.precision, "runtime_precision": self.opts.run.runtime_precision,
                "threads": self.predictor.threads, "untrained": self.bundle.untrained, "version": __version__}

    def upload(self, data: bytes) -> dict:
        from edgesam.runtime.imageio import decode_image

        if not data:
            raise HTTPError(400, "the body must hold the image file's bytes (JPEG, PNG or BMP)")
        return self.images.add(decode_image(data, "the uploaded image"))

    def predict(self, iid: str, body: Any) -> dict:
        item = self.images.get(iid)
        kw = _prompt(body)
        with self.images.lock:
            if body.get("mask_input") == "previous":
                prev = item["previous"]
                if prev is None:
                    raise HTTPError(400, "mask_input \"previous\": no earlier prediction on this image")
                logits, scores = prev
                i = body.get("previous_index")
                i = int(np.argmax(scores)) if i is None else int(i)
                if not 0 <= i < len(logits):
                    raise HTTPError(400, f"previous_index must be below {len(logits)}")
                kw["mask_input"] = logits[i][None]
            self.images.use(item)
            t0 = time.perf_counter()
            masks, scores, low = self.predictor.predict(**kw)
            ms = (time.perf_counter() - t0) * 1000
            item["previous"] = (low, scores)
        return {"masks": _rles(masks), "scores": [float(s) for s in scores], "decode_ms": round(ms, 1)}

    def everything(self, iid: str, body: Any) -> dict:
        from edgesam.runtime.amg import open_generator

        item = self.images.get(iid)
        opts = _amg_options(body, self.bundle)
        progress = self.images.progress.setdefault(iid, {})
        progress.update(done=0, total=0, running=True)

        def show(done: int, total: int, crop: int, n_crops: int) -> None:
            progress.update(done=done, total=total, crop=crop + 1, crops=n_crops)

        try:
            with self.images.lock:
                _, gen = open_generator(self.bundle, opts, self.opts.run, progress=show, predictor=self.predictor)
                t0 = time.perf_counter()
                records = gen.generate(item["image"])
                ms = (time.perf_counter() - t0) * 1000
                self.images.use(item)  # the generator embedded the image again: back to this image's state
        finally:
            progress["running"] = False
        return {"records": records, "ms": round(ms, 1)}


@lru_cache(maxsize=None)
def _sample_png(name: str) -> bytes:
    """A sample image as PNG bytes, drawn by the generator (an installed edgesam has them too), once."""
    from edgesam.runtime.imageio import write_image
    from edgesam.synthetic.samples import sample

    with tempfile.TemporaryDirectory() as d:  # MNN.cv encodes to files only
        path = Path(d) / name
        write_image(path, sample(name).image)
        return path.read_bytes()


def _handler(app: App):
    class Handler(BaseHTTPRequestHandler):
        server_version = f"edgesam/{__version__}"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: the terminal shows the URL only
            pass

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: Any) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def _authorised(self, query: dict) -> bool:
            token = app.opts.token
            if not token:
                return True
            from http.cookies import SimpleCookie

            cookie = SimpleCookie(self.headers.get("Cookie", "")).get(COOKIE)
            given = (self.headers.get("Authorization", ""), f"Bearer {(query.get('token') or [''])[0]}",
                     f"Bearer {cookie.value if cookie else ''}")
            return any(secrets.compare_digest(g, f"Bearer {token}") for g in given)

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            if n > MAX_BODY:
                raise HTTPError(413, f"the body is {n} bytes; at most {MAX_BODY}")
            return self.rfile.read(n) if n else b""

        def _route(self, method: str) -> None:
            url = urlparse(self.path)
            parts = [p for p in url.path.split("/") if p]
            try:
                if not self._authorised(parse_qs(url.query)):
                    raise HTTPError(401, "this server needs its token: open the page as /?token=TOKEN, "
                                         "or send Authorization: Bearer TOKEN")
                if parts[:1] != ["api"]:
                    if method != "GET":
                        raise HTTPError(405, "only GET serves the page")
                    return self._static(url.path)
                out = self._api(method, parts[1:])
                if isinstance(out, bytes):  # a sample image
                    self._send(200, out, "image/png")
                else:
                    self._json(200, out)
            except HTTPError as e:
                self._json(e.status, {"error": str(e)})
            except EdgesamError as e:
                self._json(400 if e.exit_code == 2 else 500, {"error": str(e)})
            except json.JSONDecodeError as e:
                self._json(400, {"error": f"the body is not JSON ({e.msg})"})
            except (TypeError, ValueError) as e:
                self._json(400, {"error": (str(e).splitlines() or [type(e).__name__])[0]})
            except Exception as e:  # a bug: this request fails in one line, the server goes on
                self._json(500, {"error": f"internal error ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"})

        def _api(self, method: str, parts: list[str]) -> Any:
            if method == "GET" and parts == ["info"]:
                return app.info()
            if method == "GET" and parts == ["samples"]:
                from edgesam.synthetic.samples import SAMPLES

                return {"samples": sorted(SAMPLES)}
            if method == "GET" and len(parts) == 2 and parts[0] == "samples":
                return self._sample(parts[1])
            if method == "POST" and parts == ["images"]:
                return app.upload(self._body())
            if len(parts) == 3 and parts[0] == "images":
                iid, what = parts[1], parts[2]
                if method == "POST" and what == "predict":
                    return app.predict(iid, json.loads(self._body() or b"{}"))
                if method == "POST" and what == "everything":
                    return app.everything(iid, json.loads(self._body() or b"{}"))
                if method == "GET" and what == "progress":
                    app.images.get(iid)
                    return app.images.progress.get(iid, {"running": False})
            raise HTTPError(404, f"no API {method} /api/{'/'.join(parts)}")

        def _sample(self, name: str) -> bytes:
            from edgesam.synthetic.samples import SAMPLES

            if name not in SAMPLES:
                raise HTTPError(404, f"no sample {name!r}; the samples are {', '.join(sorted(SAMPLES))}")
            return _sample_png(name)

        def _static(self, path: str) -> None:
            name = "index.html" if path in ("", "/") else path.lstrip("/")
            target = (STATIC / name).resolve()
            if STATIC.resolve() not in target.parents or not target.is_file():
                raise HTTPError(404, f"no page {path}")
            body = target.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPES.get(target.suffix, "application/octet-stream"))
            self.send_header("Content-Length", str(len(body)))
            if app.opts.token:  # the page's own requests (its script, styles, API calls) carry the token
                self.send_header("Set-Cookie", f"{COOKIE}={app.opts.token}; Path=/; HttpOnly; SameSite=Strict")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            self._route("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._route("POST")

    return Handler


def make_server(opts: ServeOptions) -> ThreadingHTTPServer:
    """The server, bound and ready (``serve_forever`` runs it); the bundle is opened first, so a bad
    bundle fails before the port is taken."""
    app = App(opts)
    try:
        server = ThreadingHTTPServer((opts.host, opts.port), _handler(app))
    except OSError as e:
        raise InputError(f"cannot listen on {opts.host}:{opts.port} ({e.strerror or e})") from None
    server.daemon_threads = True
    server.app = app  # type: ignore[attr-defined]
    return server
