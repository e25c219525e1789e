// edgesam serve: the page. Plain JavaScript, no libraries: the device may be offline.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
const token = new URLSearchParams(location.search).get("token");
const COLORS = [[30, 144, 255], [255, 99, 71], [50, 205, 50], [255, 215, 0], [186, 85, 211], [0, 206, 209],
                [255, 140, 0], [199, 21, 133]];

const state = window.edgesam = {  // also what a test (or a curious user) can read from the console
  image: null,        // {id, width, height, bitmap, name}
  objects: [],        // {color, points: [[x, y, label]], box, masks, scores, chosen, history: []}
  current: -1,
  everything: [],     // records of the last "Segment everything"
  drag: null,
};

// --- the API -------------------------------------------------------------------------------
async function api(method, path, body, isJson = true) {
  const headers = {};
  if (token) headers["Authorization"] = "Bearer " + token;
  if (body !== undefined && isJson) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {method, headers, body: body === undefined ? undefined : (isJson ? JSON.stringify(body) : body)});
  const data = await res.json();
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}

function showError(e) { $("error").textContent = e ? String(e.message || e) : ""; }

// --- COCO RLE (compressed counts, column-major runs starting with background) -> row-major mask ---
function countsFromString(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let value = 0, shift = 0, more = true, c = 0;
    while (more) {
      c = s.charCodeAt(p++) - 48;
      value |= (c & 0x1f) << shift;
      more = (c & 0x20) !== 0;
      shift += 5;
    }
    if (c & 0x10) value |= -1 << shift;        // negative: sign-extend
    if (counts.length > 2) value += counts[counts.length - 2];  // stored as a difference
    counts.push(value);
  }
  return counts;
}

function decodeRle(rle) {
  const [h, w] = rle.size;
  const counts = typeof rle.counts === "string" ? countsFromString(rle.counts) : rle.counts;
  const mask = new Uint8Array(h * w);
  let idx = 0, on = 0;
  for (const n of counts) {
    if (on) for (let k = idx; k < idx + n; k++) mask[(k % h) * w + Math.floor(k / h)] = 1;
    idx += n;
    on ^= 1;
  }
  return {mask, h, w};
}

// --- drawing --------------------------------------------------------------------------------
function paintMask(image, m, color, alpha) {
  const d = image.data;
  for (let i = 0; i < m.mask.length; i++) {
    if (!m.mask[i]) continue;
    const o = 4 * i;
    d[o] = d[o] * (1 - alpha) + color[0] * alpha;
    d[o + 1] = d[o + 1] * (1 - alpha) + color[1] * alpha;
    d[o + 2] = d[o + 2] * (1 - alpha) + color[2] * alpha;
  }
}

function draw() {
  if (!state.image) return;
  ctx.drawImage(state.image.bitmap, 0, 0);
  const img = ctx.getImageData(0, 0, canvas.width, canvas.height);
  for (const [i, rec] of state.everything.entries()) paintMask(img, rec.decoded, COLORS[i % COLORS.length], 0.4);
  for (const obj of state.objects) if (obj.masks) paintMask(img, obj.masks[obj.chosen], obj.color, 0.5);
  ctx.putImageData(img, 0, 0);
  for (const obj of state.objects) {
    for (const [x, y, label] of obj.points) {
      ctx.beginPath();
      ctx.arc(x, y, 5, 0, 2 * Math.PI);
      ctx.fillStyle = label ? "#2c2" : "#e22";
      ctx.fill();
      ctx.strokeStyle = "#fff";
      ctx.stroke();
    }
    if (obj.box) {
      const [x0, y0, x1, y1] = obj.box;
      ctx.strokeStyle = `rgb(${obj.color.join(",")})`;
      ctx.lineWidth = 2;
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
      ctx.lineWidth = 1;
    }
  }
  if (state.drag && state.drag.moved) {
    const {x0, y0, x1, y1} = state.drag;
    ctx.setLineDash([4, 3]);
    ctx.strokeStyle = "#fff";
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    ctx.setLineDash([]);
  }
  $("objects-count").textContent = `objects: ${state.objects.filter((o) => o.masks).length}`;
  drawCandidates();
}

