// omo dashboard: refreshes live figures from the admin API and sends the forms' API calls
// with the session's CSRF token. Its words come from the page (#words, the reader's
// language); times are shown in the page's time zone (meta tz). No libraries; every request
// goes to this cloud.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf"]')?.content ?? "";
const zone = () => document.querySelector('meta[name="tz"]')?.content ?? "UTC";
const lang = () => document.documentElement.lang || "en";
let wordsCache;
function words() {
  if (!wordsCache) {
    try { wordsCache = JSON.parse(document.getElementById("words")?.textContent ?? "{}"); } catch { wordsCache = {}; }
  }
  return wordsCache;
}

// The text of `key` with {0}, {1}, … and {n} filled.
function say(key, ...args) {
  let t = words()[key] ?? `⟦${key}⟧`;
  args.forEach((a, i) => { t = t.replaceAll(`{${i}}`, String(a)); });
  return t;
}

function count(n) {
  return Number(n).toLocaleString("en-US");
}

// A time as the server writes it: "7 Dec 2026 08:30" or "2026年12月7日 08:30".
function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat("en-GB", {
      timeZone: zone(), year: "numeric", month: "numeric", day: "numeric",
      hour: "2-digit", minute: "2-digit", hourCycle: "h23",
    }).formatToParts(d).map((p) => [p.type, p.value]),
  );
  const time = `${parts.hour}:${parts.minute}`;
  return lang() === "ja"
    ? `${parts.year}年${Number(parts.month)}月${Number(parts.day)}日 ${time}`
    : `${Number(parts.day)} ${say(`month.${Number(parts.month)}`)} ${parts.year} ${time}`;
}

function clock(iso) {
  return when(iso).split(" ").pop();
}

function pick(doc, path) {
  return path.split(".").reduce((v, k) => (v == null ? undefined : v[k]), doc);
}

function show(el, value) {
  if (value === undefined) return;
  el.textContent = el.dataset.format === "rate" ? Number(value).toFixed(1) : String(value);
}

async function api(method, url, body, extra = {}) {
  const headers = { "X-CSRF-Token": csrf(), ...extra };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(url, { method, headers, body, credentials: "same-origin" });
  if (r.status === 401) { location.href = "/login"; throw new Error("401"); }
  const text = await r.text();
  let doc;
  try { doc = JSON.parse(text); } catch { doc = text; }
  if (!r.ok) {
    const e = doc?.error;
    const err = new Error(e ? e.message : `${r.status}`);
    err.fields = e?.fields ?? [];
    err.status = r.status;
    throw err;
  }
  return doc;
}

function alertSentence(a) {
  switch (a.kind) {
    case "gateway_offline": return say("alert.gateway_offline", a.subject);
    case "outbox_dropping": return say("alert.outbox_dropping", a.subject, count(a.count ?? 0));
    case "line_429_storm": return say("alert.line_429_storm", count(a.count ?? 0));
    case "push_tokens_invalidated": {
      const n = a.count ?? 0;
      const form = n === 1 && lang() === "en" ? "one" : "other";
      return say(`alert.push_tokens.${form}`).replaceAll("{n}", count(n));
    }
    default: return a.message;
  }
}

function alertRows(tbody, alerts) {
  tbody.replaceChildren();
  if (!alerts.length) {
    const tr = tbody.insertRow();
    tr.className = "empty";
    const td = tr.insertCell();
    td.colSpan = 2;
    td.textContent = say("no_alerts");
    return;
  }
  for (const a of alerts) {
    const tr = tbody.insertRow();
    for (const v of [when(a.at), alertSentence(a)]) tr.insertCell().textContent = v;
  }
}

async function poll(section) {
  try {
    const doc = await api("GET", section.dataset.poll);
    for (const el of section.querySelectorAll("[data-field]")) show(el, pick(doc, el.dataset.field));
    const t = document.querySelector(`table[data-alerts="${section.dataset.poll}"] tbody`);
    if (t && doc.alerts) alertRows(t, doc.alerts);
    const u = document.getElementById("updated");
    if (u && doc.at) u.textContent = say("as_of", clock(doc.at));
    document.body.dataset.polled = String(Number(document.body.dataset.polled ?? 0) + 1);
  } catch (e) {
    console.warn("poll failed", e);
  }
}

function ackText(ack) {
  return ack.ok ? say("applied", ack.version) : say("refused", ack.version, ack.error ?? "");
}

