// soundcheck dashboard: plain JS over the server's own API (no build step, no CDN). The keys come
// from /dashboard/config, which the server answers only for loopback clients. Waveforms and the
// piano roll are drawn by hand on <canvas> from the result files themselves.
"use strict";

let cfg = null;
// Items submitted from the Faults tab, newest first: { kind: "job" | "gen", id, fault }.
const faultSubmissions = [];

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

// The page's once-a-second polls carry this header, so the server logs them at debug level.
const POLL = { "X-Soundcheck-Dashboard": "poll" };

const authHeaders = (key) => key === "ft" ? { "X-API-Key": cfg.ft_key } : { Authorization: "Bearer " + cfg.tl_key };

async function api(method, path, body, key = "tl", extraHeaders = {}) {
  const headers = authHeaders(key);
  Object.assign(headers, extraHeaders);
  const init = { method, headers };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  const r = await fetch(path, init);
  const data = await r.json().catch(() => null);
  if (!r.ok) throw new Error(`${r.status} ${data?.error?.code ?? ""}: ${data?.error?.message ?? ""}`);
  return data;
}

// Statuses from which an item can still be cancelled.
const LIVE = new Set(["queued", "running", "processing"]);
const enc = encodeURIComponent;
// Pretty-prints a body that is JSON; anything else is shown as sent.
function pretty(text) {
  if (text == null) return "";
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return String(text); }
}

function showTab(name) {
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.id === "tab-" + name));
  document.querySelectorAll("nav a[data-tab]").forEach((a) => a.classList.toggle("active", a.dataset.tab === name));
  redrawCanvases();
}

function setSecret(id, value) {
  const el = $(id);
  el.dataset.value = value;
  el.textContent = el.dataset.hidden === "1" ? "•".repeat(12) : value;
}

// ---------------------------------------------------------------------------------------------
// Media: result URLs are absolute on the server's public URL; when the page was opened under
// another origin (a proxy, 127.0.0.1 vs localhost) fetch the same path from this page's origin.

function sameOrigin(url) {
  try {
    const u = new URL(url, location.href);
    return u.origin === location.origin ? u.href : location.origin + u.pathname;
  } catch {
    return url;
  }
}

const isAudio = (url) => /\.(wav|mp3|flac|ogg)$/i.test(url) || /\/dashboard\/jobs\/[^/]+\/input$/.test(url);

/** Every media URL in a result, as [name, url], in document order. */
function mediaUrls(result) {
  const urls = [];
  // `metadata` holds what the upload says of itself (its tags): never a file of ours, whatever
  // it looks like.
  const walk = (v, name) => {
    if (typeof v === "string" && /^https?:\/\/.*\/media\//.test(v)) urls.push([name, v]);
    else if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) if (k !== "metadata") walk(x, k);
  };
  walk(result, "file");
  return urls;
}

/** A file link, and for audio a player with its waveform underneath. */
function trackHtml(name, url) {
  if (!isAudio(url)) return `<li><a href="${esc(url)}">${esc(name)}</a> <small>${esc(url.split("/").pop())}</small></li>`;
  return `<li class="track"><div class="track-head"><a href="${esc(url)}">${esc(name)}</a>
    <audio controls preload="none" src="${esc(url)}"></audio> <small class="wave-info"></small></div>
    <canvas class="wave" data-src="${esc(url)}" data-name="${esc(name)}" title="click to play from here"></canvas></li>`;
}

// ---------------------------------------------------------------------------------------------
// Waveforms: fetch the file, decode it with Web Audio, then min/max of all channels per pixel
// column. Decoded audio is cached per URL (the files never change under a URL).

const decodedAudio = new Map();

function decodeAudio(url) {
  if (!decodedAudio.has(url)) {
    decodedAudio.set(url, (async () => {
      const r = await fetch(sameOrigin(url));
      if (!r.ok) throw new Error("HTTP " + r.status);
      const bytes = await r.arrayBuffer();
      // An offline context decodes without a user gesture; it resamples to its own rate.
      const ctx = new OfflineAudioContext(1, 1, 44100);
      const buf = await ctx.decodeAudioData(bytes);
      const chans = [];
      for (let c = 0; c < buf.numberOfChannels; c++) chans.push(buf.getChannelData(c));
      return { chans, length: buf.length, duration: buf.duration, channels: buf.numberOfChannels };
    })());
  }
  return decodedAudio.get(url);
}

/** Sizes a canvas's bitmap to its laid-out size (device pixels); false if unchanged. */
function fitCanvas(canvas, cssHeight) {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.round((canvas.clientWidth || 800) * dpr);
  const h = Math.round(cssHeight * dpr);
  if (canvas.width === w && canvas.height === h && canvas.dataset.drawn) return false;
  canvas.width = w;
  canvas.height = h;
  return true;
}

function canvasMessage(canvas, text) {
  const g = canvas.getContext("2d");
  g.fillStyle = "#f4f6f8";
  g.fillRect(0, 0, canvas.width, canvas.height);
  g.fillStyle = "#777";
  g.font = `${12 * (window.devicePixelRatio || 1)}px system-ui, sans-serif`;
  g.fillText(text, 8, canvas.height / 2);
}

/** Picks a tick step (seconds) giving roughly `want` ticks over `span`. */
function tickStep(span, want) {
  const raw = span / want;
  for (const s of [0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300]) if (s >= raw) return s;
  return 600;
}

