"""`edgesam serve`: the HTTP API against the predictor it serves (a real HTTP client on loopback), the
command line, and the page in a real browser (headless Chromium driven by Selenium)."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from conftest import REPO, run_cli
from edgesam.runtime.rle import rle_to_mask

LANDSCAPE = REPO / "assets" / "landscape.png"


class Client:
    def __init__(self, base: str, token: str | None = None) -> None:
        self.base, self.token = base, token

    def call(self, method: str, path: str, body=None, raw: bytes | None = None):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                payload = r.read()
                return r.status, (json.loads(payload) if r.headers["Content-Type"] == "application/json" else payload)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())


def _launch(bundle, *extra: str, env=None):
    """``edgesam serve BUNDLE --port 0`` as its own process: (process, client on the URL it printed)."""
    proc = subprocess.Popen([sys.executable, "-m", "edgesam.cli", "serve", str(bundle), "--port", "0", "--threads", "2",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    line = proc.stdout.readline()
    if not line.startswith("edgesam serve: http://"):
        proc.kill()
        raise AssertionError(line + proc.stderr.read())
    url = line.split()[2].split("?")[0].rstrip("/")
    return proc, Client(url.replace("0.0.0.0", "127.0.0.1"))


def _stop(proc) -> int:
    """SIGTERM, as a service manager stops it: the server shuts down cleanly, exit code 130."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    finally:
        proc.stdout.close()
        proc.stderr.close()


@pytest.fixture(scope="module")
def served(vit_t_bundle):
    proc, client = _launch(vit_t_bundle)
    yield proc, client
    assert _stop(proc) == 130


def test_info_and_samples(served, tmp_path):
    _, c = served
    status, info = c.call("GET", "/api/info")
    assert status == 200 and info["model"] == "vit_t" and info["family"] == "mobilesam"
    assert info["backend"] == "mnn" and info["precision"] == "fp32" and info["threads"] == 2 and info["version"]
    status, s = c.call("GET", "/api/samples")
    assert s["samples"] == ["landscape.png", "panorama.png", "portrait.png"]
    status, png = c.call("GET", "/api/samples/landscape.png")
    assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
    from edgesam.runtime.imageio import read_image

    tmp = tmp_path / "sample.png"
    tmp.write_bytes(png)
    assert np.array_equal(read_image(tmp), read_image(LANDSCAPE))  # the generator draws the committed file


def test_predict_equals_the_predictor(served, vit_t_bundle):
    """POST /predict gives SamPredictor.predict's masks and scores for the same prompt, and "previous"
    refines with the chosen mask's low-res logits as the official refinement does."""
    from edgesam.runtime import SamPredictor
    from edgesam.runtime.imageio import read_image

    _, c = served
    status, up = c.call("POST", "/api/images", raw=LANDSCAPE.read_bytes())
    assert status == 200 and (up["width"], up["height"]) == (640, 427) and up["embed_ms"] > 0
    p = SamPredictor(vit_t_bundle, threads=2)
    p.set_image(read_image(LANDSCAPE))
    pt = [336.0, 309.0]
    status, r = c.call("POST", f"/api/images/{up['id']}/predict", {"points": [[*pt, 1]], "multimask": True})
    want, scores, low = p.predict(np.array([pt]), np.array([1]), multimask_output=True)
    assert status == 200 and len(r["masks"]) == 3 and r["decode_ms"] > 0
    for rle, m in zip(r["masks"], want):
        assert np.array_equal(rle_to_mask(rle), m)
    assert np.allclose(r["scores"], scores, atol=1e-6)
    # refinement: a background point, the chosen (second) mask's logits fed back
    body = {"points": [[*pt, 1], [100, 50, 0]], "multimask": False, "mask_input": "previous", "previous_index": 1}
    status, r2 = c.call("POST", f"/api/images/{up['id']}/predict", body)
    want2, scores2, _ = p.predict(np.array([pt, [100, 50]]), np.array([1, 0]), mask_input=low[1][None],
                                  multimask_output=False)
    assert status == 200 and np.array_equal(rle_to_mask(r2["masks"][0]), want2[0])
    assert np.allclose(r2["scores"], scores2, atol=1e-6)
    status, rb = c.call("POST", f"/api/images/{up['id']}/predict", {"box": [250, 230, 400, 350], "multimask": False})
    wb, _, _ = p.predict(box=np.array([250, 230, 400, 350]), multimask_output=False)
    assert status == 200 and np.array_equal(rle_to_mask(rb["masks"][0]), wb[0])
    body = {"points": [[*pt, 1]], "box": [250, 230, 400, 350], "multimask": False}
    status, rbp = c.call("POST", f"/api/images/{up['id']}/predict", body)
    wbp, sbp, _ = p.predict(np.array([pt]), np.array([1]), box=np.array([250, 230, 400, 350]), multimask_output=False)
    assert status == 200 and np.array_equal(rle_to_mask(rbp["masks"][0]), wbp[0])
    assert np.allclose(rbp["scores"], sbp, atol=1e-6)


