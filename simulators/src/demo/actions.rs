//! The demo day's actions: what the driver hands the system at a clock time, as it keeps
//! them in its queue and as a run record writes them.

use std::collections::HashMap;
use std::io::Write as _;

use anyhow::{bail, Context};
use rand::Rng;
use serde_json::{json, Value};

use super::{Options, Recorded};
use crate::synth;

/// What the stores sell: (sku, category, least and most price in yen).
const GOODS: [(&str, &str, u32, u32); 6] = [
    ("latte-m", "coffee", 450, 650),
    ("drip-l", "coffee", 380, 520),
    ("scone", "bakery", 280, 420),
    ("beans-200g", "beans", 1200, 2400),
    ("tumbler", "goods", 2200, 4800),
    ("gift-box", "goods", 3000, 6000),
];

/// A run record's file with its header written.
pub(super) fn start_record(
    path: &std::path::Path,
    opts: &Options,
) -> anyhow::Result<std::io::BufWriter<std::fs::File>> {
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let header = Recorded::Header {
        omo_run: 1,
        scenario: opts.scenario_text.clone(),
        hours: opts.scenario.run.hours,
    };
    writeln!(w, "{}", serde_json::to_string(&header)?)?;
    Ok(w)
}

/// The run record's line for `action` handed over at `at` (the shoppers' choices that only
/// schedule other actions have none).
pub(super) fn recorded(
    action: &Action,
    at: i64,
    gateways: &[String],
    store_ids: &[String],
) -> Option<Recorded> {
    Some(match action {
        Action::Advert(g, line) => Recorded::Advert {
            at,
            gateway: gateways[*g].clone(),
            line: line.clone(),
        },
        Action::Report(shopper, body) => Recorded::Report {
            at,
            shopper: *shopper,
            body: body.clone(),
        },
        Action::Line(event) => Recorded::Line {
            at,
            event: event.clone(),
        },
        Action::Fault(index) => Recorded::Fault { at, index: *index },
        Action::Redeem { shopper, amount } => Recorded::Redeem {
            at,
            shopper: *shopper,
            amount: *amount,
        },
        Action::Returned { shopper } => Recorded::Return {
            at,
            shopper: *shopper,
        },
        Action::Purchase(body) => Recorded::Purchase {
            at,
            body: body.clone(),
        },
        Action::Checkin { shopper, store } => Recorded::Checkin {
            at,
            shopper: *shopper,
            store: store_ids[*store].clone(),
        },
        Action::VisitEnd { .. } | Action::MaybeReturn { .. } => return None,
    })
}

/// A purchase as a POS or the online shop sends it: one to three lines of the stores' goods.
pub(super) fn purchase_body(
    order_id: &str,
    store: Option<&str>,
    customer: Value,
    at_ms: i64,
    rng: &mut rand::rngs::StdRng,
) -> Value {
    let lines: Vec<Value> = (0..rng.random_range(1..=3))
        .map(|_| {
            let (sku, category, low, high) = GOODS[rng.random_range(0..GOODS.len())];
            let quantity = rng.random_range(1..=2u32);
            let amount = f64::from(rng.random_range(low..=high) / 10 * 10 * quantity);
            json!({"sku": sku, "category": category, "quantity": quantity, "amount": amount})
        })
        .collect();
    let mut body = json!({
        "order_id": order_id,
        "channel": if store.is_some() { "store" } else { "online" },
        "customer": customer,
        "at": synth::ts_text(at_ms),
        "currency": "JPY",
        "lines": lines,
    });
    if let Some(s) = store {
        body["store"] = json!(s);
    }
    body
}

/// The driver's action for a run record's line, checked against the record's scenario.
pub(super) fn recorded_action(
    r: &Recorded,
    gateway_index: &HashMap<String, usize>,
    shoppers: usize,
    faults: usize,
    stores: &[String],
) -> anyhow::Result<(i64, Action)> {
    let known = |shopper: usize| -> anyhow::Result<usize> {
        anyhow::ensure!(
            shopper < shoppers,
            "shopper {shopper}: its scenario has {shoppers}"
        );
        Ok(shopper)
    };
    Ok(match r {
        Recorded::Header { .. } => bail!("a second header"),
        Recorded::Advert { at, gateway, line } => {
            let g = gateway_index
                .get(gateway)
                .with_context(|| format!("gateway {gateway} is not in its scenario"))?;
            (*at, Action::Advert(*g, line.clone()))
        }
        Recorded::Report { at, shopper, body } => {
            (*at, Action::Report(known(*shopper)?, body.clone()))
        }
        Recorded::Line { at, event } => (*at, Action::Line(event.clone())),
        Recorded::Return { at, shopper } => (
            *at,
            Action::Returned {
                shopper: known(*shopper)?,
            },
        ),
        Recorded::Redeem {
            at,
            shopper,
            amount,
        } => (
            *at,
            Action::Redeem {
                shopper: known(*shopper)?,
                amount: *amount,
            },
        ),
        Recorded::Fault { at, index } => {
            anyhow::ensure!(*index < faults, "faults[{index}] is not in its scenario");
            (*at, Action::Fault(*index))
        }
        Recorded::Purchase { at, body } => {
            serde_json::from_str::<Value>(body).context("a purchase body that is not JSON")?;
            (*at, Action::Purchase(body.clone()))
        }
        Recorded::Checkin { at, shopper, store } => {
            let store = stores
                .iter()
                .position(|s| s == store)
                .with_context(|| format!("store {store} is not in its scenario"))?;
            (
                *at,
                Action::Checkin {
                    shopper: known(*shopper)?,
                    store,
                },
            )
        }
    })
}

/// Something to do at a clock time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Action {
    /// A replay line for a gateway (by index).
    Advert(usize, String),
    /// An app report of a shopper.
    Report(usize, String),
    /// A LINE webhook event.
    Line(String),
    /// A shopper's visit ended: decide whether they come back, and whether they redeem.
    VisitEnd { shopper: usize, first: bool },
    /// The time a shopper would come back: they do if `draw` is below their return chance,
    /// which depends on whether an offer reached them by now (by then every offer of the
    /// first visit has long been delivered, so none is missed for being slow).
    MaybeReturn { shopper: usize, draw: u32 },
    /// The scenario's fault (by index) starts at its fake server.
    Fault(usize),
    /// A shopper redeems their offer's coupon at the till, paying `amount`.
    Redeem { shopper: usize, amount: u32 },
    /// A recorded return (counted; its adverts and reports are their own actions).
    Returned { shopper: usize },
    /// A purchase for the POS or the online shop to send (its JSON body).
    Purchase(String),
    /// A shopper's app scans the QR code of a store (by index).
    Checkin { shopper: usize, store: usize },
}
