// omo campaign composer: fills the form from the definition the page carries (#definition),
// builds the definition back from the form, counts its reach as it changes (POST
// /v1/admin/campaigns/reach), previews each message as a LINE chat bubble (with its flex
// message) and a push notification, and saves it (PUT /v1/admin/campaigns/{id}), showing each
// refusal beside its field. Words come from the page (#words, via app.js's `say`).
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
const data = (id) => JSON.parse($(`#${id}`)?.textContent ?? "{}");

function list(text) {
  return text.split(/[,、\n]/).map((s) => s.trim()).filter(Boolean);
}

function attributes(text) {
  const out = {};
  for (const line of text.split("\n")) {
    const i = line.indexOf("=");
    if (i < 1) continue;
    const key = line.slice(0, i).trim();
    const raw = line.slice(i + 1).trim();
    let value = raw;
    try { value = JSON.parse(raw); } catch { /* a plain string */ }
    out[key] = value;
  }
  return out;
}

function num(el) {
  return el.value === "" ? undefined : Number(el.value);
}

function time(el) {
  return el.value ? (el.value.length === 5 ? `${el.value}:00` : el.value) : "";
}

function addVariant(v = { id: "", weight: 1, template: { text: "" } }) {
  const box = $("#variants");
  const node = $("#variant-template").content.firstElementChild.cloneNode(true);
  box.append(node);
  $(".v-id", node).value = v.id;
  $(".v-weight", node).value = v.weight;
  $(".v-text", node).value = v.template?.text ?? "";
  $(".v-link", node).value = v.template?.link ?? "";
  $(".v-flex", node).value = v.template?.flex ? JSON.stringify(v.template.flex, null, 2) : "";
  if (v.template?.flex) $("details", node).open = true;
  $(".remove-variant", node).addEventListener("click", () => { node.remove(); numberVariants(); changed(); });
  numberVariants();
}

// Ids, labels and field paths follow each message's place in the list.
function numberVariants() {
  $$("#variants .variant").forEach((node, i) => {
    $("legend", node).textContent = say("message_n", i + 1);
    node.dataset.path = `variants[${i}]`;
    for (const [cls, path] of [["v-id", "id"], ["v-weight", "weight"], ["v-text", "template.text"], ["v-link", "template.link"], ["v-flex", "template.flex"]]) {
      const input = $(`.${cls}`, node);
      input.id = `v${i}-${cls}`;
      input.dataset.path = `variants[${i}].${path}`;
      const label = input.previousElementSibling?.tagName === "LABEL" ? input.previousElementSibling : input.parentElement.querySelector("label");
      if (label) label.htmlFor = input.id;
    }
  });
}

function fill(d) {
  const f = $("#composer");
  if ($("#c-id")) $("#c-id").value = d.id ?? "";
  $("#c-name").value = d.name ?? "";
  const t = d.trigger ?? { kind: "enter" };
  $("#c-trigger").value = t.kind;
  if (t.minutes) $("#c-dwell").value = String(t.minutes);
  if (t.n) $("#c-nth").value = t.n;
  if (t.within_days) $("#c-within").value = t.within_days;
  $("#c-sale").value = t.channel ?? "";
  $("#c-category").value = t.category ?? "";
  $("#c-min-total").value = t.min_total ?? "";
  const checked = (name, values) => { for (const el of $$(`input[name=${name}]`, f)) el.checked = (values ?? []).includes(el.value); };
  checked("store", d.places?.stores);
  checked("zone", d.places?.zones);
  checked("tier", d.audience?.tiers);
  checked("day", d.schedule?.days);
  $("#c-include").value = (d.audience?.include_tags ?? []).join(", ");
  $("#c-exclude").value = (d.audience?.exclude_tags ?? []).join(", ");
  // A string that would read back as another JSON value ("123", "true") keeps its quotes.
  const shown = (v) => {
    if (typeof v !== "string") return JSON.stringify(v);
    try { JSON.parse(v); return JSON.stringify(v); } catch { return v; }
  };
  $("#c-attributes").value = Object.entries(d.audience?.attributes ?? {}).map(([k, v]) => `${k}=${shown(v)}`).join("\n");
  $("#c-from").value = d.schedule?.from ?? "";
  $("#c-to").value = d.schedule?.to ?? "";
  $("#c-hours-from").value = d.schedule?.hours?.from?.slice(0, 5) ?? "";
  $("#c-hours-to").value = d.schedule?.hours?.to?.slice(0, 5) ?? "";
  $("#c-quiet-from").value = d.quiet_hours?.from?.slice(0, 5) ?? "";
  $("#c-quiet-to").value = d.quiet_hours?.to?.slice(0, 5) ?? "";
  $("#c-per-customer").value = d.caps?.per_customer ?? 1;
  $("#c-period").value = d.caps?.period_days ?? 7;
  $("#c-daily-all").value = d.caps?.per_customer_daily_all ?? "";
  $("#c-cooldown").value = d.caps?.cooldown_minutes ?? 0;
  $("#c-budget").value = d.budget ?? "";
  $("#c-ttl").value = d.offer_ttl_minutes ?? 60;
  $$("select.channel").forEach((s, i) => { s.value = d.channels?.[i] ?? ""; });
  $("#c-holdout").value = d.holdout_percent ?? 0;
  $("#c-attribution").value = d.attribution_days ?? 7;
  $("#variants").replaceChildren();
  for (const v of d.variants ?? []) addVariant(v);
}