// A config push is done when the gateway's ack names the pushed version.
async function watchAck(gateway, version, out) {
  for (let i = 0; i < 120; i++) {
    const g = await api("GET", `/v1/admin/gateways/${encodeURIComponent(gateway)}`);
    const ack = g.last_config_ack;
    if (ack && ack.version === version) {
      const el = document.getElementById("ack");
      if (el) el.textContent = ackText(ack);
      out.textContent = say("acknowledged", ackText(ack));
      out.classList.toggle("error", !ack.ok);
      return;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
  out.textContent += ` ${say("no_ack")}`;
}

// An erasure's receipt: what was removed, what stays.
function showReceipt(doc, out, form) {
  if (doc.status === "under_way") {
    out.textContent = say("receipt_under_way");
    return;
  }
  out.replaceChildren();
  const title = document.createElement("p");
  title.className = "good";
  title.textContent = say("receipt_title", when(doc.erased));
  const list = document.createElement("ul");
  const line = (text) => { const li = document.createElement("li"); li.textContent = text; list.append(li); };
  const id = doc.identity ?? {};
  line(say("receipt_record"));
  if (id.member_id) line(say("receipt_member"));
  if (id.line_user) line(say("receipt_line"));
  const removed = doc.removed ?? {};
  for (const [key, n] of [
    ["receipt_installs", id.installs], ["receipt_consent", id.consent_records], ["receipt_visits", doc.visits?.visits],
    ["receipt_observations", removed.observations], ["receipt_decisions", removed.decisions],
    ["receipt_deliveries", removed.deliveries_scrubbed], ["receipt_cancelled", removed.deliveries_cancelled],
    ["receipt_redemptions", removed.redemptions_scrubbed], ["receipt_purchases", removed.purchases_unlinked],
  ]) line(`${say(key)}: ${count(n ?? 0)}`);
  const kept = document.createElement("p");
  kept.className = "note";
  kept.textContent = say("receipt_kept");
  out.append(title, list, kept);
  form.querySelector("button")?.setAttribute("disabled", "");
}

// A test send's request: the customers named one per line (or by commas), and the message
// picked, if one was.
function testBody(form) {
  const customers = (form.elements.customers?.value ?? "").split(/[\s,、]+/).filter(Boolean);
  if (!customers.length) return undefined;
  const variant = form.elements.variant?.value || undefined;
  return JSON.stringify({ customers, variant });
}

// After a test send: who was skipped; once every message sent has its channel's answer (a
// minute at most), the page again with them.
async function watchTests(form, doc, out) {
  const items = doc.items ?? [];
  const sent = items.filter((i) => i.delivery);
  const lines = [say("test_sent", count(sent.length))];
  for (const i of items.filter((i) => !i.delivery)) {
    lines.push(i.variant ? say("test_unreachable", i.to) : say("test_gone", i.to));
  }
  out.textContent = lines.join(" ");
  const ids = new Set(sent.map((i) => i.delivery));
  for (let n = 0; n < 60 && ids.size; n++) {
    await new Promise((r) => setTimeout(r, 1000));
    const list = await api("GET", form.dataset.tests);
    for (const d of list.items ?? []) {
      if (ids.has(d.id) && !["pending", "sending"].includes(d.status)) ids.delete(d.id);
    }
  }
  // What was skipped stays on screen; otherwise the page shows the answers.
  // The page again with the answers; what was skipped stays on screen until then.
  if (sent.length) {
    if (sent.length < items.length) await new Promise((r) => setTimeout(r, 4000));
    location.reload();
  }
}

function apiForms() {
  for (const form of document.querySelectorAll("form.api")) {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
      const out = form.querySelector("output");
      let body = form.querySelector("textarea")?.value;
      if (form.dataset.body === "test") {
        body = testBody(form);
        if (body === undefined) {
          out.classList.add("error");
          out.textContent = say("test_to_needed");
          return;
        }
      }
      out.classList.remove("error");
      out.textContent = say("sending");
      try {
        const doc = await api(form.dataset.method, form.dataset.url, body);
        out.textContent = say("done");
        if (form.dataset.then === "ack" && doc.version !== undefined) {
          out.textContent = say(doc.published ? "config_sent" : "config_stored", doc.version);
          await watchAck(document.getElementById("ack").dataset.gateway, doc.version, out);
        }
        if (form.dataset.then === "reload") location.reload();
        if (form.dataset.then === "tests") await watchTests(form, doc, out);
        if (form.dataset.then === "receipt") {
          // An erasure whose last part is still under way (the visit stage runs on another
          // instance, or is catching up) finishes when asked again: ask for a minute.
          let answer = doc;
          for (let i = 0; i < 30 && answer.status === "under_way"; i++) {
            out.textContent = say("receipt_under_way");
            await new Promise((r) => setTimeout(r, 2000));
            answer = await api(form.dataset.method, form.dataset.url);
          }
          showReceipt(answer, out, form);
        }
      } catch (e) {
        out.classList.add("error");
        out.textContent = say("failed", e.message);
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
