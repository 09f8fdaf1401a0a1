//! `omo-sim demo`: the whole system on one machine, on one clock. It starts the fake LINE and
//! FCM servers, imports the scenario's site into a fresh cloud and runs it (embedded broker),
//! starts one gateway per scenario gateway reading adverts from its stdin (the replay source),
//! registers the shoppers and the campaigns, then drives the day: adverts to the gateways, the
//! app's reports and the LINE platform's beacon webhooks, each when the clock reaches it. A
//! shopper who got an offer comes back with the scenario's `return_after_offer` probability,
//! any other with `return_without_offer` (the true effect), and some redeem their coupon at
//! the till. At the end it prints what the cloud reports and checks the scenario's
//! expectations.

mod actions;
mod day;
mod report;
mod system;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::procs::keep_on_error;
use crate::scenario::Scenario;
use crate::synth;

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub scenario: Scenario,
    /// The scenario file's text, as a run record keeps it.
    pub scenario_text: String,
    /// Leave the cloud running after the report (until interrupted).
    pub keep_running: bool,
    /// Where `omo-cloud` and `omo-gateway` are (default: beside this program).
    pub bin_dir: Option<PathBuf>,
    /// Write everything the driver hands the system, with its time, to this run record.
    pub record: Option<PathBuf>,
    /// Drive the day from this run record's actions (with their line numbers) instead of
    /// simulating shoppers' choices.
    pub replay: Option<Vec<(usize, Recorded)>>,
    /// Keep every process's log (and data dir) in a new directory under this one, with the
    /// cloud and the gateways logging at debug level.
    pub logs: Option<PathBuf>,
    /// Keep the cloud's state in a PostgreSQL database instead of a fresh sled dir.
    pub postgres: Option<OnPostgres>,
}

/// The demo's cloud on PostgreSQL (`--postgres URL --instances N`).
#[derive(Debug, Clone)]
pub struct OnPostgres {
    /// The database's libpq URL; it must be empty (the demo imports its site into it). The
    /// password is the URL's or `OMO_CLOUD_PG_PASSWORD`'s, which the cloud reads.
    pub url: String,
    /// How many `omo-cloud run` processes share it; with more than one, they run behind a
    /// Mosquitto broker the demo starts (Debian's `mosquitto`), with a shared subscription.
    pub instances: u16,
}

/// One line of a run record (NDJSON): the first line is the header, the rest what the driver
/// did at a clock time (Unix ms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Recorded {
    /// The run's scenario (the file's text) and its length after `--hours`.
    Header {
        omo_run: u32,
        scenario: String,
        hours: f64,
    },
    /// A replay line written to a gateway's stdin.
    Advert {
        at: i64,
        gateway: String,
        line: String,
    },
    /// An app report of a shopper (by their number in the scenario's population).
    Report {
        at: i64,
        shopper: usize,
        body: String,
    },
    /// A LINE webhook event.
    Line { at: i64, event: String },
    /// A shopper came back (their visit's adverts and reports follow).
    Return { at: i64, shopper: usize },
    /// A shopper redeems the coupon of their offer at the till.
    Redeem {
        at: i64,
        shopper: usize,
        amount: u32,
    },
    /// The scenario's fault (by index) starts.
    Fault { at: i64, index: usize },
    /// A purchase sent by a store's POS or the online shop (the body of `POST /v1/purchases`).
    Purchase { at: i64, body: String },
    /// A shopper's app scans a store's QR code (by the store's id).
    Checkin {
        at: i64,
        shopper: usize,
        store: String,
    },
}

/// A run record as read: its scenario text and hours, and the actions with their line numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub scenario: String,
    pub hours: f64,
    pub actions: Vec<(usize, Recorded)>,
}

/// Reads a run record, naming the line of any problem.
pub fn read_record(path: &Path) -> anyhow::Result<RunRecord> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines().enumerate();
    let header = match lines.next() {
        Some((_, l)) => serde_json::from_str::<Recorded>(l)
            .with_context(|| format!("{} line 1: not a run record header", path.display()))?,
        None => bail!("{}: empty", path.display()),
    };
    let Recorded::Header {
        omo_run: 1,
        scenario,
        hours,
    } = header
    else {
        bail!(
            "{} line 1: not a version 1 run record header",
            path.display()
        );
    };
    let mut actions = Vec::new();
    for (i, l) in lines {
        let r: Recorded = serde_json::from_str(l)
            .with_context(|| format!("{} line {}", path.display(), i + 1))?;
        if matches!(r, Recorded::Header { .. }) {
            bail!("{} line {}: a second header", path.display(), i + 1);
        }
        actions.push((i + 1, r));
    }
    Ok(RunRecord {
        scenario,
        hours,
        actions,
    })
}

