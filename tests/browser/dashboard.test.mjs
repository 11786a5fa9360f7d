// Browser tests of the dashboard: starts the debug binary with a temporary data directory, drives
// the page in headless Chromium (playwright-core + Debian's /usr/bin/chromium, no browser
// download) and checks, against the real API and a real signed-webhook receiver:
//   1. a job submitted through the API appears in the dashboard and completes live;
//   2. a failed delivery is resent from the webhook page and succeeds;
//   3. the secret is rotated from the page and the next webhook verifies with the new one;
//   4. a disabled endpoint shows the alert and is re-enabled with the button;
//   5. the overview lists the engines, the model catalog and what to do next (`models pull …`);
//   6. a completed generation's MP3 is decoded in the page and its waveform drawn (non-blank canvas);
//   7. a transcribe job's piano roll draws one rectangle per note of its notes file;
//   8. analysis and mastering results are shown as report tables;
//   9. a generation submitted from the Faults tab with `internal_error` ends failed with its
//      errorMessage on the page;
//  10. a deep link (#/jobs/ID) opens a job that then follows its live event stream (status and
//      progress change on the page; no polling of the job itself);
//  11. a running job is cancelled from its detail, a queued generation from its list row;
//  12. the lists filter by text and status, and a narrow window keeps the status column;
//  13. generation deliveries are listed, and delivery bodies are pretty-printed.
// The server runs with HOME and the XDG directories in a temporary directory, so it never
// records itself in the real user's runtime directory.
// Screenshots go to target/screenshots/.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, mkdirSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const target = process.env.CARGO_TARGET_DIR || path.join(root, "target");
const bin = process.env.SOUNDCHECK_BIN || path.join(target, "debug", "soundcheck");
const shots = path.join(target, "screenshots");
mkdirSync(shots, { recursive: true });

function startServer() {
  const home = mkdtempSync(path.join(tmpdir(), "sc-browser-home-"));
  const data = path.join(home, "data-dir");
  const isolated = {
    HOME: home,
    XDG_RUNTIME_DIR: path.join(home, "run"),
    XDG_STATE_HOME: path.join(home, "state"),
    XDG_DATA_HOME: path.join(home, "data"),
    XDG_CONFIG_HOME: path.join(home, "config"),
  };
  const env = { ...process.env, ...isolated, SOUNDCHECK_LOG: "warn" };
  for (const k of ["SOUNDCHECK_TL_KEY", "SOUNDCHECK_FT_KEY", "SOUNDCHECK_DATA_DIR", "SOUNDCHECK_URL", "SOUNDCHECK_ADDR"]) delete env[k];
  const child = spawn(bin, ["serve", "--addr", "127.0.0.1:0", "--data-dir", data, "--time-scale", "0.001", "--workers", "2"], {
    env,
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    let out = "";
    child.on("exit", (c) => reject(new Error("server exited " + c)));
    child.stdout.on("data", (d) => {
      out += d;
      const base = out.match(/listening on (\S+)/)?.[1];
      const tl = out.match(/SOUNDCHECK_TL_KEY=(\S+)/)?.[1];
      const ft = out.match(/SOUNDCHECK_FT_KEY=(\S+)/)?.[1];
      const secret = out.match(/SOUNDCHECK_WEBHOOK_SECRET=(\S+)/)?.[1];
      if (base && tl && ft && secret) resolve({ child, base, tl, ft, secret });
    });
  });
}

/** A webhook receiver that records requests and answers with a settable status. */
function startReceiver() {
  const got = [];
  const rx = { got, status: 200 };
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      got.push({ headers: req.headers, body });
      res.writeHead(rx.status, { "Content-Type": "application/json" });
      res.end('{"received":true}');
    });
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => {
    rx.url = `http://127.0.0.1:${server.address().port}/hook`;
    rx.server = server;
    resolve(rx);
  }));
}

/** The seed's check: HMAC-SHA256 of "<t>.<body>" keyed with the whole secret, within 5 minutes. */
function verify(secret, header, body) {
  const parts = Object.fromEntries(String(header).split(",").map((p) => p.split("=")));
  if (Math.abs(Date.now() / 1000 - Number(parts.t)) > 300) return false;
  return createHmac("sha256", secret).update(`${parts.t}.${body}`).digest("hex") === parts.v1;
}

