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
fn client_claims_of_its_address_host_or_original_path_do_not_reach_the_app() {
    // Frameworks trust these from their proxy: X-Forwarded-Host builds URLs (Django, Rails),
    // X-Original-URL/X-Rewrite-URL route requests (IIS, Symfony), X-Real-IP and friends name
    // the client. A client's own copies would steer the app past what the gateway routed.
    let spoofed = [
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-port", "8443"),
        ("x-forwarded-prefix", "/admin"),
        ("x-forwarded-server", "evil"),
        ("x-forwarded-ssl", "on"),
        ("x-forwarded-scheme", "https"),
        ("x-forwarded-uri", "/secure"),
        ("front-end-https", "on"),
        ("x-url-scheme", "https"),
        ("x-original-url", "/secure"),
        ("x-rewrite-url", "/secure"),
        ("x-original-uri", "/secure"),
        ("x-real-ip", "6.6.6.6"),
        ("true-client-ip", "6.6.6.6"),
        ("cf-connecting-ip", "6.6.6.6"),
        ("x-client-ip", "6.6.6.6"),
        ("x-cluster-client-ip", "6.6.6.6"),
    ];
    let out = run(&client(&spoofed));
    for (name, _) in spoofed {
        if name == "x-real-ip" {
            assert_eq!(out.get(name).unwrap(), "1.2.3.4", "the gateway's");
        } else {
            assert!(out.get(name).is_none(), "{name}");
        }
    }
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
