// The setup view. Read-only: it only ever sends GET. Everything from the line (payloads
// above all) reaches the page through textContent or canvas fillText, never as HTML.
"use strict";

const COLORS = { read: "#1db954", noread: "#e5484d", detected: "#f5c400" };
const TOKEN_KEY = "edge-runtime-web-token";
const $ = (id) => document.getElementById(id);

// Control, bidi and line-separator characters shown as \uXXXX: a payload must read as
// what it holds, not be reordered or hidden (Trojan Source).
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/g;
function safeText(s) {
  if (s === null || s === undefined) return "";
  return String(s).replace(UNSAFE, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
}
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = safeText(text);
  if (cls) e.className = cls;
  return e;
}

// -- the token: from ?token= once, then kept in this browser --------------------------------
let token = null;
(function takeToken() {
  const url = new URL(location.href);
  const t = url.searchParams.get("token");
  if (t) {
    try { localStorage.setItem(TOKEN_KEY, t); } catch (e) { /* private mode: keep it in memory */ }
    token = t;
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search);  // not left in the address bar
  } else {
    try { token = localStorage.getItem(TOKEN_KEY); } catch (e) { token = null; }
  }
})();

class Unauthorized extends Error {}
async function get(path, kind) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const r = await fetch(path, { headers, cache: "no-store" });
  if (r.status === 401) throw new Unauthorized();
  if (!r.ok) throw new Error(path + ": " + r.status);
  return kind === "blob" ? r.blob() : r.json();
}
function askToken() {
  const form = $("login");
  if (!form.hidden) return;
  form.hidden = false;
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("token").value;
    try { localStorage.setItem(TOKEN_KEY, token); } catch (e) { /* memory only */ }
    form.hidden = true;
  }, { once: true });
}
function every(ms, fn) {
  const tick = async () => {
    try { await fn(); } catch (e) { if (e instanceof Unauthorized) askToken(); else console.warn(fn.name, e); }
    setTimeout(tick, ms);
  };
  tick();
}

// -- live view ------------------------------------------------------------------------------
let lastFrame = null;
async function pollFrame() {
  const f = await get("/api/frame");
  if (f.frame === null || f.frame === lastFrame) return;
  const blob = await get("/frame.jpg?frame=" + f.frame, "blob");
  const bmp = await createImageBitmap(blob);
  lastFrame = f.frame;
  draw(bmp, f);
  showAids(f.aids);
}

function draw(bmp, f) {
  const c = $("view");
  if (c.width !== bmp.width || c.height !== bmp.height) { c.width = bmp.width; c.height = bmp.height; }
  const g = c.getContext("2d");
  g.drawImage(bmp, 0, 0);
  const s = bmp.width / (f.width || bmp.width);
  const list = $("codes");
  list.replaceChildren();
  for (const code of f.codes) {
    const pts = code.corners || [];
    if (pts.length !== 4) continue;
    g.strokeStyle = COLORS[code.kind] || "#fff";
    g.lineWidth = 3;
    g.beginPath();
    pts.forEach(([x, y], i) => (i ? g.lineTo(x * s, y * s) : g.moveTo(x * s, y * s)));
    g.closePath();
    g.stroke();
    if (code.text) {
      const t = safeText(code.text).slice(0, 60);
      const x = Math.min(...pts.map((p) => p[0])) * s, y = Math.min(...pts.map((p) => p[1])) * s;
      g.font = "14px ui-monospace, monospace";
      g.fillStyle = "rgba(0,0,0,0.7)";
      g.fillRect(x, y - 18, g.measureText(t).width + 8, 18);
      g.fillStyle = COLORS.read;
      g.fillText(t, x + 4, y - 4);
    }
    const li = el("li", code.kind + (code.text ? ": " + code.text : ""), code.kind);
    list.append(li);
  }
  if (f.direction) drawArrow(g, f.direction, c.width);
  $("frame-index").textContent = String(f.frame);
  document.body.dataset.frame = String(f.frame);
}

function drawArrow(g, dir, w) {
  const v = { "+x": [1, 0], "-x": [-1, 0], "+y": [0, 1], "-y": [0, -1] }[dir];
  if (!v) return;
  const cx = w - 60, cy = 40, L = 30;
  g.strokeStyle = g.fillStyle = "#4aa3ff";
  g.lineWidth = 4;
  g.beginPath(); g.moveTo(cx - v[0] * L, cy - v[1] * L); g.lineTo(cx + v[0] * L, cy + v[1] * L); g.stroke();
  g.beginPath();
  g.moveTo(cx + v[0] * (L + 10), cy + v[1] * (L + 10));
  g.lineTo(cx + v[0] * L - v[1] * 8, cy + v[1] * L + v[0] * 8);
  g.lineTo(cx + v[0] * L + v[1] * 8, cy + v[1] * L - v[0] * 8);
  g.fill();
  $("direction").textContent = "belt " + dir;
}

