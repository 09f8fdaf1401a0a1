// omo store map: the store's geofences, beacons and gateways drawn with Leaflet (vendored) on
// the basemap set in cloud.toml, or to scale on a blank ground; each area labelled with its
// visitors now. An operator draws an area by its corners or a circle by its centre and radius,
// changes an area by clicking it (its corners dragged, or added), and saves it as a zone
// (PUT /v1/admin/zones/{id}, a GeoJSON Feature); the registry's refusal shows on the shape.
// Beacons and gateways are placed by a click and moved by dragging
// (PUT /v1/admin/{beacons|gateways}/{id}/location). The Wi-Fi areas' form is here too.
"use strict";

const AREA = { color: "#2457c5", weight: 2, fillOpacity: 0.12 };
const SKETCH = { color: "#b35c00", weight: 2, dashArray: "4 4" };

// A label element (not HTML: names are the site's data); `data`: only a name or an id, not
// words to translate.
function labelOf(text, data = false) {
  const el = document.createElement("span");
  el.textContent = text;
  if (data) el.translate = false;
  return el;
}

// A draggable handle or a device's marker, drawn by CSS (no image).
function pin(className, title, draggable) {
  return { icon: L.divIcon({ className, iconSize: [14, 14] }), title, alt: title, draggable, keyboard: true };
}

function storeMap() {
  const box = document.getElementById("map");
  if (!box || !window.L) return;
  const d = JSON.parse(document.getElementById("map-data").textContent);
  const map = L.map(box, { attributionControl: Boolean(d.tiles), zoomControl: false, zoomSnap: 0.25 });
  L.control.zoom({ zoomInTitle: say("zoom_in"), zoomOutTitle: say("zoom_out") }).addTo(map);
  // A view before any layer: circles and labels need one to be placed.
  map.setView(d.center ?? [0, 0], d.center ? 18 : 2);
  if (d.tiles) {
    L.tileLayer(d.tiles, { maxZoom: 20, attribution: d.attribution ?? "" }).addTo(map);
  } else {
    box.classList.add("blank");
  }
  const form = document.getElementById("draw");
  // A device waiting for its click on the map, if any: drawing and placing share the clicks.
  const shared = { placing: null };
  const editor = form ? areaEditor(map, box, d, form, shared) : null;
  const zones = L.geoJSON(d.zones, {
    style: () => AREA,
    pointToLayer: (f, at) => L.circle(at, { radius: f.properties.radius_m ?? 10 }),
    onEachFeature: (f, layer) => {
      layer.bindTooltip(labelOf(say("zone_now", f.properties.name || f.id, count(f.properties.now ?? 0))), {
        permanent: true, direction: "center", className: "zone-label",
      });
      // Clicked while nothing is being drawn or placed: change it; else the click is the map's.
      if (editor) {
        layer.on("click", (ev) => {
          if (editor.active()) return;
          L.DomEvent.stopPropagation(ev);
          editor.edit(f);
        });
      }
    },
  }).addTo(map);
  // Smaller areas on top of larger ones, so each can be clicked.
  const size = (l) => {
    if (l.getRadius) return Math.PI * l.getRadius() ** 2;
    const b = l.getBounds();
    return map.distance(b.getSouthWest(), b.getSouthEast()) * map.distance(b.getSouthWest(), b.getNorthWest());
  };
  zones.getLayers().sort((a, b) => size(b) - size(a)).forEach((l) => l.bringToFront());
  const bounds = zones.getBounds();
  for (const dev of d.devices ?? []) if (dev.at) bounds.extend(dev.at);
  if (bounds.isValid()) map.fitBounds(bounds.pad(0.2), { maxZoom: 19 });
  // Beacons and gateways above the areas' labels; labels moved apart where they would overlap.
  map.getPane("markerPane").style.zIndex = 660;
  const spread = () => declutter(zones.getLayers());
  spread();
  map.on("zoomend", spread);
  // How far each placed gateway's zone reaches (dashed; not clickable).
  for (const r of d.reach ?? []) {
    L.circle(r.at, { radius: r.radius_m, color: "#1d2330", weight: 1, dashArray: "3 5", fillOpacity: 0.04, interactive: false }).addTo(map);
  }
  // The store's own point: drawn, never in the way of a click on an area.
  if (d.center) L.circleMarker(d.center, { radius: 4, color: "#1d2330", fillOpacity: 1, interactive: false }).addTo(map);
  devices(map, box, d, Boolean(form), editor, shared);
}

