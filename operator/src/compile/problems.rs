//! The problem list every compile step writes to, and the wire-format builder that reports
//! into it. Below every other file of `compile`: it imports none of them.

use std::time::Duration as StdDuration;

use crate::api::Duration;

/// Collects problems as `path: message` lines.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<String>);

impl Problems {
    pub(super) fn push(&mut self, path: impl AsRef<str>, message: impl AsRef<str>) {
        self.0
            .push(format!("{}: {}", path.as_ref(), message.as_ref()));
    }

    pub(super) fn duration(&mut self, path: &str, d: &Option<Duration>) -> Option<StdDuration> {
        let d = d.as_ref()?;
        match d.parse() {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(path, e.to_string());
                None
            }
        }
    }

    pub(super) fn positive_u32(&mut self, path: &str, v: Option<i32>) -> Option<u32> {
        let v = v?;
        match u32::try_from(v) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                self.push(path, format!("must be at least 1, got {v}"));
                None
            }
        }
    }
}

/// Build a config type from its wire format so the config crate's defaults apply.
pub(super) fn from_wire<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    what: &str,
    p: &mut Problems,
) -> Option<T> {
    match serde_json::from_value(value) {
        Ok(v) => Some(v),
        Err(e) => {
            p.push(
                what,
                format!("cannot be expressed in the gateway config: {e}"),
            );
            None
        }
    }
}