async function drawWave(canvas) {
  if (!fitCanvas(canvas, 80)) return;
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.width, h = canvas.height;
  canvasMessage(canvas, "decoding…");
  let a;
  try {
    a = await decodeAudio(canvas.dataset.src);
  } catch (e) {
    canvas.dataset.error = e.message;
    canvasMessage(canvas, "could not decode this file: " + e.message);
    return;
  }
  const g = canvas.getContext("2d");
  const axis = 14 * dpr, mid = (h - axis) / 2, scale = mid * 0.95;
  g.fillStyle = "#f4f6f8";
  g.fillRect(0, 0, w, h);
  g.fillStyle = "#c9d3dd";
  g.fillRect(0, Math.round(mid), w, 1);
  g.fillStyle = "#2f6fb3";
  let peak = 0;
  for (let x = 0; x < w; x++) {
    const s0 = Math.floor((x * a.length) / w);
    const s1 = Math.max(s0 + 1, Math.floor(((x + 1) * a.length) / w));
    let lo = Infinity, hi = -Infinity;
    for (const ch of a.chans) {
      for (let i = s0; i < s1 && i < a.length; i++) {
        const v = ch[i];
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
    if (lo > hi) continue;
    peak = Math.max(peak, -lo, hi);
    const y0 = mid - Math.min(1, hi) * scale, y1 = mid - Math.max(-1, lo) * scale;
    g.fillRect(x, Math.floor(y0), 1, Math.max(1, Math.ceil(y1 - y0)));
  }
  // Time axis along the bottom.
  g.fillStyle = "#888";
  g.font = `${10 * dpr}px system-ui, sans-serif`;
  const step = tickStep(a.duration, Math.max(2, w / dpr / 90));
  for (let t = 0; t <= a.duration + 1e-9; t += step) {
    const x = Math.round((t / a.duration) * (w - 1));
    g.fillRect(x, h - axis, 1, 4 * dpr);
    g.fillText(fmtTime(t), Math.min(x + 2 * dpr, w - 30 * dpr), h - 2 * dpr);
  }
  canvas._base = g.getImageData(0, 0, w, h);
  canvas._duration = a.duration;
  canvas.dataset.drawn = "1";
  canvas.dataset.duration = a.duration.toFixed(3);
  canvas.dataset.peak = peak.toFixed(4);
  const info = canvas.closest(".track")?.querySelector(".wave-info");
  if (info) {
    const db = peak > 0 ? (20 * Math.log10(peak)).toFixed(1) + " dBFS peak" : "silent";
    info.textContent = `${a.duration.toFixed(2)} s · ${a.channels === 1 ? "mono" : a.channels + " channels"} · ${db}`;
  }
  drawPlayhead(canvas);
}

const fmtTime = (t) => (t >= 60 ? `${Math.floor(t / 60)}:${String(Math.round(t % 60)).padStart(2, "0")}` : `${+t.toFixed(2)}s`);

function drawPlayhead(canvas) {
  const audio = canvas.closest(".track")?.querySelector("audio");
  if (!canvas._base || !audio) return;
  const g = canvas.getContext("2d");
  g.putImageData(canvas._base, 0, 0);
  if (audio.currentTime > 0 && canvas._duration) {
    const x = Math.round((audio.currentTime / canvas._duration) * (canvas.width - 1));
    g.fillStyle = "#d9534f";
    g.fillRect(x, 0, Math.max(1, window.devicePixelRatio || 1), canvas.height);
  }
}

document.addEventListener("timeupdate", (ev) => {
  const c = ev.target.closest?.(".track")?.querySelector("canvas.wave");
  if (c) drawPlayhead(c);
}, true);

// ---------------------------------------------------------------------------------------------
// Piano roll of a transcription: the notes JSON file of the result (start/end in seconds, MIDI
// pitch, velocity); time on x, pitch on y with note names, velocity as shade.

const NOTE_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"];
const noteName = (p) => NOTE_NAMES[((p % 12) + 12) % 12] + (Math.floor(p / 12) - 1);
const isBlackKey = (p) => [1, 3, 6, 8, 10].includes(((p % 12) + 12) % 12);

async function drawRoll(canvas) {
  let notes = canvas._notes;
  if (!notes) {
    try {
      const r = await fetch(sameOrigin(canvas.dataset.src));
      if (!r.ok) throw new Error("HTTP " + r.status);
      notes = canvas._notes = await r.json();
    } catch (e) {
      fitCanvas(canvas, 60);
      canvas.dataset.error = e.message;
      canvasMessage(canvas, "could not load the notes: " + e.message);
      return;
    }
  }
  const dpr = window.devicePixelRatio || 1;
  if (!notes.length) {
    fitCanvas(canvas, 60);
    canvasMessage(canvas, "no notes were transcribed");
    canvas.dataset.notes = "0";
    canvas.dataset.drawn = "1";
    return;
  }
  let lo = Math.min(...notes.map((n) => n.pitch)) - 2, hi = Math.max(...notes.map((n) => n.pitch)) + 2;
  while (hi - lo < 12) { lo--; if (hi - lo < 12) hi++; }
  const rows = hi - lo + 1;
  const rowCss = Math.max(6, Math.min(16, Math.floor(420 / rows)));
  const axisCss = 18, gutterCss = 44;
  if (!fitCanvas(canvas, rows * rowCss + axisCss)) return;
  const w = canvas.width, h = canvas.height, rowH = rowCss * dpr, gutter = gutterCss * dpr;
  const plotW = w - gutter, plotH = rows * rowH;
  const duration = Math.max(Number(canvas.dataset.duration) || 0, ...notes.map((n) => n.end));
  const X = (t) => gutter + (t / duration) * plotW;
  const g = canvas.getContext("2d");
  g.fillStyle = "#fff";
  g.fillRect(0, 0, w, h);
  g.font = `${Math.min(11, rowCss) * dpr}px system-ui, sans-serif`;
  g.textBaseline = "middle";
  const labelEvery = rowCss >= 11 ? 1 : 12;
  for (let p = hi; p >= lo; p--) {
    const y = (hi - p) * rowH;
    g.fillStyle = isBlackKey(p) ? "#e9edf1" : "#f8fafb";
    g.fillRect(gutter, y, plotW, rowH);
    if (p % 12 === 0) { g.fillStyle = "#c5ccd3"; g.fillRect(gutter, y + rowH - 1, plotW, 1); }
    if ((labelEvery === 1 && !isBlackKey(p)) || p % 12 === 0) {
      g.fillStyle = p % 12 === 0 ? "#222" : "#666";
      g.fillText(noteName(p), 4 * dpr, y + rowH / 2);
    }
  }
  // Seconds grid and labels.
  const step = tickStep(duration, Math.max(2, plotW / dpr / 90));
  g.textBaseline = "alphabetic";
  for (let t = 0; t <= duration + 1e-9; t += step) {
    const x = Math.round(X(t));
    g.fillStyle = "#dde3e8";
    g.fillRect(x, 0, 1, plotH);
    g.fillStyle = "#888";
    g.fillText(fmtTime(t), Math.min(x + 2 * dpr, w - 30 * dpr), h - 4 * dpr);
  }
  // Notes: louder is darker.
  const rects = [];
  for (const n of notes) {
    const v = Math.max(0, Math.min(127, n.velocity ?? 80)) / 127;
    const x = X(n.start), y = (hi - n.pitch) * rowH + 1;
    const rw = Math.max(2 * dpr, X(n.end) - x), rh = Math.max(2, rowH - 2);
    g.fillStyle = `hsl(212, 70%, ${Math.round(78 - v * 50)}%)`;
    g.fillRect(x, y, rw, rh);
    g.strokeStyle = "rgba(0, 40, 90, .55)";
    g.lineWidth = 1;
    g.strokeRect(x + 0.5, y + 0.5, rw - 1, rh - 1);
    rects.push({ x, y, w: rw, h: rh, n });
  }
  canvas._rects = rects;
  canvas.dataset.notes = String(rects.length);
  canvas.dataset.pitchRange = `${noteName(lo)}–${noteName(hi)}`;
  canvas.dataset.drawn = "1";
}

document.addEventListener("mousemove", (ev) => {
  const c = ev.target;
  if (!(c instanceof HTMLCanvasElement) || !c._rects) return;
  const r = c.getBoundingClientRect(), k = c.width / r.width;
  const x = (ev.clientX - r.left) * k, y = (ev.clientY - r.top) * k;
  const hit = c._rects.find((q) => x >= q.x && x <= q.x + q.w && y >= q.y && y <= q.y + q.h);
  c.title = hit ? `${noteName(hit.n.pitch)} (MIDI ${hit.n.pitch}) · ${hit.n.start.toFixed(2)}–${hit.n.end.toFixed(2)} s · velocity ${hit.n.velocity}` : "";
});

/** Draws every waveform and piano roll in the document that is not drawn at its current size. */
function redrawCanvases() {
  document.querySelectorAll(".tab.active canvas.wave").forEach((c) => drawWave(c));
  document.querySelectorAll(".tab.active canvas.roll").forEach((c) => drawRoll(c));
}
let resizeTimer = null;
window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(redrawCanvases, 200); });

