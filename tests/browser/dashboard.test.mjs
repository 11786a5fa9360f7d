// Browser tests of the dashboard: starts the debug binary with a temporary data directory, drives
// the page in headless Chromium (playwright-core + Debian's /usr/bin/chromium, no browser
// download) and checks, against the real API and a real signed-webhook receiver:
//   1. a job submitted through the API appears in the dashboard and completes live;
//   2. a failed delivery is resent from the webhook page and succeeds;
//   3. the secret is rotated from the page and the next webhook verifies with the new one;
//   4. a disabled endpoint shows the alert and is re-enabled with the button.
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
  const data = mkdtempSync(path.join(tmpdir(), "sc-browser-"));
  const child = spawn(bin, ["serve", "--addr", "127.0.0.1:0", "--data-dir", data, "--time-scale", "0.001", "--workers", "2"], {
    env: { ...process.env, SOUNDCHECK_LOG: "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    let out = "";
    child.on("exit", (c) => reject(new Error("server exited " + c)));
    child.stdout.on("data", (d) => {
      out += d;
      const base = out.match(/listening on (\S+)/)?.[1];
      const tl = out.match(/SOUNDCHECK_TL_KEY=(\S+)/)?.[1];
      const secret = out.match(/SOUNDCHECK_WEBHOOK_SECRET=(\S+)/)?.[1];
      if (base && tl && secret) resolve({ child, base, tl, secret });
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

function toneWav() {
  const rate = 22050, n = rate / 2, buf = Buffer.alloc(44 + n * 2);
  buf.write("RIFF", 0); buf.writeUInt32LE(36 + n * 2, 4); buf.write("WAVEfmt ", 8); buf.writeUInt32LE(16, 16);
  buf.writeUInt16LE(1, 20); buf.writeUInt16LE(1, 22); buf.writeUInt32LE(rate, 24); buf.writeUInt32LE(rate * 2, 28);
  buf.writeUInt16LE(2, 32); buf.writeUInt16LE(16, 34); buf.write("data", 36); buf.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) buf.writeInt16LE(Math.round(Math.sin((2 * Math.PI * 330 * i) / rate) * 8000), 44 + i * 2);
  return buf;
}

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
const submit = (fault) => {
  const fd = new FormData();
  fd.append("audio", new Blob([toneWav()], { type: "audio/wav" }), "tone.wav");
  return api("POST", "/v1/analyze/upload", fd, fault ? { "X-Soundcheck-Fault": fault } : {});
};

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
    await page.screenshot({ path: path.join(shots, "jobs-completed.png"), fullPage: true });
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

  await step("the page raised no script errors", async () => assert.deepEqual(pageErrors, []));
} finally {
  await browser.close();
  rx.server.close();
  srv.child.kill("SIGTERM");
}

const failed = results.filter(([s]) => s === "FAIL").length;
console.log(`${results.length - failed} passed, ${failed} failed; screenshots in ${shots}`);
process.exit(failed ? 1 : 0);