async function until(what, fn, ms = 30000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function toneWav(seconds = 0.5) {
  const rate = 22050, n = Math.round(rate * seconds), buf = Buffer.alloc(44 + n * 2);
  buf.write("RIFF", 0); buf.writeUInt32LE(36 + n * 2, 4); buf.write("WAVEfmt ", 8); buf.writeUInt32LE(16, 16);
  buf.writeUInt16LE(1, 20); buf.writeUInt16LE(1, 22); buf.writeUInt32LE(rate, 24); buf.writeUInt32LE(rate * 2, 28);
  buf.writeUInt16LE(2, 32); buf.writeUInt16LE(16, 34); buf.write("data", 36); buf.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) buf.writeInt16LE(Math.round(Math.sin((2 * Math.PI * 330 * i) / rate) * 8000), 44 + i * 2);
  return buf;
}

/** A melody for transcription: C4 E4 G4 C5 G4 E4 C4, each note 0.35 s then 0.05 s of silence. */
function melodyWav() {
  const rate = 22050, pitches = [60, 64, 67, 72, 67, 64, 60], note = 0.35, gap = 0.05;
  const n = Math.round(pitches.length * (note + gap) * rate), buf = Buffer.alloc(44 + n * 2);
  buf.write("RIFF", 0); buf.writeUInt32LE(36 + n * 2, 4); buf.write("WAVEfmt ", 8); buf.writeUInt32LE(16, 16);
  buf.writeUInt16LE(1, 20); buf.writeUInt16LE(1, 22); buf.writeUInt32LE(rate, 24); buf.writeUInt32LE(rate * 2, 28);
  buf.writeUInt16LE(2, 32); buf.writeUInt16LE(16, 34); buf.write("data", 36); buf.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) {
    const t = i / rate, k = Math.floor(t / (note + gap)), u = t - k * (note + gap);
    let v = 0;
    if (k < pitches.length && u < note) {
      const f = 440 * 2 ** ((pitches[k] - 69) / 12);
      const env = Math.min(1, u / 0.01) * Math.exp(-3 * u) * Math.min(1, (note - u) / 0.01);
      v = env * (Math.sin(2 * Math.PI * f * u) + 0.4 * Math.sin(4 * Math.PI * f * u) + 0.2 * Math.sin(6 * Math.PI * f * u)) / 1.6;
    }
    buf.writeInt16LE(Math.round(v * 20000), 44 + i * 2);
  }
  return buf;
}

/** Ink on a canvas: pixels clearly darker than its light background, and columns holding a
 *  vertical run of them (a waveform drawn over the whole file, not just a flat line). */
const canvasInk = (selector) => page.evaluate((sel) => {
  const c = document.querySelector(sel);
  const { data } = c.getContext("2d").getImageData(0, 0, c.width, c.height);
  let inked = 0, tallColumns = 0;
  const perColumn = new Array(c.width).fill(0);
  for (let y = 0; y < c.height; y++) for (let x = 0; x < c.width; x++) {
    const i = (y * c.width + x) * 4;
    // The wave and the notes are blue: blue well above red.
    if (data[i + 2] - data[i] > 60) { inked++; perColumn[x]++; }
  }
  for (const n of perColumn) if (n > 3) tallColumns++;
  return { w: c.width, h: c.height, inked, tallColumns, notes: c.dataset.notes, duration: c.dataset.duration };
}, selector);

const results = [];
async function step(name, fn) {
  try {
    await fn();
    results.push(["ok", name]);
    console.log("ok   ", name);
  } catch (e) {
    results.push(["FAIL", name]);
    console.log("FAIL ", name, "\n", e);
  }
}

