//! The problems the schema checks (CEL rules, bounds) checked again, all of them reported, and
//! the drain time a route needs.

use super::*;

#[test]
fn rules_the_schema_checks_with_cel_are_checked_again() {
    let cases = [
        ("mode: proxy", "spec.backend: required in mode proxy"),
        (
            "backend: {name: chat, port: 80}\ntransports: [WebSocket, SSE]",
            "spec.transports:",
        ),
        (
            "backend: {name: chat, port: 80}\nrooms: {presence: true}",
            "spec.rooms:",
        ),
        (
            "backend: {name: chat, port: 80}\ndrain: {reconnectHint: 2s}",
            "spec.drain.reconnectHint:",
        ),
        (
            "backend: {name: chat, port: 80, pinning: {source: Header}}",
            "spec.backend.pinning:",
        ),
        (
            "backend: {name: chat, port: 80, pinning: {source: ClientIP, name: x}}",
            "spec.backend.pinning:",
        ),
        (
            "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: i, jwksUri: 'https://i/j', tokenSources: [{type: Query}]}]}}",
            "spec.auth.jwt.providers[0].tokenSources[0]:",
        ),
        (
            "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: i, jwksUri: 'https://i/j', tokenSources: [{type: Bearer, prefix: x}]}]}}",
            "spec.auth.jwt.providers[0].tokenSources[0]: prefix",
        ),
    ];
    for (yaml, expected) in cases {
        let p = problems(yaml);
        assert!(p.iter().any(|x| x.starts_with(expected)), "{yaml}: {p:?}");
    }
}

#[test]
fn bounds_the_schema_checks_are_checked_again() {
    let cases = [
        ("backend: {name: chat, port: 70000}", "spec.backend.port:"),
        ("backend: {name: chat, port: 0}", "spec.backend.port:"),
        (
            "backend: {name: chat, port: 80}\nlimits: {messagesPerSecond: 0}",
            "spec.limits.messagesPerSecond:",
        ),
        (
            "backend: {name: chat, port: 80}\nlimits: {maxMessageBytes: -1}",
            "spec.limits.maxMessageBytes:",
        ),
        (
            "backend: {name: chat, port: 80}\nlimits: {connectionsPerIp: -3}",
            "spec.limits.connectionsPerIp:",
        ),
        (
            "backend: {name: chat, port: 80}\ndrain: {window: soon}",
            "spec.drain.window:",
        ),
        (
            "backend: {name: chat, port: 80}\nkeepalive: {interval: 1d}",
            "spec.keepalive.interval:",
        ),
        (
            "backend: {name: chat, port: 80}\ndrain: {closeCode: 70000}",
            "spec.drain.closeCode:",
        ),
        (
            "backend: {name: chat, port: 80}\ncompression: {level: 10}",
            "spec.compression.level:",
        ),
        (
            "backend: {name: chat, port: 80}\ncompression: {maxWindowBits: 8}",
            "spec.compression.maxWindowBits:",
        ),
        (
            "backend: {name: chat, port: 80}\ncompression: {thresholdBytes: -1}",
            "spec.compression.thresholdBytes:",
        ),
    ];
    for (yaml, expected) in cases {
        let p = problems(yaml);
        assert!(p.iter().any(|x| x.starts_with(expected)), "{yaml}: {p:?}");
    }
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let p =
        problems("backend: {name: chat, port: 0}\nlimits: {messageBurst: 0}\ndrain: {window: x}");
    assert_eq!(p.len(), 3, "{p:?}");
}

#[test]
fn a_rooms_reconnect_hint_several_providers_and_long_propagation_are_unsupported() {
    let base = base_config();
    assert_eq!(
        unsupported(&route("default", "r", "mode: rooms"), &base),
        None
    );
    let hint = route("default", "r", "mode: rooms\ndrain: {reconnectHint: 3s}");
    assert!(
        unsupported(&hint, &base)
            .unwrap()
            .starts_with("spec.drain.reconnectHint:")
    );
    let two = route(
        "default",
        "r",
        "backend: {name: c, port: 1}\nauth: {jwt: {providers: [{name: a, jwksUri: 'https://a/j'}, {name: b, jwksUri: 'https://b/j'}]}}",
    );
    assert!(
        unsupported(&two, &base)
            .unwrap()
            .contains("one JWT provider")
    );
    let long = route(
        "default",
        "r",
        "backend: {name: c, port: 1}\ndrain: {propagation: 1m}",
    );
    assert!(
        unsupported(&long, &base)
            .unwrap()
            .starts_with("spec.drain.propagation:")
    );
    let short = route(
        "default",
        "r",
        "backend: {name: c, port: 1}\ndrain: {propagation: 1s}",
    );
    assert_eq!(unsupported(&short, &base), None);
}

#[test]
fn drain_needed_is_the_longer_propagation_plus_the_window() {
    let base = base_config();
    let plain = route("default", "r", "backend: {name: c, port: 1}");
    assert_eq!(
        drain_needed(&plain, &base),
        Some(base.drain.propagation + StdDuration::from_secs(10))
    );
    let custom = route(
        "default",
        "r",
        "backend: {name: c, port: 1}\ndrain: {propagation: 1s, window: 30s}",
    );
    assert_eq!(
        drain_needed(&custom, &base),
        Some(base.drain.propagation + StdDuration::from_secs(30))
    );
    let bad = route(
        "default",
        "r",
        "backend: {name: c, port: 1}\ndrain: {window: x}",
    );
    assert_eq!(drain_needed(&bad, &base), None);
}
