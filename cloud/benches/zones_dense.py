#!/usr/bin/env python3
"""The dense city mix for zone matching, and shapely as the peer that checks and times omo.

    python3 cloud/benches/zones_dense.py write DIR [--zones 100000] [--points 1000000] [--seed 42]
    target/release/omo-cloud zones match DIR/zones.geojson DIR/points.csv > DIR/omo.txt
    PY=venv/bin/python  # with shapely 2 and numpy (cloud/benches/requirements.txt)
    $PY cloud/benches/zones_dense.py shapely DIR [--check DIR/omo.txt]

`write` needs only the standard library. It writes DIR/zones.geojson (an RFC 7946
FeatureCollection) and DIR/points.csv (`lon,lat` with a header):

- zones cluster around hotspots, and malls stack a big outline with shops inside it;
- polygons of 6-24 vertices: convex, concave stars, axis-aligned L and U shapes, polygons with
  rectangular holes, multipolygons of two or three parts; and circles (a Point with
  `properties.radius_m`, great-circle distance);
- half the points fall inside or right next to a zone's box; some lie exactly on a vertex or
  on an axis-aligned edge (covered: both sides use exact predicates); the rest are spread over
  the hotspots and the region.

Coordinates have 7 decimals (about 1 cm), as GeoJSON files usually carry.

`shapely` loads both files, matches every point against every zone the way `omo-cloud zones
match` does (a point on an edge or vertex is in, a point in a hole is out; circles by the
haversine distance on a sphere of 6,371,008.8 m), prints its timings on one line, and with
`--check` compares its answer with omo's, line by line, naming the first disagreements. It
exits 1 on any disagreement.
"""

import argparse
import json
import math
import os
import random
import sys
import time

EARTH_RADIUS_M = 6_371_008.8
M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0
REGION = (139.4, 35.4, 140.0, 35.9)  # lon0, lat0, lon1, lat1: about 54 km x 55 km of Tokyo


def r7(v):
    return round(v, 7)


def local(cx, cy):
    """Functions from metres east/north of (cx, cy) to lon/lat, rounded to 7 decimals."""
    kx = M_PER_DEG * math.cos(math.radians(cy))

    def at(dx, dy):
        return [r7(cx + dx / kx), r7(cy + dy / M_PER_DEG)]

    return at


def closed(ring):
    # Rounding may make neighbours equal; drop repeats so every edge has a length.
    out = []
    for p in ring:
        if not out or out[-1] != p:
            out.append(p)
    if out[0] == out[-1]:
        out.pop()
    return out + [out[0]]


def convex(rng, at, size):
    k = rng.randint(6, 24)
    angles = sorted(rng.uniform(0, 2 * math.pi) for _ in range(k))
    return [closed([at(size * math.cos(a), size * math.sin(a)) for a in angles])]


def star(rng, at, size):
    k = rng.randint(3, 12)  # 6-24 vertices
    inner = rng.uniform(0.35, 0.7)
    ring = []
    for j in range(2 * k):
        a = j * math.pi / k
        r = size if j % 2 == 0 else size * inner
        ring.append(at(r * math.cos(a), r * math.sin(a)))
    return [closed(ring)]


def l_or_u(rng, at, size):
    w, h = size * rng.uniform(1.0, 2.0), size * rng.uniform(1.0, 2.0)
    t = min(w, h) * rng.uniform(0.25, 0.45)
    if rng.random() < 0.5:  # L
        pts = [(0, 0), (w, 0), (w, t), (t, t), (t, h), (0, h)]
    else:  # U
        pts = [(0, 0), (w, 0), (w, h), (w - t, h), (w - t, t), (t, t), (t, h), (0, h)]
    return [closed([at(x - w / 2, y - h / 2) for x, y in pts])]


def with_holes(rng, at, size):
    w, h = size * 2, size * rng.uniform(1.2, 2.0)
    outer = [at(-w / 2, -h / 2), at(w / 2, -h / 2), at(w / 2, h / 2), at(-w / 2, h / 2)]
    rings = [closed(outer)]
    # One or two rectangular holes, side by side so they never touch.
    n = rng.randint(1, 2)
    for i in range(n):
        x0 = -w / 2 + w * (i + 0.15) / n
        x1 = -w / 2 + w * (i + 0.85) / n
        y0, y1 = -h * 0.3, h * rng.uniform(0.1, 0.3)
        rings.append(closed([at(x0, y0), at(x0, y1), at(x1, y1), at(x1, y0)]))
    return rings


