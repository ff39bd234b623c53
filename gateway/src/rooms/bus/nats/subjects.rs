//! Names on the NATS bus: which namespace and room names are valid, the subject prefix and
//! its stream-name form, and the escaping of names into KV keys.

use super::*;

/// Whether `name` may be used as a namespace or room name on the NATS bus: 1 to
/// [`MAX_NAME_LEN`] characters of `[A-Za-z0-9:_@+=-]` (no `.`, which separates subject tokens,
/// and no wildcards or whitespace).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(switchboard_config::room::room_char)
}

pub(super) fn check_ns(ns: &str) -> Result<(), BusError> {
    if valid_name(ns) {
        Ok(())
    } else {
        Err(BusError::Other(format!(
            "namespace {ns:?} is not usable on NATS: use 1-{MAX_NAME_LEN} characters of [A-Za-z0-9:_@+=-]"
        )))
    }
}

pub(super) fn check_key(key: &RoomKey) -> Result<(), BusError> {
    check_ns(&key.namespace)?;
    if valid_name(&key.room) {
        Ok(())
    } else {
        Err(BusError::Other(format!(
            "room {:?} is not usable on NATS: use 1-{MAX_NAME_LEN} characters of [A-Za-z0-9:_@+=-]",
            key.room
        )))
    }
}

/// Whether `prefix` is usable as a subject prefix: dot-separated tokens of `[A-Za-z0-9_-]`.
pub(super) fn valid_prefix(prefix: &str) -> bool {
    prefix.split('.').all(|t| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// Stream-name form of the subject prefix: upper case, `.` -> `_` (`switchboard` ->
/// `SWITCHBOARD`, `sb.prod` -> `SB_PROD`).
pub(super) fn stream_prefix(prefix: &str) -> String {
    prefix.to_ascii_uppercase().replace('.', "_")
}

/// KV keys allow `[-/_=.A-Za-z0-9]`; names and connection ids are escaped into that set
/// injectively: `[A-Za-z0-9_-]` stay, every other byte becomes `=XX` (upper-case hex), so
/// `lobby:1` is `lobby=3A1`.
pub(super) fn kv_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}