function drawCandidates() {
  const box = $("candidates");
  box.innerHTML = "";
  const obj = state.objects[state.current];
  if (!$("multimask").checked || !obj || !obj.masks || obj.masks.length < 2) return;
  obj.masks.forEach((m, i) => {
    const c = document.createElement("canvas");
    c.width = m.w;
    c.height = m.h;
    c.title = `score ${obj.scores[i].toFixed(3)}`;
    c.className = i === obj.chosen ? "chosen" : "";
    const x = c.getContext("2d");
    x.drawImage(state.image.bitmap, 0, 0);
    const img = x.getImageData(0, 0, m.w, m.h);
    paintMask(img, m, obj.color, 0.6);
    x.putImageData(img, 0, 0);
    c.addEventListener("click", () => { obj.chosen = i; $("score").textContent = obj.scores[i].toFixed(3); draw(); });
    box.appendChild(c);
  });
}

// --- images ---------------------------------------------------------------------------------
async function openImage(blob, name) {
  showError(null);
  try {
    const bitmap = await createImageBitmap(blob);
    const res = await api("POST", "/api/images", blob, false);
    state.image = {id: res.id, width: res.width, height: res.height, bitmap, name};
    canvas.width = res.width;
    canvas.height = res.height;
    state.objects = [];
    state.everything = [];
    newObject();
    $("embed-ms").textContent = res.embed_ms.toFixed(0);
    document.body.dataset.imageId = res.id;
    draw();
  } catch (e) { showError(e); }
}

async function loadSamples() {
  const {samples} = await api("GET", "/api/samples");
  for (const name of samples) {
    const b = document.createElement("button");
    b.textContent = name;
    b.addEventListener("click", async () => {
      const res = await fetch(`/api/samples/${name}` + (token ? `?token=${encodeURIComponent(token)}` : ""));
      openImage(await res.blob(), name);
    });
    $("samples").appendChild(b);
  }
}

// --- prompts --------------------------------------------------------------------------------
function newObject() {
  state.objects = state.objects.filter((o) => o.masks || o.points.length || o.box);
  state.objects.push({color: COLORS[state.objects.length % COLORS.length], points: [], box: null, masks: null,
                      scores: null, chosen: 0, history: []});
  state.current = state.objects.length - 1;
  draw();
}

async function predict(obj) {
  if (!obj.points.length && !obj.box) { obj.masks = null; draw(); return; }
  const single = obj.points.length === 1 && !obj.box;
  const body = {points: obj.points, box: obj.box, multimask: $("multimask").checked || single,
                mask_input: obj.masks && !single ? "previous" : null,
                previous_index: obj.masks && !single ? obj.chosen : null};
  try {
    const res = await api("POST", `/api/images/${state.image.id}/predict`, body);
    obj.masks = res.masks.map(decodeRle);
    obj.rles = res.masks;
    obj.scores = res.scores;
    obj.chosen = res.scores.indexOf(Math.max(...res.scores));
    $("decode-ms").textContent = res.decode_ms.toFixed(1);
    $("score").textContent = res.scores[obj.chosen].toFixed(3);
    showError(null);
  } catch (e) { showError(e); }
  document.body.dataset.predictions = String(Number(document.body.dataset.predictions || 0) + 1);
  draw();
}

function remember(obj) {
  obj.history.push({points: obj.points.map((p) => p.slice()), box: obj.box && obj.box.slice()});
}

function canvasXY(ev) {
  const r = canvas.getBoundingClientRect();
  return [(ev.clientX - r.left) * canvas.width / r.width, (ev.clientY - r.top) * canvas.height / r.height];
}

canvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
canvas.addEventListener("mousedown", (ev) => {
  if (!state.image) return;
  const [x, y] = canvasXY(ev);
  state.drag = {x0: x, y0: y, x1: x, y1: y, moved: false, button: ev.button, shift: ev.shiftKey};
});
canvas.addEventListener("mousemove", (ev) => {
  if (!state.drag) return;
  const [x, y] = canvasXY(ev);
  Object.assign(state.drag, {x1: x, y1: y});
  if (Math.abs(x - state.drag.x0) + Math.abs(y - state.drag.y0) > 6) state.drag.moved = true;
  if (state.drag.moved) draw();
});
canvas.addEventListener("mouseup", (ev) => {
  const d = state.drag;
  state.drag = null;
  if (!d || !state.image) return;
  const obj = state.objects[state.current];
  remember(obj);
  if (d.moved) {
    obj.box = [Math.min(d.x0, d.x1), Math.min(d.y0, d.y1), Math.max(d.x0, d.x1), Math.max(d.y0, d.y1)];
  } else {
    obj.points.push([d.x0, d.y0, d.button === 2 || d.shift ? 0 : 1]);
  }
  predict(obj);
});

