//! The dashboard's words, in Japanese and English: every sentence, label and unit a page shows
//! comes from the catalogs `cloud/locales/{en,ja}.json` (one key each, the same keys in both,
//! checked by the tests below), and every number, yen amount, date and time is formatted here
//! for the reader's language and the store's time zone.
//!
//! The language is the `omo_lang` cookie's (set by the switch in every page's header), else
//! the first of the browser's `Accept-Language` we have, else English. A key missing from the
//! catalog renders as `⟦key⟧`, which the browser tests look for on every page.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::OnceLock;

use axum::http::{header, HeaderMap};
use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;
use omo_device_config::Timestamp;

/// The cookie holding the reader's choice of language.
pub const LANG_COOKIE: &str = "omo_lang";

/// A language the dashboard is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Ja,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::Ja, Lang::En];

    /// Its BCP 47 code, as `<html lang>` and the cookie spell it.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ja => "ja",
        }
    }

    /// Its name in itself, for the switch.
    pub fn own_name(self) -> &'static str {
        match self {
            Lang::En => "English",
            Lang::Ja => "日本語",
        }
    }

    pub fn from_code(code: &str) -> Option<Lang> {
        let primary = code.trim().split(['-', '_']).next()?;
        match primary.to_ascii_lowercase().as_str() {
            "en" => Some(Lang::En),
            "ja" => Some(Lang::Ja),
            _ => None,
        }
    }

    /// The reader's language: the cookie's, else the browser's first we have, else English.
    pub fn of_request(headers: &HeaderMap) -> Lang {
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix(LANG_COOKIE)?.strip_prefix('='))
            .and_then(Lang::from_code);
        cookie
            .or_else(|| {
                headers
                    .get(header::ACCEPT_LANGUAGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(Lang::from_accept_language)
            })
            .unwrap_or(Lang::En)
    }

    /// The first language of an `Accept-Language` list (by its `q`) that we have.
    pub fn from_accept_language(value: &str) -> Option<Lang> {
        let mut best: Option<(f32, Lang)> = None;
        for item in value.split(',') {
            let mut parts = item.split(';');
            let Some(lang) = parts.next().and_then(Lang::from_code) else {
                continue;
            };
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q=")?.parse::<f32>().ok())
                .unwrap_or(1.0);
            if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
                best = Some((q, lang));
            }
        }
        best.map(|(_, l)| l)
    }
}

/// A catalog: key → text.
type Catalog = BTreeMap<String, String>;

fn parse(name: &str, text: &str) -> Catalog {
    // The catalogs are compiled in and checked by the tests: a broken one is a build defect,
    // and the page then shows its keys rather than failing.
    serde_json::from_str(text).unwrap_or_else(|e| {
        tracing::error!("locales/{name}.json: {e}");
        Catalog::new()
    })
}

fn catalog(lang: Lang) -> &'static Catalog {
    static EN: OnceLock<Catalog> = OnceLock::new();
    static JA: OnceLock<Catalog> = OnceLock::new();
    match lang {
        Lang::En => EN.get_or_init(|| parse("en", include_str!("../../../locales/en.json"))),
        Lang::Ja => JA.get_or_init(|| parse("ja", include_str!("../../../locales/ja.json"))),
    }
}

/// A page's words: its reader's language and the time zone its times are shown in.
#[derive(Debug, Clone, Copy)]
pub struct Words {
    pub lang: Lang,
    pub tz: Tz,
}

impl Words {
    pub fn new(lang: Lang, tz: Tz) -> Words {
        Words { lang, tz }
    }

    /// The same reader, with times in `tz` (a store's page).
    pub fn in_zone(self, tz: Tz) -> Words {
        Words { tz, ..self }
    }