/// What the run found, and whether the expectations held.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub report: String,
    pub failures: Vec<String>,
}

/// Runs the demo.
pub async fn run(opts: Options) -> anyhow::Result<Outcome> {
    let (_, end) = synth::window(&opts.scenario);
    if end - opts.scenario.run.start.timestamp_millis() < 3 * 3_600_000 {
        bail!("run.hours: the demo needs a day of at least 3 hours (first visits stop 2 hours before its end, so returns fit)");
    }
    let mut builder = tempfile::Builder::new();
    builder.prefix("omo-demo-");
    let dir = match &opts.logs {
        Some(parent) => {
            std::fs::create_dir_all(parent)?;
            builder.tempdir_in(parent)?
        }
        None => builder.tempdir()?,
    };
    let outcome = run_in(&opts, &dir).await;
    if opts.logs.is_some() {
        let kept = dir.keep();
        eprintln!("the processes' logs are in {}", kept.display());
        return outcome;
    }
    keep_on_error(dir, outcome)
}

async fn run_in(opts: &Options, dir: &tempfile::TempDir) -> anyhow::Result<Outcome> {
    let s = &opts.scenario;
    let shoppers = synth::shoppers(s);
    let mut sys = system::start(opts, dir.path(), &shoppers).await?;
    let driven = day::Day::new(opts, &shoppers, &mut sys)?.drive().await?;
    let outcome = report::report(
        s,
        &sys.api,
        (&shoppers, &sys.customer_of),
        synth::window(s),
        driven,
    )
    .await?;
    if opts.keep_running {
        println!("{}", outcome.report);
        eprintln!(
            "omo-sim demo: the cloud keeps running at {} (admin token {}, marketer token {}); Ctrl-C to stop. Logs: {}",
            sys.api.bases().collect::<Vec<_>>().join(" and "),
            sys.admin_token,
            sys.marketer_token,
            dir.path().display()
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    drop(sys);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::report::stays;
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_visit_entered_before_the_last_exit_is_a_piece_of_the_same_stay() {
        let key = |c: &str, s: &str| (c.to_owned(), s.to_owned());
        let spans = HashMap::from([
            // Split by late evidence (the second piece entered before the first's exit),
            // then a return after the exit, then one still open with a piece inside it.
            (
                key("c1", "shibuya"),
                vec![
                    (0, 900),
                    (600, 2_000),
                    (2_000, 2_500),
                    (3_000, i64::MAX),
                    (4_000, 4_100),
                ],
            ),
            // The same shopper at another store is another stay.
            (key("c1", "umeda"), vec![(100, 200)]),
            (key("c2", "shibuya"), vec![(0, 10)]),
        ]);
        assert_eq!(stays(spans), 5);
    }

    #[test]
    fn a_run_record_reads_back_and_names_its_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.ndjson");
        let lines = [
            Recorded::Header {
                omo_run: 1,
                scenario: crate::scenario::SATURDAY.to_owned(),
                hours: 3.0,
            },
            Recorded::Advert {
                at: 1,
                gateway: "shibuya-g1".into(),
                line: "x".into(),
            },
            Recorded::Redeem {
                at: 2,
                shopper: 7,
                amount: 12,
            },
            Recorded::Fault { at: 3, index: 0 },
        ];
        let text: Vec<String> = lines
            .iter()
            .map(|l| serde_json::to_string(l).unwrap())
            .collect();
        std::fs::write(&path, text.join("\n")).unwrap();
        let RunRecord {
            scenario,
            hours,
            actions,
        } = read_record(&path).unwrap();
        assert_eq!(scenario, crate::scenario::SATURDAY);
        assert_eq!(hours, 3.0);
        let (numbers, read): (Vec<usize>, Vec<Recorded>) = actions.into_iter().unzip();
        assert_eq!(numbers, [2, 3, 4]);
        assert_eq!(read, lines[1..]);

        std::fs::write(
            &path,
            format!("{}\n{{\"kind\":\"advert\",\"at\":1}}", text[0]),
        )
        .unwrap();
        let e = format!("{:#}", read_record(&path).unwrap_err());
        assert!(e.contains("line 2"), "{e}");
        std::fs::write(&path, &text[1]).unwrap();
        let e = format!("{:#}", read_record(&path).unwrap_err());
        assert!(e.contains("line 1"), "{e}");
        std::fs::write(&path, format!("{}\n{}", text[0], text[0])).unwrap();
        let e = format!("{:#}", read_record(&path).unwrap_err());
        assert!(e.contains("line 2: a second header"), "{e}");
    }
}
