//! The stats space's key layouts (the only place they are spelled): `gateway/{id}` → a
//! gateway's ingest counters; `source/{name}` → a source's.

/// A gateway's counters.
pub fn gateway(id: &str) -> String {
    format!("gateway/{id}")
}

/// A source's counters (`app`, `line`, …).
pub fn source(name: &str) -> String {
    format!("source/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layouts stored data dirs hold: a change here is a format change.
    #[test]
    fn the_layouts_are_the_stored_ones() {
        assert_eq!(gateway("g1"), "gateway/g1");
        assert_eq!(source("app"), "source/app");
    }
}
