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
            || c == "x-forwarded-for"
            || c == "x-forwarded-proto"
            || c == "forwarded";
        if !drop {
            out.append(name.clone(), value.clone());
        }
    }
    // Forwarded-for chain: keep the client's as given only up to what we trust is handled by
    // admission; the app gets the resolved client address.
    if let Ok(v) = HeaderValue::from_str(&client_ip.to_string()) {
        out.insert(HeaderName::from_static("x-forwarded-for"), v);
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
mod tests {
    use super::*;

    fn client(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    fn ident() -> Identity {
        vec![(
            HeaderName::from_static("x-user"),
            HeaderValue::from_static("alice"),
        )]
    }

    fn run(h: &HeaderMap) -> HeaderMap {
        let fwd = Forwarding {
            client_ip: "1.2.3.4".parse().unwrap(),
            tls: false,
            route: "r",
            now_unix: 0,
        };
        upstream_headers(h, &ident(), &["X-User".into()], None, fwd)
    }

    #[test]
    fn client_copies_of_identity_headers_are_replaced_by_the_gateways() {
        let out = run(&client(&[("x-user", "mallory"), ("X-USER", "eve")]));
        let values: Vec<_> = out.get_all("x-user").iter().collect();
        assert_eq!(values, vec!["alice"]);
    }

    #[test]
    fn underscore_spellings_of_identity_headers_are_removed() {
        let out = run(&client(&[
            ("x_user", "mallory"),
            ("x-switchboard_user", "eve"),
        ]));
        assert!(out.get("x_user").is_none());
        assert!(out.get("x-switchboard_user").is_none());
    }

    #[test]
    fn connection_nominated_headers_are_removed_and_cannot_drop_identity() {
        let out = run(&client(&[
            ("connection", "x-user, x-custom"),
            ("x-custom", "1"),
            ("x-keep", "2"),
        ]));
        assert_eq!(
            out.get("x-user").unwrap(),
            "alice",
            "nominating the identity header does not remove ours"
        );
        assert!(out.get("x-custom").is_none());
        assert_eq!(out.get("x-keep").unwrap(), "2");
        assert!(out.get("connection").is_none());
    }

    #[test]
    fn reserved_namespace_and_forwarding_headers_from_clients_are_dropped() {
        let out = run(&client(&[
            ("x-switchboard-user", "eve"),
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
        ]));
        assert!(out.get("x-switchboard-user").is_none());
        assert_eq!(out.get("x-forwarded-for").unwrap(), "1.2.3.4");
        assert!(out.get("forwarded").is_none());
    }

    #[test]
    fn extensions_are_not_negotiated_through_the_tunnel() {
        let out = run(&client(&[(
            "sec-websocket-extensions",
            "permessage-deflate",
        )]));
        assert!(out.get("sec-websocket-extensions").is_none());
    }

    #[test]
    fn signature_is_deterministic_and_covers_identity() {
        let a = sign(b"k", &ident(), 100);
        assert_eq!(a, sign(b"k", &ident(), 100));
        assert!(a.starts_with("t=100,v1="));
        let other = vec![(
            HeaderName::from_static("x-user"),
            HeaderValue::from_static("bob"),
        )];
        assert_ne!(a, sign(b"k", &other, 100));
        assert_ne!(a, sign(b"k2", &ident(), 100));
    }

    #[test]
    fn signature_matches_an_independent_hmac() {
        // HMAC-SHA256(key="k", "100\nx-user:alice\n")
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"k").unwrap();
        mac.update(b"100\nx-user:alice\n");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sign(b"k", &ident(), 100), format!("t=100,v1={hex}"));
    }

    #[test]
    fn printable_ascii_values_are_sent_as_they_are() {
        for v in ["alice", "a b", "100%", "x+y=z", "utf-8'", "~!#"] {
            assert_eq!(identity_value(v).unwrap(), v);
        }
    }

    #[test]
    fn other_values_are_sent_as_percent_encoded_utf8_with_the_rfc8187_prefix() {
        let cases = [
            ("Zürich", "utf-8''Z%C3%BCrich"),
            ("山", "utf-8''%E5%B1%B1"),
            ("a\nb", "utf-8''a%0Ab"),
            (" pad", "utf-8''%20pad"),
            ("pad ", "utf-8''pad%20"),
            ("utf-8''%41", "utf-8''utf-8%27%27%2541"),
            ("UTF-8''x", "utf-8''UTF-8%27%27x"),
            ("ü a+b~", "utf-8''%C3%BC%20a+b~"),
        ];
        for (claim, sent) in cases {
            assert_eq!(identity_value(claim).unwrap(), sent, "{claim:?}");
            let decoded = percent_encoding::percent_decode_str(&sent[ENCODED_PREFIX.len()..])
                .decode_utf8()
                .unwrap();
            assert_eq!(decoded, claim, "{sent:?} decodes back");
        }
    }

    #[test]
    fn the_signature_covers_the_encoded_value_as_sent() {
        let mut map = BTreeMap::new();
        map.insert("city".to_string(), "X-City".to_string());
        let id = identity_from_claims(&map, |_| Some("Zürich".to_string()));
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"k").unwrap();
        mac.update(b"7\nx-city:utf-8''Z%C3%BCrich\n");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sign(b"k", &id, 7), format!("t=7,v1={hex}"));
    }

    #[test]
    fn missing_claims_are_not_sent() {
        let mut map = BTreeMap::new();
        map.insert("sub".to_string(), "X-User".to_string());
        map.insert("tenant".to_string(), "X-Tenant".to_string());
        let id = identity_from_claims(&map, |c| (c == "sub").then(|| "alice".to_string()));
        assert_eq!(id.len(), 1);
    }
}