function showAids(a) {
  if (!a) return;
  $("aid-focus").textContent = a.focus.score.toFixed(0);
  $("aid-focus-hint").textContent = a.focus.hint;
  $("aid-module").textContent = a.module_px.value === null ? "–" : a.module_px.value.toFixed(1) + " px";
  $("aid-module-hint").textContent = a.module_px.hint;
  const e = a.exposure;
  $("aid-exposure").textContent = "mean " + e.mean + ", clipped " + (100 * e.clipped_low).toFixed(1) + " % black / " + (100 * e.clipped_high).toFixed(1) + " % white";
  $("aid-exposure-hint").textContent = e.hint;
  $("aid-smear").textContent = a.smear_modules.value === null ? "–" : a.smear_modules.value.toFixed(1) + " modules";
  $("aid-smear-hint").textContent = a.smear_modules.hint;
  const c = $("histogram"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const max = Math.max(...e.bins, 1e-6), bw = c.width / e.bins.length;
  e.bins.forEach((b, i) => {
    g.fillStyle = i === 0 || i === e.bins.length - 1 ? COLORS.noread : "#8ab4f8";
    const h = (b / max) * (c.height - 2);
    g.fillRect(i * bw, c.height - h, bw - 1, h);
  });
}

// -- line view ------------------------------------------------------------------------------
function row(table, cells, cls) {
  const tr = document.createElement("tr");
  if (cls) tr.className = cls;
  cells.forEach(([text, tcls], i) => tr.append(el(i === 0 && table.tagName === "TABLE" && cells.length === 2 ? "th" : "td", text, tcls)));
  table.append(tr);
}

async function pollStatus() {
  const s = await get("/api/status");
  $("svc").textContent = safeText(s.service);
  $("model").textContent = safeText(s.model || "none");
  $("detector").textContent = safeText(s.detector || "no detector");
  $("viewers").textContent = s.viewers + " viewer(s)";
  const c = $("counters");
  c.replaceChildren();
  const rate = s.read_rate_10min === null ? "–" : (100 * s.read_rate_10min).toFixed(1) + " %";
  row(c, [["read rate (10 min)"], [rate]]);
  for (const [k, v] of Object.entries(s.counters)) row(c, [[k], [v === null ? "–" : String(v)]]);
  row(c, [["stage ms (p50)"], [Object.entries(s.stage_ms_p50 || {}).map(([k, v]) => k + " " + v).join(", ")]]);
  const sk = $("sinks");
  sk.replaceChildren();
  for (const [name, st] of Object.entries(s.sinks)) {
    const state = st.connected === undefined || st.connected === null ? "up" : st.connected ? "connected" : "down";
    const q = st.queued === undefined ? "" : ", outbox " + st.queued;
    row(sk, [[name + " (" + st.kind + ")"], [state + q + (st.last_error ? " – " + st.last_error : "")]]);
  }
  drawChart(s.per_minute);
  $("gallery-box").hidden = !s.noread_images;
}

function drawChart(rows) {
  const c = $("chart"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const now = Date.now() / 1000, w = c.width / 60, h = c.height - 12;
  g.fillStyle = "#9aa0a6"; g.font = "10px sans-serif";
  g.fillText("read rate (bars) · grade 0–4 (line) · −60 min … now", 2, 10);
  const pts = [];
  for (const r of rows) {
    const x = c.width - ((now - r.t) / 60) * w;
    if (r.rate !== null) {
      g.fillStyle = r.rate >= 0.99 ? COLORS.read : r.rate >= 0.9 ? COLORS.detected : COLORS.noread;
      g.fillRect(x - w, c.height - r.rate * h, w - 1, r.rate * h);
    }
    if (r.grade !== null) pts.push([x - w / 2, c.height - (r.grade / 4) * h]);
  }
  if (pts.length) {
    g.strokeStyle = "#fff"; g.lineWidth = 1.5; g.beginPath();
    pts.forEach(([x, y], i) => (i ? g.lineTo(x, y) : g.moveTo(x, y)));
    g.stroke();
  }
}

let lastId = 0;
const shown = [];
async function pollResults() {
  const got = await get("/api/results?after=" + lastId);
  if (!got.length) return;
  for (const r of got) { lastId = Math.max(lastId, r.id); shown.unshift(r); rateTest(r); }
  shown.length = Math.min(shown.length, 50);
  const body = $("results").tBodies[0];
  body.replaceChildren();
  for (const r of shown) {
    const how = r.kind === "read" ? (r.decoder || "") + " " + (r.stage || "") : (r.reason || "");
    row(body, [[r.id], [(r.ts || "").slice(11, 23)], [r.kind], [r.text === null ? "" : r.text, "payload"], [r.grade || ""], [how]], r.kind);
  }
}

// The read-rate test is kept by this page alone: starting it changes nothing on the device.
let test = null;
$("rt-start").addEventListener("click", () => {
  const n = Math.max(1, Math.min(10000, parseInt($("rt-n").value, 10) || 100));
  test = { n, after: lastId, reads: 0, noreads: 0 };
  $("rt-result").textContent = "running: 0 of " + n;
});
function rateTest(r) {
  if (!test || r.id <= test.after || test.reads + test.noreads >= test.n) return;
  if (r.kind === "read") test.reads++; else test.noreads++;
  const done = test.reads + test.noreads;
  const rate = (100 * test.reads / done).toFixed(1);
  $("rt-result").textContent = (done >= test.n ? "done: " : "running: " + done + " of " + test.n + ", ") +
    test.reads + " read, " + test.noreads + " noread = " + rate + " %";
}

const galleryUrls = new Map();
async function pollGallery() {
  if ($("gallery-box").hidden) return;
  const ids = await get("/api/noreads");
  const box = $("gallery");
  for (const [id, url] of galleryUrls) if (!ids.includes(id)) { URL.revokeObjectURL(url); galleryUrls.delete(id); }
  for (const id of ids) if (!galleryUrls.has(id)) galleryUrls.set(id, URL.createObjectURL(await get("/noreads/" + id + ".png", "blob")));
  box.replaceChildren(...ids.map((id) => {
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.src = galleryUrls.get(id);
    img.alt = "noread " + id;
    fig.append(img, el("figcaption", "#" + id));
    return fig;
  }));
}

every(200, pollFrame);   // <= 5 fps
every(1000, pollStatus);
every(1000, pollResults);
every(5000, pollGallery);
