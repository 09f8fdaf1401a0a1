//! Charts drawn on the server as SVG (no script, no external asset): the lift of each variant
//! over the holdout as an interval on a points axis, and bars of visits per hour. Every label
//! is escaped; the text is drawn at 11 px or more (the chart keeps its size and scrolls on a
//! phone). A store's areas are drawn on its map (`cloud/assets/map.js`).

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
    }
}
