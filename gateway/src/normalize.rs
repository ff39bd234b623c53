//! One view of the request for the gateway and the app: the request-target path is normalized
//! *before* routing, and the normalized path is what the route, the token check and the app
//! all see. Pure functions, no I/O.
//!
//! The path steps live in the config crate ([`switchboard_config::path`]), so that a route's
//! path is checked at load against what requests can be after normalization. Steps, in order
//! (documented in `docs/config.md`, "Path normalization"):
//! 1. Percent-encodings are checked (`%` + two hex digits, else 400); an encoding of an
//!    unreserved character (RFC 3986 §2.3: `A-Z a-z 0-9 - . _ ~`) is decoded (§6.2.2.2), every
//!    other encoding is kept with uppercase hex digits (§6.2.2.1).
//! 2. Encoded slashes (`%2F`), encoded backslashes (`%5C`) and raw backslashes follow the
//!    listener's [`EscapedSlashes`] action: refused (the default), kept as `%2F` / `%5C` (never a
//!    segment separator), or turned into `/` before the dot segments are resolved.
//! 3. With `mergeSlashes` (the default) runs of `/` become one.
//! 4. A dot segment carrying a path parameter (`..;x`, `.;`: Tomcat and Jetty resolve these as
//!    dot segments) is refused.
//! 5. Dot segments are removed (RFC 3986 §5.2.4, [`remove_dot_segments`]).

use http::uri::Authority;
use http::{HeaderMap, Uri, Version, header};
pub use switchboard_config::path::{PathError, path, remove_dot_segments};

/// Why the authority of a request is ambiguous (RFC 9112 §3.2: each is a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("missing or repeated Host")]
    MissingOrRepeated,
    #[error("invalid Host")]
    Invalid,
}

impl HostError {
    /// The reason a refusal carries (the same words as `Display`).
    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingOrRepeated => "missing or repeated Host",
            Self::Invalid => "invalid Host",
        }
    }
}

/// Why a request's fields could be read two ways (each is a 400, before anything reads them).
/// (`Content-Length` beside `Transfer-Encoding`, the other such shape, never gets here: hyper
/// drops the length, reads the chunks and closes the connection after answering, as RFC 9112
/// §6.3 asks of a server that does not refuse it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// `Authorization` is not a list (RFC 9110 §5.3, §11.6.2): with two, the gateway and the
    /// app could each check a different one.
    #[error("repeated Authorization")]
    RepeatedAuthorization,
}

impl FieldError {
    /// The reason a refusal carries (the same words as `Display`).
    pub fn reason(self) -> &'static str {
        match self {
            Self::RepeatedAuthorization => "repeated Authorization",
        }
    }
}

/// Refuse the fields of a request head that two readers could take differently: two
/// credentials.
pub fn unambiguous_fields(headers: &HeaderMap) -> Result<(), FieldError> {
    if headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(FieldError::RepeatedAuthorization);
    }
    Ok(())
}

/// The authority a request is for (RFC 9112 §3.2, §3.2.2): an HTTP/1.1 request must carry
/// exactly one `Host` (HTTP/1.0 at most one) with a valid value; an absolute-form target's
/// authority wins over `Host`. `None`: HTTP/1.0 without `Host`, or an empty `Host` (no
/// authority), which only host-less routes match. User info (`user@host`) is invalid.
pub fn authority(
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Option<Authority>, HostError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(HostError::MissingOrRepeated),
        (None, _) if version != Version::HTTP_10 => return Err(HostError::MissingOrRepeated),
        (host, _) => host,
    };
    let valid = |a: Authority| well_formed(a.as_str()).then_some(a);
    let host = match host.map(|h| h.as_bytes()) {
        None | Some(b"") => None,
        Some(bytes) => Some(
            Authority::try_from(bytes)
                .ok()
                .and_then(valid)
                .ok_or(HostError::Invalid)?,
        ),
    };
    match uri.authority() {
        Some(target) => valid(target.clone()).map(Some).ok_or(HostError::Invalid),
        None => Ok(host),
    }
}

/// What `Authority` parsing lets through but a `host[:port]` cannot be (RFC 3986 §3.2): user
/// info, a port that is not a number up to 65535 (an empty one is allowed, §3.2.3), and a name
/// with an empty label (`..`, `a..b`; one trailing dot is the absolute form). IP literals are
/// `Authority`'s to check.
fn well_formed(authority: &str) -> bool {
    if authority.contains('@') {
        return false;
    }
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], &authority[i + 1..]),
        _ => (authority, ""),
    };
    let port_ok = port.is_empty()
        || (port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| p <= 65535));
    let host_ok = host.starts_with('[')
        || host
            .strip_suffix('.')
            .unwrap_or(host)
            .split('.')
            .all(|label| !label.is_empty());
    port_ok && host_ok
}

#[cfg(test)]
mod tests;