// Moves the areas' labels down, one below the other, where they would cover each other.
function declutter(layers) {
  const labels = layers.map((l) => l.getTooltip()?.getElement()).filter(Boolean);
  for (const el of labels) el.style.marginTop = "";
  const taken = [];
  const overlaps = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  for (const el of labels) {
    let r = el.getBoundingClientRect();
    let shift = 0;
    for (let i = 0; i < 20 && taken.some((t) => overlaps(t, r)); i++) {
      shift += r.height + 2;
      el.style.marginTop = `${shift}px`;
      r = el.getBoundingClientRect();
    }
    taken.push(r);
  }
}

// Beacons and gateways: drawn where placed; an operator places one (a click on the map after
// its button) or drags it elsewhere.
function devices(map, box, d, operator, editor, shared) {
  const save = async (dev, latlng) => {
    const kind = dev.kind === "beacon" ? "beacons" : "gateways";
    const out = document.getElementById("draw-status");
    try {
      await api("PUT", `/v1/admin/${kind}/${encodeURIComponent(dev.id)}/location`,
        JSON.stringify({ lat: Number(latlng.lat.toFixed(7)), lon: Number(latlng.lng.toFixed(7)) }));
      if (out) { out.classList.remove("error"); out.textContent = say("placed", dev.name || dev.id); }
      const where = document.querySelector(`#devices li[data-kind="${dev.kind}"][data-id="${CSS.escape(dev.id)}"] .placed`);
      if (where) where.textContent = say("on_map");
      return true;
    } catch (e) {
      if (out) { out.classList.add("error"); out.textContent = say("failed", e.message); }
      return false;
    }
  };
  const markers = new Map();
  const draw = (dev) => {
    markers.get(dev.id)?.remove();
    const m = L.marker(dev.at, pin(`device ${dev.kind}`, dev.name || dev.id, operator)).addTo(map);
    m.getElement()?.setAttribute("translate", "no");
    m.bindTooltip(labelOf(dev.name || dev.id, true), { direction: "top", offset: [0, -8], className: "zone-label" });
    if (operator) {
      m.on("dragend", async () => {
        const to = m.getLatLng();
        if (await save(dev, to)) dev.at = [to.lat, to.lng]; else m.setLatLng(dev.at);
      });
    }
    markers.set(dev.id, m);
  };
  for (const dev of d.devices ?? []) if (dev.at) draw(dev);
  if (!operator) return;
  for (const b of document.querySelectorAll("#devices button.place")) {
    b.addEventListener("click", () => {
      const dev = (d.devices ?? []).find((x) => x.kind === b.dataset.kind && x.id === b.dataset.id);
      if (!dev) return;
      editor?.stop();
      shared.placing = dev;
      box.classList.add("drawing");
      const out = document.getElementById("draw-status");
      out.classList.remove("error");
      out.textContent = say("place_click", dev.name || dev.id);
      box.scrollIntoView({ block: "center" });
    });
  }
  map.on("click", async (ev) => {
    const dev = shared.placing;
    if (!dev) return;
    shared.placing = null;
    box.classList.remove("drawing");
    if (await save(dev, ev.latlng)) {
      dev.at = [ev.latlng.lat, ev.latlng.lng];
      draw(dev);
    }
  });
}

