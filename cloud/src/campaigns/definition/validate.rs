//! A campaign's problems, by field, in the order a marketer reads the definition: its id and
//! name, trigger, places, audience, schedule, limits, channels and variants.

use std::collections::BTreeSet;

use super::{
    is_id, Campaign, FieldProblem, Schedule, Template, Trigger, Variant, TEMPLATE_VARIABLES,
};

impl Campaign {
    /// Every problem, with its field. `milestones` are the cloud's dwell milestones.
    pub fn validate(&self, milestones: &[u32]) -> Result<(), Vec<FieldProblem>> {
        let mut p = Problems::default();
        if !is_id(&self.id) {
            p.bad(
                "id",
                "must be 1..=64 letters, digits, '-', '_' or '.'".into(),
            );
        }
        if self.name.trim().is_empty() {
            p.bad("name", "must not be empty".into());
        }
        self.trigger_problems(milestones, &mut p);
        self.places_problems(&mut p);
        for t in &self.audience.tiers {
            if !crate::profiles::is_name(t) {
                p.bad("audience.tiers", format!("{t:?} is not a tier name"));
            }
        }
        self.schedule.problems(&mut p);
        self.limits_problems(&mut p);
        if self.channels.is_empty() {
            p.bad("channels", "name at least one channel".into());
        }
        if self.channels.iter().collect::<BTreeSet<_>>().len() != self.channels.len() {
            p.bad("channels", "names a channel twice".into());
        }
        if self.variants.is_empty() {
            p.bad("variants", "need at least one variant".into());
        }
        let mut ids = BTreeSet::new();
        for (i, v) in self.variants.iter().enumerate() {
            if !ids.insert(&v.id) {
                p.bad(
                    &format!("variants[{i}].id"),
                    format!("{:?} is used twice", v.id),
                );
            }
            v.problems(i, &mut p);
        }
        if self.holdout_percent > 50 {
            p.bad("holdout_percent", "must be within 0..=50".into());
        }
        if !(1..=90).contains(&self.attribution_days) {
            p.bad("attribution_days", "must be within 1..=90".into());
        }
        if p.0.is_empty() {
            Ok(())
        } else {
            Err(p.0)
        }
    }

    fn trigger_problems(&self, milestones: &[u32], p: &mut Problems) {
        match self.trigger {
            Trigger::Dwell { minutes } if !milestones.contains(&minutes) => {
                p.bad(
                    "trigger.minutes",
                    format!("{minutes} is not one of the dwell milestones {milestones:?}"),
                );
            }
            Trigger::NthVisit { n, within_days } => {
                if n < 2 {
                    p.bad(
                        "trigger.n",
                        "must be at least 2 (use enter for the first visit)".into(),
                    );
                }
                if within_days == 0 || within_days > 365 {
                    p.bad("trigger.within_days", "must be within 1..=365".into());
                }
            }
            Trigger::Purchase {
                channel,
                ref category,
                min_total,
            } => {
                self.purchase_problems(channel, (category, min_total), p);
            }
            _ => {}
        }
    }

    /// A purchase trigger's problems: its category and least total, and the places a
    /// purchase of its channel can happen at.
    fn purchase_problems(
        &self,
        channel: Option<crate::vocab::SaleChannel>,
        (category, min_total): (&Option<String>, Option<f64>),
        p: &mut Problems,
    ) {
        if category
            .as_ref()
            .is_some_and(|c| c.is_empty() || c.len() > 64)
        {
            p.bad("trigger.category", "must be 1..=64 characters".into());
        }
        if min_total.is_some_and(|m| !m.is_finite() || m < 0.0) {
            p.bad(
                "trigger.min_total",
                "must be an amount of at least 0".into(),
            );
        }
        if !self.places.zones.is_empty() {
            p.bad(
                "places.zones",
                "a purchase happens at a store or online, not in a zone".into(),
            );
        }
        use crate::vocab::SaleChannel as Bought;
        if channel == Some(Bought::Store) && self.places.stores.is_empty() {
            p.bad(
                "places.stores",
                "name the stores whose purchases trigger it".into(),
            );
        }
        if channel == Some(Bought::Online) && !self.places.online {
            p.bad(
                "places.online",
                "must be true for a trigger on online purchases".into(),
            );
        }
        if channel == Some(Bought::Online) && !self.places.stores.is_empty() {
            p.bad(
                "places.stores",
                "online purchases happen at no store".into(),
            );
        }
        if channel == Some(Bought::Store) && self.places.online {
            p.bad("places.online", "store purchases happen at stores".into());
        }
        if self.places.online && self.schedule.time_zone.is_none() {
            p.bad(
                "schedule.time_zone",
                "an online campaign has no store time zone: name one".into(),
            );
        }
    }

