//! The journal entry's binary form (format byte [`FORMAT`]). A step's entry names every
//! state and buffered evidence it changed, a few thousand at the load's rate: as JSON that was
//! a quarter of the stage's time and half a megabyte per step. Times are stored as offsets
//! from the entry's log time, so most take two or three bytes.
//!
//! ```text
//! entry    = FORMAT log_ms:i64 n:u64 state* n:u64 evidence* n:u64 removed*
//! state    = key tag:u8 (0 gone | 1 candidate | 2 open | 3 closed | 4 candidate after an
//!            exit: a candidate's fields, then the exit's time) fields…
//! evidence = customer:str scope at:i64 offset:u64 source:u8 inside:bool
//! removed  = offset:u64 scope
//! key      = customer:str scope
//! scope    = 0 zone:str | 1 store:str | 2
//! sources  = bit set: 1 gateway, 2 app, 4 line, 8 qr
//! ```
//! (`i64` zigzag varint, relative to `log_ms` for times; `u64` varint; `str` length-prefixed.)

use std::collections::BTreeSet;

use super::Entry;
use crate::store::compact::{Malformed, Reader, Writer};
use crate::visits::engine::{Evidence, Scope, Source, State};

/// The first byte of an entry in this form (a JSON entry starts with `{`).
pub const FORMAT: u8 = 1;

const SOURCES: [Source; 4] = [Source::Gateway, Source::App, Source::Line, Source::Qr];

fn source_bit(s: Source) -> u8 {
    match s {
        Source::Gateway => 1,
        Source::App => 2,
        Source::Line => 4,
        Source::Qr => 8,
    }
}

fn put_scope(w: &mut Writer, scope: &Scope) {
    match scope {
        Scope::Zone(z) => {
            w.u8(0);
            w.str(z);
        }
        Scope::Store(s) => {
            w.u8(1);
            w.str(s);
        }
        Scope::Online => w.u8(2),
    }
}

fn scope(r: &mut Reader<'_>) -> Result<Scope, Malformed> {
    let at = r.position();
    match r.u8("a scope")? {
        0 => Ok(Scope::Zone(r.str("a zone id")?.to_owned())),
        1 => Ok(Scope::Store(r.str("a store id")?.to_owned())),
        2 => Ok(Scope::Online),
        _ => Err(Malformed {
            at,
            expected: "a scope kind (0-2)",
        }),
    }
}

fn put_sources(w: &mut Writer, sources: &BTreeSet<Source>) {
    w.u8(sources.iter().map(|s| source_bit(*s)).fold(0, |a, b| a | b));
}

fn sources(r: &mut Reader<'_>) -> Result<BTreeSet<Source>, Malformed> {
    let at = r.position();
    let bits = r.u8("a set of sources")?;
    if bits & !0x0f != 0 {
        return Err(Malformed {
            at,
            expected: "a set of sources (bits 0-3)",
        });
    }
    Ok(SOURCES
        .into_iter()
        .filter(|s| bits & source_bit(*s) != 0)
        .collect())
}

fn source(r: &mut Reader<'_>) -> Result<Source, Malformed> {
    let at = r.position();
    let bit = r.u8("a source")?;
    SOURCES
        .into_iter()
        .find(|s| source_bit(*s) == bit)
        .ok_or(Malformed {
            at,
            expected: "a source (1, 2, 4 or 8)",
        })
}

/// Times relative to the entry's log time (wrapping, so any i64 reads back).
fn put_time(w: &mut Writer, base: i64, t: i64) {
    w.i64(t.wrapping_sub(base));
}

fn time(r: &mut Reader<'_>, base: i64, what: &'static str) -> Result<i64, Malformed> {
    Ok(r.i64(what)?.wrapping_add(base))
}