$("new-object").addEventListener("click", newObject);
$("undo").addEventListener("click", () => {
  const obj = state.objects[state.current];
  if (!obj || !obj.history.length) return;
  Object.assign(obj, obj.history.pop());
  obj.masks = null;  // the earlier prompt's mask is decoded afresh
  predict(obj);
});
$("clear").addEventListener("click", () => { state.objects = []; state.everything = []; newObject(); });
$("multimask").addEventListener("change", draw);

// --- everything -----------------------------------------------------------------------------
$("everything").addEventListener("click", async () => {
  if (!state.image) return;
  const bar = $("progress");
  bar.hidden = false;
  bar.removeAttribute("value");
  const id = state.image.id;
  const poll = setInterval(async () => {
    try {
      const p = await api("GET", `/api/images/${id}/progress`);
      if (p.total) { bar.max = p.total; bar.value = p.done; }
    } catch (e) { /* the run itself reports errors */ }
  }, 300);
  try {
    const res = await api("POST", `/api/images/${id}/everything`, {points_per_side: Number($("pps").value)});
    state.everything = res.records.map((r) => ({...r, decoded: decodeRle(r.segmentation)}));
    $("decode-ms").textContent = res.ms.toFixed(0);
    document.body.dataset.everything = String(res.records.length);
    showError(null);
  } catch (e) { showError(e); }
  clearInterval(poll);
  bar.hidden = true;
  draw();
});

// --- downloads ------------------------------------------------------------------------------
function masksForExport() {
  const out = state.objects.filter((o) => o.masks).map((o) => ({rle: o.rles[o.chosen], decoded: o.masks[o.chosen],
                                                               score: o.scores[o.chosen], color: o.color}));
  state.everything.forEach((r, i) => out.push({rle: r.segmentation, decoded: r.decoded, score: r.predicted_iou,
                                               color: COLORS[i % COLORS.length]}));
  return out;
}

function save(name, url) {
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.click();
}

$("download-png").addEventListener("click", () => {
  if (!state.image) return;
  const c = document.createElement("canvas");
  c.width = state.image.width;
  c.height = state.image.height;
  const x = c.getContext("2d");
  const img = x.createImageData(c.width, c.height);
  for (const m of masksForExport()) {
    for (let i = 0; i < m.decoded.mask.length; i++) {
      if (!m.decoded.mask[i]) continue;
      img.data.set([...m.color, 255], 4 * i);
    }
  }
  x.putImageData(img, 0, 0);
  save("masks.png", c.toDataURL("image/png"));
});

$("download-coco").addEventListener("click", () => {
  if (!state.image) return;
  const anns = masksForExport().map((m, i) => {
    const {mask, h, w} = m.decoded;
    let area = 0, x0 = w, y0 = h, x1 = -1, y1 = -1;
    for (let k = 0; k < mask.length; k++) {
      if (!mask[k]) continue;
      area++;
      const y = Math.floor(k / w), x = k % w;
      x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y);
    }
    return {id: i + 1, image_id: 1, category_id: 1, segmentation: m.rle, area, score: m.score,
            bbox: area ? [x0, y0, x1 - x0 + 1, y1 - y0 + 1] : [0, 0, 0, 0], iscrowd: 0};
  });
  const coco = {images: [{id: 1, file_name: state.image.name, width: state.image.width, height: state.image.height}],
                annotations: anns, categories: [{id: 1, name: "object"}]};
  save("masks.coco.json", URL.createObjectURL(new Blob([JSON.stringify(coco)], {type: "application/json"})));
});

// --- drag and drop, file input, start -------------------------------------------------------
const stage = $("stage");
stage.addEventListener("dragover", (ev) => { ev.preventDefault(); stage.classList.add("dragover"); });
stage.addEventListener("dragleave", () => stage.classList.remove("dragover"));
stage.addEventListener("drop", (ev) => {
  ev.preventDefault();
  stage.classList.remove("dragover");
  const f = ev.dataTransfer.files[0];
  if (f) openImage(f, f.name);
});
$("file").addEventListener("change", (ev) => { const f = ev.target.files[0]; if (f) openImage(f, f.name); });

(async () => {
  try {
    const info = await api("GET", "/api/info");
    $("info").textContent = `${info.model} (${info.family}) · ${info.backend} ${info.precision} · ` +
      `${info.threads} threads · edgesam ${info.version}` + (info.untrained ? " · UNTRAINED" : "");
    await loadSamples();
    document.body.dataset.ready = "1";
  } catch (e) { showError(e); }
})();
