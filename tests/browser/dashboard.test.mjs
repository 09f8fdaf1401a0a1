// The omo dashboard in headless Chromium (Debian's `chromium`, driven by playwright-core),
// against a real omo-cloud left running by `omo-sim demo --keep-running` after a short store
// day. tests/tests/browser.rs starts the demo and runs this file with:
//   OMO_URL          the cloud's HTTP base
//   OMO_ADMIN_TOKEN  an operator token
//   OMO_SCREENSHOTS  where to write one PNG per page
//   OMO_CHROMIUM     the browser (default /usr/bin/chromium)
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const axePath = createRequire(import.meta.url).resolve("axe-core/axe.min.js");

const base = process.env.OMO_URL;
const token = process.env.OMO_ADMIN_TOKEN;
const shots = process.env.OMO_SCREENSHOTS ?? "screenshots";
assert.ok(base && token, "OMO_URL and OMO_ADMIN_TOKEN are required");
mkdirSync(shots, { recursive: true });

let browser;
before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.OMO_CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
    ],
  });
});
after(async () => {
  await browser?.close();
});

// Numbers as the pages write them.
const count = (n) => Number(n).toLocaleString("en-US");

async function loggedIn(viewport = { width: 1280, height: 800 }, locale = "en-US") {
  const context = await browser.newContext({ viewport, locale });
  const page = await context.newPage();
  await page.goto(`${base}/login`);
  await page.fill("#token", token);
  await Promise.all([page.waitForURL(`${base}/`), page.click("button[type=submit]")]);
  return { context, page };
}

async function json(page, path) {
  const r = await page.request.get(`${base}${path}`);
  assert.equal(r.status(), 200, `${path}: ${r.status()}`);
  return r.json();
}

// Retries `check` until it passes (the page and the API are both live).
async function eventually(check, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await check();
    } catch (e) {
      if (Date.now() > end) throw e;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

test("a wrong token reaches no page and no asset, only the login form", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${base}/login`);
  await page.fill("#token", "not-the-token");
  await page.click("button[type=submit]");
  await page.waitForSelector(".error");
  assert.match(await page.textContent(".error"), /not valid here/);
  await page.screenshot({ path: `${shots}/login.png` });
  const cookies = await context.cookies();
  assert.equal(cookies.length, 0, "no cookie for a wrong token");
  for (const path of ["/", "/stores", "/gateways", "/campaigns", "/customers", "/stores/x", "/gateways/x", "/campaigns/x"]) {
    await page.goto(`${base}${path}`);
    assert.equal(new URL(page.url()).pathname, "/login", `${path} must lead to the login form`);
  }
  for (const path of ["/assets/app.js", "/assets/app.css", "/v1/admin/overview", "/v1/admin/gateways"]) {
    const r = await context.request.get(`${base}${path}`);
    assert.equal(r.status(), 401, path);
  }
  // A wrong bearer token is refused as well.
  const r = await context.request.get(`${base}/v1/admin/overview`, { headers: { authorization: "Bearer wrong" } });
  assert.equal(r.status(), 401);
  await context.close();
});

test("the overview's counters are the API's figures, refreshed live", async () => {
  const { context, page } = await loggedIn();
  const cookie = (await context.cookies()).find((c) => c.name === "omo_session");
  assert.ok(cookie?.httpOnly, "HttpOnly session cookie");
  assert.equal(cookie.sameSite, "Strict");
  // The script has refreshed the page from the API at least once.
  await page.waitForFunction(() => Number(document.body.dataset.polled ?? 0) >= 1);
  await eventually(async () => {
    const o = await json(page, "/v1/admin/overview");
    const shown = async (field) => (await page.textContent(`[data-field="${field}"]`)).trim();
    for (const field of ["gateways.total", "gateways.online", "gateways.offline", "today.offers_delivered", "today.delivery_failures", "open_visits"]) {
      const want = String(field.split(".").reduce((v, k) => v[k], o));
      assert.equal(await shown(field), want, field);
    }
    for (const channel of ["line", "push", "webhook"]) {
      assert.equal(await shown(`today.channels.${channel}.delivered`), String(o.today.channels[channel].delivered), channel);
    }
  });
  const o = await json(page, "/v1/admin/overview");
  assert.ok(o.gateways.total > 0 && o.today.offers_delivered > 0, JSON.stringify(o));
  await page.screenshot({ path: `${shots}/overview.png`, fullPage: true });
  // And on a phone.
  const phone = await loggedIn({ width: 390, height: 844 });
  await phone.page.waitForFunction(() => Number(document.body.dataset.polled ?? 0) >= 1);
  const overflow = await phone.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `the overview fits a phone's width (overflows by ${overflow} px)`);
  await phone.page.screenshot({ path: `${shots}/overview-phone.png`, fullPage: true });
  await phone.context.close();
  await context.close();
});