const srv = await startServer();
const rx = await startReceiver();
const api = async (method, p, body, headers = {}) => {
  const r = await fetch(srv.base + p, {
    method,
    headers: { Authorization: "Bearer " + srv.tl, ...(body && !(body instanceof FormData) ? { "Content-Type": "application/json" } : {}), ...headers },
    body: body instanceof FormData ? body : body ? JSON.stringify(body) : undefined,
  });
  return r.json();
};
const submit = (fault, endpoint = "/v1/analyze/upload", wav = toneWav()) => {
  const fd = new FormData();
  fd.append("audio", new Blob([wav], { type: "audio/wav" }), "tone.wav");
  return api("POST", endpoint, fd, fault ? { "X-Soundcheck-Fault": fault } : {});
};
const ftApi = async (method, p, body) => {
  const r = await fetch(srv.base + p, {
    method,
    headers: { "X-API-Key": srv.ft, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return r.json();
};
const jobNow = async (id) => (await api("GET", "/v1/jobs")).data.find((j) => j.job_id === id);

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
page.on("dialog", (d) => d.accept());
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(e.message));

try {
  await page.goto(srv.base + "/#overview");
  await step("overview shows the base URL, hidden keys that reveal, credits and engines", async () => {
    await page.waitForSelector("#engines li");
    assert.equal(await page.textContent("#base-url"), srv.base);
    assert.ok(!(await page.textContent("#tl-key")).includes(srv.tl), "key hidden until revealed");
    await page.click("button.reveal[data-target=tl-key]");
    assert.equal(await page.textContent("#tl-key"), srv.tl);
    await until("credits", async () => (await page.textContent("#credits")) === "1000");
    await page.screenshot({ path: path.join(shots, "overview.png"), fullPage: true });
  });

  await step("the overview lists engines, the model catalog and what to do next", async () => {
    await page.waitForSelector("#hints li.server-hint");
    const engines = await page.textContent("#engines");
    for (const e of ["/v1/transcribe", "basic-pitch", "/v1/generations", "procedural"]) assert.ok(engines.includes(e), engines);
    assert.ok(engines.includes("(default)"), "the default generator is marked");
    const hints = await page.textContent("#hints");
    // A fresh data directory has no models: the server's start-up hints say what to pull.
    assert.ok(hints.includes("soundcheck models pull htdemucs"), hints);
    assert.ok(hints.includes("soundcheck models pull musicgen-small"), hints);
    await until("no webhook endpoint yet: suggests listen", () => page.isVisible("#hint-webhook"));
    assert.ok((await page.textContent("#hint-webhook")).includes("soundcheck listen"));
    const row = await page.textContent('#models-table tr[data-model="htdemucs"]');
    assert.ok(row.includes("separate") && row.includes("soundcheck models pull htdemucs"), row);
    assert.equal(await page.locator("#models-table tbody tr").count(), 5, "the five catalog models");
    await page.screenshot({ path: path.join(shots, "overview-models.png"), fullPage: true });
  });

  await step("a job submitted through the API appears and completes live", async () => {
    await page.goto(srv.base + "/#jobs");
    const sub = await submit("delay=1500");
    const row = `tr[data-job="${sub.job_id}"]`;
    await page.waitForSelector(row, { timeout: 10000 });
    await until("running", async () => /running|queued/.test(await page.textContent(row)), 10000);
    await page.screenshot({ path: path.join(shots, "jobs-running.png"), fullPage: true });
    await until("completed in the table", async () => (await page.textContent(row)).includes("completed"));
    await page.click(row);
    await page.waitForSelector("#job-detail h3");
    assert.ok((await page.textContent("#job-detail")).includes("tempo") || (await page.textContent("#job-detail")).includes("bpm"));
    // The analysis as a report table, values from the job's result.
    const job = await jobNow(sub.job_id);
    await page.waitForSelector("#job-detail table.report");
    const report = await page.textContent("#job-detail table.report");
    assert.ok(report.includes("BPM") && report.includes(job.result.key.name) && report.includes("LUFS"), report);
    assert.equal((await page.textContent('#job-detail td[data-field="bpm"]')).trim(), `${+job.result.rhythm.bpm.toFixed(2)} BPM`);
    // The upload's waveform, served to the page by /dashboard/jobs/{id}/input.
    await page.waitForSelector('#job-detail canvas.wave[data-drawn="1"]');
    await page.screenshot({ path: path.join(shots, "jobs-completed.png"), fullPage: true });
  });

  await step("a URL in the upload's own tags is not listed as a result file", async () => {
    // A WAV whose LIST/INFO title is a URL with /media/ in it: the analysis reports it among the
    // file's tags, and the page must not offer it as an output with a player.
    const tone = toneWav(), evil = "https://evil.example/media/track.mp3";
    const title = Buffer.from(evil + "\0"), pad = title.length % 2;
    const info = Buffer.alloc(4 + 8 + title.length + pad);
    info.write("INFO", 0); info.write("INAM", 4); info.writeUInt32LE(title.length, 8); title.copy(info, 12);
    const list = Buffer.alloc(8); list.write("LIST", 0); list.writeUInt32LE(info.length, 4);
    const wav = Buffer.concat([tone.subarray(0, 36), list, info, tone.subarray(36)]);
    wav.writeUInt32LE(wav.length - 8, 4);
    const sub = await submit(null, "/v1/analyze/upload", wav);
    await until("analysed", async () => (await jobNow(sub.job_id))?.status === "completed");
    const job = await jobNow(sub.job_id);
    assert.ok(JSON.stringify(job.result).includes(evil), "the tag is in the result: " + JSON.stringify(job.result.metadata));
    await page.goto(srv.base + `/#/jobs/${sub.job_id}`);
    await page.waitForSelector("#job-detail ul.files li");
    const files = await page.innerHTML("#job-detail ul.files");
    assert.ok(!files.includes("evil.example"), files);
    assert.equal(await page.locator("#job-detail ul.files li").count(), 1, "only the upload itself");
  });

  await step("a completed generation's waveform is drawn from its MP3", async () => {
    const gen = await ftApi("POST", "/v1/generations", { tags: "lofi chill piano", duration: 6 });
    assert.ok(gen.id, JSON.stringify(gen));
    await page.goto(srv.base + "/#generations");
    const row = `tr[data-gen="${gen.id}"]`;
    await page.waitForSelector(row);
    await until("generation completed", async () => (await page.textContent(row)).includes("completed"));
    await page.click(row);
    const canvas = '#gen-detail canvas.wave[data-drawn="1"]';
    await page.waitForSelector(canvas, { timeout: 15000 });
    const ink = await canvasInk(canvas);
    const done = await ftApi("GET", "/v1/generations/" + gen.id);
    assert.ok(Math.abs(Number(ink.duration) - done.duration) < 0.3, `decoded ${ink.duration} s of a ${done.duration} s MP3`);
    assert.ok(ink.inked > ink.w * ink.h * 0.05, `waveform ink ${JSON.stringify(ink)}`);
    assert.ok(ink.tallColumns > ink.w * 0.5, `waveform spans the file ${JSON.stringify(ink)}`);
    assert.ok((await page.textContent("#gen-detail .wave-info")).includes("dBFS peak"));
    await page.screenshot({ path: path.join(shots, "generation-waveform.png"), fullPage: true });
  });

  await step("a transcribe job's piano roll draws every note of its notes file", async () => {
    const sub = await submit(undefined, "/v1/transcribe", melodyWav());
    assert.ok(sub.job_id, JSON.stringify(sub));
    await page.goto(srv.base + "/#jobs");
    const row = `tr[data-job="${sub.job_id}"]`;
    await page.waitForSelector(row);
    await until("transcribed", async () => (await page.textContent(row)).includes("completed"), 60000);
    await page.click(row);
    const canvas = '#job-detail canvas.roll[data-drawn="1"]';
    await page.waitForSelector(canvas, { timeout: 15000 });
    const job = await jobNow(sub.job_id);
    const notes = await (await fetch(job.result.notes_json)).json();
    const drawn = Number(await page.getAttribute(canvas, "data-notes"));
    assert.ok(notes.length >= 4, `the melody gave ${notes.length} notes`);
    assert.equal(drawn, notes.length, "one rectangle per note in the file");
    assert.equal(drawn, job.result.note_count);
    const range = await page.getAttribute(canvas, "data-pitch-range");
    assert.ok(/^[A-G]#?-?\d+–[A-G]#?-?\d+$/.test(range), range);
    assert.ok((await canvasInk(canvas)).inked > 0, "notes are drawn");
    // The upload's waveform is drawn beside its player.
    await page.waitForSelector('#job-detail canvas.wave[data-drawn="1"]');
    await page.screenshot({ path: path.join(shots, "transcribe-pianoroll.png"), fullPage: true });
  });

  await step("a master job's report compares loudness before and after", async () => {
    const sub = await submit(undefined, "/v1/master");
    await page.goto(srv.base + "/#jobs");
    const row = `tr[data-job="${sub.job_id}"]`;
    await page.waitForSelector(row);
    await until("mastered", async () => (await page.textContent(row)).includes("completed"));
    await page.click(row);
    await page.waitForSelector("#job-detail table.compare");
    const job = await jobNow(sub.job_id);
    const after = job.result.report.after.integrated_lufs;
    assert.equal((await page.textContent('#job-detail table.compare td[data-field="integrated_lufs"]')).trim(), `${+after.toFixed(2)} LUFS`);
    assert.ok((await page.textContent("#job-detail table.compare")).includes("True peak"));
    // Input and mastered file: two waveforms.
    await until("both waveforms", async () => (await page.locator('#job-detail canvas.wave[data-drawn="1"]').count()) === 2);
    await page.screenshot({ path: path.join(shots, "master-report.png"), fullPage: true });
  });

  await step("a generation fault from the Faults tab ends failed with its errorMessage", async () => {
    await page.goto(srv.base + "/#faults");
    await page.fill("#gen-fault-duration", "3");
    await page.selectOption("#gen-fault-value", "internal_error");
    await page.click("#gen-fault-form button[type=submit]");
    const row = await page.waitForSelector("#fault-subs tr[data-gen]");
    const id = await row.getAttribute("data-gen");
    await until("failed on the Faults tab", async () => (await row.textContent()).includes("failed"));
    const g = await ftApi("GET", "/v1/generations/" + id);
    assert.equal(g.status, "failed");
    assert.ok(g.errorMessage && (await row.textContent()).includes(g.errorMessage), await row.textContent());
    await page.screenshot({ path: path.join(shots, "faults-generation.png"), fullPage: true });
    await row.click();
    await page.waitForSelector("#tab-generations.active #gen-detail .error-message");
    assert.ok((await page.textContent("#gen-detail .error-message")).includes(g.errorMessage));
    await page.screenshot({ path: path.join(shots, "generation-failed.png"), fullPage: true });
  });

  await step("a failed delivery is resent from the webhook page", async () => {
    await page.goto(srv.base + "/#webhook");
    await page.fill("#wh-url", rx.url);
    await page.click("#wh-form button[type=submit]");
    await until("url saved", async () => (await api("GET", "/v1/webhook")).url === rx.url);
    rx.status = 500;
    const sub = await submit();
    await until("first failed attempt", () => rx.got.length >= 1);
    await page.waitForSelector(`#del-table tr:has-text("${sub.job_id}") td.fail`);
    // A failed attempt with a retry scheduled shows when (RFC 3339, as the API gives it). Only the
    // newest attempt of a pending event has one, and under --time-scale 0.001 the first retries
    // come 60, 300 and 900 ms apart: wait for the fifth attempt, whose retry is 14.4 s away, so
    // that it is still the newest when the page shows it.
    const pending = await until("an attempt whose retry is seconds away", async () => {
      const log = (await api("GET", `/v1/webhook/deliveries?of=${sub.job_id}`)).data;
      return log.find((a) => a.next_attempt_at && Date.parse(a.next_attempt_at) - Date.now() > 5000);
    });
    await page.click(`#del-table tr[data-del="${pending.id}"] td >> nth=1`);
    assert.equal(await page.textContent("#del-detail .next-retry time"), pending.next_attempt_at);
    assert.ok(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/.test(pending.next_attempt_at), pending.next_attempt_at);
    rx.status = 200;
    const before = rx.got.length;
    await page.click(`#del-table tr:has-text("${sub.job_id}") button.resend >> nth=0`);
    await page.waitForSelector(`#del-table tr:has-text("(resend)") td.ok`);
    await until("resent request", () => rx.got.length > before && JSON.parse(rx.got.at(-1).body).data.job_id === sub.job_id);
    assert.ok((await page.textContent("#del-detail")).includes("200"));
    await page.screenshot({ path: path.join(shots, "webhook-resend.png"), fullPage: true });
  });

  await step("the secret is rotated from the page and the next webhook verifies with it", async () => {
    const old = (await api("GET", "/v1/webhook")).secret;
    await page.click("#wh-rotate");
    const rotated = await until("new secret", async () => {
      const s = (await api("GET", "/v1/webhook")).secret;
      return s !== old && s;
    });
    await page.goto(srv.base + "/#overview");
    await page.click("button.reveal[data-target=wh-secret]");
    await until("page shows the new secret", async () => (await page.textContent("#wh-secret")) === rotated);
    const before = rx.got.length;
    const sub = await submit();
    const hit = await until("webhook after rotation", () => rx.got.slice(before).find((r) => JSON.parse(r.body).data.job_id === sub.job_id));
    assert.ok(verify(rotated, hit.headers["x-tunelab-signature"], hit.body), "verifies with the new secret");
    assert.ok(!verify(old, hit.headers["x-tunelab-signature"], hit.body), "not with the old one");
    await page.screenshot({ path: path.join(shots, "overview-rotated.png"), fullPage: true });
  });

  await step("a disabled endpoint shows the alert and is re-enabled", async () => {
    await api("POST", "/v1/webhook/disable");
    await page.goto(srv.base + "/#webhook");
    await page.waitForSelector("#wh-alert:not([hidden])");
    assert.ok((await page.textContent("#wh-alert")).includes("disabled"));
    await page.screenshot({ path: path.join(shots, "webhook-disabled.png"), fullPage: true });
    await page.click("#wh-enable");
    await page.waitForSelector("#wh-alert", { state: "hidden" });
    assert.equal((await api("GET", "/v1/webhook")).enabled, true);
    assert.equal(await page.textContent("#wh-state"), "enabled");
    await page.screenshot({ path: path.join(shots, "webhook-enabled.png"), fullPage: true });
  });

  await step("a deep link opens a job that follows its live event stream", async () => {
    // A separation of 30 s of audio runs long enough to report progress; the delay keeps it
    // queued/running while the page opens.
    const sub = await submit("delay=1500", "/v1/separate", toneWav(30));
    assert.ok(sub.job_id, JSON.stringify(sub));
    const requests = [];
    const onRequest = (r) => requests.push(new URL(r.url()).pathname);
    page.on("request", onRequest);
    await page.goto(srv.base + "/#/jobs/" + sub.job_id);
    const detail = `#tab-jobs.active #job-detail[data-id="${sub.job_id}"]`;
    await page.waitForSelector(`${detail} .live-status`);
    const seen = new Set(), progress = [];
    await until("completed live", async () => {
      const st = await page.getAttribute(`${detail} .live-status`, "data-status").catch(() => null);
      if (st) seen.add(st);
      const v = await page.evaluate(() => document.querySelector("#job-detail progress.live")?.value);
      if (v != null) progress.push(v);
      return st === "completed";
    }, 120000);
    page.off("request", onRequest);
    assert.ok(seen.has("running") || seen.has("queued"), [...seen].join(","));
    assert.ok(requests.includes(`/v1/jobs/${sub.job_id}/events`), "the page opened the job's event stream");
    assert.ok(!requests.includes(`/v1/jobs/${sub.job_id}`), "the job itself was never polled");
    const events = Number(await page.getAttribute(detail, "data-events"));
    const progressEvents = Number(await page.getAttribute(detail, "data-progress-events"));
    assert.ok(events >= 2 && progressEvents >= 1, `events ${events}, progress events ${progressEvents}`);
    assert.ok(progress.some((v) => v > 0 && v < 1), `progress seen on the page: ${progress.join(",")}`);
    // The final object came from the stream: its result is on the page.
    await page.waitForSelector(`${detail} ul.files li:nth-child(2)`);
    await page.screenshot({ path: path.join(shots, "job-live-deeplink.png"), fullPage: true });
  });

  await step("a running job is cancelled from its detail, a queued generation from its row", async () => {
    const sub = await submit("delay=30000");
    await page.goto(srv.base + "/#/jobs/" + sub.job_id);
    const detail = `#job-detail[data-id="${sub.job_id}"]`;
    await page.click(`${detail} button.cancel`);
    await page.waitForSelector(`${detail} .live-status[data-status="failed"]`, { timeout: 15000 });
    assert.ok((await page.textContent(`${detail} .error-message`)).includes("cancelled"));
    const job = await jobNow(sub.job_id);
    assert.equal(job.status, "failed");
    assert.equal(job.error.code, "cancelled");
    await page.screenshot({ path: path.join(shots, "job-cancelled.png"), fullPage: true });

    const gen = await fetch(srv.base + "/v1/generations", {
      method: "POST",
      headers: { "X-API-Key": srv.ft, "Content-Type": "application/json", "X-Soundcheck-Fault": "delay=30000" },
      body: JSON.stringify({ tags: "to be cancelled", duration: 3 }),
    }).then((r) => r.json());
    await page.goto(srv.base + "/#generations");
    const row = `tr[data-gen="${gen.id}"]`;
    await page.click(`${row} button.cancel`);
    await until("generation failed in the list", async () => (await page.textContent(row)).includes("failed"));
    const g = await ftApi("GET", "/v1/generations/" + gen.id);
    assert.equal(g.status, "failed");
    assert.equal(g.errorMessage, "cancelled");
    assert.equal(await page.locator(`${row} button.cancel`).count(), 0, "no cancel button on a final item");
  });

  await step("lists filter by text and status; a narrow window keeps the status column", async () => {
    await page.goto(srv.base + "/#jobs");
    await page.waitForSelector("#jobs-table tbody tr");
    const all = await page.locator("#jobs-table tbody tr").count();
    const failed = (await api("GET", "/v1/jobs")).data.filter((j) => j.status === "failed");
    assert.ok(all > failed.length && failed.length > 0, `${all} jobs, ${failed.length} failed`);
    await page.selectOption("#jobs-status", "failed");
    await until("only failed jobs", async () => (await page.locator("#jobs-table tbody tr").count()) === failed.length);
    for (const t of await page.locator("#jobs-table tbody td.col-status").allTextContents()) assert.equal(t, "failed");
    await page.fill("#jobs-filter", failed[0].job_id);
    await until("one row", async () => (await page.locator("#jobs-table tbody tr").count()) === 1);
    assert.equal(await page.getAttribute("#jobs-table tbody tr", "data-job"), failed[0].job_id);
    assert.equal(await page.textContent("#jobs-count"), `1 of ${all}`);
    await page.fill("#jobs-filter", "");
    await page.selectOption("#jobs-status", "");
    await until("all rows back", async () => (await page.locator("#jobs-table tbody tr").count()) === all);

    await page.setViewportSize({ width: 390, height: 800 });
    try {
      const status = await page.locator("#jobs-table tbody tr >> nth=0 >> td.col-status").boundingBox();
      assert.ok(status && status.width > 0 && status.x + status.width <= 390, JSON.stringify(status));
      assert.ok(!(await page.isVisible("#jobs-table th.col-wide >> nth=0")), "secondary columns hidden");
      await page.screenshot({ path: path.join(shots, "jobs-narrow.png"), fullPage: true });
    } finally {
      await page.setViewportSize({ width: 1280, height: 900 });
    }
  });

  await step("generation deliveries are listed and bodies pretty-printed", async () => {
    await api("PUT", "/v1/webhook", { url: rx.url });
    const gen = await ftApi("POST", "/v1/generations", { tags: "webhook please", duration: 2, webhook: rx.url });
    await until("generation webhook received", () => rx.got.find((r) => r.body.includes(gen.id)));
    await page.goto(srv.base + "/#webhook");
    await page.selectOption("#del-of", "generation");
    const row = `#del-table tr:has-text("${gen.id}")`;
    await page.waitForSelector(row);
    await page.click(`${row} td >> nth=1`);
    const body = await page.textContent("#del-detail pre.request-body");
    assert.ok(body.includes(`\n  "id": "${gen.id}"`), body);
    assert.equal(await page.textContent("#del-detail pre.response-body"), '{\n  "received": true\n}');
    await page.screenshot({ path: path.join(shots, "webhook-generation-delivery.png"), fullPage: true });
    await page.selectOption("#del-of", "job");
  });

  await step("the page raised no script errors", async () => assert.deepEqual(pageErrors, []));
} finally {
  await browser.close();
  rx.server.close();
  srv.child.kill("SIGTERM");
}

const failed = results.filter(([s]) => s === "FAIL").length;
console.log(`${results.length - failed} passed, ${failed} failed; screenshots in ${shots}`);
process.exit(failed ? 1 : 0);