// The definition the form says, over the one the page started from (fields the form does not
// show, such as paused, are kept).
function collect() {
  const d = structuredClone(window.omoDefinition);
  const f = $("#composer");
  if ($("#c-id")) d.id = $("#c-id").value.trim();
  d.name = $("#c-name").value.trim();
  const kind = $("#c-trigger").value;
  d.trigger = { kind };
  if (kind === "dwell") d.trigger.minutes = Number($("#c-dwell").value);
  if (kind === "nth_visit") Object.assign(d.trigger, { n: num($("#c-nth")), within_days: num($("#c-within")) });
  if (kind === "purchase") {
    if ($("#c-sale").value) d.trigger.channel = $("#c-sale").value;
    if ($("#c-category").value.trim()) d.trigger.category = $("#c-category").value.trim();
    if ($("#c-min-total").value !== "") d.trigger.min_total = Number($("#c-min-total").value);
  }
  const values = (name) => $$(`input[name=${name}]:checked`, f).map((el) => el.value);
  d.places = { ...d.places, stores: values("store"), zones: values("zone") };
  d.audience = { include_tags: list($("#c-include").value), exclude_tags: list($("#c-exclude").value), attributes: attributes($("#c-attributes").value), tiers: values("tier") };
  d.schedule = { ...d.schedule, from: $("#c-from").value, to: $("#c-to").value, days: values("day") };
  delete d.schedule.hours;
  if ($("#c-hours-from").value || $("#c-hours-to").value) d.schedule.hours = { from: time($("#c-hours-from")), to: time($("#c-hours-to")) };
  delete d.quiet_hours;
  if ($("#c-quiet-from").value || $("#c-quiet-to").value) d.quiet_hours = { from: time($("#c-quiet-from")), to: time($("#c-quiet-to")) };
  d.caps = { per_customer: num($("#c-per-customer")), period_days: num($("#c-period")), cooldown_minutes: num($("#c-cooldown")) ?? 0 };
  if ($("#c-daily-all").value !== "") d.caps.per_customer_daily_all = num($("#c-daily-all"));
  d.budget = num($("#c-budget"));
  d.offer_ttl_minutes = num($("#c-ttl"));
  d.channels = [...new Set($$("select.channel").map((s) => s.value).filter(Boolean))];
  d.holdout_percent = num($("#c-holdout")) ?? 0;
  d.attribution_days = num($("#c-attribution")) ?? 7;
  d.variants = $$("#variants .variant").map((node) => {
    const template = { text: $(".v-text", node).value };
    if ($(".v-link", node).value.trim()) template.link = $(".v-link", node).value.trim();
    const flex = $(".v-flex", node).value.trim();
    if (flex) {
      try { template.flex = JSON.parse(flex); } catch { template.flex = flex; }
    }
    return { id: $(".v-id", node).value.trim(), weight: num($(".v-weight", node)) ?? 1, template };
  });
  return d;
}

