//! Live figures for the operator's overview (`GET /v1/admin/overview` and the dashboard):
//! events per second by source, the visits open now, and the last alerts — gateway offline,
//! outbox dropping, LINE answering 429 in a storm, push tokens invalidated. Held in memory by
//! the process (they describe the process's recent past; the durable counts are in the store),
//! fed by ingest, the visit stage and the delivery worker.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// Seconds of per-second buckets kept.
const WINDOW_S: usize = 60;
/// Events per second are averaged over this many whole seconds.
const RATE_OVER_S: u64 = 10;
/// Alerts kept (the newest first on the page).
const MAX_ALERTS: usize = 100;
/// LINE answering 429 this many times within [`STORM_WINDOW_MS`] is a storm.
const STORM_429S: usize = 5;
const STORM_WINDOW_MS: i64 = 60_000;
/// One alert per storm, gap or outbox at most this often.
const REPEAT_AFTER_MS: i64 = 5 * 60_000;

/// The sources events are counted under.
pub const SOURCES: [&str; 5] = ["gateway", "app", "line", "qr", "purchase"];

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    GatewayOffline,
    OutboxDropping,
    #[serde(rename = "line_429_storm")]
    Line429Storm,
    PushTokensInvalidated,
}

/// One alert: when (the cloud's clock), what, about what (a gateway id or a channel: never a
/// person), and a sentence for the operator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub at: Option<omo_device_config::Timestamp>,
    pub kind: AlertKind,
    pub subject: String,
    pub message: String,
    /// The alert's figure, if it has one: events dropped, 429 answers, push tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// Every live figure (shared as `Arc<Live>`).
#[derive(Debug)]
pub struct Live {
    started: Instant,
    events: Mutex<Buckets>,
    open_visits: AtomicU64,
    alerts: Mutex<Alerts>,
}

#[derive(Debug, Default)]
struct Buckets {
    /// (second since start, counts by source index), oldest first.
    seconds: VecDeque<(u64, [u64; SOURCES.len()])>,
}

#[derive(Debug, Default)]
struct Alerts {
    list: VecDeque<Alert>,
    /// Recent LINE 429 answers (cloud ms).
    line_429s: VecDeque<i64>,
    /// When each (kind, subject) was last alerted (cloud ms).
    last: BTreeMap<(u8, String), i64>,
    /// Each gateway's last reported dropped count.
    dropped: BTreeMap<String, u64>,
}

impl Default for Live {
    fn default() -> Live {
        Live::new()
    }
}

impl Live {
    pub fn new() -> Live {
        Live {
            started: Instant::now(),
            events: Mutex::new(Buckets::default()),
            open_visits: AtomicU64::new(0),
            alerts: Mutex::new(Alerts::default()),
        }
    }

    fn second(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Counts `n` events from `source` (one of [`SOURCES`]; others are not shown).
    pub fn events(&self, source: &str, n: u64) {
        let Some(i) = SOURCES.iter().position(|s| *s == source) else {
            return;
        };
        let now = self.second();
        let mut b = self.events.lock().expect("live events lock");
        b.add(now, i, n);
    }

    /// Events per second by source over the last whole seconds.
    pub fn events_per_s(&self) -> BTreeMap<&'static str, f64> {
        let now = self.second();
        let b = self.events.lock().expect("live events lock");
        b.rates(now)
    }

    /// The visits open now (set by the visit stage after each batch).
    pub fn set_open_visits(&self, n: u64) {
        self.open_visits.store(n, Ordering::Relaxed);
    }

    pub fn open_visits(&self) -> u64 {
        self.open_visits.load(Ordering::Relaxed)
    }

    /// The newest alerts first, at most `n`.
    pub fn alerts(&self, n: usize) -> Vec<Alert> {
        let a = self.alerts.lock().expect("live alerts lock");
        a.list.iter().rev().take(n).cloned().collect()
    }

    /// A gateway went offline (its last will or a clean stop's heartbeat).
    pub fn gateway_offline(&self, gateway: &str, now_ms: i64) {
        let mut a = self.alerts.lock().expect("live alerts lock");
        a.push(
            now_ms,
            AlertKind::GatewayOffline,
            gateway,
            format!("gateway {gateway} went offline"),
            None,
        );
    }

    /// A heartbeat reported `dropped` events dropped since its outbox was created: an alert
    /// when the count grew (at most once per [`REPEAT_AFTER_MS`] a gateway).
    pub fn outbox_dropped(&self, gateway: &str, dropped: u64, now_ms: i64) {
        let mut a = self.alerts.lock().expect("live alerts lock");
        let before = a.dropped.insert(gateway.to_owned(), dropped);
        // A fresh outbox (a new epoch) counts from zero again: only a rise is news.
        if dropped > before.unwrap_or(0) && a.due(AlertKind::OutboxDropping, gateway, now_ms) {
            let since = before.map_or(String::new(), |b| {
                format!(" ({} since the last report)", dropped - b)
            });
            a.push(
                now_ms,
                AlertKind::OutboxDropping,
                gateway,
                format!("gateway {gateway}'s outbox is full and dropping events: {dropped} dropped{since}"),
                Some(dropped),
            );
        }
    }

