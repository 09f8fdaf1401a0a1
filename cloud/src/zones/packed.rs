//! A static packed R-tree of boxes: the boxes sorted along a Hilbert curve of their centres,
//! then grouped sixteen to a node, level by level, into flat arrays. Built once (a sort), never
//! changed; a query walks the nodes with a stack on the call's own frame, so it allocates
//! nothing. Geofences change only when the registry does, and the whole index is rebuilt then.

/// Children per node.
const NODE: usize = 16;
/// Deepest tree a query's fixed stack can walk: 16^12 boxes, far more than a `u32` counts.
const MAX_DEPTH: usize = 12;

/// `[min x, min y, max x, max y]`, bounds included.
pub type Bbox = [f64; 4];

#[derive(Debug, Clone, Default)]
pub struct PackedTree {
    /// Every level's boxes, leaves first: level `l` is `boxes[starts[l]..starts[l + 1]]`.
    boxes: Vec<Bbox>,
    starts: Vec<usize>,
    /// The item of each leaf, in leaf order.
    items: Vec<u32>,
}

impl PackedTree {
    /// Packs `(box, item)` pairs. Boxes with a NaN bound are never found.
    pub fn new(mut entries: Vec<(Bbox, u32)>) -> PackedTree {
        if entries.is_empty() {
            return PackedTree::default();
        }
        let mut extent = [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ];
        for (b, _) in &entries {
            extent = union(extent, *b);
        }
        entries.sort_by_cached_key(|(b, _)| {
            hilbert_key((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0, extent)
        });
        let mut tree = PackedTree {
            boxes: entries.iter().map(|(b, _)| *b).collect(),
            starts: vec![0],
            items: entries.iter().map(|(_, i)| *i).collect(),
        };
        let mut level = 0..tree.boxes.len();
        loop {
            tree.starts.push(level.end);
            if level.len() <= 1 {
                break;
            }
            let parents: Vec<Bbox> = tree.boxes[level.clone()]
                .chunks(NODE)
                .map(|children| children.iter().copied().fold(EMPTY, union))
                .collect();
            let start = tree.boxes.len();
            tree.boxes.extend(parents);
            level = start..tree.boxes.len();
        }
        tree
    }

    /// Calls `found` with the item of every box that contains the point.
    pub fn at_point(&self, x: f64, y: f64, found: impl FnMut(u32)) {
        self.search(|b| b[0] <= x && x <= b[2] && b[1] <= y && y <= b[3], found);
    }

    /// Calls `found` with the item of every box that meets `area`.
    pub fn meeting(&self, area: Bbox, found: impl FnMut(u32)) {
        self.search(
            |b| b[0] <= area[2] && area[0] <= b[2] && b[1] <= area[3] && area[1] <= b[3],
            found,
        );
    }

    fn search(&self, hit: impl Fn(&Bbox) -> bool, mut found: impl FnMut(u32)) {
        let levels = self.starts.len().saturating_sub(1);
        if levels == 0 {
            return;
        }
        assert!(
            levels <= MAX_DEPTH + 1,
            "a packed tree deeper than its stack"
        );
        // (level, index within the level) of nodes still to open.
        let mut stack = [(0u8, 0u32); NODE * MAX_DEPTH];
        let root = levels - 1;
        if !hit(&self.boxes[self.starts[root]]) {
            return;
        }
        stack[0] = (root as u8, 0);
        let mut top = 1;
        while top > 0 {
            top -= 1;
            let (level, node) = stack[top];
            if level == 0 {
                found(self.items[node as usize]);
                continue;
            }
            let below = level as usize - 1;
            let (start, end) = (self.starts[below], self.starts[below + 1]);
            let first = start + node as usize * NODE;
            for child in first..(first + NODE).min(end) {
                if hit(&self.boxes[child]) {
                    stack[top] = (below as u8, (child - start) as u32);
                    top += 1;
                }
            }
        }
    }
}

/// The box of nothing: the start of a [`union`] fold.
pub const EMPTY: Bbox = [
    f64::INFINITY,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::NEG_INFINITY,
];

/// The smallest box holding both.
pub fn union(a: Bbox, b: Bbox) -> Bbox {
    [
        a[0].min(b[0]),
        a[1].min(b[1]),
        a[2].max(b[2]),
        a[3].max(b[3]),
    ]
}

/// The position of (x, y) along a Hilbert curve over `extent` cut into 2^16 × 2^16 cells:
/// points near each other on the map are mostly near each other in this order.
pub fn hilbert_key(x: f64, y: f64, extent: Bbox) -> u64 {
    let cell = |v: f64, lo: f64, hi: f64| -> u32 {
        if hi > lo {
            (((v - lo) / (hi - lo)) * 65_535.0).clamp(0.0, 65_535.0) as u32
        } else {
            0
        }
    };
    hilbert(cell(x, extent[0], extent[2]), cell(y, extent[1], extent[3]))
}

/// The position of (x, y) along a Hilbert curve over a 2^16 × 2^16 grid.
fn hilbert(mut x: u32, mut y: u32) -> u64 {
    let mut d = 0u64;
    let mut s = 1u32 << 15;
    while s > 0 {
        let rx = u32::from(x & s > 0);
        let ry = u32::from(y & s > 0);
        d += u64::from(s) * u64::from(s) * u64::from((3 * rx) ^ ry);
        // Rotate the quadrant so the curve stays continuous.
        if ry == 0 {
            if rx == 1 {
                x = 0xffff - x;
                y = 0xffff - y;
            }
            std::mem::swap(&mut x, &mut y);
        }
        s >>= 1;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bbox() -> impl Strategy<Value = Bbox> {
        (-10.0f64..10.0, -10.0f64..10.0, 0.0f64..3.0, 0.0f64..3.0)
            .prop_map(|(x, y, w, h)| [x, y, x + w, y + h])
    }

    proptest! {
        /// Point and box queries find exactly the boxes a scan finds, at any size (one
        /// level up to several) and on shared edges.
        #[test]
        fn queries_find_what_a_scan_finds(
            boxes in proptest::collection::vec(bbox(), 0..700),
            points in proptest::collection::vec((-11.0f64..14.0, -11.0f64..14.0), 1..40),
            area in bbox(),
        ) {
            let tree = PackedTree::new(boxes.iter().enumerate().map(|(i, b)| (*b, i as u32)).collect());
            let mut probes = points.clone();
            probes.extend(boxes.iter().take(20).flat_map(|b| [(b[0], b[1]), (b[2], b[3]), (b[0], b[3])]));
            for (x, y) in probes {
                let mut got = Vec::new();
                tree.at_point(x, y, |i| got.push(i as usize));
                got.sort_unstable();
                let want: Vec<usize> = (0..boxes.len())
                    .filter(|&i| { let b = boxes[i]; b[0] <= x && x <= b[2] && b[1] <= y && y <= b[3] })
                    .collect();
                prop_assert_eq!(got, want);
            }
            let mut got = Vec::new();
            tree.meeting(area, |i| got.push(i as usize));
            got.sort_unstable();
            let want: Vec<usize> = (0..boxes.len())
                .filter(|&i| { let b = boxes[i]; b[0] <= area[2] && area[0] <= b[2] && b[1] <= area[3] && area[1] <= b[3] })
                .collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn the_hilbert_curve_visits_every_cell_once_between_neighbours() {
        // On an 8 × 8 grid of the top bits: consecutive positions are grid neighbours.
        let mut cells: Vec<(u64, u32, u32)> = (0..8u32)
            .flat_map(|x| (0..8u32).map(move |y| (hilbert(x << 13, y << 13), x, y)))
            .collect();
        cells.sort_unstable();
        for w in cells.windows(2) {
            let d = w[0].1.abs_diff(w[1].1) + w[0].2.abs_diff(w[1].2);
            assert_eq!(d, 1, "{:?} then {:?}", w[0], w[1]);
        }
    }
}