// ---------------------------------------------------------------------------------------------
// Reports: the analysis and mastering results as tables, with units taken from the field names.

const LABELS = {
  bpm: "Tempo", integrated_lufs: "Integrated loudness", lra_lu: "Loudness range", true_peak_dbtp: "True peak",
  sample_peak_dbfs: "Sample peak", rms_dbfs: "RMS level", peak_dbfs: "Peak level", name: "Key",
  tuning_cents: "Tuning", duration_secs: "Duration", duration_s: "Duration", duration: "Duration",
  spectral_centroid_hz: "Spectral centroid", spectral_rolloff_hz: "Spectral roll-off",
  onset_rate_per_sec: "Onsets per second", zero_crossing_rate: "Zero-crossing rate",
  target_lufs: "Target loudness", true_peak_ceiling_db: "True-peak ceiling", eq_low_shelf_db: "EQ low shelf",
  eq_high_shelf_db: "EQ high shelf", compressor_max_reduction_db: "Compressor, most reduction",
  limiter_max_reduction_db: "Limiter, most reduction", gain_db: "Gain", bit_rate_kbps: "Bit rate",
  file_size: "File size", note_count: "Notes", midi_tempo: "MIDI tempo", min_note_ms: "Shortest note",
  expires_at: "Links expire", min_hz: "Lowest pitch", max_hz: "Highest pitch", sample_rate: "Sample rate",
  timesignature: "Time signature", keyscale: "Key",
};
const UNITS = [
  [/_lufs$/, "LUFS"], [/_dbtp$/, "dBTP"], [/_dbfs$/, "dBFS"], [/_db$/, "dB"], [/_lu$/, "LU"], [/_hz$/, "Hz"],
  [/_cents$/, "cents"], [/_secs$|_s$|^duration$/, "s"], [/_kbps$/, "kbit/s"], [/^sample_rate$/, "Hz"], [/_ms$/, "ms"], [/^file_size$/, "bytes"],
  [/^midi_tempo$|^bpm$/, "BPM"],
];
const label = (k) => LABELS[k] ?? (k.charAt(0).toUpperCase() + k.slice(1)).replace(/_(secs|s|db|dbfs|dbtp|lu|lufs|hz|kbps|ms|per_sec)$/, "").replace(/_/g, " ");
const unitOf = (k) => UNITS.find(([re]) => re.test(k))?.[1] ?? "";

function fmtNum(v) {
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return String(+v.toFixed(a >= 100 ? 1 : a >= 1 ? 2 : 3));
}

/** A value as a table cell: numbers rounded with their unit, mean/std pairs, short lists inline. */
function fmtValue(v, k) {
  const unit = unitOf(k);
  const withUnit = (s) => (unit ? `${s} ${unit}` : s);
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return withUnit(fmtNum(v));
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (Array.isArray(v)) {
    if (v.length === 0) return "none";
    if (v.length <= 8 && v.every((x) => typeof x === "number")) return withUnit(v.map(fmtNum).join(", "));
    return `${v.length} values`;
  }
  if (typeof v === "object" && "mean" in v && "std" in v) return withUnit(`${fmtNum(v.mean)} ± ${fmtNum(v.std)}`);
  return String(v);
}