test("a campaign shows its funnel, the lift's interval and the sample sizes", async () => {
  const { context, page } = await loggedIn();
  await page.goto(`${base}/campaigns`);
  await page.screenshot({ path: `${shots}/campaigns.png`, fullPage: true });
  const { items } = await json(page, "/v1/admin/campaigns");
  const campaign = items.find((c) => c.campaign.holdout_percent > 0) ?? items[0];
  assert.ok(campaign, "the demo has campaigns");
  const id = campaign.campaign.id;
  await Promise.all([page.waitForURL(`${base}/campaigns/${id}`), page.click(`a[href="/campaigns/${id}"]`)]);
  const report = await json(page, `/v1/admin/reports/campaigns/${id}`);
  // Sample sizes: each group's customers as the report counts them.
  for (const g of report.groups) {
    assert.equal((await page.textContent(`tr[data-group="${g.group}"] .customers`)).trim(), String(g.customers), g.group);
  }
  assert.ok(report.lift.length > 0, "a campaign with a holdout has a lift");
  for (const l of report.lift) {
    const g = page.locator(`svg.lift g.interval[data-variant="${l.variant}"]`);
    assert.equal(await g.count(), 1, `an interval drawn for ${l.variant}`);
    const low = Number(await g.getAttribute("data-low"));
    const high = Number(await g.getAttribute("data-high"));
    const difference = Number(await g.getAttribute("data-difference"));
    assert.ok(Math.abs(low - l.difference_ci95.low) < 1e-3 && Math.abs(high - l.difference_ci95.high) < 1e-3, `${low}..${high}`);
    assert.ok(low <= difference && difference <= high);
    // Drawn as an interval: a line from low to high, wider than the dot.
    const line = await g.locator("line").boundingBox();
    assert.ok(line && line.width > 12, `the interval is drawn as a line (${line?.width} px)`);
    const treated = report.groups.find((x) => x.group === l.variant).customers;
    const holdout = report.groups.find((x) => x.group === "holdout").customers;
    assert.match(await g.textContent(), new RegExp(`${count(treated)} sent, ${count(holdout)} held out`));
  }
  await page.screenshot({ path: `${shots}/campaign.png`, fullPage: true });
  await context.close();
});

test("a config pushed from a gateway's page is acknowledged on the page", async () => {
  const { context, page } = await loggedIn();
  await page.goto(`${base}/gateways`);
  await page.screenshot({ path: `${shots}/gateways.png`, fullPage: true });
  const { items } = await json(page, "/v1/admin/gateways");
  const gw = items.find((g) => g.runtime?.online) ?? items[0];
  assert.ok(gw?.runtime?.online, "an online gateway");
  const version = Math.max(gw.desired_config_version ?? 0, gw.runtime.last_status?.config_version ?? 0) + 1;
  await page.goto(`${base}/gateways/${gw.id}`);
  await page.fill("textarea", JSON.stringify({ version, status: { heartbeat_s: 30 } }, null, 2));
  await page.click("form.api button[type=submit]");
  await page.waitForFunction((v) => document.querySelector("#ack")?.textContent.includes(`Version ${v} applied`), version, { timeout: 60000 });
  assert.match(await page.textContent("form.api output"), /The gateway answered: Version \d+ applied/);
  const after = await json(page, `/v1/admin/gateways/${gw.id}`);
  assert.equal(after.last_config_ack.version, version);
  assert.equal(after.last_config_ack.ok, true);
  await page.screenshot({ path: `${shots}/gateway.png`, fullPage: true });
  await context.close();
});