    pub fn code(&self) -> &'static str {
        self.lang.code()
    }

    /// The text of `key`.
    pub fn s(&self, key: &str) -> String {
        match catalog(self.lang).get(key) {
            Some(t) => t.clone(),
            None => format!("⟦{key}⟧"),
        }
    }

    /// The text of `key` with `{0}`, `{1}`, … filled from `args`.
    pub fn f(&self, key: &str, args: &[&dyn Display]) -> String {
        let mut t = self.s(key);
        for (i, a) in args.iter().enumerate() {
            t = t.replace(&format!("{{{i}}}"), &a.to_string());
        }
        t
    }

    /// `key.one` or `key.other` for `n` (Japanese has one form: both keys hold it), with `{n}`
    /// the number formatted.
    pub fn n(&self, key: &str, n: u64) -> String {
        let form = if n == 1 && self.lang == Lang::En {
            "one"
        } else {
            "other"
        };
        self.s(&format!("{key}.{form}"))
            .replace("{n}", &self.int(n))
    }

    /// A whole number with thousands separators.
    pub fn int(&self, n: u64) -> String {
        let digits = n.to_string();
        let mut out = String::with_capacity(digits.len() + digits.len() / 3);
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    }

    /// A signed whole number with separators.
    pub fn signed(&self, n: i64) -> String {
        let sign = if n < 0 { "-" } else { "" };
        format!("{sign}{}", self.int(n.unsigned_abs()))
    }

    /// An amount in yen.
    pub fn yen(&self, n: i64) -> String {
        let sign = if n < 0 { "-" } else { "" };
        format!("{sign}¥{}", self.int(n.unsigned_abs()))
    }

    /// Amounts by currency, as one line: yen as yen, others with their code; nothing as ¥0.
    pub fn amounts<'a>(&self, by_currency: impl IntoIterator<Item = (&'a String, f64)>) -> String {
        let shown: Vec<String> = by_currency
            .into_iter()
            .filter(|(_, v)| *v != 0.0)
            .map(|(c, v)| match c.as_str() {
                "JPY" => self.yen(v.round() as i64),
                other => format!("{v:.2} {other}"),
            })
            .collect();
        if shown.is_empty() {
            self.yen(0)
        } else {
            shown.join(" + ")
        }
    }

    /// A share as a percentage with one decimal.
    pub fn percent(&self, fraction: f64) -> String {
        if fraction.is_finite() {
            format!("{:.1}%", fraction * 100.0)
        } else {
            "—".into()
        }
    }

    fn local(&self, t: &Timestamp) -> DateTime<Tz> {
        t.datetime().with_timezone(&self.tz)
    }

    /// A date and time in the page's time zone.
    pub fn time(&self, t: &Timestamp) -> String {
        let l = self.local(t);
        format!("{} {:02}:{:02}", self.date_of(&l), l.hour(), l.minute())
    }

    /// An optional time (a dash when there is none).
    pub fn time_or_dash(&self, t: Option<&Timestamp>) -> String {
        t.map_or_else(|| "—".into(), |t| self.time(t))
    }

    /// The time of day only (HH:MM) in the page's time zone.
    pub fn clock(&self, t: &Timestamp) -> String {
        let l = self.local(t);
        format!("{:02}:{:02}", l.hour(), l.minute())
    }

    /// A date in the page's time zone.
    pub fn date(&self, t: &Timestamp) -> String {
        self.date_of(&self.local(t))
    }

    fn date_of<T: Datelike>(&self, d: &T) -> String {
        match self.lang {
            Lang::Ja => format!("{}年{}月{}日", d.year(), d.month(), d.day()),
            Lang::En => {
                let month = self.s(&format!("month.{}", d.month()));
                format!("{} {month} {}", d.day(), d.year())
            }
        }
    }

    /// A span of seconds in minutes (or hours and minutes).
    pub fn minutes(&self, seconds: u64) -> String {
        let m = seconds / 60;
        if m < 60 {
            self.n("unit.minutes", m)
        } else {
            self.f(
                "unit.hours_minutes",
                &[&self.int(m / 60), &format!("{:02}", m % 60)],
            )
        }
    }

    /// The words the page's script needs (keys under `js.`, without it; the alerts and the
    /// months, with theirs), as JSON safe inside a `<script type="application/json">` block.
    pub fn script_words(&self) -> String {
        let words: BTreeMap<&str, &str> = catalog(self.lang)
            .iter()
            .filter_map(|(k, v)| {
                let key = k.strip_prefix("js.").or_else(|| {
                    (k.starts_with("alert.") || k.starts_with("month.")).then_some(k.as_str())
                })?;
                Some((key, v.as_str()))
            })
            .collect();
        serde_json::to_string(&words)
            .unwrap_or_else(|_| "{}".into())
            .replace('<', "\\u003c")
    }

    /// The time zone's name.
    pub fn zone_name(&self) -> &'static str {
        self.tz.name()
    }
}