function showTrigger() {
  const kind = $("#c-trigger").value;
  for (const k of ["dwell", "nth_visit", "purchase"]) {
    for (const el of $$(`.when-${k}`)) el.hidden = k !== kind;
  }
}

// ---- refusals beside their fields ----

function clearErrors() {
  for (const el of $$(".field-error")) el.remove();
  for (const el of $$("[aria-invalid]")) el.removeAttribute("aria-invalid");
  $("#form-error").hidden = true;
}

// The element a field path is shown at: the input with that path, else its nearest parent's.
function fieldElement(path) {
  let p = path;
  while (p) {
    const el = $(`[data-path="${CSS.escape(p)}"]`);
    if (el) return el;
    const shorter = p.replace(/(\.[^.[\]]*|\[\d+\])$/, "");
    if (shorter === p) break;
    p = shorter;
  }
  return null;
}

function showErrors(fields, message) {
  clearErrors();
  let first = null;
  const general = [];
  for (const { field, message: m } of fields ?? []) {
    const el = field ? fieldElement(field) : null;
    if (!el) { general.push(field ? `${field}: ${m}` : m); continue; }
    el.setAttribute("aria-invalid", "true");
    const p = document.createElement("p");
    p.className = "field-error bad";
    p.id = `err-${Math.random().toString(36).slice(2)}`;
    p.textContent = say("field_error");
    const detail = document.createElement("span");
    detail.translate = false;
    detail.textContent = ` ${m}`;
    p.append(detail);
    (el.tagName === "FIELDSET" || el.classList.contains("checks") ? el : el.parentElement).append(p);
    el.setAttribute("aria-describedby", `${el.getAttribute("aria-describedby") ?? ""} ${p.id}`.trim());
    first ??= el;
  }
  if (general.length || !(fields ?? []).length) {
    const box = $("#form-error");
    box.textContent = say("failed", general.length ? general.join("; ") : message);
    box.hidden = false;
    first ??= box;
  }
  first?.scrollIntoView({ block: "center" });
  if (first?.focus) first.focus();
}

// ---- reach ----

let reachTimer;
let reachAsked = 0;
function changed() {
  preview();
  clearTimeout(reachTimer);
  reachTimer = setTimeout(countReach, 500);
}

async function countReach() {
  const ask = ++reachAsked;
  const d = collect();
  try {
    const r = await fetch("/v1/admin/campaigns/reach", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(d),
      credentials: "same-origin",
    });
    const doc = await r.json();
    if (ask !== reachAsked) return;
    const card = $("#reach-card");
    if (!r.ok) {
      $("#reach-sendable").textContent = "—";
      $("#reach-of").textContent = say("reach_incomplete");
      card.dataset.sendable = "";
      return;
    }
    const sendable = Object.values(doc.sent_on).reduce((a, b) => a + b, 0);
    card.dataset.sendable = String(sendable);
    $("#reach-sendable").textContent = say("reach_customers", count(sendable));
    $("#reach-of").textContent = say("reach_of", count(doc.in_audience), count(doc.customers), count(doc.unreachable));
    const dl = $("#reach-channels");
    dl.replaceChildren();
    for (const ch of d.channels) {
      const dt = document.createElement("dt");
      dt.textContent = say(`channel_${ch}`);
      const dd = document.createElement("dd");
      dd.dataset.channel = ch;
      dd.textContent = count(doc.sent_on[ch] ?? 0);
      dl.append(dt, dd);
    }
  } catch (e) {
    console.warn("reach", e);
  }
}

// ---- preview ----