test("a store's page draws its zones and a week of visits per hour", async () => {
  const { context, page } = await loggedIn();
  await page.goto(`${base}/stores`);
  await page.screenshot({ path: `${shots}/stores.png`, fullPage: true });
  const href = await page.getAttribute("table.stores a", "href");
  await page.goto(`${base}${href}`);
  const activity = await json(page, `/v1/admin${href}/activity`);
  assert.equal(activity.visits_per_hour.length, 168);
  const total = activity.visits_per_hour.reduce((n, h) => n + h.visits, 0);
  assert.ok(total > 0, "the day's visits are in the week");
  assert.match(await page.textContent("figcaption"), new RegExp(`^${count(total)} store visits`));
  assert.equal(await page.locator("svg.bars rect").count(), 168);
  for (const z of activity.zones) {
    assert.equal((await page.textContent(`tr[data-zone="${z.id}"] .now`)).trim(), String(z.visitors_now), z.id);
  }
  await page.screenshot({ path: `${shots}/store.png`, fullPage: true });
  await context.close();
});

test("customers are found by id, member number or a coupon code, by operators only", async () => {
  const { context, page } = await loggedIn();
  const { items } = await json(page, "/v1/admin/customers?limit=1");
  const id = items[0].id;
  await page.goto(`${base}/customers`);
  await page.fill("#id", id);
  await Promise.all([page.waitForURL(/\/customers\?id=/), page.click("form.lookup button")]);
  assert.match(await page.textContent("main"), /Consent/);
  assert.ok(await page.locator("table.devices").count());
  await page.screenshot({ path: `${shots}/customers.png`, fullPage: true });
  // A coupon code from one of the day's offers finds the customer it was sent to.
  const { items: rows } = await json(page, "/v1/admin/deliveries?limit=50");
  const sent = rows.find((d) => d.coupon && d.customer);
  assert.ok(sent, "the day sent offers with coupons");
  await page.goto(`${base}/customers?id=${encodeURIComponent(sent.coupon)}`);
  assert.match(await page.textContent("details.dev"), new RegExp(sent.customer));
  const customer = await json(page, `/v1/admin/customers/${sent.customer}`);
  if (customer.member_id) {
    await page.goto(`${base}/customers?id=${encodeURIComponent(customer.member_id)}`);
    assert.match(await page.textContent("details.dev"), new RegExp(sent.customer));
  }
  await page.goto(`${base}/customers?id=no-such-code`);
  assert.match(await page.textContent("[role=alert]"), /No customer has/);
  await context.close();
});

// Words a Japanese page may show in Latin letters: names and ids from the site and its
// campaigns (data, not words), and the few terms Japanese retail staff use as they are.
const LATIN_TERMS = new Set(["omo", "LINE", "Wi", "Fi", "QR", "CSV", "ID", "OS", "Webhook", "pt", "English"]);

async function siteNames(page) {
  const names = new Set();
  const add = (v) => { for (const w of String(v ?? "").split(/[^A-Za-z]+/)) if (w) names.add(w); };
  for (const s of (await json(page, "/v1/admin/stores")).items) { add(s.id); add(s.name); }
  for (const g of (await json(page, "/v1/admin/gateways")).items) { add(g.id); add(g.store); }
  for (const z of (await json(page, "/v1/admin/zones")).items ?? []) { add(z.id); add(z.name); add(z.properties?.name); }
  for (const c of (await json(page, "/v1/admin/campaigns")).items) {
    add(c.campaign.id); add(c.campaign.name);
    for (const v of c.campaign.variants) add(v.id);
  }
  return names;
}

// The Latin words of a page's text outside elements marked translate="no" (and outside the
// developers' fold), that are neither site data nor an allowed term.
async function untranslated(page, allowed) {
  const words = await page.evaluate(() => {
    const out = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const el = n.parentElement;
      if (!el || el.closest('[translate="no"], script, style, details.dev, .langs')) continue;
      out.push(...(n.textContent.match(/[A-Za-z]+/g) ?? []));
    }
    for (const el of document.querySelectorAll("[aria-label], [placeholder], [title]")) {
      for (const a of ["aria-label", "placeholder", "title"]) out.push(...((el.getAttribute(a) ?? "").match(/[A-Za-z]+/g) ?? []));
    }
    return out;
  });
  return [...new Set(words.filter((w) => !LATIN_TERMS.has(w) && !allowed.has(w)))];
}

