// omo store map: the store's geofences drawn with Leaflet (vendored) on the basemap set in
// cloud.toml, or to scale on a blank ground; each labelled with its visitors now. An operator
// draws a new area by clicking its corners and saves it as a zone (PUT /v1/admin/zones/{id},
// a GeoJSON Feature); the registry's refusal shows on the shape.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
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
  const zones = L.geoJSON(d.zones, {
    style: () => ({ color: "#2457c5", weight: 2, fillOpacity: 0.12 }),
    pointToLayer: (f, at) => L.circle(at, { radius: f.properties.radius_m ?? 10 }),
    onEachFeature: (f, layer) => {
      // An element, not a string: Leaflet puts strings in as HTML, and names are the site's data.
      const label = document.createElement("span");
      label.textContent = say("zone_now", f.properties.name || f.id, count(f.properties.now ?? 0));
      layer.bindTooltip(label, { permanent: true, direction: "center", className: "zone-label" });
    },
  }).addTo(map);
  const bounds = zones.getBounds();
  if (bounds.isValid()) map.fitBounds(bounds.pad(0.2));
  if (d.center) L.circleMarker(d.center, { radius: 4, color: "#1d2330", fillOpacity: 1 }).addTo(map);

  const form = document.getElementById("draw");
  if (!form) return;
  const $ = (id) => document.getElementById(id);
  let corners = [];
  let drawing = false;
  const sketch = L.layerGroup().addTo(map);

  function redraw() {
    sketch.clearLayers();
    if (corners.length) {
      const closed = corners.length >= 3 ? [...corners, corners[0]] : corners;
      L.polyline(closed, { color: "#b35c00", weight: 2, dashArray: "4 4" }).addTo(sketch);
      for (const c of corners) L.circleMarker(c, { radius: 4, color: "#b35c00" }).addTo(sketch);
    }
    $("draw-undo").hidden = !drawing || corners.length === 0;
    $("draw-save").hidden = corners.length < 3;
    $("draw-status").textContent = drawing ? say("draw_corners", corners.length) : "";
  }

  function stop() {
    drawing = false;
    corners = [];
    box.classList.remove("drawing");
    $("draw-start").hidden = false;
    $("draw-cancel").hidden = true;
    redraw();
  }

  $("draw-start").addEventListener("click", () => {
    drawing = true;
    corners = [];
    box.classList.add("drawing");
    $("draw-start").hidden = true;
    $("draw-cancel").hidden = false;
    redraw();
  });
  $("draw-cancel").addEventListener("click", stop);
  $("draw-undo").addEventListener("click", () => { corners.pop(); redraw(); });
  map.on("click", (ev) => {
    if (!drawing) return;
    corners.push([ev.latlng.lat, ev.latlng.lng]);
    redraw();
  });

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const id = $("zone-id").value.trim();
    const out = $("draw-status");
    out.classList.remove("error");
    if (!id) { out.textContent = say("draw_id_needed"); out.classList.add("error"); return; }
    const ring = [...corners, corners[0]].map(([lat, lng]) => [Number(lng.toFixed(7)), Number(lat.toFixed(7))]);
    const feature = {
      type: "Feature",
      properties: { store: d.store, name: $("zone-name").value.trim() },
      geometry: { type: "Polygon", coordinates: [ring] },
    };
    out.textContent = say("sending");
    try {
      await api("PUT", `/v1/admin/zones/${encodeURIComponent(id)}`, JSON.stringify(feature));
      out.textContent = say("draw_saved");
      location.reload();
    } catch (e) {
      out.textContent = say("failed", e.message);
      out.classList.add("error");
      // The refusal, on the shape itself.
      const why = document.createElement("p");
      why.textContent = e.message;
      L.popup().setLatLng(corners[0]).setContent(why).openOn(map);
    }
  });
  redraw();
});
