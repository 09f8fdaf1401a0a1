//! The visit engine's timing, as `cloud.toml`'s `[visits]` section sets it, and its checks.

use serde::{Deserialize, Serialize};

/// The engine's timing (the `[visits]` section of `cloud.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VisitParams {
    /// Inside evidence must span this long before a visit is entered (walk-bys never are).
    pub enter_after_s: u32,
    /// A visit exits this long after its last inside evidence; longer than every gateway's
    /// stay interval, or a present customer would be exited between two stays.
    pub exit_timeout_s: u32,
    /// After evidence of being outside, the visit exits unless inside evidence comes within this.
    pub exit_grace_s: u32,
    /// Evidence is applied in event-time order once the log is this far past it.
    pub reorder_window_s: u32,
    /// A transition decided more than this after it happened is late (campaigns skip it).
    pub max_lateness_s: u32,
    /// Dwell milestones fired once each, minutes, ascending.
    pub dwell_milestones_min: [u32; 4],
    /// GPS fixes less accurate than this decide nothing (zone matching).
    pub max_gps_accuracy_m: f64,
    /// An app report listing at least this many beacons, none of a beacon zone's, is evidence
    /// of being outside that zone (0: an app's beacon list is never outside evidence).
    pub beacon_outside_min_others: u32,
}

impl VisitParams {
    /// Every problem, by key under `prefix`; `max_stay_interval_s` is the longest stay interval
    /// any gateway uses.
    pub fn problems(&self, prefix: &str, max_stay_interval_s: u32) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let mut check = |ok: bool, key: &str, message: String| {
            if !ok {
                p.push((format!("{prefix}.{key}"), message));
            }
        };
        check(
            self.exit_timeout_s > max_stay_interval_s,
            "exit_timeout_s",
            format!(
                "{} s must be longer than the gateways' stay interval ({max_stay_interval_s} s)",
                self.exit_timeout_s
            ),
        );
        check(
            self.enter_after_s < self.exit_timeout_s,
            "enter_after_s",
            "must be shorter than exit_timeout_s".into(),
        );
        check(
            (1..=300).contains(&self.reorder_window_s),
            "reorder_window_s",
            "must be within 1..=300".into(),
        );
        check(
            self.max_lateness_s > 0,
            "max_lateness_s",
            "must be at least 1".into(),
        );
        check(
            self.dwell_milestones_min.windows(2).all(|w| w[0] < w[1])
                && self.dwell_milestones_min[0] > 0,
            "dwell_milestones_min",
            "must be four ascending numbers of minutes".into(),
        );
        check(
            self.max_gps_accuracy_m.is_finite() && self.max_gps_accuracy_m > 0.0,
            "max_gps_accuracy_m",
            "must be a positive number of metres".into(),
        );
        p
    }
}

impl VisitParams {
    /// What zone matching takes from these.
    pub fn match_rules(&self) -> crate::zones::MatchRules {
        crate::zones::MatchRules {
            max_gps_accuracy_m: self.max_gps_accuracy_m,
            beacon_outside_min_others: self.beacon_outside_min_others,
        }
    }
}

impl Default for VisitParams {
    fn default() -> VisitParams {
        VisitParams {
            enter_after_s: 20,
            exit_timeout_s: 300,
            exit_grace_s: 90,
            reorder_window_s: 10,
            max_lateness_s: 600,
            dwell_milestones_min: [5, 10, 20, 30],
            max_gps_accuracy_m: 100.0,
            beacon_outside_min_others: 1,
        }
    }
}