def test_everything_returns_the_clis_records(served, vit_t_bundle, tmp_path):
    _, c = served
    _, up = c.call("POST", "/api/images", raw=LANDSCAPE.read_bytes())
    opts = {"points_per_side": 6, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.5}
    status, r = c.call("POST", f"/api/images/{up['id']}/everything", opts)
    cli = run_cli("everything", vit_t_bundle, LANDSCAPE, "--points-per-side", "6", "--pred-iou-thresh", "0",
                  "--stability-score-thresh", "0.5", "--threads", "2", "--quiet", "--out", tmp_path / "m.json")
    assert cli.returncode == 0, cli.stderr
    want = json.loads((tmp_path / "m.json").read_text())
    assert status == 200 and len(r["records"]) == len(want) > 0
    assert r["records"] == want
    status, prog = c.call("GET", f"/api/images/{up['id']}/progress")
    assert status == 200 and prog["running"] is False and prog["done"] == prog["total"] > 0
    # the image's own embedding is back after the generator ran: a click still answers for this image
    status, r2 = c.call("POST", f"/api/images/{up['id']}/predict", {"points": [[336, 309, 1]]})
    assert status == 200 and len(r2["masks"]) == 3


@pytest.mark.parametrize("method,path,body,status,needle", [
    ("POST", "/api/images/nope/predict", {"points": [[1, 1, 1]]}, 404, "no image 'nope'"),
    ("POST", "/api/images", None, 400, "image file's bytes"),
    ("GET", "/api/samples/other.png", None, 404, "no sample"),
    ("GET", "/api/nothing", None, 404, "no API GET /api/nothing"),
    ("GET", "/../etc/passwd", None, 404, "no page"),
])
def test_bad_requests_are_one_line_4xx(served, method, path, body, status, needle):
    _, c = served
    got, r = c.call(method, path, body)
    assert got == status and needle in r["error"] and "\n" not in r["error"], r


def test_bad_prompts_are_400(served):
    _, c = served
    _, up = c.call("POST", "/api/images", raw=LANDSCAPE.read_bytes())
    for body, needle in (({"pointz": []}, "unknown keys"), ({}, "empty prompt"), ({"points": [[1, 2]]}, "[x, y, label]"),
                         ({"points": [[1, 2, 7]]}, "point_labels"), ({"box": [5, 5, 1, 1]}, "x1 >= x0"),
                         ({"points": [[1, 2, 1]], "mask_input": "previous"}, "no earlier prediction")):
        status, r = c.call("POST", f"/api/images/{up['id']}/predict", body)
        assert status == 400 and needle in r["error"], (body, r)
    status, r = c.call("POST", "/api/images", raw=b"not an image at all")
    assert status == 400 and "\n" not in r["error"], r
    status, r = c.call("POST", f"/api/images/{up['id']}/everything", {"points_per_sid": 4})
    assert status == 400 and "unknown generator keywords" in r["error"]


def test_token_guards_the_page_and_the_api(vit_t_bundle):
    proc, c = _launch(vit_t_bundle, env={"EDGESAM_SERVE_TOKEN": "s3cret"})  # from the environment
    try:
        for path in ("/api/info", "/", "/app.js"):
            status, r = c.call("GET", path)
            assert status == 401 and "token" in r["error"], (path, r)
        assert Client(c.base, token="s3cret").call("GET", "/api/info")[0] == 200
        assert c.call("GET", "/api/info?token=s3cret")[0] == 200
        # the page opened with its token sets a cookie, which its own requests then carry
        with urllib.request.urlopen(c.base + "/?token=s3cret", timeout=60) as r:
            cookie = r.headers["Set-Cookie"].split(";")[0]
        req = urllib.request.Request(c.base + "/app.js", headers={"Cookie": cookie})
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200
    finally:
        assert _stop(proc) == 130