/** Rows [label, value] of an object; nested objects become their own headed groups. */
function kvTable(obj, title, skip = []) {
  let rows = "", groups = "";
  for (const [k, v] of Object.entries(obj ?? {})) {
    if (skip.includes(k) || (typeof v === "string" && /^https?:\/\//.test(v))) continue;
    if (v && typeof v === "object" && !Array.isArray(v) && !("mean" in v && "std" in v)) {
      if (Object.values(v).some((x) => typeof x === "string" && /^https?:\/\//.test(x))) continue;
      groups += kvTable(v, label(k));
    } else {
      rows += `<tr><th>${esc(label(k))}</th><td data-field="${esc(k)}">${esc(fmtValue(v, k))}</td></tr>`;
    }
  }
  const head = title ? `<tr class="group"><th colspan="2">${esc(title)}</th></tr>` : "";
  return (rows ? head + rows : "") + groups;
}

const card = (name, value, sub = "") => `<div class="card"><div class="card-name">${esc(name)}</div><div class="card-value">${esc(value)}</div><div class="card-sub">${esc(sub)}</div></div>`;

function chromaBars(chroma) {
  const max = Math.max(...Object.values(chroma), 1e-9);
  // C to B, as on a keyboard (the result's keys are in alphabetical order).
  const order = (n) => (NOTE_NAMES.indexOf(n) + 1 || 99);
  const entries = Object.entries(chroma).sort(([a], [b]) => order(a) - order(b));
  return `<div class="chroma" title="pitch-class profile (chroma)">` + entries.map(([n, v]) =>
    `<div class="bar"><span style="height:${Math.round((v / max) * 100)}%"></span><small>${esc(n)}</small></div>`).join("") + "</div>";
}

function analysisReport(r) {
  const f = r.features ?? {};
  const cards = card("Tempo", r.rhythm ? `${fmtNum(r.rhythm.bpm)} BPM` : "–", r.rhythm ? `confidence ${fmtNum(r.rhythm.confidence)}` : "")
    + card("Key", r.key?.name ?? "–", r.key ? `confidence ${fmtNum(r.key.confidence)}` : "")
    + card("Loudness", r.loudness ? `${fmtNum(r.loudness.integrated_lufs)} LUFS` : "–", r.loudness ? `true peak ${fmtNum(r.loudness.true_peak_dbtp)} dBTP` : "")
    + card("Duration", f.duration_secs != null ? `${fmtNum(f.duration_secs)} s` : "–", f.sample_rate ? `${f.sample_rate} Hz · ${f.channels} ch` : "");
  const features = { ...f };
  delete features.chroma;
  delete features.mel;
  const sections = (r.sections ?? []).map((s, i) =>
    `<tr><td>${i + 1}</td><td>${fmtNum(s.start)} s</td><td>${fmtNum(s.end)} s</td><td>${fmtNum(s.energy_db)} dB</td></tr>`).join("");
  return `<div class="cards">${cards}</div>
    <table class="report">${kvTable({ rhythm: r.rhythm, key: r.key, loudness: r.loudness, features })}</table>
    ${f.chroma ? `<h5>Pitch classes</h5>${chromaBars(f.chroma)}` : ""}
    ${sections ? `<h5>Sections</h5><table class="report"><tr><th>#</th><th>Start</th><th>End</th><th>Energy</th></tr>${sections}</table>` : ""}
    ${r.metadata ? `<table class="report">${kvTable(r.metadata, "File")}</table>` : ""}`;
}

function masteringReport(r) {
  const rep = r.report ?? {};
  const before = rep.before ?? {}, after = rep.after ?? {};
  const rows = Object.keys({ ...before, ...after }).map((k) => {
    const d = typeof before[k] === "number" && typeof after[k] === "number" ? after[k] - before[k] : null;
    return `<tr><th>${esc(label(k))}</th><td>${esc(fmtValue(before[k], k))}</td><td data-field="${esc(k)}">${esc(fmtValue(after[k], k))}</td>` +
      `<td>${d === null ? "" : esc((d >= 0 ? "+" : "") + fmtNum(d) + " " + (unitOf(k) === "LUFS" ? "LU" : unitOf(k).replace(/^dB.*/, "dB")))}</td></tr>`;
  }).join("");
  const settings = { ...rep };
  delete settings.before;
  delete settings.after;
  const cards = card("Loudness", `${fmtNum(before.integrated_lufs)} → ${fmtNum(after.integrated_lufs)} LUFS`, `target ${fmtNum(rep.target_lufs)} LUFS`)
    + card("True peak", `${fmtNum(before.true_peak_dbtp)} → ${fmtNum(after.true_peak_dbtp)} dBTP`, `ceiling ${fmtNum(rep.true_peak_ceiling_db)} dB`)
    + card("Gain", `${fmtNum(rep.gain_db)} dB`, `${rep.format ?? ""} · ${rep.sample_rate ?? ""} Hz`);
  return `<div class="cards">${cards}</div>
    <table class="report compare"><tr><th></th><th>Before</th><th>After</th><th>Change</th></tr>${rows}</table>
    <table class="report">${kvTable(settings, "Processing")}${kvTable({ expires_at: r.expires_at }, "")}</table>`;
}

function resultReport(j) {
  const r = j.result;
  if (!r) return "";
  if (j.endpoint === "/v1/analyze/upload") return analysisReport(r);
  if (j.endpoint === "/v1/master") return masteringReport(r);
  return `<table class="report">${kvTable(r)}</table>`;
}

// ---------------------------------------------------------------------------------------------
// Detail panes: the body is rebuilt only when the item changes, so players keep playing and
// canvases stay drawn between polls; the webhook attempts are refreshed on their own.

function deliveriesTable(list) {
  if (!list.length) return "<p>No webhook attempts yet.</p>";
  return "<table><tr><th>#</th><th>Event</th><th>Result</th><th>ms</th><th>At</th></tr>" + list.map((a) =>
    `<tr><td>${a.attempt}${a.manual ? " (resend)" : ""}</td><td>${esc(a.event_type)}</td><td class="${a.succeeded ? "ok" : "fail"}">${a.response_status ?? ""} ${esc(a.error ?? "")}</td><td>${a.duration_ms}</td><td>${esc(a.created_at)}</td></tr>`).join("") + "</table>";
}

/** Replaces `el`'s content when `sig` differs from the last one; returns whether it did. */
function patch(el, sig, html) {
  if (el._sig === sig) return false;
  el._sig = sig;
  el.innerHTML = html;
  return true;
}

function fillDeliveries(el, dels) {
  const box = el.querySelector(".dels");
  if (box) patch(box, JSON.stringify(dels), deliveriesTable(dels));
}

// The open detail pane follows its item's live event stream (`…/events`, server-sent events:
// `status` and `done` carry the whole object, `progress` the fraction): status and progress
// change on the page as they happen, without polling. `fetch` reads the stream, because
// EventSource cannot send the API key.
let follow = null; // { kind: "job" | "gen", id, ctrl, item }

/** Reads an event stream, calling on(event, data) for each event; resolves when it ends. */
async function streamEvents(path, key, signal, on) {
  const r = await fetch(path, { headers: authHeaders(key), signal });
  if (!r.ok) {
    const data = await r.json().catch(() => null);
    throw new Error(`${r.status} ${data?.error?.code ?? ""}: ${data?.error?.message ?? ""}`);
  }
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "", event = "message", data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, "");
      buf = buf.slice(nl + 1);
      if (line === "") {
        if (data.length) on(event, JSON.parse(data.join("\n")));
        event = "message";
        data = [];
      } else if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
  }
}

const detailEl = (kind) => $(kind === "job" ? "job-detail" : "gen-detail");

/** Opens the detail of a job or generation and follows it live (no-op if already open). */
function openDetail(kind, id) {
  if (follow && follow.kind === kind && follow.id === id) return;
  if (follow) follow.ctrl.abort();
  const other = detailEl(kind === "job" ? "gen" : "job");
  const ctrl = new AbortController();
  const me = (follow = { kind, id, ctrl, item: null });
  const el = detailEl(kind);
  el.hidden = false;
  el._sig = null;
  el.dataset.id = id;
  el.dataset.events = "0";
  el.dataset.progressEvents = "0";
  el.innerHTML = `<p>loading ${esc(id)}…</p>`;
  if (other.dataset.id) { other.hidden = true; delete other.dataset.id; other._sig = null; }
  const path = kind === "job" ? `/v1/jobs/${enc(id)}/events` : `/v1/generations/${enc(id)}/events`;
  const run = async () => {
    let final = false;
    try {
      await streamEvents(path, kind === "job" ? "tl" : "ft", ctrl.signal, (event, data) => {
        if (follow !== me) return;
        el.dataset.events = String(+el.dataset.events + 1);
        if (event === "progress") {
          el.dataset.progressEvents = String(+el.dataset.progressEvents + 1);
          me.item = { ...me.item, progress: data.progress };
          showProgress(el, me.item);
        } else {
          me.item = data;
          final = event === "done";
          renderDetail(me);
        }
      });
    } catch (e) {
      if (ctrl.signal.aborted) return;
      el.innerHTML = `<p class="fail error-message">${esc(id)}: ${esc(e.message)}</p>`;
      return;
    }
    // The stream ended before the item did (the server restarting): follow it again.
    if (!final && follow === me) setTimeout(run, 1000);
  };
  run();
}

/** The status line of a detail pane: status, a live progress bar, and Cancel while it runs. */
function statusLine(kind, item) {
  const id = kind === "job" ? item.job_id : item.id;
  const p = item.progress;
  return `<p class="live-status" data-status="${esc(item.status)}"><span class="status-${esc(item.status)}">${esc(item.status)}</span>
    ${LIVE.has(item.status) ? `<progress class="live" max="1" value="${p ?? 0}"></progress> <span class="pct">${p == null ? "" : Math.round(p * 100) + "%"}</span>
      <button class="cancel" data-kind="${kind}" data-id="${esc(id)}">Cancel</button>` : ""}</p>`;
}

function showProgress(el, item) {
  const bar = el.querySelector("progress.live");
  if (bar) bar.value = item.progress ?? 0;
  const pct = el.querySelector(".live-status .pct");
  if (pct) pct.textContent = item.progress == null ? "" : Math.round(item.progress * 100) + "%";
}

function renderDetail(f) {
  const el = detailEl(f.kind);
  const changed = f.kind === "job" ? renderJobDetail(el, f.item) : renderGenDetail(el, f.item);
  showProgress(el, f.item);
  if (changed) {
    redrawCanvases();
    refreshDetailDeliveries();
  }
}

function renderJobDetail(el, j) {
  const files = [["input (your upload)", `/dashboard/jobs/${enc(j.job_id)}/input`], ...mediaUrls(j.result)];
  const roll = j.result?.notes_json
    ? `<h4>Piano roll <small>${esc(j.result.note_count)} notes · darker is louder</small></h4>
       <canvas class="roll" data-src="${esc(j.result.notes_json)}" data-duration="${esc(j.result.duration_s ?? "")}"></canvas>`
    : "";
  return patch(el, JSON.stringify([j.job_id, j.status, j.error, j.result]),
    `<h3>${esc(j.job_id)} <a class="permalink" href="#/jobs/${esc(enc(j.job_id))}" title="link to this job">#</a></h3>
    ${statusLine("job", j)}
    <p>${esc(j.endpoint)} · credits reserved ${j.credits_reserved}, used ${j.credits_used} · trace ${esc(j.trace_id)}</p>
    ${j.error ? `<p class="fail error-message">${esc(j.error.code)}: ${esc(j.error.message)}</p>` : ""}
    <h4>Files</h4><ul class="files">${files.map(([n, u]) => trackHtml(n, u)).join("")}</ul>
    ${roll}
    ${j.result ? `<h4>Report</h4>${resultReport(j)}` : ""}
    <details><summary>Result as JSON</summary><pre>${esc(JSON.stringify(j.result ?? j.error, null, 2))}</pre></details>
    <h4>Webhook attempts</h4><div class="dels"></div>`);
}

function renderGenDetail(el, g) {
  return patch(el, JSON.stringify([g.id, g.status, g.audioUrl, g.errorMessage, g.duration]),
    `<h3>${esc(g.id)} <a class="permalink" href="#/generations/${esc(enc(g.id))}" title="link to this generation">#</a></h3>
    ${statusLine("gen", g)}
    <p>${esc(g.prompt)}</p>
    ${g.errorMessage != null ? `<p class="fail error-message">errorMessage: ${esc(g.errorMessage)}</p>` : ""}
    ${g.audioUrl ? `<ul class="files">${trackHtml("MP3", g.audioUrl)}</ul>` : ""}
    <h4>Parameters</h4><table class="report">${kvTable(g.parameters)}${g.duration != null ? kvTable({ duration: g.duration }, "Result") : ""}</table>
    <h4>Webhook attempts</h4><div class="dels"></div>`);
}

/** The open item's webhook attempts (they change after it ends, with retries: polled). */
async function refreshDetailDeliveries() {
  const f = follow;
  if (!f?.item) return;
  const dels = f.kind === "job"
    ? (await api("GET", "/v1/webhook/deliveries?of=" + enc(f.id), undefined, "tl", POLL)).data
    : (await api("GET", `/v1/generations/${enc(f.id)}/deliveries`, undefined, "ft", POLL)).data;
  if (follow === f) fillDeliveries(detailEl(f.kind), dels);
}

function renderDeliveryDetail(a) {
  const el = $("del-detail");
  el.hidden = false;
  el.innerHTML = `<h3>${esc(a.id)} · ${esc(a.event_type)} · attempt ${a.attempt}</h3>
    <p>POST ${esc(a.url)} → <span class="${a.succeeded ? "ok" : "fail"}">${a.response_status ?? "no answer"}</span> in ${a.duration_ms} ms ${esc(a.error ?? "")}</p>
    ${a.next_attempt_at ? `<p class="next-retry">Next automatic retry: <time>${esc(a.next_attempt_at)}</time></p>` : ""}
    <h4>Request headers</h4><pre>${esc(JSON.stringify(a.request_headers, null, 2))}</pre>
    <h4>Request body</h4><pre class="request-body">${esc(pretty(a.request_body))}</pre>
    <h4>Response headers</h4><pre>${esc(JSON.stringify(a.response_headers, null, 2))}</pre>
    <h4>Response body</h4><pre class="response-body">${esc(pretty(a.response_body))}</pre>`;
}

// ---------------------------------------------------------------------------------------------
// Overview: engines, models and what to do next.

const copyable = (cmd) => `<code>${esc(cmd)}</code> <button class="copy" data-text="${esc(cmd)}">copy</button>`;
// A word for a POSIX shell: bare when safe, else single-quoted.
const shq = (w) => /^[A-Za-z0-9_\/.:@%+=,-]+$/.test(w) ? w : "'" + w.replace(/'/g, "'\\''") + "'";
// The flags that make a copied command talk to this server with its keys, from any directory.
const serverFlags = () => ` --url ${shq(cfg.base_url)} --data-dir ${shq(cfg.data_dir)}`;
// Client commands (listen, trigger, jobs, webhook …) get both flags; offline ones the data dir.
const forServer = (cmd) => /^soundcheck (models|generate|keys|credits)\b/.test(cmd)
  ? `${cmd} --data-dir ${shq(cfg.data_dir)}` : cmd + serverFlags();

function renderOverview() {
  $("engines").innerHTML = cfg.engines.map(([ep, name]) =>
    `<li><code>${esc(ep)}</code> → <strong>${esc(name)}</strong>${ep === "/v1/generations" && name === cfg.default_generator ? " (default)" : ""}</li>`).join("");
  $("models-table").tBodies[0].innerHTML = (cfg.models ?? []).map((m) => {
    const status = m.loaded ? `<span class="ok">in use</span>`
      : m.installed ? "installed, not loaded (restart <code>soundcheck serve</code> to use it)"
      : copyable(forServer("soundcheck models pull " + m.id));
    return `<tr data-model="${esc(m.id)}"><td><code>${esc(m.id)}</code></td><td>${esc(m.kind)}</td><td>${status}</td>` +
      `<td>${m.installed ? "" : "~"}${m.size_mb} MB</td><td>${esc(m.description)}</td></tr>`;
  }).join("");
  $("models-dir").textContent = cfg.models_dir ?? "";
  // Server hints end with the command to run: show it copyable.
  $("hints").innerHTML = (cfg.hints ?? []).map((h) => {
    const m = h.match(/^(.*?)(soundcheck [^;]+)$/);
    return `<li class="server-hint">${m ? esc(m[1]) + copyable(forServer(m[2].trim())) : esc(h)}</li>`;
  }).join("") + `<li>Point your app at the base URL with the keys above: <code>X-API-Key</code> for generations, <code>Authorization: Bearer</code> for jobs.</li>
    <li id="hint-webhook" hidden>No webhook endpoint yet: run ${copyable(forServer("soundcheck listen"))} (it becomes the endpoint and prints each event), or set a URL on the <a href="#webhook">Webhook</a> tab.</li>
    <li>See every webhook shape: ${copyable(forServer("soundcheck trigger job.completed"))} or ${copyable(forServer("soundcheck trigger generation.failed"))}; make things fail on the <a href="#faults">Faults</a> tab.</li>`;
}

// ---------------------------------------------------------------------------------------------

function renderFaultSubmissions(jobs, gens) {
  $("fault-subs").tBodies[0].innerHTML = faultSubmissions.map((s) => {
    if (s.kind === "gen") {
      const g = gens.find((x) => x.id === s.id);
      return `<tr data-gen="${esc(s.id)}"><td>${esc(s.id)}</td><td>generation</td><td><code>${esc(s.fault || "none")}</code></td>` +
        `<td class="status-${esc(g?.status)}">${esc(g?.status ?? "…")}</td><td class="fail">${esc(g?.errorMessage ?? "")}</td></tr>`;
    }
    const j = jobs.find((x) => x.job_id === s.id);
    return `<tr data-job="${esc(s.id)}"><td>${esc(s.id)}</td><td>${esc(j?.endpoint ?? "job")}</td><td><code>${esc(s.fault || "none")}</code></td>` +
      `<td class="status-${esc(j?.status)}">${esc(j?.status ?? "…")}</td><td class="fail">${j?.error ? esc(j.error.code + ": " + j.error.message) : ""}</td></tr>`;
  }).join("");
  $("fault-subs").hidden = faultSubmissions.length === 0;
}

/** The rows a list's filter box and status menu let through. */
function filtered(rows, prefix, text) {
  const q = $(prefix + "-filter").value.trim().toLowerCase();
  const st = $(prefix + "-status").value;
  const out = rows.filter((r) => (!st || r.status === st) && (!q || text(r).toLowerCase().includes(q)));
  $(prefix + "-count").textContent = out.length === rows.length ? `${rows.length}` : `${out.length} of ${rows.length}`;
  return out;
}

const cancelButton = (kind, id, status) =>
  LIVE.has(status) ? `<button class="cancel" data-kind="${kind}" data-id="${esc(id)}">Cancel</button>` : "";

async function refresh() {
  const [jobs, gens, ep, dels, credits] = await Promise.all([
    api("GET", "/v1/jobs", undefined, "tl", POLL),
    api("GET", "/v1/generations", undefined, "ft", POLL),
    api("GET", "/v1/webhook", undefined, "tl", POLL),
    api("GET", `/v1/webhook/deliveries?limit=20&of=${enc($("del-of").value)}`, undefined, "tl", POLL),
    api("GET", "/v1/credits", undefined, "tl", POLL),
  ]);
  $("credits").textContent = credits.balance;
  setSecret("wh-secret", ep.secret);
  const hintWebhook = $("hint-webhook");
  if (hintWebhook) hintWebhook.hidden = !!ep.url;
  $("jobs-table").tBodies[0].innerHTML = filtered(jobs.data, "jobs", (j) => `${j.job_id} ${j.endpoint} ${j.error?.code ?? ""}`).map((j) =>
    `<tr data-job="${esc(j.job_id)}"><td class="col-id">${esc(j.job_id)}</td><td class="col-wide">${esc(j.endpoint)}</td><td class="col-status status-${esc(j.status)}">${esc(j.status)}</td>` +
    `<td class="col-wide">${j.progress == null ? "–" : `<progress max="1" value="${j.progress}"></progress> ${Math.round(j.progress * 100)}%`}</td><td class="col-wide">${esc(j.created_at)}</td>` +
    `<td class="col-act">${cancelButton("job", j.job_id, j.status)}</td></tr>`).join("");
  $("gens-table").tBodies[0].innerHTML = filtered(gens.data, "gens", (g) => `${g.id} ${g.prompt} ${g.errorMessage ?? ""}`).map((g) =>
    `<tr data-gen="${esc(g.id)}"><td class="col-id">${esc(g.id)}</td><td class="col-wide">${esc(g.prompt)}</td><td class="col-status status-${esc(g.status)}">${esc(g.status)}</td>` +
    `<td class="col-wide">${g.duration ?? "–"}</td><td class="col-wide">${esc(g.createdAt)}</td><td class="col-act">${cancelButton("gen", g.id, g.status)}</td></tr>`).join("");
  renderFaultSubmissions(jobs.data, gens.data);
  $("wh-state").textContent = ep.enabled ? "enabled" : "disabled";
  $("wh-failures").textContent = ep.consecutive_failures;
  $("wh-alert").hidden = ep.enabled;
  $("wh-reason").textContent = ep.disabled_reason ?? "";
  if (document.activeElement !== $("wh-url") && !$("wh-url").dataset.dirty) $("wh-url").value = ep.url ?? "";
  window.lastDeliveries = dels.data;
  $("del-table").tBodies[0].innerHTML = dels.data.map((a) =>
    `<tr data-del="${esc(a.id)}"><td class="col-wide">${esc(a.id)}</td><td>${esc(a.event_type)}</td><td>${esc(a.subject_id)}</td><td class="col-wide">${a.attempt}${a.manual ? " (resend)" : ""}</td>` +
    `<td class="col-status ${a.succeeded ? "ok" : "fail"}">${a.succeeded ? "ok" : "fail"} ${a.response_status ?? ""}</td><td class="col-wide">${a.duration_ms}</td><td class="col-wide">${esc(a.created_at)}</td>` +
    `<td><button class="resend" data-id="${esc(a.id)}">Resend</button></td></tr>`).join("");
  await refreshDetailDeliveries();
}

/** `#jobs`, `#/jobs/job_…`, `#/generations/gen_…`: the tab, and the item to open in it. */
function route() {
  const h = decodeURIComponent(location.hash.slice(1)) || "overview";
  const m = h.match(/^\/?(jobs|generations)\/(.+)$/);
  if (m) {
    showTab(m[1]);
    if (cfg) openDetail(m[1] === "jobs" ? "job" : "gen", m[2]);
  } else {
    showTab(h.replace(/^\//, ""));
  }
}

async function loop() {
  try {
    await refresh();
    $("live").classList.remove("stale");
    $("live").textContent = "live · " + new Date().toLocaleTimeString();
  } catch (e) {
    $("live").classList.add("stale");
    $("live").textContent = "offline: " + e.message;
  }
  setTimeout(loop, 1000);
}

function toneWav() {
  // A one-second 440 Hz tone, 16-bit mono WAV, for fault-control jobs.
  const rate = 22050, n = rate, buf = new ArrayBuffer(44 + n * 2), v = new DataView(buf);
  const str = (o, s) => [...s].forEach((c, i) => v.setUint8(o + i, c.charCodeAt(0)));
  str(0, "RIFF"); v.setUint32(4, 36 + n * 2, true); str(8, "WAVEfmt "); v.setUint32(16, 16, true);
  v.setUint16(20, 1, true); v.setUint16(22, 1, true); v.setUint32(24, rate, true); v.setUint32(28, rate * 2, true);
  v.setUint16(32, 2, true); v.setUint16(34, 16, true); str(36, "data"); v.setUint32(40, n * 2, true);
  for (let i = 0; i < n; i++) v.setInt16(44 + i * 2, Math.sin(2 * Math.PI * 440 * i / rate) * 8000, true);
  return new Blob([buf], { type: "audio/wav" });
}

document.addEventListener("click", async (ev) => {
  const t = ev.target;
  try {
    if (t.classList.contains("reveal")) {
      const el = $(t.dataset.target);
      el.dataset.hidden = el.dataset.hidden === "1" ? "0" : "1";
      t.textContent = el.dataset.hidden === "1" ? "reveal" : "hide";
      setSecret(el.id, el.dataset.value);
    } else if (t.classList.contains("copy")) {
      const text = t.dataset.text ?? ($(t.dataset.copy).dataset.value ?? $(t.dataset.copy).textContent);
      await navigator.clipboard.writeText(text);
      t.textContent = "copied";
      setTimeout(() => (t.textContent = "copy"), 1200);
    } else if (t.classList.contains("cancel")) {
      ev.stopPropagation();
      t.disabled = true;
      const { kind, id } = t.dataset;
      await api("DELETE", kind === "job" ? `/v1/jobs/${enc(id)}` : `/v1/generations/${enc(id)}`, undefined, kind === "job" ? "tl" : "ft");
      await refresh();
    } else if (t.classList.contains("resend")) {
      ev.stopPropagation();
      t.disabled = true;
      const a = await api("POST", `/v1/webhook/deliveries/${encodeURIComponent(t.dataset.id)}/resend`);
      renderDeliveryDetail(a);
      await refresh();
    } else if (t.id === "wh-enable") {
      await api("POST", "/v1/webhook/enable");
      await refresh();
    } else if (t.id === "wh-disable") {
      await api("POST", "/v1/webhook/disable");
      await refresh();
    } else if (t.id === "wh-rotate") {
      if (!window.confirm || window.confirm("Rotate the signing secret? Receivers must use the new one.")) {
        await api("POST", "/v1/webhook/rotate-secret");
        await refresh();
      }
    } else if (t.matches("canvas.wave")) {
      // Click on a waveform: play from that point.
      const audio = t.closest(".track")?.querySelector("audio");
      if (audio && t._duration) {
        const r = t.getBoundingClientRect();
        audio.currentTime = ((ev.clientX - r.left) / r.width) * t._duration;
        await audio.play();
      }
    } else {
      const row = t.closest("tr");
      // A job or generation row opens its deep link (#/jobs/ID), which the router follows.
      if (row?.dataset.job) location.hash = "#/jobs/" + enc(row.dataset.job);
      if (row?.dataset.gen) location.hash = "#/generations/" + enc(row.dataset.gen);
      if (row?.dataset.del) renderDeliveryDetail(window.lastDeliveries.find((a) => a.id === row.dataset.del));
    }
  } catch (e) {
    alert(e.message);
  }
});

$("wh-url").addEventListener("input", () => ($("wh-url").dataset.dirty = "1"));
$("wh-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const url = $("wh-url").value.trim();
    await api("PUT", "/v1/webhook", { url: url || null });
    delete $("wh-url").dataset.dirty;
    await refresh();
  } catch (e) { alert(e.message); }
});
$("fault-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const fd = new FormData();
  fd.append("audio", toneWav(), "tone.wav");
  const fault = $("fault-value").value;
  const headers = { Authorization: "Bearer " + cfg.tl_key };
  if (fault) headers["X-Soundcheck-Fault"] = fault;
  const r = await fetch($("fault-endpoint").value, { method: "POST", headers, body: fd });
  const body = await r.json();
  $("fault-result").textContent = r.status + " " + JSON.stringify(body, null, 2);
  if (body.job_id) faultSubmissions.unshift({ kind: "job", id: body.job_id, fault });
});
$("gen-fault-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const fault = $("gen-fault-value").value;
  const headers = { "X-API-Key": cfg.ft_key, "Content-Type": "application/json" };
  if (fault) headers["X-Soundcheck-Fault"] = fault;
  const req = { tags: $("gen-fault-tags").value, duration: Number($("gen-fault-duration").value) };
  const r = await fetch("/v1/generations", { method: "POST", headers, body: JSON.stringify(req) });
  const body = await r.json();
  $("fault-result").textContent = r.status + " " + JSON.stringify(body, null, 2);
  if (body.id) faultSubmissions.unshift({ kind: "gen", id: body.id, fault });
});
for (const id of ["jobs-filter", "jobs-status", "gens-filter", "gens-status", "del-of"]) {
  $(id).addEventListener("input", () => refresh().catch(() => {}));
}
window.addEventListener("hashchange", route);
(async function start() {
  route();
  const r = await fetch("/dashboard/config");
  if (!r.ok) {
    document.querySelector("main").innerHTML = "<p class='alert'>The dashboard is served to this machine only (loopback). Use the API with your keys.</p>";
    return;
  }
  cfg = await r.json();
  $("base-url").textContent = cfg.base_url;
  $("base-url").dataset.value = cfg.base_url;
  setSecret("ft-key", cfg.ft_key);
  setSecret("tl-key", cfg.tl_key);
  renderOverview();
  route();
  loop();
})();