    fn places_problems(&self, p: &mut Problems) {
        if self.places.online && !matches!(self.trigger, Trigger::Purchase { .. }) {
            p.bad(
                "places.online",
                "only a purchase trigger happens online (visits are in stores)".into(),
            );
        }
        if self.places.zones.is_empty() && self.places.stores.is_empty() && !self.places.online {
            p.bad("places", "name at least one zone or store".into());
        }
    }

    /// Quiet hours, caps, budget and the offer's lifetime.
    fn limits_problems(&self, p: &mut Problems) {
        if let Some(q) = self.quiet_hours {
            if q.from == q.to {
                p.bad("quiet_hours", "from equals to: an empty window".into());
            }
        }
        if self.caps.per_customer == 0 {
            p.bad(
                "caps.per_customer",
                "a cap of zero would never send; pause the campaign instead".into(),
            );
        }
        if self.caps.period_days == 0 {
            p.bad("caps.period_days", "must be at least 1".into());
        }
        if self.caps.per_customer_daily_all == Some(0) {
            p.bad(
                "caps.per_customer_daily_all",
                "a cap of zero would never send".into(),
            );
        }
        if self.budget == 0 {
            p.bad("budget", "a budget of zero would never send".into());
        }
        if self.offer_ttl_minutes == 0 || self.offer_ttl_minutes > 23 * 60 {
            p.bad(
                "offer_ttl_minutes",
                "must be within 1..=1380 (deliveries expire within 23 h)".into(),
            );
        }
    }
}

/// The problems found so far, in the order they were found.
#[derive(Default)]
struct Problems(Vec<FieldProblem>);

impl Problems {
    fn bad(&mut self, field: &str, message: String) {
        self.0.push(FieldProblem {
            field: field.to_owned(),
            message,
        });
    }
}

impl Schedule {
    fn problems(&self, p: &mut Problems) {
        let s = self;
        if s.to < s.from {
            p.bad(
                "schedule.to",
                format!("{} is before schedule.from {}", s.to, s.from),
            );
        }
        if s.days.is_empty() {
            p.bad(
                "schedule.days",
                "is empty: the campaign could never run".into(),
            );
        }
        if let Some(h) = s.hours {
            if h.from == h.to {
                p.bad("schedule.hours", "from equals to: an empty window".into());
            }
        }
        if let Some(tz) = &s.time_zone {
            if crate::vocab::time_zone(tz).is_none() {
                p.bad(
                    "schedule.time_zone",
                    format!("{tz:?} is not an IANA time zone such as Asia/Tokyo"),
                );
            }
        }
    }
}

impl Variant {
    /// The problems of variant `i` (its id's uniqueness apart).
    fn problems(&self, i: usize, p: &mut Problems) {
        let v = self;
        // Variant ids name report groups and key segments; "holdout" is the control's.
        if !is_id(&v.id) || v.id == "holdout" {
            p.bad(
                &format!("variants[{i}].id"),
                "must be 1..=64 letters, digits, '-', '_' or '.', and not \"holdout\"".into(),
            );
        }
        if v.weight == 0 {
            p.bad(
                &format!("variants[{i}].weight"),
                "must be at least 1".into(),
            );
        }
        self.template
            .problems(&format!("variants[{i}].template"), p);
    }
}

impl Template {
    /// The problems of a template at `at` (`variants[i].template`).
    fn problems(&self, at: &str, p: &mut Problems) {
        if self.text.trim().is_empty() || self.text.chars().count() > 5000 {
            p.bad(&format!("{at}.text"), "must be 1..=5000 characters".into());
        }
        if self
            .flex
            .as_ref()
            .is_some_and(|f| !f.is_object() || f.get("type").is_none())
        {
            p.bad(
                &format!("{at}.flex"),
                "must be a flex container: an object with a \"type\" (bubble or carousel)".into(),
            );
        }
        if let Some(link) = &self.link {
            let ok = link.len() <= 2048
                && (link.starts_with("https://") || link.starts_with("http://"))
                && link.parse::<axum::http::Uri>().is_ok();
            if !ok {
                p.bad(
                    &format!("{at}.link"),
                    "must be an http:// or https:// URL of at most 2048 bytes".into(),
                );
            }
        }
        let fields =
            std::iter::once(("text".to_owned(), self.variables())).chain(self.flex_variables());
        for (field, vars) in fields {
            let field = format!("{at}.{field}");
            match vars {
                Err(e) => p.bad(&field, e),
                Ok(vars) => {
                    for var in vars {
                        if !TEMPLATE_VARIABLES.contains(&var.as_str()) {
                            p.bad(&field, format!("names an unknown variable {{{var}}}; known: {TEMPLATE_VARIABLES:?}"));
                        } else if var == "link" && self.link.is_none() {
                            p.bad(&field, "names {link} but the template has no link".into());
                        }
                    }
                }
            }
        }
    }
}
