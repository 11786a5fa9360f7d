// soundcheck dashboard: plain JS over the server's own API (no build step, no CDN). The keys come
// from /dashboard/config, which the server answers only for loopback clients.
"use strict";

let cfg = null;
let selectedJob = null;
let selectedGen = null;
let selectedDelivery = null;

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

async function api(method, path, body, key = "tl") {
  const headers = key === "ft" ? { "X-API-Key": cfg.ft_key } : { Authorization: "Bearer " + cfg.tl_key };
  const init = { method, headers };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  const r = await fetch(path, init);
  const data = await r.json().catch(() => null);
  if (!r.ok) throw new Error(`${r.status} ${data?.error?.code ?? ""}: ${data?.error?.message ?? ""}`);
  return data;
}

function showTab(name) {
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.id === "tab-" + name));
  document.querySelectorAll("nav a[data-tab]").forEach((a) => a.classList.toggle("active", a.dataset.tab === name));
}

function setSecret(id, value) {
  const el = $(id);
  el.dataset.value = value;
  el.textContent = el.dataset.hidden === "1" ? "•".repeat(12) : value;
}

function fileLinks(result) {
  // Every absolute URL in a result, with a player for audio files.
  const urls = [];
  const walk = (v, name) => {
    if (typeof v === "string" && /^https?:\/\/.*\/media\//.test(v)) urls.push([name, v]);
    else if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) walk(x, k);
  };
  walk(result, "file");
  return urls.map(([name, url]) => {
    const audio = /\.(wav|mp3|flac)$/i.test(url) ? `<br><audio controls preload="none" src="${esc(url)}"></audio>` : "";
    return `<li><a href="${esc(url)}">${esc(name)}</a>${audio}</li>`;
  }).join("");
}

function deliveriesTable(list) {
  if (!list.length) return "<p>No webhook attempts yet.</p>";
  return "<table><tr><th>#</th><th>Event</th><th>Result</th><th>ms</th><th>At</th></tr>" + list.map((a) =>
    `<tr><td>${a.attempt}${a.manual ? " (resend)" : ""}</td><td>${esc(a.event_type)}</td><td class="${a.succeeded ? "ok" : "fail"}">${a.response_status ?? ""} ${esc(a.error ?? "")}</td><td>${a.duration_ms}</td><td>${esc(a.created_at)}</td></tr>`).join("") + "</table>";
}

async function renderJobDetail() {
  if (!selectedJob) return;
  const el = $("job-detail");
  const jobs = (await api("GET", "/v1/jobs")).data;
  const j = jobs.find((x) => x.job_id === selectedJob);
  if (!j) return;
  const dels = (await api("GET", "/v1/webhook/deliveries?of=" + encodeURIComponent(j.job_id))).data;
  el.hidden = false;
  el.innerHTML = `<h3>${esc(j.job_id)} <span class="status-${esc(j.status)}">${esc(j.status)}</span></h3>
    <p>${esc(j.endpoint)} · credits reserved ${j.credits_reserved}, used ${j.credits_used} · trace ${esc(j.trace_id)}</p>
    ${j.error ? `<p class="fail">${esc(j.error.code)}: ${esc(j.error.message)}</p>` : ""}
    <ul class="files">${fileLinks(j.result)}</ul>
    <h4>Result / report</h4><pre>${esc(JSON.stringify(j.result ?? j.error, null, 2))}</pre>
    <h4>Webhook attempts</h4>${deliveriesTable(dels)}`;
}

async function renderGenDetail() {
  if (!selectedGen) return;
  const el = $("gen-detail");
  const g = await api("GET", "/v1/generations/" + encodeURIComponent(selectedGen), undefined, "ft");
  const dels = (await api("GET", `/v1/generations/${encodeURIComponent(g.id)}/deliveries`, undefined, "ft")).data;
  el.hidden = false;
  el.innerHTML = `<h3>${esc(g.id)} <span class="status-${esc(g.status)}">${esc(g.status)}</span></h3>
    <p>${esc(g.prompt)}</p>
    ${g.errorMessage ? `<p class="fail">${esc(g.errorMessage)}</p>` : ""}
    ${g.audioUrl ? `<audio controls preload="none" src="${esc(g.audioUrl)}"></audio> <a href="${esc(g.audioUrl)}">MP3</a>` : ""}
    <h4>Parameters</h4><pre>${esc(JSON.stringify(g.parameters, null, 2))}</pre>
    <h4>Webhook attempts</h4>${deliveriesTable(dels)}`;
}

