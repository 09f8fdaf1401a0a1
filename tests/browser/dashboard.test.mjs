// The omo dashboard in headless Chromium (Debian's `chromium`, driven by playwright-core),
// against a real omo-cloud left running by `omo-sim demo --keep-running` after a short store
// day. tests/tests/browser.rs starts the demo and runs this file with:
//   OMO_URL          the cloud's HTTP base
//   OMO_ADMIN_TOKEN  an operator token
//   OMO_SCREENSHOTS  where to write one PNG per page
//   OMO_CHROMIUM     the browser (default /usr/bin/chromium)
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const axePath = createRequire(import.meta.url).resolve("axe-core/axe.min.js");
// axe-core run in the page by the browser's debugger (a script tag would break the pages'
// content security policy, which allows no inline script).
const axeSource = `${readFileSync(axePath, "utf8")}\n;void 0;`;

const base = process.env.OMO_URL;
const token = process.env.OMO_ADMIN_TOKEN;
const marketerToken = process.env.OMO_MARKETER_TOKEN;
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

async function loggedIn(viewport = { width: 1280, height: 800 }, locale = "en-US", key = token) {
  const context = await browser.newContext({ viewport, locale });
  const page = await context.newPage();
  await page.goto(`${base}/login`);
  await page.fill("#token", key);
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

test("an operator draws, changes and circles areas, places devices and names Wi-Fi access points on a store's map", async () => {
  const { context, page } = await loggedIn();
  const store = (await json(page, "/v1/admin/stores")).items[0];
  await page.goto(`${base}/stores/${store.id}`);
  await page.waitForSelector("#map.leaflet-container .leaflet-interactive");
  await page.click("#draw-start");
  const box = await page.locator("#map").boundingBox();
  // Clockwise on the screen: the cloud serves it counter-clockwise all the same.
  for (const [fx, fy] of [[0.35, 0.35], [0.65, 0.35], [0.65, 0.65], [0.35, 0.65]]) {
    await page.mouse.click(box.x + box.width * fx, box.y + box.height * fy);
  }
  assert.match(await page.textContent("#draw-status"), /4 corners/);
  await page.fill("#zone-id", "drawn-corner");
  await page.fill("#zone-name", "Drawn corner");
  await Promise.all([page.waitForEvent("load"), page.click("#draw-finish")]);
  const r = await page.request.get(`${base}/v1/admin/geofences.geojson`);
  assert.equal(r.headers()["content-type"], "application/geo+json");
  const drawn = (await r.json()).features.find((f) => f.id === "drawn-corner");
  assert.ok(drawn, "the drawn area is a geofence");
  assert.equal(drawn.geometry.type, "Polygon");
  const ring = drawn.geometry.coordinates[0];
  assert.equal(ring.length, 5);
  assert.deepEqual(ring[0], ring[4]);
  const area = ring.slice(1).reduce((a, p, i) => a + ring[i][0] * p[1] - p[0] * ring[i][1], 0);
  assert.ok(area > 0, "the exterior ring runs counter-clockwise");
  assert.equal(drawn.properties.store, store.id);
  await page.waitForSelector("#map.leaflet-container .leaflet-interactive");
  assert.match(await page.textContent("#map"), /Drawn corner · 0 now/);
  // A shopper's phone inside it (a GPS fix from the app): a visit of that area.
  const phone = await (await page.request.post(`${base}/v1/app/installs`, {
    data: { platform: "android", consent: { location: true, text_version: "1" } },
  })).json();
  const inside = ring.slice(0, 4).reduce(([x, y], p) => [x + p[0] / 4, y + p[1] / 4], [0, 0]);
  const clockNow = (await json(page, "/v1/admin/overview")).at;
  // Two fixes 40 s apart (clock time): inside long enough to be a visit, not a walk-by.
  for (const ago of [40000, 0]) {
    const fix = await page.request.post(`${base}/v1/app/locations`, {
      headers: { authorization: `Bearer ${phone.token}` },
      data: { ts: new Date(Date.parse(clockNow) - ago).toISOString(), idempotency_key: `fix-${phone.install_id}-${ago}`, gps: { lon: inside[0], lat: inside[1], accuracy_m: 1 } },
    });
    assert.equal(fix.status(), 202, await fix.text());
  }
  await eventually(async () => {
    const { items } = await json(page, `/v1/admin/visits?customer=${phone.customer_id}`);
    assert.ok(items.some((v) => v.scope.kind === "zone" && v.scope.id === "drawn-corner"), JSON.stringify(items));
  }, 30000);
  // Changed: clicked, a corner dragged outwards, saved again under its id.
  const label = page.locator(".zone-label", { hasText: "Drawn corner" });
  const lb = await label.boundingBox();
  await page.mouse.click(lb.x + lb.width / 2, lb.y + lb.height / 2);
  assert.match(await page.textContent("#draw-status"), /Changing drawn-corner/);
  assert.equal(await page.inputValue("#zone-id"), "drawn-corner");
  const handle = page.locator(".corner").first();
  const hb = await handle.boundingBox();
  await page.mouse.move(hb.x + hb.width / 2, hb.y + hb.height / 2);
  await page.mouse.down();
  await page.mouse.move(hb.x - 30, hb.y - 30, { steps: 5 });
  await page.mouse.up();
  await Promise.all([page.waitForEvent("load"), page.click("#draw-finish")]);
  const changed = (await json(page, "/v1/admin/geofences.geojson")).features.find((f) => f.id === "drawn-corner");
  assert.notDeepEqual(changed.geometry.coordinates[0], ring, "a corner moved");
  assert.equal(changed.geometry.coordinates[0].length, 5);
  // A circle: its centre clicked, its radius typed.
  await page.waitForSelector("#map.leaflet-container .leaflet-interactive");
  await page.click("#draw-circle");
  await page.mouse.click(box.x + box.width * 0.8, box.y + box.height * 0.8);
  await page.fill("#zone-radius", "12");
  await page.fill("#zone-id", "drawn-circle");
  await page.fill("#zone-name", "Drawn circle");
  await Promise.all([page.waitForEvent("load"), page.click("#draw-finish")]);
  const circle = (await json(page, "/v1/admin/geofences.geojson")).features.find((f) => f.id === "drawn-circle");
  assert.equal(circle.geometry.type, "Point");
  assert.equal(circle.properties.radius_m, 12);
  // A gateway placed by a click on the map, then shown there.
  await page.waitForSelector("#map.leaflet-container .leaflet-interactive");
  const device = page.locator("#devices button.place").first();
  const kind = await device.getAttribute("data-kind");
  const deviceId = await device.getAttribute("data-id");
  await device.click();
  assert.match(await page.textContent("#draw-status"), /Click the map where/);
  await page.mouse.click(box.x + box.width * 0.5, box.y + box.height * 0.2);
  await page.waitForSelector(`.device.${kind}`);
  const placed = await json(page, `/v1/admin/${kind}s/${encodeURIComponent(deviceId)}`);
  assert.ok(placed.location && Math.abs(placed.location.lat) <= 90, JSON.stringify(placed));
  // A Wi-Fi area: a wrong access point is refused beside its field; then saved and listed.
  await page.fill("#wifi-id", "drawn-wifi");
  await page.fill("#wifi-name", "Register Wi-Fi");
  await page.fill("#wifi-bssids", "aa:bb:cc:dd:ee:ff\nnot-a-bssid");
  await page.click("#wifi-save");
  await page.waitForSelector("#wifi-bssids[aria-invalid=true]");
  assert.match(await page.textContent("#wifi .field-error"), /bssid/i);
  await page.fill("#wifi-bssids", "aa:bb:cc:dd:ee:ff\n00:11:22:33:44:55");
  await Promise.all([page.waitForEvent("load"), page.click("#wifi-save")]);
  assert.match(await page.textContent("table.wifi"), /Register Wi-Fi.*aa:bb:cc:dd:ee:ff.*00:11:22:33:44:55/s);
  await page.waitForSelector("#map.leaflet-container .leaflet-interactive");
  // A new area never replaces another zone: an id taken is refused on the shape.
  await page.click("#draw-start");
  for (const [fx, fy] of [[0.2, 0.2], [0.3, 0.2], [0.3, 0.3]]) await page.mouse.click(box.x + box.width * fx, box.y + box.height * fy);
  await page.fill("#zone-id", "drawn-wifi");
  await page.click("#draw-finish");
  await page.waitForSelector("#map .leaflet-popup-content");
  assert.match(await page.textContent("#draw-status"), /exists already/);
  assert.equal((await json(page, "/v1/admin/zones/drawn-wifi")).kind, "wifi", "the Wi-Fi area stays");
  await page.click("#draw-cancel");
  // A refusal shows on the shape: an id the registry refuses.
  await page.click("#draw-start");
  for (const [fx, fy] of [[0.2, 0.2], [0.3, 0.2], [0.3, 0.3]]) await page.mouse.click(box.x + box.width * fx, box.y + box.height * fy);
  await page.fill("#zone-id", "bad id!");
  await page.click("#draw-finish");
  await page.waitForSelector("#draw-status.error");
  assert.ok((await page.textContent("#map .leaflet-popup-content")).length > 0);
  assert.match(await page.getAttribute("#draw-status", "class"), /error/);
  await page.screenshot({ path: `${shots}/store-map.png`, fullPage: true });
  await context.close();
});

test("customers are found by id, member number or a coupon code, exported and erased, by operators only", async () => {
  const { context, page } = await loggedIn();
  const { items } = await json(page, "/v1/admin/customers?limit=1");
  const id = items[0].id;
  await page.goto(`${base}/customers`);
  await page.fill("#id", id);
  await Promise.all([page.waitForURL(/\/customers\?id=/), page.click("form.lookup button")]);
  assert.match(await page.textContent("main"), /Consent/);
  assert.match(await page.textContent("main"), /Spend to date/);
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
  // Found by the coupon code again, the customer is erased from the page: the question names
  // what goes, and the receipt says what went.
  await page.goto(`${base}/customers?id=${encodeURIComponent(sent.coupon)}`);
  const exported = await page.request.get(`${base}${await page.getAttribute("#export", "href")}`);
  assert.equal(exported.status(), 200);
  let asked = "";
  page.once("dialog", (d) => { asked = d.message(); d.accept(); });
  await page.click("#erase button");
  await page.waitForFunction(() => document.querySelector("#erase .receipt ul") || document.querySelector("#erase .receipt.error"), null, { timeout: 90000 });
  assert.ok(await page.locator("#erase .receipt ul").count(), `no receipt: ${await page.textContent("#erase .receipt")}`);
  assert.match(asked, /^Erase customer .* for good\? .* app installs, \d+ visits/);
  const receipt = await page.textContent("#erase .receipt");
  assert.match(receipt, /Erased at .* Removed:/);
  assert.match(receipt, /The customer record/);
  assert.match(receipt, /Visits: \d+/);
  assert.equal((await page.request.get(`${base}/v1/admin/customers/${sent.customer}`)).status(), 404);
  await page.screenshot({ path: `${shots}/customer-erased.png`, fullPage: true });
  await context.close();
});

// A shopper who installs the brand's app (push allowed) and checks in at `store` with its QR
// code: the visit opens at once. Returns the customer id.
async function shopperChecksIn(page, store) {
  const r = await page.request.post(`${base}/v1/app/installs`, {
    data: { platform: "android", push_token: `tok-${Date.now()}-${Math.random()}`, consent: { push: true, location: true, text_version: "1" } },
  });
  assert.equal(r.status(), 201, await r.text());
  const install = await r.json();
  const { code } = await json(page, `/v1/admin/stores/${store}/qr`);
  const c = await page.request.post(`${base}/v1/app/checkins`, {
    headers: { authorization: `Bearer ${install.token}` },
    data: { code, idempotency_key: `chk-${install.install_id}` },
  });
  assert.ok(c.status() < 300, await c.text());
  return install.customer_id;
}

test("a marketer composes, previews, test-sends, launches and pauses a campaign: it sends and then stops", async () => {
  assert.ok(marketerToken, "OMO_MARKETER_TOKEN");
  // The operator's session checks what a marketer may not read (customers, decisions).
  const operator = await loggedIn();
  const { context, page } = await loggedIn(undefined, undefined, marketerToken);
  assert.equal(await page.locator('nav a[href="/customers"]').count(), 0, "no customers for a marketer");
  assert.equal((await page.request.get(`${base}/customers`)).status(), 403);
  assert.equal((await page.request.get(`${base}/v1/admin/customers?limit=1`)).status(), 403);
  const store = (await json(page, "/v1/admin/stores")).items[0];
  await page.goto(`${base}/campaigns`);
  await Promise.all([page.waitForURL(`${base}/campaigns/new`), page.click('a[href="/campaigns/new"]')]);
  await page.fill("#c-id", "autumn-tea");
  await page.fill("#c-name", "Autumn tea");
  await page.check(`input[name=store][value="${store.id}"]`);
  await page.selectOption("#c-channel-1", "push");
  await page.selectOption("#c-channel-2", "line");
  await page.fill("#c-holdout", "0");
  const v = page.locator("#variants .variant").first();
  await v.locator(".v-text").fill("Hello {name}, a tea on us at {store}: {coupon}");
  await v.locator("summary").click();
  const flex = {
    type: "bubble",
    body: { type: "box", layout: "vertical", contents: [
      { type: "text", text: "{name}, autumn tea", weight: "bold", size: "xl" },
      { type: "separator" },
      { type: "text", text: "Coupon {coupon}" },
    ] },
    footer: { type: "box", layout: "vertical", contents: [{ type: "button", style: "primary", action: { type: "uri", label: "See the menu", uri: "https://brand.example.com/tea" } }] },
  };
  await v.locator(".v-flex").fill(JSON.stringify(flex, null, 2));
  // The preview: a LINE bubble with the text filled from the sample customer, the flex
  // message as a bubble with its texts and button, and a push notification.
  await page.waitForFunction(() => document.querySelector("#preview .line-bubble")?.textContent.includes("Hello Hanako"));
  const preview = page.locator("#preview .preview-variant").first();
  assert.match(await preview.locator(".line-bubble").textContent(), new RegExp(`Hello Hanako, a tea on us at ${store.name}: A1B2C3`));
  assert.equal(await preview.locator(".flex-bubble .flex-text").first().textContent(), "Hanako, autumn tea");
  assert.equal(await preview.locator(".flex-bubble .flex-button").textContent(), "See the menu");
  assert.match(await preview.locator(".push-card .push-title").textContent(), /Autumn tea/);
  // The reach: customers the campaign can send to now, per channel.
  await page.waitForFunction(() => document.querySelector("#reach-card")?.dataset.sendable > 0, null, { timeout: 30000 });
  const csrfToken = await page.getAttribute('meta[name="csrf"]', "content");
  const reach = await (await page.request.post(`${base}/v1/admin/campaigns/reach`, { headers: { "x-csrf-token": csrfToken }, data: { name: "x", trigger: { kind: "enter" }, places: { stores: [store.id] }, schedule: { from: "2020-01-01", to: "2099-01-01", days: ["mon"] }, caps: { per_customer: 1, period_days: 7 }, budget: 1, offer_ttl_minutes: 60, channels: ["push", "line"], variants: [{ id: "a", weight: 1, template: { text: "x" } }] } })).json();
  const sendable = reach.sent_on.push + reach.sent_on.line;
  assert.equal(await page.getAttribute("#reach-card", "data-sendable"), String(sendable));
  await page.screenshot({ path: `${shots}/composer.png`, fullPage: true });
  // A refusal shows beside its field, and nothing is saved.
  await page.fill("#c-budget", "0");
  await page.click("#save");
  await page.waitForSelector("#c-budget[aria-invalid=true]");
  assert.match(await page.locator("#c-budget").locator("xpath=..").textContent(), /Check this/);
  assert.equal((await page.request.get(`${base}/v1/admin/campaigns/autumn-tea`)).status(), 404);
  await page.fill("#c-budget", "500");
  await Promise.all([page.waitForURL(`${base}/campaigns/autumn-tea`), page.click("#save")]);
  assert.equal((await page.textContent("#state")).trim(), "Draft");
  // A test send to the marketer's own phone (an app install) through the real channel,
  // listed on the page and counted in no result.
  const phone = await page.request.post(`${base}/v1/app/installs`, {
    data: { platform: "ios", push_token: `staff-${Date.now()}`, consent: { push: true, location: false, text_version: "1" } },
  });
  assert.equal(phone.status(), 201, await phone.text());
  const staffPhone = await phone.json();
  // Not a staff test device yet: refused, saying so.
  await page.fill("#test-to", staffPhone.install_id);
  await page.click("#test-send");
  await page.waitForSelector(".test-send output.error");
  assert.match(await page.textContent(".test-send output"), /no staff test device/);
  // An operator makes it one on the customer's page.
  await operator.page.goto(`${base}/customers?id=${staffPhone.install_id}`);
  await Promise.all([operator.page.waitForEvent("load"), operator.page.click("#staff button")]);
  assert.match(await operator.page.textContent("#staff"), /A staff test device/);
  await page.fill("#test-to", staffPhone.install_id);
  await page.click("#test-send");
  await page.waitForSelector("table.tests td.good", { timeout: 30000 });
  assert.match(await page.textContent("table.tests tbody"), /Delivered/);
  const funnel = (await json(page, "/v1/admin/reports/campaigns/autumn-tea")).groups.flatMap((g) => Object.values(g.funnel ?? {}));
  assert.ok(funnel.every((n) => n === 0), JSON.stringify(funnel));
  // Launching asks first, saying about how many customers a day it would reach.
  let asked = "";
  page.once("dialog", (d) => { asked = d.message(); d.accept(); });
  await page.click("#launch");
  await page.waitForFunction(() => document.querySelector("#state")?.textContent.trim() === "Active");
  assert.match(asked, /Launch “Autumn tea”\? .* about [\d,]+ customers a day/);
  // A shopper walks in: the campaign decides and sends to them.
  const shopper = await shopperChecksIn(page, store.id);
  await eventually(async () => {
    const offers = await json(operator.page, `/v1/admin/customers/${shopper}/offers`);
    assert.ok(offers.items.some((o) => o.campaign === "autumn-tea"), JSON.stringify(offers));
  }, 60000);
  // Pausing asks first; a dismissed question changes nothing.
  page.once("dialog", (d) => d.dismiss());
  await page.click("#pause");
  await new Promise((r) => setTimeout(r, 500));
  assert.equal((await json(page, "/v1/admin/campaigns/autumn-tea")).campaign.paused, false);
  page.once("dialog", (d) => d.accept());
  await page.click("#pause");
  await page.waitForFunction(() => document.querySelector("#state")?.textContent.trim() === "Paused");
  // Another shopper walks in: decided, and not sent (paused).
  const second = await shopperChecksIn(page, store.id);
  await eventually(async () => {
    const { items } = await json(operator.page, "/v1/admin/decisions?limit=1000");
    assert.ok(items.some((d) => d.campaign === "autumn-tea" && d.reason === "paused"), "a paused decision");
  }, 60000);
  const offers = await json(operator.page, `/v1/admin/customers/${second}/offers`);
  assert.ok(!offers.items.some((o) => o.campaign === "autumn-tea"), JSON.stringify(offers));
  // The history says what each version changed.
  const history = await page.textContent("ol.history");
  assert.match(history, /Version 3/);
  assert.match(history, /Paused: no → yes/);
  await page.screenshot({ path: `${shots}/campaign-lifecycle.png`, fullPage: true });
  await context.close();
  await operator.context.close();
});

// Words a Japanese page may show in Latin letters: names and ids from the site and its
// campaigns (data, not words), and the few terms Japanese retail staff use as they are.
const LATIN_TERMS = new Set(["omo", "LINE", "Wi", "Fi", "QR", "CSV", "ID", "OS", "Webhook", "pt", "English", "A", "B", "N", "JSON", "name", "store", "coupon", "link"]);

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
      if (el.closest('[translate="no"]')) continue;
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
    composer: "/campaigns/new",
    "composer-edit": `/campaigns/${campaign}/edit`,
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
        await page.evaluate(axeSource);
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
