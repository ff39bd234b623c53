//! Durations in the config (`10s`, `5m`, `1h 30m`; humantime), at most a century: each one is
//! added to a clock reading somewhere, and a larger one overflowed it (a drain deadline of
//! u64::MAX seconds passed `--check` and the gateway panicked on SIGTERM instead of draining).

use std::time::Duration;

use serde::{Deserializer, Serializer};

/// The longest duration the config takes.
pub const MAX: Duration = Duration::from_secs(3_155_760_000); // 100 humantime years of 365.25 days

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    humantime_serde::serialize(d, s)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let v: Duration = humantime_serde::deserialize(d)?;
    if v > MAX {
        return Err(serde::de::Error::custom(format!(
            "{}s is too long: durations are at most 100 years",
            v.as_secs()
        )));
    }
    Ok(v)
}
