//! Charts drawn on the server as SVG (no script, no external asset): the lift of each variant
//! over the holdout as an interval on a points axis, bars of visits per hour, and a store's
//! zones as a plan. Every label is escaped; sizes scale with the viewBox.

use std::fmt::Write;

use super::words::Words;

/// Escapes text for SVG/HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One variant's lift: the difference in return rate over the holdout and its 95 % interval,
/// as fractions, with the sample sizes.
pub struct LiftBar {
    pub variant: String,
    pub difference: f64,
    pub low: f64,
    pub high: f64,
    pub treated: u64,
    pub holdout: u64,
    pub too_small: bool,
}

/// The lifts on one axis in percentage points, zero marked: each a line from the interval's
/// low to high end with a dot at the estimate.
pub fn lift_chart(bars: &[LiftBar], t: &Words) -> String {
    const W: f64 = 640.0;
    const LEFT: f64 = 150.0;
    const RIGHT: f64 = 30.0;
    const ROW: f64 = 44.0;
    let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
    let mut lo = 0.0f64;
    let mut hi = 0.0f64;
    for b in bars {
        lo = lo.min(finite(b.low) * 100.0);
        hi = hi.max(finite(b.high) * 100.0);
    }
    // Whole tens of points either side, at least ±10.
    let lo = (lo / 10.0).floor().min(-1.0) * 10.0;
    let hi = (hi / 10.0).ceil().max(1.0) * 10.0;
    let x = |p: f64| LEFT + (finite(p) * 100.0 - lo) / (hi - lo) * (W - LEFT - RIGHT);
    let h = 30.0 + ROW * bars.len().max(1) as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="lift" viewBox="0 0 {W} {h}" width="{W}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
        esc(&t.s("chart.lift.label"))
    );
    // Grid every 10 points.
    let mut p = lo;
    while p <= hi + 1e-9 {
        let gx = x(p / 100.0);
        let (stroke, width) = if p.abs() < 1e-9 {
            ("#1d2330", 1.5)
        } else {
            ("#dde1e8", 1.0)
        };
        let _ = write!(
            s,
            r#"<line x1="{gx:.1}" y1="8" x2="{gx:.1}" y2="{:.1}" stroke="{stroke}" stroke-width="{width}"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle">{:+.0}</text>"#,
            h - 18.0,
            h - 4.0,
            p
        );
        p += 10.0;
    }
    for (i, b) in bars.iter().enumerate() {
        let y = 26.0 + ROW * i as f64;
        let color = if b.too_small { "#8a93a6" } else { "#2457c5" };
        let _ = write!(
            s,
            r#"<g class="interval" data-variant="{v}" data-low="{lo:.4}" data-high="{hi:.4}" data-difference="{d:.4}"><text x="4" y="{ty:.1}">{v}</text><text x="4" y="{ny:.1}" class="n">{n}</text><line x1="{x1:.1}" y1="{y:.1}" x2="{x2:.1}" y2="{y:.1}" stroke="{color}" stroke-width="4" stroke-linecap="round"/><circle cx="{cx:.1}" cy="{y:.1}" r="6" fill="{color}"/><text x="{cx:.1}" y="{ly:.1}" text-anchor="middle">{value}</text></g>"#,
            v = esc(&b.variant),
            lo = finite(b.low),
            hi = finite(b.high),
            d = finite(b.difference),
            ty = y - 4.0,
            ny = y + 10.0,
            n = esc(&t.f("chart.lift.n", &[&t.int(b.treated), &t.int(b.holdout)])),
            x1 = x(b.low),
            x2 = x(b.high),
            cx = x(b.difference),
            ly = y - 10.0,
            value = esc(&t.f(
                "chart.lift.value",
                &[
                    &format!("{:+.1}", finite(b.difference) * 100.0),
                    &format!("{:+.1}", finite(b.low) * 100.0),
                    &format!("{:+.1}", finite(b.high) * 100.0),
                ]
            )),
        );
    }
    s.push_str("</svg>");
    s
}