def test_two_clients_at_once_and_the_cache_bound(vit_t_bundle):
    """Two clients upload and click at the same time and both are answered; with --max-images 1 the
    least recently used image is dropped (404 naming the bound), the other still answers."""
    proc, c = _launch(vit_t_bundle, "--max-images", "1")
    try:
        results = {}

        def client(name, path):
            status, up = c.call("POST", "/api/images", raw=path.read_bytes())
            results[name] = (status, up, c.call("POST", f"/api/images/{up['id']}/predict", {"points": [[50, 60, 1]]}))

        threads = [threading.Thread(target=client, args=(n, REPO / "assets" / n)) for n in ("portrait.png", "panorama.png")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        assert all(r[0] == 200 and r[2][0] == 200 for r in results.values()), results
        codes = sorted(c.call("POST", f"/api/images/{r[1]['id']}/predict", {"points": [[50, 60, 1]]})[0]
                       for r in results.values())
        assert codes == [200, 404]
    finally:
        assert _stop(proc) == 130


def test_upload_too_large_is_413(served):
    _, c = served
    host, port = c.base.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.putrequest("POST", "/api/images")
    conn.putheader("Content-Length", str(10 ** 9))
    conn.endheaders()
    r = conn.getresponse()
    body = json.loads(r.read())
    assert r.status == 413 and "at most" in body["error"] and "\n" not in body["error"]
    conn.close()
    assert c.call("GET", "/api/info")[0] == 200  # and the server goes on


def test_sam2_bundle_is_served_the_same_way(tmp_path_factory):
    """The same API on a SAM 2 bundle (the tiny test model): predict equals SAM2ImagePredictor's."""
    pytest.importorskip("sam2")
    from edgesam.convert.pipeline import ConvertOptions, convert
    from edgesam.runtime import SAM2ImagePredictor
    from edgesam.runtime.imageio import read_image

    out = tmp_path_factory.mktemp("bundles") / "sam2_tiny"
    convert(ConvertOptions(model="sam2_tiny_test", out=out, random_init=0, precisions=("fp32",), video=False),
            log=lambda m: None)
    proc, c = _launch(out)
    try:
        assert c.call("GET", "/api/info")[1]["family"] == "sam2"
        _, up = c.call("POST", "/api/images", raw=LANDSCAPE.read_bytes())
        status, r = c.call("POST", f"/api/images/{up['id']}/predict", {"points": [[300, 200, 1]], "box": [250, 150, 400, 300],
                                                                       "multimask": False})
        p = SAM2ImagePredictor(out, threads=2)
        p.set_image(read_image(LANDSCAPE))
        want, scores, _ = p.predict(np.array([[300, 200]]), np.array([1]), box=np.array([250, 150, 400, 300]),
                                    multimask_output=False)
        assert status == 200 and np.array_equal(rle_to_mask(r["masks"][0]), want[0])
        assert np.allclose(r["scores"], scores, atol=1e-6)
    finally:
        assert _stop(proc) == 130


def test_cli_prints_the_url_and_warns_off_loopback(vit_t_bundle):
    proc = subprocess.Popen([sys.executable, "-m", "edgesam.cli", "serve", str(vit_t_bundle), "--host", "0.0.0.0",
                             "--port", "0", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first, second = proc.stdout.readline(), proc.stdout.readline()
        assert first.startswith("edgesam serve: http://0.0.0.0:") and first.strip().endswith("/"), first
        assert "reachable from the network" in second and "no --token" in second, second
        port = int(first.strip().rstrip("/").rsplit(":", 1)[1])
        assert Client(f"http://127.0.0.1:{port}").call("GET", "/api/info")[0] == 200
    finally:
        assert _stop(proc) == 130
    for args in (["/no/such/bundle"], [str(vit_t_bundle), "--max-images", "0"], [str(vit_t_bundle), "--port", "70000"]):
        bad = subprocess.run([sys.executable, "-m", "edgesam.cli", "serve", *args], capture_output=True,
                             text=True, timeout=120)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr, \
            (args, bad.stderr)


# --- the page, in a real browser --------------------------------------------------------------

def _chrome():
    webdriver = pytest.importorskip("selenium.webdriver")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (binary and driver):
        pytest.fail("the page test needs Debian's chromium and chromium-driver (make setup installs them)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1300,900"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(driver), options=opts)


def _wait(browser, script, timeout=240):
    t = time.time()
    while time.time() - t < timeout:
        v = browser.execute_script(script)
        if v:
            return v
        time.sleep(0.2)
    shown = browser.execute_script("return document.getElementById('error').textContent")
    raise AssertionError(f"timed out waiting for {script}: error shown: {shown}")


DRAWN_MASK = """
// the pixels the page tinted: its canvas against the image drawn alone, as row-major 0/1
const c = document.getElementById("canvas"), st = window.edgesam;
const off = document.createElement("canvas");
off.width = c.width; off.height = c.height;
const o = off.getContext("2d");
o.drawImage(st.image.bitmap, 0, 0);
const a = c.getContext("2d").getImageData(0, 0, c.width, c.height).data, b = o.getImageData(0, 0, c.width, c.height).data;
const out = new Array(c.width * c.height);
for (let i = 0; i < out.length; i++) out[i] = (a[4 * i] !== b[4 * i] || a[4 * i + 1] !== b[4 * i + 1] || a[4 * i + 2] !== b[4 * i + 2]) ? 1 : 0;
return out;
"""


def test_page_shows_the_mask_of_a_click(served, tmp_path):
    """The page loads from the server (no other host), a sample image is opened, a click on an object
    draws the mask the API gives for that click (read back from the canvas), with its score and decode
    time; Everything runs; a screenshot is saved."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    _, c = served
    browser = _chrome()
    try:
        browser.get(c.base + "/")
        _wait(browser, "return document.body.dataset.ready")
        assert "vit_t" in browser.find_element(By.ID, "info").text
        browser.find_element(By.XPATH, "//div[@id='samples']/button[text()='landscape.png']").click()
        iid = _wait(browser, "return document.body.dataset.imageId")
        canvas = browser.find_element(By.ID, "canvas")
        w, h = canvas.size["width"], canvas.size["height"]
        x, y = 336, 309  # on an object of the sample (the demo's click)
        ActionChains(browser).move_to_element_with_offset(canvas, int(x * w / 640 - w / 2),
                                                          int(y * h / 427 - h / 2)).click().perform()
        _wait(browser, "return document.body.dataset.predictions === '1'")
        assert browser.find_element(By.ID, "error").text == ""
        assert float(browser.find_element(By.ID, "score").text) > 0
        assert float(browser.find_element(By.ID, "decode-ms").text) > 0
        browser.save_screenshot(str(tmp_path / "serve.png"))
        drawn = np.array(browser.execute_script(DRAWN_MASK), bool).reshape(427, 640)
        # the API's answer to the same click on the same image (the point where the click landed, as the
        # page recorded it): the mask the page chose, the highest score
        x, y, label = browser.execute_script("return window.edgesam.objects[0].points[0]")
        assert label == 1 and abs(x - 336) < 2 and abs(y - 309) < 2
        status, r = c.call("POST", f"/api/images/{iid}/predict", {"points": [[x, y, 1]], "multimask": True})
        want = rle_to_mask(r["masks"][int(np.argmax(r["scores"]))])
        yy, xx = np.mgrid[:427, :640]
        away = (xx - x) ** 2 + (yy - y) ** 2 > 8 ** 2  # the point's dot is drawn there too
        assert status == 200 and want.sum() > 100
        assert np.array_equal(drawn[away], want[away]), (int((drawn ^ want)[away].sum()), int(want.sum()))
        browser.execute_script("document.getElementById('pps').value = 4")
        browser.find_element(By.ID, "everything").click()
        _wait(browser, "return document.body.dataset.everything !== undefined")
        assert browser.find_element(By.ID, "error").text == ""
    finally:
        browser.quit()
