// omo dashboard: refreshes live figures from the admin API and sends the forms' API calls
// with the session's CSRF token. No libraries; every request goes to this cloud.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf"]')?.content ?? "";

function pick(doc, path) {
  return path.split(".").reduce((v, k) => (v == null ? undefined : v[k]), doc);
}

function show(el, value) {
  if (value === undefined) return;
  el.textContent = el.dataset.format === "rate" ? Number(value).toFixed(1) : String(value);
}

async function api(method, url, body) {
  const headers = { "X-CSRF-Token": csrf() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(url, { method, headers, body, credentials: "same-origin" });
  if (r.status === 401) { location.href = "/login"; throw new Error("logged out"); }
  const text = await r.text();
  let doc;
  try { doc = JSON.parse(text); } catch { doc = text; }
  if (!r.ok) {
    const e = doc?.error;
    throw new Error(e ? `${r.status} ${e.code}: ${e.message}` : `${r.status}`);
  }
  return doc;
}

function alertRows(tbody, alerts) {
  tbody.replaceChildren();
  if (!alerts.length) {
    const tr = tbody.insertRow();
    tr.className = "empty";
    const td = tr.insertCell();
    td.colSpan = 4;
    td.textContent = "No alerts since the cloud started.";
    return;
  }
  for (const a of alerts) {
    const tr = tbody.insertRow();
    for (const v of [a.at, a.kind.replaceAll("_", " "), a.subject, a.message]) tr.insertCell().textContent = v ?? "";
  }
}

async function poll(section) {
  try {
    const doc = await api("GET", section.dataset.poll);
    for (const el of section.querySelectorAll("[data-field]")) show(el, pick(doc, el.dataset.field));
    const t = document.querySelector(`table[data-alerts="${section.dataset.poll}"] tbody`);
    if (t && doc.alerts) alertRows(t, doc.alerts);
    const u = document.getElementById("updated");
    if (u && doc.at) u.textContent = `As of ${doc.at}`;
    document.body.dataset.polled = String(Number(document.body.dataset.polled ?? 0) + 1);
  } catch (e) {
    console.warn("poll failed", e);
  }
}

// A config push is done when the gateway's ack names the pushed version.
async function watchAck(gateway, version, out) {
  for (let i = 0; i < 120; i++) {
    const g = await api("GET", `/v1/admin/gateways/${encodeURIComponent(gateway)}`);
    const ack = g.last_config_ack;
    if (ack && ack.version === version) {
      const el = document.getElementById("ack");
      const text = ack.ok ? `v${ack.version} applied` : `v${ack.version} refused: ${ack.error ?? ""}`;
      if (el) el.textContent = text;
      out.textContent = `Gateway acknowledged: ${text}`;
      out.className = ack.ok ? "" : "error";
      return;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
  out.textContent += " — no ack yet (is the gateway online?)";
}

function apiForms() {
  for (const form of document.querySelectorAll("form.api")) {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const out = form.querySelector("output");
      const body = form.querySelector("textarea")?.value;
      out.className = "";
      out.textContent = "Sending…";
      try {
        const doc = await api(form.dataset.method, form.dataset.url, body);
        out.textContent = form.dataset.done ?? `Done: ${JSON.stringify(doc)}`;
        if (form.dataset.then === "ack" && doc.version !== undefined) {
          out.textContent = `Config v${doc.version} stored and ${doc.published ? "published" : "waiting for the broker"}; waiting for the gateway's ack…`;
          await watchAck(document.getElementById("ack").dataset.gateway, doc.version, out);
        }
        if (form.dataset.then === "reload") location.reload();
      } catch (e) {
        out.className = "error";
        out.textContent = e.message;
      }
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  apiForms();
  for (const section of document.querySelectorAll("[data-poll]")) {
    setInterval(() => poll(section), 3000);
    poll(section);
  }
});