/// Bars of counts over labelled slots (visits per hour), with a label every `label_every`.
pub fn bars(values: &[(String, u64)], label_every: usize, label: &str) -> String {
    const H: f64 = 160.0;
    const BOTTOM: f64 = 20.0;
    let bar_w = 6.0;
    let w = (values.len().max(1) as f64) * (bar_w + 1.0) + 40.0;
    let max = values.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="bars" viewBox="0 0 {w:.0} {H}" width="{w:.0}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg"><text x="0" y="10">{max}</text>"#,
        esc(label)
    );
    for (i, (label, v)) in values.iter().enumerate() {
        let bh = (*v as f64) / (max as f64) * (H - BOTTOM - 14.0);
        let bx = 30.0 + i as f64 * (bar_w + 1.0);
        let _ = write!(
            s,
            r##"<rect x="{bx:.1}" y="{:.1}" width="{bar_w}" height="{bh:.1}" fill="#2457c5"><title>{}: {v}</title></rect>"##,
            H - BOTTOM - bh,
            esc(label)
        );
        if label_every > 0 && i % label_every == 0 {
            let _ = write!(
                s,
                r#"<text x="{bx:.1}" y="{:.1}">{}</text>"#,
                H - 6.0,
                esc(label)
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// A shape of a store's plan: polygons (rings of `[lon, lat]`) or a circle.
pub enum PlanShape {
    Polygons(Vec<Vec<Vec<[f64; 2]>>>),
    Circle { lon: f64, lat: f64, radius_m: f64 },
}

/// A store's geofences drawn to scale around its location (east right, north up), with a
/// 10 m (or 100 m, 1 km) scale bar; each shape labelled with its zone and visitors now.
pub fn plan(anchor: (f64, f64), shapes: &[(String, PlanShape, u64)], t: &Words) -> String {
    const COLORS: [&str; 6] = [
        "#2457c5", "#1b7f3b", "#b35c00", "#7b2cbf", "#b3261e", "#006d77",
    ];
    let view = PlanView::fitting(anchor, shapes);
    let (w, h) = (PlanView::W, PlanView::H);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg class="plan" viewBox="0 0 {w} {h}" width="{w}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg"><rect width="{w}" height="{h}" fill="#fbfcfd" stroke="#dde1e8"/>"##,
        esc(&t.s("chart.plan.label"))
    );
    // Labels placed so far: a label that would overlap one moves down a line.
    let mut placed: Vec<(f64, f64)> = Vec::new();
    for (i, (name, shape, visitors)) in shapes.iter().enumerate() {
        let (lx, mut ly) = view.draw(&mut s, shape, COLORS[i % COLORS.len()]);
        while placed
            .iter()
            .any(|(px, py)| (px - lx).abs() < 160.0 && (py - ly).abs() < 15.0)
        {
            ly += 15.0;
        }
        placed.push((lx, ly));
        let _ = write!(
            s,
            r#"<text x="{lx:.1}" y="{ly:.1}" text-anchor="middle">{}</text>"#,
            esc(&t.f("chart.plan.now", &[name, &t.int(*visitors)]))
        );
    }
    view.location_and_scale(&mut s);
    s
}

/// How a plan maps [lon, lat] to the drawing: metres around the anchor (an equirectangular
/// projection, fine at a store's scale), then scaled to fit every shape.
struct PlanView {
    anchor: (f64, f64),
    /// The drawing's least x and y, metres.
    x0: f64,
    y0: f64,
    /// Drawing units per metre.
    k: f64,
}

impl PlanView {
    const W: f64 = 640.0;
    const H: f64 = 400.0;
    const PAD: f64 = 30.0;

    /// The view that fits the anchor and every shape (10 m across at least).
    fn fitting(anchor: (f64, f64), shapes: &[(String, PlanShape, u64)]) -> PlanView {
        let mut view = PlanView {
            anchor,
            x0: 0.0,
            y0: 0.0,
            k: 1.0,
        };
        let mut pts: Vec<(f64, f64)> = vec![(0.0, 0.0)];
        for (_, shape, _) in shapes {
            match shape {
                PlanShape::Polygons(ps) => {
                    for ring in ps.iter().flatten() {
                        pts.extend(ring.iter().map(|p| view.metres(p[0], p[1])));
                    }
                }
                PlanShape::Circle { lon, lat, radius_m } => {
                    let (x, y) = view.metres(*lon, *lat);
                    pts.push((x - radius_m, y - radius_m));
                    pts.push((x + radius_m, y + radius_m));
                }
            }
        }
        pts.retain(|(x, y)| x.is_finite() && y.is_finite());
        let (mut x0, mut x1, mut y0, mut y1) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for (x, y) in &pts {
            x0 = x0.min(*x);
            x1 = x1.max(*x);
            y0 = y0.min(*y);
            y1 = y1.max(*y);
        }
        let span = (x1 - x0).max(y1 - y0).max(10.0);
        view.k = ((Self::W - 2.0 * Self::PAD) / span).min((Self::H - 2.0 * Self::PAD) / span);
        (view.x0, view.y0) = (x0, y0);
        view
    }

    /// Metres east and north of the anchor.
    fn metres(&self, lon: f64, lat: f64) -> (f64, f64) {
        let (lon0, lat0) = self.anchor;
        let m_per_deg = 6_371_008.8 * std::f64::consts::PI / 180.0;
        (
            (lon - lon0) * lat0.to_radians().cos() * m_per_deg,
            (lat - lat0) * m_per_deg,
        )
    }

    fn sx(&self, x: f64) -> f64 {
        Self::PAD + (x - self.x0) * self.k
    }

    fn sy(&self, y: f64) -> f64 {
        Self::H - Self::PAD - (y - self.y0) * self.k
    }

    /// Draws `shape` in `color`; answers where its label goes.
    fn draw(&self, s: &mut String, shape: &PlanShape, color: &str) -> (f64, f64) {
        match shape {
            PlanShape::Polygons(ps) => {
                let mut d = String::new();
                for ring in ps.iter().flatten() {
                    for (j, p) in ring.iter().enumerate() {
                        let (x, y) = self.metres(p[0], p[1]);
                        let (x, y) = (self.sx(x), self.sy(y));
                        let _ = write!(d, "{}{x:.1},{y:.1} ", if j == 0 { "M" } else { "L" });
                    }
                    d.push('Z');
                }
                let _ = write!(
                    s,
                    r#"<path d="{d}" fill="{color}" fill-opacity="0.15" stroke="{color}" stroke-width="2" fill-rule="evenodd"/>"#
                );
                // Labelled at the mean of its first ring's points.
                let ring = ps.first().and_then(|p| p.first());
                let n = ring.map_or(1, |r| r.len().max(1)) as f64;
                let (cx, cy) = ring.map_or((0.0, 0.0), |r| {
                    r.iter().fold((0.0, 0.0), |(ax, ay), p| {
                        let (x, y) = self.metres(p[0], p[1]);
                        (ax + x / n, ay + y / n)
                    })
                });
                (self.sx(cx), self.sy(cy))
            }
            PlanShape::Circle { lon, lat, radius_m } => {
                let (x, y) = self.metres(*lon, *lat);
                let (x, y) = (self.sx(x), self.sy(y));
                let _ = write!(
                    s,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="{:.1}" fill="{color}" fill-opacity="0.15" stroke="{color}" stroke-width="2"/>"#,
                    radius_m * self.k
                );
                (x, y)
            }
        }
    }

    /// The store's location and a scale bar (1 m to 10 km, at most a third of the width),
    /// closing the drawing.
    fn location_and_scale(&self, s: &mut String) {
        let (pad, h, k) = (Self::PAD, Self::H, self.k);
        let _ = write!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="4" fill="#1d2330"/>"##,
            self.sx(0.0),
            self.sy(0.0)
        );
        let bar_m = [1.0, 10.0, 100.0, 1000.0, 10_000.0]
            .into_iter()
            .rev()
            .find(|m| m * k <= (Self::W - 2.0 * pad) / 3.0)
            .unwrap_or(1.0);
        let _ = write!(
            s,
            r##"<line x1="{pad}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#1d2330" stroke-width="2"/><text x="{pad}" y="{ty:.1}" translate="no">{} m</text></svg>"##,
            pad + bar_m * k,
            bar_m,
            y = h - 10.0,
            ty = h - 14.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::dashboard::words::Lang;

    fn en() -> Words {
        Words::new(Lang::En, chrono_tz::UTC)
    }

    #[test]
    fn the_interval_is_drawn_from_low_to_high_around_the_estimate() {
        let svg = lift_chart(
            &[LiftBar {
                variant: "a<b".into(),
                difference: 0.15,
                low: -0.02,
                high: 0.32,
                treated: 120,
                holdout: 31,
                too_small: false,
            }],
            &en(),
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("a&lt;b") && !svg.contains("a<b"));
        assert!(svg.contains("+15.0 pts [-2.0, +32.0]"), "{svg}");
        assert!(svg.contains("120 sent, 31 held out"));
        // The axis spans -10..+40 points: the line runs from x(-2) to x(32).
        let x = |p: f64| 150.0 + (p + 10.0) / 50.0 * 460.0;
        assert!(svg.contains(&format!(r#"x1="{:.1}""#, x(-2.0))), "{svg}");
        assert!(svg.contains(&format!(r#"x2="{:.1}""#, x(32.0))), "{svg}");
    }

    #[test]
    fn no_number_breaks_the_chart() {
        let svg = lift_chart(
            &[LiftBar {
                variant: "a".into(),
                difference: f64::NAN,
                low: f64::NEG_INFINITY,
                high: f64::INFINITY,
                treated: 0,
                holdout: 0,
                too_small: true,
            }],
            &en(),
        );
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        assert!(bars(&[], 1, "v").ends_with("</svg>"));
        assert!(
            bars(&[("10".into(), 3), ("11".into(), 0)], 1, "v").contains("<title>10: 3</title>")
        );
        let nothing = plan((139.7, 35.6), &[], &en());
        assert!(nothing.ends_with("</svg>") && !nothing.contains("NaN"));
    }

    #[test]
    fn a_plan_draws_polygons_and_circles_to_scale() {
        let square = vec![vec![vec![
            [139.7, 35.6],
            [139.7005, 35.6],
            [139.7005, 35.6004],
            [139.7, 35.6004],
            [139.7, 35.6],
        ]]];
        let svg = plan(
            (139.7, 35.6),
            &[
                ("floor".into(), PlanShape::Polygons(square), 4),
                (
                    "door <1>".into(),
                    PlanShape::Circle {
                        lon: 139.7,
                        lat: 35.6,
                        radius_m: 5.0,
                    },
                    0,
                ),
            ],
            &en(),
        );
        assert!(
            svg.contains("<path d=\"M") && svg.contains("<circle"),
            "{svg}"
        );
        assert!(
            svg.contains("floor · 4 now") && svg.contains("door &lt;1&gt; · 0 now"),
            "{svg}"
        );
        assert!(svg.contains(" m</text>") && !svg.contains("NaN"));
    }
}