    /// LINE answered 429 to a push: a storm when it happens often within a minute.
    pub fn line_429(&self, now_ms: i64) {
        let mut a = self.alerts.lock().expect("live alerts lock");
        a.line_429s.push_back(now_ms);
        while a
            .line_429s
            .front()
            .is_some_and(|t| *t <= now_ms - STORM_WINDOW_MS)
        {
            a.line_429s.pop_front();
        }
        let n = a.line_429s.len();
        if n >= STORM_429S && a.due(AlertKind::Line429Storm, "line", now_ms) {
            a.push(
                now_ms,
                AlertKind::Line429Storm,
                "line",
                format!("LINE answered 429 (too many requests) {n} times in the last minute; deliveries back off and retry"),
                Some(n as u64),
            );
        }
    }

    /// FCM reported `n` push tokens unregistered (the installs' tokens are invalidated).
    pub fn push_tokens_invalidated(&self, n: usize, now_ms: i64) {
        if n == 0 {
            return;
        }
        let mut a = self.alerts.lock().expect("live alerts lock");
        let s = if n == 1 { "" } else { "s" };
        a.push(
            now_ms,
            AlertKind::PushTokensInvalidated,
            "push",
            format!("FCM reported {n} push token{s} unregistered; the install{s} will get no push until the app sends a new token"),
            Some(n as u64),
        );
    }
}

impl Buckets {
    fn add(&mut self, second: u64, source: usize, n: u64) {
        match self.seconds.back_mut() {
            Some((s, counts)) if *s == second => counts[source] += n,
            _ => {
                let mut counts = [0; SOURCES.len()];
                counts[source] = n;
                self.seconds.push_back((second, counts));
            }
        }
        while self
            .seconds
            .front()
            .is_some_and(|(s, _)| *s + WINDOW_S as u64 <= second)
        {
            self.seconds.pop_front();
        }
    }

    /// The mean over the `RATE_OVER_S` whole seconds before `now` (the current second is not
    /// over yet).
    fn rates(&self, now: u64) -> BTreeMap<&'static str, f64> {
        let from = now.saturating_sub(RATE_OVER_S);
        let mut sums = [0u64; SOURCES.len()];
        for (s, counts) in &self.seconds {
            if *s >= from && *s < now {
                for (sum, c) in sums.iter_mut().zip(counts) {
                    *sum += c;
                }
            }
        }
        let span = (now - from).max(1) as f64;
        SOURCES
            .iter()
            .zip(sums)
            .map(|(name, sum)| (*name, sum as f64 / span))
            .collect()
    }
}

impl Alerts {
    fn due(&self, kind: AlertKind, subject: &str, now_ms: i64) -> bool {
        self.last
            .get(&(kind as u8, subject.to_owned()))
            .is_none_or(|t| now_ms - t >= REPEAT_AFTER_MS)
    }

    fn push(
        &mut self,
        now_ms: i64,
        kind: AlertKind,
        subject: &str,
        message: String,
        count: Option<u64>,
    ) {
        self.last.insert((kind as u8, subject.to_owned()), now_ms);
        self.list.push_back(Alert {
            at: omo_device_config::Timestamp::from_millis(now_ms),
            kind,
            subject: subject.to_owned(),
            message,
            count,
        });
        while self.list.len() > MAX_ALERTS {
            self.list.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_average_whole_seconds_by_source() {
        let mut b = Buckets::default();
        for s in 0..20 {
            b.add(s, 0, 10);
            b.add(s, 2, 1);
        }
        b.add(20, 0, 1000); // the second still running is not counted
        let r = b.rates(20);
        assert_eq!(r["gateway"], 10.0);
        assert_eq!(r["line"], 1.0);
        assert_eq!(r["app"], 0.0);
        // Old seconds fall out of the window.
        b.add(100, 1, 5);
        assert_eq!(b.seconds.len(), 1);
        assert_eq!(b.rates(101)["app"], 0.5);
    }

    #[test]
    fn a_storm_is_alerted_once_and_again_after_a_while() {
        let live = Live::new();
        for i in 0..20 {
            live.line_429(i * 1000);
        }
        let storms = |l: &Live| {
            l.alerts(100)
                .iter()
                .filter(|a| a.kind == AlertKind::Line429Storm)
                .count()
        };
        assert_eq!(storms(&live), 1);
        assert_eq!(
            serde_json::to_value(AlertKind::Line429Storm).unwrap(),
            "line_429_storm"
        );
        // Spread out, 429s are no storm.
        for i in 0..20 {
            live.line_429(1_000_000 + i * 30_000);
        }
        assert_eq!(storms(&live), 1);
        for i in 0..5 {
            live.line_429(2_000_000 + i);
        }
        assert_eq!(storms(&live), 2);
    }

    #[test]
    fn only_a_rising_dropped_count_is_alerted() {
        let live = Live::new();
        live.outbox_dropped("g1", 0, 0);
        live.outbox_dropped("g1", 5, 1000);
        live.outbox_dropped("g1", 5, 400_000);
        live.outbox_dropped("g1", 9, 401_000);
        live.outbox_dropped("g2", 3, 401_000);
        let a = live.alerts(10);
        assert_eq!(a.len(), 3, "{a:?}");
        assert_eq!(a[0].subject, "g2");
        assert!(
            a[1].message.contains("9 dropped (4 since"),
            "{}",
            a[1].message
        );
    }

    #[test]
    fn alerts_are_bounded_and_newest_first() {
        let live = Live::new();
        for i in 0..150 {
            live.gateway_offline(&format!("g{i}"), i);
        }
        let a = live.alerts(1000);
        assert_eq!(a.len(), MAX_ALERTS);
        assert_eq!(a[0].subject, "g149");
    }
}