pub fn encode(entry: &Entry) -> Vec<u8> {
    let base = entry.log_ms;
    let mut w = Writer::with_capacity(64 + 48 * (entry.states.len() + entry.added.len()));
    w.u8(FORMAT);
    w.i64(base);
    w.u64(entry.states.len() as u64);
    for ((customer, scope), state) in &entry.states {
        w.str(customer);
        put_scope(&mut w, scope);
        match state {
            None => w.u8(0),
            Some(State::Candidate {
                first_ms,
                last_ms,
                opener,
                sources,
                resumed,
                after_exit_ms,
            }) => {
                w.u8(if after_exit_ms.is_some() { 4 } else { 1 });
                put_time(&mut w, base, *first_ms);
                put_time(&mut w, base, *last_ms);
                w.u64(*opener);
                put_sources(&mut w, sources);
                w.bool(*resumed);
                if let Some(exit_ms) = after_exit_ms {
                    put_time(&mut w, base, *exit_ms);
                }
            }
            Some(State::Open {
                visit,
                entered_ms,
                last_ms,
                outside_ms,
                milestones,
                sources,
                resumed,
            }) => {
                w.u8(2);
                w.str(visit);
                put_time(&mut w, base, *entered_ms);
                put_time(&mut w, base, *last_ms);
                match outside_ms {
                    None => w.u8(0),
                    Some(t) => {
                        w.u8(1);
                        put_time(&mut w, base, *t);
                    }
                }
                w.u8(*milestones);
                put_sources(&mut w, sources);
                w.bool(*resumed);
            }
            Some(State::Closed { exit_ms, until_ms }) => {
                w.u8(3);
                put_time(&mut w, base, *exit_ms);
                put_time(&mut w, base, *until_ms);
            }
        }
    }
    w.u64(entry.added.len() as u64);
    for e in &entry.added {
        w.str(&e.customer);
        put_scope(&mut w, &e.scope);
        put_time(&mut w, base, e.at_ms);
        w.u64(e.offset);
        w.u8(source_bit(e.source));
        w.bool(e.inside);
    }
    w.u64(entry.removed.len() as u64);
    for (offset, scope) in &entry.removed {
        w.u64(*offset);
        put_scope(&mut w, scope);
    }
    w.bytes
}

