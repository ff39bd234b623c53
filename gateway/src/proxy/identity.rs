//! What the app sees: the client's request minus hop-by-hop headers, minus any client-sent
//! copy of the identity headers (including `_` spellings and `Connection:`-nominated tricks),
//! plus the identity taken from the verified token and an optional HMAC signature over it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;

/// Headers in this namespace are the gateway's; clients can never set them.
pub const RESERVED_PREFIX: &str = "x-switchboard-";

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Headers by which a client could claim its own address, host or original path to an app that
/// trusts its proxy for them (X-Forwarded-Host builds URLs in Django and Rails, X-Original-URL
/// routes in IIS and Symfony, X-Forwarded-Ssl: on makes Rack see https, X-Real-IP and the CDN
/// spellings name the client). Only the
/// gateway speaks for the client: its copies never reach the app. The resolved client address
/// goes in X-Forwarded-For and X-Real-IP.
const CLIENT_CLAIMS: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-forwarded-uri",
    "front-end-https",
    "x-url-scheme",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-real-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "x-client-ip",
    "x-cluster-client-ip",
];

/// The identity to inject, already resolved from claims: (header name, value).
pub type Identity = Vec<(HeaderName, HeaderValue)>;

/// Marks an identity value sent in the RFC 8187 `ext-value` form (percent-encoded UTF-8).
pub const ENCODED_PREFIX: &str = "utf-8''";

/// RFC 8187 `attr-char`: what stays as it is in an encoded value; every other byte is `%XX`.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// The header value an identity claim is sent as: printable ASCII without surrounding spaces
/// as it is; anything else (non-ASCII, control characters, surrounding spaces, or a value that
/// itself starts with [`ENCODED_PREFIX`]) as `utf-8''` + percent-encoded UTF-8, so every app
/// reads the same bytes the signature covers (docs/config.md, "Identity header values").
pub fn identity_value(value: &str) -> Option<HeaderValue> {
    let plain = value.bytes().all(|b| (b' '..=b'~').contains(&b))
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && !value
            .get(..ENCODED_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(ENCODED_PREFIX));
    if plain {
        HeaderValue::from_str(value).ok()
    } else {
        HeaderValue::from_str(&format!(
            "{ENCODED_PREFIX}{}",
            utf8_percent_encode(value, ATTR_CHAR)
        ))
        .ok()
    }
}

fn canonical(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Resolve configured claim -> header pairs against verified claims. Claims missing from the
/// token are simply not sent (the app sees the header absent, never a client-supplied copy).
pub fn identity_from_claims(
    map: &BTreeMap<String, String>,
    claim: impl Fn(&str) -> Option<String>,
) -> Identity {
    map.iter()
        .filter_map(|(c, h)| {
            let value = claim(c)?;
            Some((
                HeaderName::from_bytes(h.as_bytes()).ok()?,
                identity_value(&value)?,
            ))
        })
        .collect()
}

/// Facts about the request the app is told (besides identity).
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    pub client_ip: IpAddr,
    pub tls: bool,
    pub route: &'a str,
    pub now_unix: u64,
}

/// Clean the client's headers for the upstream request and add the gateway's.
pub fn upstream_headers(
    client: &HeaderMap,
    identity: &Identity,
    identity_names: &[String],
    signature: Option<(&str, &[u8])>,
    fwd: Forwarding<'_>,
) -> HeaderMap {
    let Forwarding {
        client_ip,
        tls,
        route,
        now_unix,
    } = fwd;
    let mut nominated: Vec<String> = client
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| canonical(s.trim()))
        .filter(|s| !s.is_empty())
        .collect();
    nominated.extend(HOP_BY_HOP.iter().map(|s| s.to_string()));
    let mut reserved: Vec<String> = identity_names.iter().map(|n| canonical(n)).collect();
    if let Some((name, _)) = signature {
        reserved.push(canonical(name));
    }
    let mut out = HeaderMap::with_capacity(client.len() + identity.len() + 4);
    for (name, value) in client {
        let c = canonical(name.as_str());
        let drop = nominated.contains(&c)
            || reserved.contains(&c)
            || c.starts_with(RESERVED_PREFIX)
            || c == "sec-websocket-extensions"
            || CLIENT_CLAIMS.contains(&c.as_str());
        if !drop {
            out.append(name.clone(), value.clone());
        }
    }
    // Forwarded-for chain: keep the client's as given only up to what we trust is handled by
    // admission; the app gets the resolved client address.
    if let Ok(v) = HeaderValue::from_str(&client_ip.to_string()) {
        out.insert(HeaderName::from_static("x-forwarded-for"), v.clone());
        out.insert(HeaderName::from_static("x-real-ip"), v);
    }
    out.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    if let Ok(v) = HeaderValue::from_str(route) {
        out.insert(HeaderName::from_static("x-switchboard-route"), v);
    }
    for (name, value) in identity {
        out.insert(name.clone(), value.clone());
    }
    if let Some((header, key)) = signature
        && let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(header.as_bytes()),
            HeaderValue::from_str(&sign(key, identity, now_unix)),
        )
    {
        out.insert(name, value);
    }
    out
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256>` over `"<t>\n"` followed by one
/// `"<lowercase header name>:<value>\n"` line per identity header, sorted by name; values are
/// the (ASCII) bytes sent, after [`identity_value`].
pub fn sign(key: &[u8], identity: &Identity, now_unix: u64) -> String {
    let mut lines: Vec<String> = identity
        .iter()
        .map(|(n, v)| format!("{}:{}\n", n.as_str(), String::from_utf8_lossy(v.as_bytes())))
        .collect();
    lines.sort();
    // HMAC accepts keys of any length, so this never fails.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(format!("{now_unix}\n").as_bytes());
    for l in &lines {
        mac.update(l.as_bytes());
    }
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={now_unix},v1={hex}")
}

#[cfg(test)]
mod tests;