// Drawing and changing areas: corners (an area) or a centre and a radius (a circle).
function areaEditor(map, box, d, form, shared) {
  const $ = (id) => document.getElementById(id);
  let mode = null; // "area", "circle" or null
  let corners = [];
  let centre = null;
  let editing = null; // the zone id being changed
  const sketch = L.layerGroup().addTo(map);
  const radius = () => Math.max(1, Number($("zone-radius").value) || 0);

  function redraw() {
    sketch.clearLayers();
    if (mode === "area" && corners.length) {
      const line = L.polyline(corners.length >= 3 ? [...corners, corners[0]] : corners, SKETCH).addTo(sketch);
      corners.forEach((c, i) => {
        const h = L.marker(c, pin("corner", `${i + 1}`, true)).addTo(sketch);
        h.on("drag", () => {
          const at = h.getLatLng();
          corners[i] = [at.lat, at.lng];
          line.setLatLngs(corners.length >= 3 ? [...corners, corners[0]] : corners);
        });
      });
    }
    if (mode === "circle" && centre) {
      L.circle(centre, { ...SKETCH, radius: radius() }).addTo(sketch);
      L.circleMarker(centre, { radius: 4, color: SKETCH.color }).addTo(sketch);
    }
    const ready = (mode === "area" && corners.length >= 3) || (mode === "circle" && centre);
    $("draw-undo").hidden = mode !== "area" || corners.length === 0;
    $("draw-save").hidden = !ready;
    $("radius-field").hidden = mode !== "circle";
    $("zone-id").readOnly = editing !== null;
    const out = $("draw-status");
    if (!out.classList.contains("error")) {
      out.textContent = mode === "area"
        ? (editing ? say("draw_editing", editing) : say("draw_corners", corners.length))
        : mode === "circle" ? (centre ? say("draw_circle", count(radius())) : say("draw_centre")) : "";
    }
  }

  function start(m) {
    shared.placing = null;
    mode = m;
    corners = [];
    centre = null;
    editing = null;
    $("zone-id").value = "";
    $("zone-name").value = "";
    box.classList.add("drawing");
    $("draw-start").hidden = true;
    $("draw-circle").hidden = true;
    $("draw-cancel").hidden = false;
    $("draw-status").classList.remove("error");
    redraw();
  }

  function stop() {
    shared.placing = null;
    mode = null;
    editing = null;
    corners = [];
    centre = null;
    box.classList.remove("drawing");
    $("draw-start").hidden = false;
    $("draw-circle").hidden = false;
    $("draw-cancel").hidden = true;
    redraw();
  }

  // An area already drawn, loaded to be changed (one ring without holes, or a circle).
  function edit(f) {
    const out = $("draw-status");
    const g = f.geometry ?? {};
    const name = f.properties.name || f.id;
    if (g.type === "Polygon" && g.coordinates.length === 1) {
      start("area");
      corners = g.coordinates[0].slice(0, -1).map(([lon, lat]) => [lat, lon]);
    } else if (g.type === "Point") {
      start("circle");
      centre = [g.coordinates[1], g.coordinates[0]];
      $("zone-radius").value = String(Math.round(f.properties.radius_m ?? 30));
    } else {
      out.textContent = say("draw_parts", name);
      return;
    }
    editing = String(f.id);
    $("zone-id").value = editing;
    $("zone-name").value = f.properties.name ?? "";
    redraw();
  }

  $("draw-start").addEventListener("click", () => start("area"));
  $("draw-circle").addEventListener("click", () => start("circle"));
  $("draw-cancel").addEventListener("click", stop);
  $("draw-undo").addEventListener("click", () => { corners.pop(); redraw(); });
  $("zone-radius").addEventListener("input", redraw);
  map.on("click", (ev) => {
    // A device being placed takes the click (the devices' handler).
    if (!mode || shared.placing) return;
    $("draw-status").classList.remove("error");
    if (mode === "area") corners.push([ev.latlng.lat, ev.latlng.lng]);
    else centre = [ev.latlng.lat, ev.latlng.lng];
    redraw();
  });

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const id = $("zone-id").value.trim();
    const out = $("draw-status");
    out.classList.remove("error");
    if (!id) { out.textContent = say("draw_id_needed"); out.classList.add("error"); return; }
    const lonLat = ([lat, lng]) => [Number(lng.toFixed(7)), Number(lat.toFixed(7))];
    const properties = { store: d.store, name: $("zone-name").value.trim() };
    const geometry = mode === "circle"
      ? { type: "Point", coordinates: lonLat(centre) }
      : { type: "Polygon", coordinates: [[...corners, corners[0]].map(lonLat)] };
    if (mode === "circle") properties.radius_m = radius();
    out.textContent = say("sending");
    try {
      // A new area never replaces another zone with its id.
      const createOnly = editing === id ? {} : { "If-None-Match": "*" };
      await api("PUT", `/v1/admin/zones/${encodeURIComponent(id)}`, JSON.stringify({ type: "Feature", properties, geometry }), createOnly);
      out.textContent = say("draw_saved");
      location.reload();
    } catch (e) {
      out.textContent = e.status === 409 ? say("zone_exists") : say("failed", e.message);
      out.classList.add("error");
      // The refusal, on the shape itself.
      const why = document.createElement("p");
      why.textContent = e.message;
      L.popup().setLatLng(mode === "circle" ? centre : corners[0]).setContent(why).openOn(map);
    }
  });
  redraw();
  return { edit, stop, active: () => mode !== null || shared.placing !== null };
}