def shape(rng, cx, cy, size, fid):
    at = local(cx, cy)
    kind = rng.random()
    if kind < 0.2:
        return {"type": "Point", "coordinates": [r7(cx), r7(cy)]}, {"radius_m": round(size, 1)}
    if kind < 0.4:
        return {"type": "Polygon", "coordinates": convex(rng, at, size)}, {}
    if kind < 0.6:
        return {"type": "Polygon", "coordinates": star(rng, at, size)}, {}
    if kind < 0.75:
        return {"type": "Polygon", "coordinates": l_or_u(rng, at, size)}, {}
    if kind < 0.88:
        return {"type": "Polygon", "coordinates": with_holes(rng, at, size)}, {}
    parts = []
    for j in range(rng.randint(2, 3)):
        part_at = local(cx + j * 3 * size / (M_PER_DEG * math.cos(math.radians(cy))), cy)
        parts.append(convex(rng, part_at, size * 0.8))
    return {"type": "MultiPolygon", "coordinates": parts}, {}


def zones(n, rng):
    hotspots = [
        (rng.uniform(REGION[0], REGION[2]), rng.uniform(REGION[1], REGION[3]), rng.uniform(200, 2000))
        for _ in range(max(1, n // 250))
    ]
    features = []
    i = 0
    while i < n:
        hx, hy, spread = rng.choice(hotspots)
        kx = M_PER_DEG * math.cos(math.radians(hy))
        cx = hx + rng.gauss(0, spread) / kx
        cy = hy + rng.gauss(0, spread) / M_PER_DEG
        if rng.random() < 0.1:
            # A mall: its outline, and shops stacked inside and across it.
            mall = rng.uniform(120, 300)
            stack = [(cx, cy, mall)] + [
                (cx + rng.uniform(-mall, mall) / kx, cy + rng.uniform(-mall, mall) / M_PER_DEG, rng.uniform(15, 60))
                for _ in range(rng.randint(5, 20))
            ]
        else:
            stack = [(cx, cy, rng.uniform(20, 250))]
        for sx, sy, size in stack:
            if i >= n:
                break
            geometry, props = shape(rng, sx, sy, size, i)
            features.append({"type": "Feature", "id": f"z{i}", "properties": props, "geometry": geometry})
            i += 1
    return {"type": "FeatureCollection", "features": features}, hotspots


def vertices(geometry):
    c = geometry["coordinates"]
    if geometry["type"] == "Polygon":
        return [p for ring in c for p in ring]
    if geometry["type"] == "MultiPolygon":
        return [p for poly in c for ring in poly for p in ring]
    return []


def axis_edges(geometry):
    c = geometry["coordinates"]
    polys = [c] if geometry["type"] == "Polygon" else c if geometry["type"] == "MultiPolygon" else []
    out = []
    for poly in polys:
        for ring in poly:
            for a, b in zip(ring, ring[1:]):
                if a[0] == b[0] or a[1] == b[1]:
                    out.append((a, b))
    return out


def bbox(feature):
    g = feature["geometry"]
    if g["type"] == "Point":
        lon, lat = g["coordinates"]
        d = feature["properties"]["radius_m"] / M_PER_DEG
        return lon - d / math.cos(math.radians(lat)), lat - d, lon + d / math.cos(math.radians(lat)), lat + d
    vs = vertices(g)
    xs, ys = [v[0] for v in vs], [v[1] for v in vs]
    return min(xs), min(ys), max(xs), max(ys)


def points(n, rng, collection, hotspots):
    features = collection["features"]
    out = []
    for _ in range(n):
        u = rng.random()
        f = rng.choice(features)
        if u < 0.05 and f["geometry"]["type"] != "Point":
            out.append(list(rng.choice(vertices(f["geometry"]))))
            continue
        if u < 0.10:
            edges = axis_edges(f["geometry"])
            if edges:
                a, b = rng.choice(edges)
                t = rng.random()
                out.append([r7(a[0] + t * (b[0] - a[0])) if a[1] == b[1] else a[0],
                            r7(a[1] + t * (b[1] - a[1])) if a[0] == b[0] else a[1]])
                continue
        if u < 0.5:
            x0, y0, x1, y1 = bbox(f)
            mx, my = (x1 - x0) * 0.1, (y1 - y0) * 0.1
            out.append([r7(rng.uniform(x0 - mx, x1 + mx)), r7(rng.uniform(y0 - my, y1 + my))])
        elif u < 0.8:
            hx, hy, spread = rng.choice(hotspots)
            out.append([r7(hx + rng.gauss(0, 2 * spread) / (M_PER_DEG * math.cos(math.radians(hy)))),
                        r7(hy + rng.gauss(0, 2 * spread) / M_PER_DEG)])
        else:
            out.append([r7(rng.uniform(REGION[0], REGION[2])), r7(rng.uniform(REGION[1], REGION[3]))])
    return out


def write(args):
    rng = random.Random(args.seed)
    os.makedirs(args.dir, exist_ok=True)
    collection, hotspots = zones(args.zones, rng)
    with open(os.path.join(args.dir, "zones.geojson"), "w") as f:
        json.dump(collection, f, separators=(",", ":"))
    pts = points(args.points, rng, collection, hotspots)
    with open(os.path.join(args.dir, "points.csv"), "w") as f:
        f.write("lon,lat\n")
        f.writelines(f"{x!r},{y!r}\n" for x, y in pts)
    print(f"{args.zones} zones and {args.points} points in {args.dir}")


def peer(args):
    import numpy as np
    import shapely

    started = time.perf_counter()
    with open(os.path.join(args.dir, "zones.geojson")) as f:
        features = json.load(f)["features"]
    ids, areas, circle_ids, circles = [], [], [], []
    for feat in features:
        g = feat["geometry"]
        if g["type"] == "Point":
            circle_ids.append(feat["id"])
            circles.append((g["coordinates"][0], g["coordinates"][1], feat["properties"]["radius_m"]))
        else:
            ids.append(feat["id"])
            areas.append(shapely.geometry.shape(g))
    xy = np.loadtxt(os.path.join(args.dir, "points.csv"), delimiter=",", skiprows=1, ndmin=2)
    read_s = time.perf_counter() - started

    started = time.perf_counter()
    tree = shapely.STRtree(areas)
    c = np.array(circles, dtype=float).reshape(-1, 3)
    lat_r = np.radians(c[:, 1]) if len(c) else np.zeros(0)
    dlat = c[:, 2] / M_PER_DEG if len(c) else np.zeros(0)
    dlon = dlat / np.maximum(np.cos(np.abs(lat_r) + np.radians(dlat)), 1e-9)
    boxes = shapely.box(c[:, 0] - dlon, c[:, 1] - dlat, c[:, 0] + dlon, c[:, 1] + dlat)
    circle_tree = shapely.STRtree(boxes)
    build_s = time.perf_counter() - started

    started = time.perf_counter()
    pts = shapely.points(xy)
    pi, ai = tree.query(pts, predicate="intersects")
    qi, ci = circle_tree.query(pts, predicate="intersects")
    # The haversine test on the few candidates, as geo's Haversine computes it.
    cx, cy, px, py = c[ci, 0], c[ci, 1], xy[qi, 0], xy[qi, 1]
    h = np.sin(np.radians(py - cy) / 2) ** 2 + np.cos(np.radians(cy)) * np.cos(np.radians(py)) * np.sin(
        np.radians(px - cx) / 2
    ) ** 2
    d = EARTH_RADIUS_M * (2 * np.arcsin(np.sqrt(h)))
    inside = d <= c[ci, 2]
    match_s = time.perf_counter() - started

    n = len(xy)
    print(
        f"shapely {shapely.__version__} (GEOS {shapely.geos_version_string}) zones {len(features)} "
        f"points {n} read_s {read_s:.3f} index_build_s {build_s:.3f} match_s {match_s:.3f} "
        f"points_per_s {n / max(match_s, 1e-9):.0f}"
    )
    if not args.check:
        return 0
    answer = [[] for _ in range(n)]
    for p, a in zip(pi.tolist(), ai.tolist()):
        answer[p].append(ids[a])
    for p, k in zip(qi[inside].tolist(), ci[inside].tolist()):
        answer[p].append(circle_ids[k])
    with open(args.check) as f:
        theirs = f.read().split("\n")
    if theirs and theirs[-1] == "":
        theirs.pop()
    problems = 0
    if len(theirs) != n:
        print(f"{args.check}: {len(theirs)} lines for {n} points", file=sys.stderr)
        return 1
    for i, (line, ours) in enumerate(zip(theirs, answer)):
        expected = ",".join(sorted(ours))
        if line != expected:
            problems += 1
            if problems <= 10:
                x, y = xy[i]
                print(f"point {i + 1} ({x!r},{y!r}): omo {line!r}, shapely {expected!r}", file=sys.stderr)
    print(f"disagreements {problems} of {n} points")
    return 1 if problems else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write DIR/zones.geojson and DIR/points.csv")
    w.add_argument("dir")
    w.add_argument("--zones", type=int, default=100_000)
    w.add_argument("--points", type=int, default=1_000_000)
    w.add_argument("--seed", type=int, default=42)
    s = sub.add_parser("shapely", help="match with shapely; --check compares with omo's output")
    s.add_argument("dir")
    s.add_argument("--check", help="omo-cloud zones match's output for the same files")
    args = ap.parse_args()
    if args.command == "write":
        write(args)
        return 0
    return peer(args)


if __name__ == "__main__":
    sys.exit(main())