/// Reads an entry written by [`encode`] (its format byte included).
pub fn decode(bytes: &[u8]) -> Result<Entry, Malformed> {
    let mut r = Reader::new(bytes);
    if r.u8("the format byte")? != FORMAT {
        return Err(Malformed {
            at: 0,
            expected: "the format byte 1",
        });
    }
    let base = r.i64("the log time")?;
    let mut entry = Entry {
        log_ms: base,
        ..Entry::default()
    };
    // Each item takes at least two bytes: counts never allocate past the input.
    let n = r.len("a count of states")?;
    entry.states.reserve(n / 2);
    for _ in 0..n {
        let customer = r.str("a customer id")?.to_owned();
        let scope = scope(&mut r)?;
        let at = r.position();
        let state = match r.u8("a state kind")? {
            0 => None,
            kind @ (1 | 4) => Some(State::Candidate {
                first_ms: time(&mut r, base, "a first time")?,
                last_ms: time(&mut r, base, "a last time")?,
                opener: r.u64("an opener offset")?,
                sources: sources(&mut r)?,
                resumed: r.bool("a resumed flag (0 or 1)")?,
                after_exit_ms: match kind {
                    4 => Some(time(
                        &mut r,
                        base,
                        "the time of the exit a candidate follows",
                    )?),
                    _ => None,
                },
            }),
            2 => Some(State::Open {
                visit: r.str("a visit id")?.to_owned(),
                entered_ms: time(&mut r, base, "an enter time")?,
                last_ms: time(&mut r, base, "a last time")?,
                outside_ms: match r.u8("an outside time's presence (0 or 1)")? {
                    0 => None,
                    1 => Some(time(&mut r, base, "an outside time")?),
                    _ => {
                        return Err(Malformed {
                            at: r.position() - 1,
                            expected: "an outside time's presence (0 or 1)",
                        })
                    }
                },
                milestones: r.u8("a milestone count")?,
                sources: sources(&mut r)?,
                resumed: r.bool("a resumed flag (0 or 1)")?,
            }),
            3 => Some(State::Closed {
                exit_ms: time(&mut r, base, "an exit time")?,
                until_ms: time(&mut r, base, "a remembered-until time")?,
            }),
            _ => {
                return Err(Malformed {
                    at,
                    expected: "a state kind (0-3)",
                })
            }
        };
        entry.states.push(((customer, scope), state));
    }
    let n = r.len("a count of buffered evidence")?;
    entry.added.reserve(n / 2);
    for _ in 0..n {
        entry.added.push(Evidence {
            customer: r.str("a customer id")?.to_owned(),
            scope: scope(&mut r)?,
            at_ms: time(&mut r, base, "an evidence time")?,
            offset: r.u64("a log offset")?,
            source: source(&mut r)?,
            inside: r.bool("an inside flag (0 or 1)")?,
        });
    }
    let n = r.len("a count of removed evidence")?;
    entry.removed.reserve(n / 2);
    for _ in 0..n {
        let offset = r.u64("a log offset")?;
        entry.removed.push((offset, scope(&mut r)?));
    }
    r.end()?;
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scope_strategy() -> impl Strategy<Value = Scope> {
        prop_oneof![
            "[a-z0-9-]{0,12}".prop_map(Scope::Zone),
            "[a-z0-9-]{0,12}".prop_map(Scope::Store),
            Just(Scope::Online),
        ]
    }

    fn sources_strategy() -> impl Strategy<Value = BTreeSet<Source>> {
        (0u8..16).prop_map(|bits| {
            SOURCES
                .into_iter()
                .filter(|s| bits & source_bit(*s) != 0)
                .collect()
        })
    }

    fn state_strategy() -> impl Strategy<Value = Option<State>> {
        prop_oneof![
            Just(None),
            (
                any::<i64>(),
                any::<i64>(),
                any::<u64>(),
                sources_strategy(),
                any::<bool>(),
                proptest::option::of(any::<i64>())
            )
                .prop_map(
                    |(first_ms, last_ms, opener, sources, resumed, after_exit_ms)| Some(
                        State::Candidate {
                            first_ms,
                            last_ms,
                            opener,
                            sources,
                            resumed,
                            after_exit_ms
                        }
                    )
                ),
            (
                "v_[0-9a-f]{0,20}",
                any::<i64>(),
                any::<i64>(),
                proptest::option::of(any::<i64>()),
                any::<u8>(),
                sources_strategy(),
                any::<bool>()
            )
                .prop_map(
                    |(visit, entered_ms, last_ms, outside_ms, milestones, sources, resumed)| {
                        Some(State::Open {
                            visit,
                            entered_ms,
                            last_ms,
                            outside_ms,
                            milestones,
                            sources,
                            resumed,
                        })
                    }
                ),
            (any::<i64>(), any::<i64>())
                .prop_map(|(exit_ms, until_ms)| Some(State::Closed { exit_ms, until_ms })),
        ]
    }

    fn evidence_strategy() -> impl Strategy<Value = Evidence> {
        (
            ".{0,10}",
            scope_strategy(),
            any::<i64>(),
            any::<u64>(),
            proptest::sample::select(SOURCES.to_vec()),
            any::<bool>(),
        )
            .prop_map(
                |(customer, scope, at_ms, offset, source, inside)| Evidence {
                    customer,
                    scope,
                    at_ms,
                    offset,
                    source,
                    inside,
                },
            )
    }

    fn entry_strategy() -> impl Strategy<Value = Entry> {
        (
            any::<i64>(),
            proptest::collection::vec(((".{0,10}", scope_strategy()), state_strategy()), 0..8),
            proptest::collection::vec(evidence_strategy(), 0..8),
            proptest::collection::vec((any::<u64>(), scope_strategy()), 0..8),
        )
            .prop_map(|(log_ms, states, added, removed)| Entry {
                log_ms,
                states,
                added,
                removed,
            })
    }

    proptest! {
        #[test]
        fn an_entry_reads_back_as_written(entry in entry_strategy()) {
            let bytes = encode(&entry);
            prop_assert_eq!(bytes[0], FORMAT);
            let back = decode(&bytes).unwrap();
            prop_assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&entry).unwrap());
        }

        #[test]
        fn a_cut_or_changed_entry_is_an_error_inside_it_never_a_panic(
            entry in entry_strategy(), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()
        ) {
            let bytes = encode(&entry);
            let short = &bytes[..cut.index(bytes.len())];
            let e = decode(short).unwrap_err();
            prop_assert!(e.at <= short.len());
            let mut changed = bytes.clone();
            let i = flip.0.index(changed.len());
            changed[i] ^= flip.1 | 1;
            if let Err(e) = decode(&changed) {
                prop_assert!(e.at <= changed.len());
            }
        }
    }

    #[test]
    fn a_step_of_the_load_takes_far_fewer_bytes_than_json() {
        let log_ms = 1_795_000_000_000;
        let states: Vec<_> = (0..100)
            .map(|i| {
                (
                    (
                        format!("c_{i:020x}"),
                        Scope::Zone(format!("st-{:04}-floor", i % 100)),
                    ),
                    Some(State::Candidate {
                        first_ms: log_ms - 4000,
                        last_ms: log_ms - 100,
                        opener: 1_000_000 + i,
                        sources: BTreeSet::from([Source::Gateway]),
                        resumed: false,
                        after_exit_ms: None,
                    }),
                )
            })
            .collect();
        let entry = Entry {
            log_ms,
            states,
            added: Vec::new(),
            removed: Vec::new(),
        };
        let binary = encode(&entry).len();
        let json = serde_json::to_vec(&entry).unwrap().len();
        assert!(binary * 3 < json, "{binary} bytes binary, {json} as JSON");
    }
}