function filled(text, values) {
  return String(text ?? "").replace(/\{(name|store|coupon|link)\}/g, (_, k) => values[k]);
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// A flex component as LINE draws it, roughly: boxes lay out their contents in a column or a
// row; texts, images, buttons and separators inside.
function flexNode(c, values) {
  if (!c || typeof c !== "object") return el("span");
  switch (c.type) {
    case "carousel": {
      const row = el("div", "flex-carousel");
      for (const b of c.contents ?? []) row.append(flexNode(b, values));
      return row;
    }
    case "bubble": {
      const b = el("div", "flex-bubble");
      for (const part of ["header", "hero", "body", "footer"]) {
        if (c[part]) { const p = flexNode(c[part], values); p.classList.add(`flex-${part}`); b.append(p); }
      }
      return b;
    }
    case "box": {
      const b = el("div", `flex-box flex-${c.layout ?? "vertical"}`);
      for (const x of c.contents ?? []) b.append(flexNode(x, values));
      return b;
    }
    case "text": {
      const t = el("p", "flex-text", filled(c.text, values));
      if (c.weight === "bold") t.style.fontWeight = "700";
      if (c.color && /^#[0-9a-fA-F]{3,8}$/.test(c.color)) t.style.color = c.color;
      if (["xl", "xxl", "3xl", "4xl", "5xl", "lg"].includes(c.size)) t.classList.add("flex-large");
      return t;
    }
    case "image": {
      const i = el("img", "flex-image");
      i.alt = c.altText ?? "";
      if (/^https?:\/\//.test(c.url ?? "")) i.src = c.url;
      return i;
    }
    case "button": return el("span", `flex-button flex-${c.style ?? "link"}`, filled(c.action?.label ?? "", values));
    case "separator": return el("hr", "flex-separator");
    default: return el("span");
  }
}

function preview() {
  const d = collect();
  const samples = data("samples");
  const storeLabel = $$("input[name=store]:checked").map((i) => i.parentElement.textContent.trim())[0];
  const values = { ...samples, store: storeLabel ?? say("sample_store") };
  const box = $("#preview");
  box.replaceChildren();
  for (const v of d.variants) {
    const section = el("section", "preview-variant");
    section.dataset.variant = v.id;
    section.append(el("h3", "", say("message_named", v.id || "?")));
    // The marketer's own words, in whatever language they wrote them: not ours to translate.
    const theirs = (node) => { node.translate = false; return node; };
    const chat = el("div", "line-chat");
    chat.setAttribute("role", "group");
    chat.setAttribute("aria-label", say("line_preview"));
    chat.append(theirs(el("p", "line-bubble", filled(v.template.text, values))));
    if (v.template.flex && typeof v.template.flex === "object") chat.append(theirs(flexNode(v.template.flex, values)));
    else if (typeof v.template.flex === "string") chat.append(el("p", "bad", say("flex_not_json")));
    const push = el("div", "push-card");
    push.setAttribute("role", "group");
    push.setAttribute("aria-label", say("push_preview"));
    push.append(el("p", "push-app", say("push_app")), theirs(el("p", "push-title", d.name || say("untitled"))), theirs(el("p", "push-body", filled(v.template.text, values))));
    section.append(chat, push);
    box.append(section);
  }
}

// ---- save ----

async function save(ev) {
  ev.preventDefault();
  const d = collect();
  const editing = $("#composer").dataset.editing;
  const id = editing || d.id;
  if (!id) { showErrors([{ field: "id", message: say("id_needed") }]); return; }
  const out = $("#saved");
  out.textContent = say("sending");
  try {
    const headers = { "Content-Type": "application/json", "X-CSRF-Token": csrf() };
    // A new campaign must not replace one that has its id.
    if (!editing) headers["If-None-Match"] = "*";
    const r = await fetch(`/v1/admin/campaigns/${encodeURIComponent(id)}`, {
      method: "PUT",
      headers,
      body: JSON.stringify({ ...d, id }),
      credentials: "same-origin",
    });
    const doc = await r.json().catch(() => ({}));
    if (!r.ok) {
      out.textContent = "";
      showErrors(doc.error?.fields, doc.error?.message ?? String(r.status));
      return;
    }
    clearErrors();
    out.textContent = say("saved", doc.version);
    location.href = `/campaigns/${encodeURIComponent(id)}`;
  } catch (e) {
    out.textContent = "";
    showErrors([], e.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  window.omoDefinition = data("definition");
  fill(window.omoDefinition);
  showTrigger();
  $("#c-trigger").addEventListener("change", showTrigger);
  $("#add-variant").addEventListener("click", () => {
    const n = $$("#variants .variant").length;
    addVariant({ id: String.fromCharCode(97 + (n % 26)), weight: 1, template: { text: "" } });
    changed();
  });
  $("#composer").addEventListener("input", changed);
  $("#composer").addEventListener("change", changed);
  $("#composer").addEventListener("submit", save);
  changed();
  countReach();
});