test("every page in Japanese and English, on a phone and a desktop: fits, no error, accessible", async () => {
  const { context, page } = await loggedIn();
  const store = (await json(page, "/v1/admin/stores")).items[0].id;
  const gateway = (await json(page, "/v1/admin/gateways")).items[0].id;
  const campaign = (await json(page, "/v1/admin/campaigns")).items[0].campaign.id;
  const customer = (await json(page, "/v1/admin/customers?limit=1")).items[0].id;
  const allowed = await siteNames(page);
  allowed.add(customer.replace(/[^A-Za-z]+/g, " ").trim());
  for (const w of customer.split(/[^A-Za-z]+/)) if (w) allowed.add(w);
  await context.close();
  const pages = {
    overview: "/",
    stores: "/stores",
    store: `/stores/${store}`,
    gateways: "/gateways",
    gateway: `/gateways/${gateway}`,
    campaigns: "/campaigns",
    campaign: `/campaigns/${campaign}`,
    customers: `/customers?id=${encodeURIComponent(customer)}`,
    "not-found": "/campaigns/no-such-campaign",
  };
  const problems = [];
  for (const [locale, lang] of [["ja-JP", "ja"], ["en-US", "en"]]) {
    for (const [device, viewport] of [["phone", { width: 390, height: 844 }], ["desktop", { width: 1280, height: 800 }]]) {
      const { context, page } = await loggedIn(viewport, locale);
      const errors = [];
      // The not-found page's own 404 is the one error Chromium logs there.
      page.on("console", (m) => { if (m.type() === "error" && !(m.text().includes("404") && page.url().includes("no-such-campaign"))) errors.push(`console: ${m.text()}`); });
      page.on("pageerror", (e) => errors.push(`script: ${e.message}`));
      // A live refresh still in flight when the test moves to the next page is aborted by
      // the browser: not a failure of the page.
      page.on("requestfailed", (r) => {
        if (r.failure()?.errorText !== "net::ERR_ABORTED") errors.push(`request failed: ${r.url()} (${r.failure()?.errorText})`);
      });
      page.on("response", (r) => { if (r.status() >= 400 && !r.url().includes("no-such-campaign")) errors.push(`${r.status()}: ${r.url()}`); });
      for (const [name, path] of Object.entries(pages)) {
        errors.length = 0;
        await page.goto(`${base}${path}`);
        await page.waitForLoadState("networkidle");
        const where = `${name} (${lang}, ${device})`;
        assert.equal(await page.getAttribute("html", "lang"), lang, where);
        const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
        if (overflow > 0) problems.push(`${where}: ${overflow} px wider than the screen`);
        const text = await page.textContent("body");
        if (text.includes("⟦")) problems.push(`${where}: a word missing from the catalog`);
        if (lang === "ja") {
          const latin = await untranslated(page, allowed);
          if (latin.length) problems.push(`${where}: untranslated ${JSON.stringify(latin)}`);
        }
        // Chart text is 11 px or more on the screen.
        const small = await page.evaluate(() => [...document.querySelectorAll("svg text")]
          .map((t) => t.getBoundingClientRect().height).filter((h) => h > 0 && h < 11).length);
        if (small) problems.push(`${where}: ${small} chart labels under 11 px`);
        await page.addScriptTag({ path: axePath });
        const axe = await page.evaluate(async () => (await window.axe.run(document, { resultTypes: ["violations"] })).violations
          .filter((v) => v.impact === "serious" || v.impact === "critical")
          .map((v) => `${v.id}: ${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(", ")}`));
        for (const v of axe) problems.push(`${where}: axe ${v}`);
        for (const e of errors) problems.push(`${where}: ${e}`);
        await page.screenshot({ path: `${shots}/${name}-${lang}-${device}.png`, fullPage: true });
      }
      await context.close();
    }
  }
  assert.deepEqual(problems, [], problems.join("\n"));
});
