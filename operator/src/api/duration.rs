//! Durations as they are written in custom resources: Gateway API's `Duration` string
//! (`1h`, `30s`, `500ms`, `1m30s`), never a bare number whose unit a reader has to guess.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration as StdDuration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The schema pattern: one to four `<number><unit>` groups, units `h`, `m`, `s`, `ms`
/// (the same pattern as Gateway API's `Duration`).
pub const DURATION_PATTERN: &str = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$";

/// A duration string such as `10s` or `1m30s`. Parsed by [`Duration::parse`]; the schema
/// pattern refuses anything else at admission.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Duration(pub String);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a duration like `10s`, `1m30s` or `500ms` (units h, m, s, ms)")]
pub struct DurationError(pub String);

impl Duration {
    /// A duration string; not checked until [`Duration::parse`].
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// Parse `<number><unit>` groups (at most four, numbers of at most five digits).
    pub fn parse(&self) -> Result<StdDuration, DurationError> {
        parse(&self.0)
    }
}

impl From<&str> for Duration {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parse a Gateway-API-style duration string.
pub fn parse(text: &str) -> Result<StdDuration, DurationError> {
    let err = || DurationError(text.to_owned());
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return Err(err());
    }
    let mut total = StdDuration::ZERO;
    let mut i = 0;
    let mut groups = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &text[start..i];
        if digits.is_empty() || digits.len() > 5 {
            return Err(err());
        }
        // At most five ASCII digits: always fits in a u64.
        let n: u64 = digits.parse().map_err(|_| err())?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let part = match &text[unit_start..i] {
            "h" => StdDuration::from_secs(n * 3600),
            "m" => StdDuration::from_secs(n * 60),
            "s" => StdDuration::from_secs(n),
            "ms" => StdDuration::from_millis(n),
            _ => return Err(err()),
        };
        total += part;
        groups += 1;
        if groups > 4 {
            return Err(err());
        }
    }
    Ok(total)
}

/// Render a duration the way the schema accepts it (used in messages and defaults).
pub fn format(d: StdDuration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> u64 {
        parse(text).unwrap().as_secs()
    }

    #[test]
    fn single_units_parse_to_their_length() {
        assert_eq!(secs("10s"), 10);
        assert_eq!(secs("2m"), 120);
        assert_eq!(secs("1h"), 3600);
        assert_eq!(parse("250ms").unwrap().as_millis(), 250);
        assert_eq!(secs("0s"), 0);
    }

    #[test]
    fn groups_add_up() {
        assert_eq!(secs("1m30s"), 90);
        assert_eq!(secs("1h1m1s"), 3661);
        assert_eq!(parse("1s500ms").unwrap().as_millis(), 1500);
    }

    #[test]
    fn strings_the_schema_pattern_refuses_are_refused_here_too() {
        for bad in [
            "",
            "10",
            "s",
            "10 s",
            "1.5s",
            "-1s",
            "10sec",
            "1d",
            "123456s",
            "1s1s1s1s1s",
            "10S",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn format_writes_what_parse_reads() {
        for d in [0, 1, 59, 60, 61, 3600, 3661, 7322] {
            let d = StdDuration::from_secs(d);
            assert_eq!(parse(&format(d)).unwrap(), d);
        }
        assert_eq!(format(StdDuration::from_millis(1500)), "1500ms");
        assert_eq!(format(StdDuration::from_secs(90)), "1m30s");
    }
}