function renderDeliveryDetail(a) {
  const el = $("del-detail");
  el.hidden = false;
  el.innerHTML = `<h3>${esc(a.id)} · ${esc(a.event_type)} · attempt ${a.attempt}</h3>
    <p>POST ${esc(a.url)} → <span class="${a.succeeded ? "ok" : "fail"}">${a.response_status ?? "no answer"}</span> in ${a.duration_ms} ms ${esc(a.error ?? "")}</p>
    <h4>Request headers</h4><pre>${esc(JSON.stringify(a.request_headers, null, 2))}</pre>
    <h4>Request body</h4><pre>${esc(a.request_body)}</pre>
    <h4>Response headers</h4><pre>${esc(JSON.stringify(a.response_headers, null, 2))}</pre>
    <h4>Response body</h4><pre>${esc(a.response_body ?? "")}</pre>`;
}

async function refresh() {
  const [jobs, gens, ep, dels, credits] = await Promise.all([
    api("GET", "/v1/jobs"),
    api("GET", "/v1/generations", undefined, "ft"),
    api("GET", "/v1/webhook"),
    api("GET", "/v1/webhook/deliveries?limit=20"),
    api("GET", "/v1/credits"),
  ]);
  $("credits").textContent = credits.balance;
  setSecret("wh-secret", ep.secret);

  $("jobs-table").tBodies[0].innerHTML = jobs.data.map((j) =>
    `<tr data-job="${esc(j.job_id)}"><td>${esc(j.job_id)}</td><td>${esc(j.endpoint)}</td><td class="status-${esc(j.status)}">${esc(j.status)}</td>` +
    `<td>${j.progress == null ? "–" : `<progress max="1" value="${j.progress}"></progress> ${Math.round(j.progress * 100)}%`}</td><td>${esc(j.created_at)}</td></tr>`).join("");
  $("gens-table").tBodies[0].innerHTML = gens.data.map((g) =>
    `<tr data-gen="${esc(g.id)}"><td>${esc(g.id)}</td><td>${esc(g.prompt)}</td><td class="status-${esc(g.status)}">${esc(g.status)}</td><td>${g.duration ?? "–"}</td><td>${esc(g.createdAt)}</td></tr>`).join("");

  $("wh-state").textContent = ep.enabled ? "enabled" : "disabled";
  $("wh-failures").textContent = ep.consecutive_failures;
  $("wh-alert").hidden = ep.enabled;
  $("wh-reason").textContent = ep.disabled_reason ?? "";
  if (document.activeElement !== $("wh-url") && !$("wh-url").dataset.dirty) $("wh-url").value = ep.url ?? "";
  window.lastDeliveries = dels.data;
  $("del-table").tBodies[0].innerHTML = dels.data.map((a) =>
    `<tr data-del="${esc(a.id)}"><td>${esc(a.id)}</td><td>${esc(a.event_type)}</td><td>${esc(a.subject_id)}</td><td>${a.attempt}${a.manual ? " (resend)" : ""}</td>` +
    `<td class="${a.succeeded ? "ok" : "fail"}">${a.succeeded ? "ok" : "fail"} ${a.response_status ?? ""}</td><td>${a.duration_ms}</td><td>${esc(a.created_at)}</td>` +
    `<td><button class="resend" data-id="${esc(a.id)}">Resend</button></td></tr>`).join("");
  await renderJobDetail();
  await renderGenDetail();
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
      const el = $(t.dataset.copy);
      await navigator.clipboard.writeText(el.dataset.value ?? el.textContent);
      t.textContent = "copied";
      setTimeout(() => (t.textContent = "copy"), 1200);
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
    } else {
      const row = t.closest("tr");
      if (row?.dataset.job) { selectedJob = row.dataset.job; await renderJobDetail(); }
      if (row?.dataset.gen) { selectedGen = row.dataset.gen; await renderGenDetail(); }
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
  const headers = { Authorization: "Bearer " + cfg.tl_key };
  if ($("fault-value").value) headers["X-Soundcheck-Fault"] = $("fault-value").value;
  const r = await fetch($("fault-endpoint").value, { method: "POST", headers, body: fd });
  $("fault-result").textContent = r.status + " " + JSON.stringify(await r.json(), null, 2);
});
window.addEventListener("hashchange", () => showTab(location.hash.slice(1) || "overview"));

(async function start() {
  showTab(location.hash.slice(1) || "overview");
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
  $("engines").innerHTML = cfg.engines.map(([ep, name]) => `<li><code>${esc(ep)}</code> → ${esc(name)}</li>`).join("");
  loop();
})();