/// Now as a timestamp (wall clock).
pub fn wall_now() -> Timestamp {
    Timestamp::new(Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn placeholders(t: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut rest = t;
        while let Some(i) = rest.find('{') {
            let Some(j) = rest[i..].find('}') else { break };
            out.insert(rest[i..i + j + 1].to_owned());
            rest = &rest[i + j + 1..];
        }
        out
    }

    #[test]
    fn both_catalogs_have_the_same_keys_and_placeholders_and_no_empty_text() {
        let en = catalog(Lang::En);
        let ja = catalog(Lang::Ja);
        assert!(en.len() > 50, "the English catalog parsed");
        let en_keys: BTreeSet<_> = en.keys().collect();
        let ja_keys: BTreeSet<_> = ja.keys().collect();
        let only_en: Vec<_> = en_keys.difference(&ja_keys).collect();
        let only_ja: Vec<_> = ja_keys.difference(&en_keys).collect();
        assert!(
            only_en.is_empty(),
            "not translated into Japanese: {only_en:?}"
        );
        assert!(
            only_ja.is_empty(),
            "not in the English catalog: {only_ja:?}"
        );
        for (k, e) in en {
            let j = &ja[k];
            assert!(!e.trim().is_empty() && !j.trim().is_empty(), "{k} is empty");
            assert_eq!(placeholders(e), placeholders(j), "{k}: placeholders differ");
        }
    }

    /// Every key the templates and the dashboard's code ask for is in the catalog.
    #[test]
    fn every_key_asked_for_is_in_the_catalog() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in ["templates", "src/http/dashboard"] {
            for e in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = e.unwrap().path();
                // This file's own tests ask for keys that are not there on purpose.
                if !path.ends_with("words.rs") {
                    files.push(path);
                }
            }
        }
        let en = catalog(Lang::En);
        let mut missing = Vec::new();
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            for call in ["t.s(\"", "t.f(\"", "t.n(\"", "w.s(\"", "w.f(\"", "w.n(\""] {
                for (i, _) in text.match_indices(call) {
                    let rest = &text[i + call.len()..];
                    let key = &rest[..rest.find('"').unwrap_or(0)];
                    let known = if call.contains(".n(") {
                        en.contains_key(&format!("{key}.one"))
                            && en.contains_key(&format!("{key}.other"))
                    } else {
                        en.contains_key(key)
                    };
                    if !known && !key.is_empty() {
                        missing.push(format!("{}: {key}", path.display()));
                    }
                }
            }
        }
        assert!(missing.is_empty(), "keys not in the catalog: {missing:#?}");
    }

    /// No template writes a word itself: text between tags, and the text of attributes people
    /// read, come from the catalog.
    #[test]
    fn templates_hold_no_untranslated_text() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let mut found = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let mut in_style = false;
            for (line_no, line) in text.lines().enumerate() {
                // A style sheet's words are CSS.
                in_style |= line.contains("<style>");
                if in_style {
                    in_style = !line.contains("</style>");
                    continue;
                }
                for word in literal_words(line) {
                    found.push(format!("{}:{}: {word}", path.display(), line_no + 1));
                }
            }
        }
        assert!(found.is_empty(), "words written in templates: {found:#?}");
    }

    #[test]
    fn the_template_check_finds_words_written_in_a_template() {
        assert_eq!(
            literal_words(r#"<p class="x">{{ t.s("a.b") }} Hello</p>"#),
            ["Hello"]
        );
        assert_eq!(
            literal_words(r#"<input placeholder="c_…" value="{{ q }}">"#),
            ["c"]
        );
        assert_eq!(
            literal_words(r#"<a title="{{ t.s("k") }}" href="/x">{{ n }}</a>"#),
            [] as [&str; 0]
        );
        assert_eq!(
            literal_words(r#"<code translate="no">GET /v1</code> {% if a %}"#),
            [] as [&str; 0]
        );
        assert_eq!(literal_words("{# a comment #} omo"), [] as [&str; 0]);
    }

    /// `line` without the contents of its elements marked `translate="no"` (ids, codes).
    fn without_untranslated(line: &str) -> String {
        let mut out = String::new();
        let mut rest = line;
        while let Some(i) = rest.find(" translate=\"no\"") {
            let open = rest[..i].rfind('<').unwrap_or(0);
            let name: String = rest[open + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            out.push_str(&rest[..open]);
            let close = format!("</{name}>");
            match rest[i..].find(&close) {
                Some(j) => rest = &rest[i + j + close.len()..],
                None => return out,
            }
        }
        out.push_str(rest);
        out
    }

    /// Words of `line` outside template expressions and tags, and inside the attributes people
    /// read (`placeholder`, `title`, `aria-label`, `alt`) when not an expression.
    fn literal_words(line: &str) -> Vec<String> {
        let mut text = String::new();
        let line = without_untranslated(line);
        let mut rest = line.as_str();
        // Drop template blocks first.
        while let Some(i) = rest.find(['{', '<']) {
            text.push_str(&rest[..i]);
            let close = match &rest[i..] {
                r if r.starts_with("{{") => "}}",
                r if r.starts_with("{%") => "%}",
                r if r.starts_with("{#") => "#}",
                r if r.starts_with('<') => ">",
                _ => {
                    text.push('{');
                    rest = &rest[i + 1..];
                    continue;
                }
            };
            let body = &rest[i..];
            let end = find_close(body, close).unwrap_or(body.len());
            if close == ">" {
                for attr in ["placeholder=\"", "title=\"", "aria-label=\"", "alt=\""] {
                    if let Some(a) = body[..end].find(attr) {
                        let v = &body[a + attr.len()..end];
                        let v = &v[..v.find('"').unwrap_or(v.len())];
                        if !v.starts_with("{{") {
                            text.push(' ');
                            text.push_str(v);
                        }
                    }
                }
            }
            rest = &body[(end + close.len()).min(body.len())..];
            text.push(' ');
        }
        text.push_str(rest);
        text.split(|c: char| !c.is_alphabetic())
            .filter(|w| !w.is_empty() && *w != "omo")
            .map(str::to_owned)
            .collect()
    }

    /// The end of a tag or a template block, skipping template blocks inside a tag.
    fn find_close(body: &str, close: &str) -> Option<usize> {
        if close != ">" {
            return body.find(close);
        }
        let mut i = 1;
        while i < body.len() {
            let r = &body[i..];
            if r.starts_with("{{") || r.starts_with("{%") {
                let end = if r.starts_with("{{") { "}}" } else { "%}" };
                i += r.find(end)? + 2;
            } else if r.starts_with('>') {
                return Some(i);
            } else {
                i += r.chars().next()?.len_utf8();
            }
        }
        None
    }

    #[test]
    fn the_language_is_the_cookies_else_the_browsers_else_english() {
        let mut h = HeaderMap::new();
        assert_eq!(Lang::of_request(&h), Lang::En);
        h.insert(
            header::ACCEPT_LANGUAGE,
            "fr-FR, ja;q=0.8, en;q=0.5".parse().unwrap(),
        );
        assert_eq!(Lang::of_request(&h), Lang::Ja);
        h.insert(header::COOKIE, "a=b; omo_lang=en".parse().unwrap());
        assert_eq!(Lang::of_request(&h), Lang::En);
        assert_eq!(Lang::from_accept_language("ja-JP"), Some(Lang::Ja));
        assert_eq!(Lang::from_accept_language("de, ja;q=0"), None);
        assert_eq!(Lang::from_accept_language(";;,,q=x"), None);
    }

    #[test]
    fn numbers_money_and_times_read_as_each_language_writes_them() {
        let tokyo = chrono_tz::Asia::Tokyo;
        let en = Words::new(Lang::En, tokyo);
        let ja = Words::new(Lang::Ja, tokyo);
        assert_eq!(en.int(0), "0");
        assert_eq!(en.int(1234567), "1,234,567");
        assert_eq!(ja.yen(-12345), "-¥12,345");
        let money = BTreeMap::from([("JPY".to_owned(), 1234.4), ("USD".to_owned(), 2.5)]);
        assert_eq!(
            en.amounts(money.iter().map(|(c, v)| (c, *v))),
            "¥1,234 + 2.50 USD"
        );
        assert_eq!(en.amounts(std::iter::empty()), "¥0");
        // 23:30 UTC on 6 December is 08:30 on the 7th in Tokyo.
        let t: Timestamp = serde_json::from_str("\"2026-12-06T23:30:00.000Z\"").unwrap();
        assert_eq!(en.time(&t), "7 Dec 2026 08:30");
        assert_eq!(ja.time(&t), "2026年12月7日 08:30");
        assert_eq!(en.n("unit.minutes", 1), "1 minute");
        assert_eq!(en.n("unit.minutes", 12), "12 minutes");
        assert_eq!(ja.n("unit.minutes", 12), "12分");
        assert_eq!(en.minutes(125 * 60), "2 h 05 min");
        assert_eq!(en.s("no.such.key"), "⟦no.such.key⟧");
        assert!(!en.script_words().contains('<'));
    }
}