// The Wi-Fi areas: the form saves one (PUT /v1/admin/zones/{id}, kind wifi); each refusal
// beside its field; "Change" loads an area into the form.
function wifiForm() {
  const form = document.getElementById("wifi");
  if (!form) return;
  const $ = (id) => document.getElementById(id);
  const out = $("wifi-status");
  const clear = () => {
    for (const el of form.querySelectorAll(".field-error")) el.remove();
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    out.classList.remove("error");
  };
  // The area loaded by "Change": saved over under its id, its other settings kept.
  let loaded = null;
  for (const b of document.querySelectorAll("button.wifi-edit")) {
    b.addEventListener("click", () => {
      const z = JSON.parse(b.dataset.record);
      loaded = z;
      clear();
      $("wifi-id").value = z.id;
      $("wifi-name").value = z.name ?? "";
      $("wifi-min").value = String(z.min_matches ?? 1);
      $("wifi-bssids").value = (z.bssids ?? []).join("\n");
      $("wifi-name").focus();
    });
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clear();
    const id = $("wifi-id").value.trim();
    const bssids = $("wifi-bssids").value.split(/[\s,]+/).filter(Boolean);
    if (!id || !bssids.length) { out.classList.add("error"); out.textContent = say("wifi_needed"); return; }
    const changing = loaded?.id === id;
    const zone = {
      ...(changing ? loaded : {}),
      id, kind: "wifi", store: form.dataset.store, name: $("wifi-name").value.trim(), bssids, min_matches: Number($("wifi-min").value),
    };
    out.textContent = say("sending");
    try {
      await api("PUT", `/v1/admin/zones/${encodeURIComponent(id)}`, JSON.stringify(zone), changing ? {} : { "If-None-Match": "*" });
      out.textContent = say("draw_saved");
      location.reload();
    } catch (e) {
      out.classList.add("error");
      out.textContent = e.status === 409 ? say("zone_exists") : say("failed", e.message);
      // `wifi_zones[3].bssids[1]` or `min_matches`: beside the input of that field.
      for (const { field, message } of e.fields ?? []) {
        const input = [...form.querySelectorAll("[data-field]")].find((el) => new RegExp(`(^|\\.)${el.dataset.field}(\\[|$)`).test(field));
        if (!input) continue;
        input.setAttribute("aria-invalid", "true");
        const p = document.createElement("p");
        p.className = "field-error bad";
        p.textContent = `${say("field_error")} `;
        const detail = document.createElement("span");
        detail.translate = false;
        detail.textContent = message;
        p.append(detail);
        input.after(p);
      }
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  storeMap();
  wifiForm();
});
