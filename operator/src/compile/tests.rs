//! Compiling routes: defaults, every field, the problems the schema checks again, refs.

use serde_json::json;
use switchboard_config::{
    Algorithm, Documents, History, Hook, KeySource, PathMatchKind, PinningKey,
    RoomProtocol as ConfigRoomProtocol, Rooms as ConfigRooms, ServiceRef,
    TokenSource as ConfigTokenSource,
};

use super::*;
use crate::conditions::reasons;
use crate::fixtures::{base_config, route};

fn compiled(yaml: &str) -> Route {
    compile(&route("default", "chat", yaml), &BTreeMap::new()).unwrap()
}

fn problems(yaml: &str) -> Vec<String> {
    compile(&route("default", "chat", yaml), &BTreeMap::new()).unwrap_err()
}

#[test]
fn a_minimal_proxy_route_compiles_with_the_gateway_defaults() {
    let r = compiled("backend: {name: chat, port: 8080}");
    assert_eq!(r.name, "default/chat");
    assert!(r.hosts.is_empty());
    assert_eq!(r.path.kind, PathMatchKind::Prefix);
    assert_eq!(r.path.value, "/");
    assert_eq!(r.mode, ConfigMode::Proxy);
    assert_eq!(r.limits, RouteLimits::default());
    assert_eq!(r.keepalive, Keepalive::default());
    assert_eq!(r.compression, Compression::default());
    assert_eq!(r.drain, RouteDrain::default());
    assert!(r.jwt.is_none());
    let proxy = r.proxy.unwrap();
    assert_eq!(
        proxy.service,
        Some(ServiceRef {
            namespace: "default".into(),
            name: "chat".into(),
            port: 8080
        })
    );
    assert_eq!(proxy.pinning, PinningKey::ClientIp);
    assert!(proxy.backends.is_empty());
    assert_eq!(r.source_generation, Some(1));
}

#[test]
fn every_field_reaches_the_compiled_route() {
    let r = compiled(
        r#"
hostnames: [chat.example.com, "*.chat.example.com"]
path: {type: Exact, value: /ws}
backend:
  name: chat
  port: 80
  pinning: {source: Claim, name: sub}
auth:
  allowedOrigins: ["https://app.example.com"]
  allowNullOrigin: true
  allowMissingOrigin: false
  jwt:
    providers:
    - name: idp
      issuer: https://idp.example.com
      audiences: [chat]
      jwksUri: https://idp.example.com/jwks
      algorithms: [RS256, ES256]
      tokenSources: [{type: Subprotocol}, {type: Query, name: access_token}, {type: Bearer}]
      claimsToHeaders: [{claim: sub, header: X-User}]
      leeway: 10s
      closeOnExpiry: false
limits: {maxMessageBytes: 4096, messagesPerSecond: 5, messageBurst: 10, connectionsPerIp: 3, connectionsPerUser: 2, newConnectionsPerIpPerSecond: 1}
keepalive: {interval: 15s, timeout: 5s, app: {interval: 7s, timeout: 3s}}
drain: {window: 20s, closeCode: 4001, closeReason: bye}
"#,
    );
    assert_eq!(r.hosts, ["chat.example.com", "*.chat.example.com"]);
    assert_eq!(r.path.kind, PathMatchKind::Exact);
    assert_eq!(r.path.value, "/ws");
    assert_eq!(r.origins.allowed, ["https://app.example.com"]);
    assert!(r.origins.allow_null);
    assert_eq!(r.origins.allow_missing, Some(false));
    let jwt = r.jwt.unwrap();
    assert_eq!(jwt.issuer.as_deref(), Some("https://idp.example.com"));
    assert_eq!(jwt.audiences, ["chat"]);
    assert_eq!(jwt.leeway, StdDuration::from_secs(10));
    assert!(!jwt.close_on_expiry);
    assert!(matches!(
        &jwt.keys[..],
        [KeySource::Jwks { url, algorithms, refresh, .. }]
            if url == "https://idp.example.com/jwks"
            && algorithms == &[Algorithm::RS256, Algorithm::ES256]
            && *refresh == StdDuration::from_secs(300)
    ));
    assert_eq!(
        jwt.token_sources,
        [
            ConfigTokenSource::Subprotocol {
                prefix: "bearer.".into()
            },
            ConfigTokenSource::Query {
                name: "access_token".into()
            },
            ConfigTokenSource::Bearer {},
        ]
    );
    let proxy = r.proxy.unwrap();
    assert_eq!(proxy.pinning, PinningKey::Claim("sub".into()));
    assert_eq!(
        proxy.identity_headers.get("sub").map(String::as_str),
        Some("X-User")
    );
    assert_eq!(r.limits.max_message_bytes, 4096);
    assert_eq!(r.limits.messages_per_second, 5);
    assert_eq!(r.limits.message_burst, 10);
    assert_eq!(r.limits.connections_per_ip, Some(3));
    assert_eq!(r.limits.connections_per_user, Some(2));
    assert_eq!(r.limits.new_connections_per_ip_per_second, Some(1));
    assert_eq!(r.keepalive.interval, StdDuration::from_secs(15));
    assert_eq!(r.keepalive.timeout, StdDuration::from_secs(5));
    assert_eq!(r.keepalive.app.interval, StdDuration::from_secs(7));
    assert_eq!(r.keepalive.app.timeout, StdDuration::from_secs(3));
    assert_eq!(r.drain.window, StdDuration::from_secs(20));
    assert_eq!(r.drain.close_code, 4001);
    assert_eq!(r.drain.close_reason, "bye");
}

#[test]
fn the_default_token_source_is_the_bearer_header() {
    let r = compiled(
        "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: idp, jwksUri: 'https://idp/jwks'}]}}",
    );
    assert_eq!(r.jwt.unwrap().token_sources, [ConfigTokenSource::Bearer {}]);
}

fn with_secret(yaml: &str, material: &str) -> Result<Route, Vec<String>> {
    let mut m = BTreeMap::new();
    m.insert(("keys".to_string(), "k".to_string()), material.to_string());
    compile(&route("default", "chat", yaml), &m)
}

const SECRET_ROUTE: &str = "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: idp, secretRef: {name: keys, key: k}, algorithms: [ALGS]}]}}";

#[test]
fn a_secret_pem_becomes_one_inline_key_per_algorithm() {
    let pem = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n";
    let r = with_secret(&SECRET_ROUTE.replace("ALGS", "RS256, PS256"), pem).unwrap();
    let keys = r.jwt.unwrap().keys;
    assert_eq!(keys.len(), 2);
    assert!(
        keys.iter()
            .all(|k| matches!(k, KeySource::Inline { pem: Some(p), .. } if p == pem))
    );
    assert!(matches!(
        keys[1],
        KeySource::Inline {
            algorithm: Algorithm::PS256,
            ..
        }
    ));
}

#[test]
fn a_secret_that_is_not_pem_or_json_is_an_hmac_secret() {
    let secret = "0123456789abcdef0123456789abcdef";
    let r = with_secret(&SECRET_ROUTE.replace("ALGS", "HS256"), secret).unwrap();
    assert!(matches!(
        &r.jwt.unwrap().keys[..],
        [KeySource::Inline { algorithm: Algorithm::HS256, secret: Some(s), pem: None, jwk: None, .. }] if s == secret
    ));
}

#[test]
fn a_secret_jwks_is_split_into_keys_that_keep_their_kid_and_pinned_alg() {
    let jwks =
        r#"{"keys": [{"kty": "EC", "kid": "a", "alg": "ES256"}, {"kty": "RSA", "kid": "b"}]}"#;
    let r = with_secret(&SECRET_ROUTE.replace("ALGS", "ES256, RS256"), jwks).unwrap();
    let keys = r.jwt.unwrap().keys;
    let summary: Vec<(Algorithm, Option<String>)> = keys
        .iter()
        .map(|k| match k {
            KeySource::Inline {
                algorithm,
                kid,
                jwk,
                ..
            } => {
                assert!(jwk.is_some());
                (*algorithm, kid.clone())
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            (Algorithm::ES256, Some("a".into())),
            (Algorithm::ES256, Some("b".into())),
            (Algorithm::RS256, Some("b".into())),
        ]
    );
}

#[test]
fn a_secret_that_looks_like_json_but_is_not_is_invalid() {
    let p = with_secret(&SECRET_ROUTE.replace("ALGS", "RS256"), "{not json").unwrap_err();
    assert!(
        p[0].starts_with("spec.auth.jwt.providers[0].secretRef:"),
        "{p:?}"
    );
}

#[test]
fn a_secret_ref_without_algorithms_is_invalid() {
    let p = problems(
        "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: idp, secretRef: {name: keys, key: k}}]}}",
    );
    assert!(
        p[0].starts_with("spec.auth.jwt.providers[0].algorithms:"),
        "{p:?}"
    );
}

#[test]
fn both_or_neither_key_source_is_invalid() {
    let p = problems("backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: idp}]}}");
    assert!(
        p[0].contains("exactly one of jwksUri and secretRef"),
        "{p:?}"
    );
}

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
fn compression_settings_reach_the_compiled_route() {
    let r = compiled(
        "backend: {name: chat, port: 80}\ncompression: {enabled: true, thresholdBytes: 256, level: 3, maxWindowBits: 12}",
    );
    assert_eq!(
        r.compression,
        Compression {
            enabled: true,
            threshold_bytes: 256,
            level: 3,
            max_window_bits: 12,
        }
    );
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let p =
        problems("backend: {name: chat, port: 0}\nlimits: {messageBurst: 0}\ndrain: {window: x}");
    assert_eq!(p.len(), 3, "{p:?}");
}

#[test]
fn duplicate_claims_to_headers_are_invalid() {
    let p = problems(
        "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: i, jwksUri: 'https://i/j', claimsToHeaders: [{claim: sub, header: X-A}, {claim: sub, header: X-B}]}]}}",
    );
    assert!(p[0].contains("listed twice"), "{p:?}");
}

#[test]
fn an_identity_signature_takes_its_secret_from_the_secret_material() {
    let yaml = "backend: {name: chat, port: 80, identitySignature: {secretRef: {name: keys, key: k}, header: X-Sig}}";
    let r = with_secret(yaml, "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t").unwrap();
    let sig = r.proxy.unwrap().signature.unwrap();
    assert_eq!(
        sig.secret.as_deref(),
        Some("s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t")
    );
    assert_eq!(sig.header, "X-Sig");
    assert!(sig.secret_file.is_none());
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

#[test]
fn resolve_reports_a_missing_service_without_blocking_the_route() {
    let rt = route("default", "chat", "backend: {name: chat, port: 80}");
    let r = resolve(&rt, &Refs::default());
    assert!(!r.verdict.ok);
    assert!(!r.blocks);
    assert_eq!(r.verdict.reason, reasons::BACKEND_NOT_FOUND);
    assert!(
        r.verdict.message.contains("Service default/chat not found"),
        "{}",
        r.verdict.message
    );
}

#[test]
fn resolve_reports_a_missing_service_port() {
    let rt = route("default", "chat", "backend: {name: chat, port: 80}");
    let r = resolve(
        &rt,
        &Refs::default().with_service("default", "chat", &[8080, 9090]),
    );
    assert_eq!(r.verdict.reason, reasons::BACKEND_NOT_FOUND);
    assert!(
        r.verdict
            .message
            .contains("has no port 80 (it has 8080, 9090)"),
        "{}",
        r.verdict.message
    );
}

#[test]
fn resolve_blocks_the_route_on_a_missing_secret_or_key() {
    let rt = route(
        "default",
        "chat",
        "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: i, secretRef: {name: keys, key: k}, algorithms: [HS256]}]}}",
    );
    let refs = Refs::default().with_service("default", "chat", &[80]);
    let r = resolve(&rt, &refs);
    assert!(r.blocks);
    assert_eq!(r.verdict.reason, reasons::SECRET_NOT_FOUND);
    assert!(
        r.verdict.message.contains("Secret default/keys not found"),
        "{}",
        r.verdict.message
    );
    let r = resolve(
        &rt,
        &refs.clone().with_secret("default", "keys", "other", b"x"),
    );
    assert!(r.blocks);
    assert!(
        r.verdict.message.contains("has no key `k`"),
        "{}",
        r.verdict.message
    );
    let r = resolve(
        &rt,
        &refs
            .clone()
            .with_secret("default", "keys", "k", &[0xff, 0xfe]),
    );
    assert_eq!(r.verdict.reason, reasons::INVALID_SECRET);
    let secret = "0123456789abcdef0123456789abcdef";
    let r = resolve(
        &rt,
        &refs.with_secret("default", "keys", "k", secret.as_bytes()),
    );
    assert!(r.verdict.ok);
    assert_eq!(
        r.material
            .get(&("keys".into(), "k".into()))
            .map(String::as_str),
        Some(secret)
    );
}

#[test]
fn secrets_in_another_namespace_do_not_resolve() {
    let rt = route(
        "team-a",
        "chat",
        "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: i, secretRef: {name: keys, key: k}, algorithms: [HS256]}]}}",
    );
    let refs = Refs::default()
        .with_service("team-a", "chat", &[80])
        .with_secret("team-b", "keys", "k", b"x");
    assert!(resolve(&rt, &refs).blocks);
}

#[test]
fn referenced_objects_are_listed_for_event_mapping() {
    let rt = route(
        "ns",
        "chat",
        "backend: {name: svc, port: 80, identitySignature: {secretRef: {name: sig, key: k}}}\nauth: {jwt: {providers: [{name: i, secretRef: {name: keys, key: k}, algorithms: [HS256]}]}}",
    );
    let secrets: Vec<_> = referenced_secrets(&rt).into_iter().collect();
    assert_eq!(
        secrets,
        [
            ("ns".to_string(), "keys".to_string()),
            ("ns".into(), "sig".into())
        ]
    );
    assert_eq!(referenced_service(&rt), Some(("ns".into(), "svc".into())));
}

#[test]
fn config_paths_map_to_the_fields_a_user_edits() {
    let rt = route(
        "ns",
        "chat",
        "backend: {name: svc, port: 80}\nauth: {jwt: {providers: [{name: i, jwksUri: 'https://i/j'}]}}",
    );
    for (from, to) in [
        ("origins.allowed[2]", "spec.auth.allowedOrigins[2]"),
        ("hosts[0]", "spec.hostnames[0]"),
        ("path.value", "spec.path.value"),
        ("jwt.leeway", "spec.auth.jwt.providers[0].leeway"),
        ("jwt.keys[0].url", "spec.auth.jwt.providers[0].jwksUri"),
        (
            "proxy.identityHeaders.sub",
            "spec.auth.jwt.providers[0].claimsToHeaders",
        ),
        ("proxy.signature.header", "spec.backend.identitySignature"),
        ("proxy.pinning", "spec.backend.pinning"),
        ("proxy", "spec.backend"),
        (
            "limits.connectionsPerUser",
            "spec.limits.connectionsPerUser",
        ),
        ("drain.window", "spec.drain.window"),
        ("pathological", "spec (pathological)"),
    ] {
        assert_eq!(crd_path(&rt, from), to, "{from}");
    }
    let with_secret = route(
        "ns",
        "chat",
        "backend: {name: svc, port: 80}\nauth: {jwt: {providers: [{name: i, secretRef: {name: s, key: k}, algorithms: [HS256]}]}}",
    );
    assert_eq!(
        crd_path(&with_secret, "jwt.keys[0].secret"),
        "spec.auth.jwt.providers[0].secretRef"
    );
}

#[test]
fn compiled_routes_pass_the_gateway_validator_with_a_base_config() {
    let mut cfg = base_config();
    cfg.routes.push(compiled(
        "hostnames: [a.example.com]\nbackend: {name: chat, port: 80}",
    ));
    cfg.routes.push(
        compile(
            &route("default", "json", ROOMS_EVERYTHING),
            &BTreeMap::new(),
        )
        .unwrap(),
    );
    cfg.routes
        .push(compile(&route("default", "raw", RAW_RELAY), &BTreeMap::new()).unwrap());
    cfg.routes.push(
        compile(
            &route("default", "bare", "mode: rooms\npath: {value: /bare}"),
            &BTreeMap::new(),
        )
        .unwrap(),
    );
    assert_eq!(switchboard_config::validate(&cfg), vec![]);
}

#[test]
fn a_minimal_rooms_route_compiles_to_the_gateway_defaults_with_default_deny() {
    let r = compiled("mode: rooms");
    assert_eq!(r.mode, ConfigMode::Rooms);
    assert!(r.proxy.is_none());
    assert_eq!(r.transports, Transports::default());
    let rooms = r.rooms.unwrap();
    let defaults: ConfigRooms = serde_json::from_value(json!({})).unwrap();
    assert_eq!(
        rooms,
        ConfigRooms {
            namespace: Some("default_chat".into()),
            ..defaults
        }
    );
    assert!(rooms.join.is_empty() && rooms.publish.is_empty());
    assert_eq!(rooms.protocol, ConfigRoomProtocol::Json);
}

const ROOMS_EVERYTHING: &str = r#"
mode: rooms
path: {value: /rooms}
transports: [WebSocket, SSE]
auth:
  jwt:
    providers:
    - name: idp
      jwksUri: https://idp.example.com/jwks
rooms:
  namespace: collab
  join: ["doc:{org}:*", "user:{sub}", "lobby"]
  publish: ["doc:{org}:*"]
  history: {maxMessages: 500, maxAge: 1h}
  presence: true
  maxQueueBytes: 65536
  publishHook: {url: "http://api.collab.svc:8080/hooks/publish", timeout: 500ms}
  notify: {url: "https://api.example.com/hooks/notify"}
"#;

const RAW_RELAY: &str = r#"
mode: rooms
path: {value: /collab}
rooms:
  protocol: raw
  pathRoom: /collab/{room}
  echo: true
  join: ["*"]
  publish: ["*"]
"#;

#[test]
fn every_rooms_field_reaches_the_compiled_route() {
    let r = compiled(ROOMS_EVERYTHING);
    assert_eq!(
        r.transports,
        Transports {
            websocket: true,
            sse: true,
            long_polling: false
        }
    );
    let rooms = r.rooms.unwrap();
    assert_eq!(rooms.protocol, ConfigRoomProtocol::Json);
    assert_eq!(rooms.namespace.as_deref(), Some("default_collab"));
    assert_eq!(rooms.join, ["doc:{org}:*", "user:{sub}", "lobby"]);
    assert_eq!(rooms.publish, ["doc:{org}:*"]);
    assert_eq!(
        rooms.history,
        Some(History {
            max_messages: 500,
            max_age: StdDuration::from_secs(3600)
        })
    );
    assert!(rooms.presence);
    assert_eq!(rooms.max_queue_bytes, 65536);
    assert_eq!(
        rooms.publish_hook,
        Some(Hook {
            url: "http://api.collab.svc:8080/hooks/publish".into(),
            timeout: StdDuration::from_millis(500)
        })
    );
    let notify = rooms.notify.unwrap();
    assert_eq!(notify.url, "https://api.example.com/hooks/notify");
    assert_eq!(
        notify.timeout,
        StdDuration::from_secs(2),
        "the gateway default"
    );
    assert!(rooms.path_room.is_none());
    assert!(!rooms.echo);
}

#[test]
fn nats_notifications_compile_to_the_gateway_flag_and_are_off_when_unset() {
    let notify_nats = |yaml: &str| compiled(yaml).rooms.unwrap().notify_nats;
    assert!(!notify_nats("mode: rooms"), "default false");
    assert!(notify_nats("mode: rooms\nrooms: {notifyNats: true}"));
    assert!(!notify_nats("mode: rooms\nrooms: {notifyNats: false}"));
    let both =
        compiled("mode: rooms\nrooms: {notifyNats: true, notify: {url: 'http://app.chat.svc/n'}}")
            .rooms
            .unwrap();
    assert!(
        both.notify_nats && both.notify.is_some(),
        "HTTP and NATS together"
    );
}

#[test]
fn receipts_batches_and_offline_compile_with_the_gateway_defaults_where_unset() {
    let r = compiled(
        "mode: rooms\nrooms: {receipts: {rooms: ['chat:*']}, batch: {rooms: ['user:{sub}'], maxMessages: 20, groupBy: type}, offline: {rooms: ['inbox:{sub}'], notify: {url: 'http://app.chat.svc/offline'}}}",
    )
    .rooms
    .unwrap();
    let receipts = r.receipts.unwrap();
    assert_eq!(receipts.rooms, vec!["chat:*".to_string()]);
    assert_eq!(
        receipts.interval,
        StdDuration::from_secs(1),
        "the gateway default"
    );
    let batch = r.batch.unwrap();
    assert_eq!(
        (batch.window, batch.max_messages, batch.group_by.as_deref()),
        (StdDuration::from_secs(1), 20, Some("type"))
    );
    let offline = r.offline.unwrap();
    assert_eq!(offline.rooms, vec!["inbox:{sub}".to_string()]);
    assert_eq!(
        offline.notify.map(|h| h.url).as_deref(),
        Some("http://app.chat.svc/offline")
    );
    assert!(!offline.notify_nats);
}

#[test]
fn an_offline_room_pattern_without_one_sub_is_refused_on_its_route() {
    let problems = problems("mode: rooms\nrooms: {offline: {rooms: ['inbox:*']}}");
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("spec.rooms.offline.rooms[0]:")),
        "{problems:?}"
    );
}

#[test]
fn history_fields_left_unset_take_the_gateway_defaults() {
    let r = compiled("mode: rooms\nrooms: {history: {maxMessages: 7}}");
    let h = r.rooms.unwrap().history.unwrap();
    assert_eq!(h.max_messages, 7);
    let defaults: History = serde_json::from_value(json!({})).unwrap();
    assert_eq!(h.max_age, defaults.max_age);
}

#[test]
fn a_raw_relay_route_compiles_websocket_only_with_its_path_room() {
    let r = compiled(RAW_RELAY);
    assert_eq!(
        r.transports,
        Transports {
            websocket: true,
            sse: false,
            long_polling: false
        }
    );
    let rooms = r.rooms.unwrap();
    assert_eq!(rooms.protocol, ConfigRoomProtocol::Raw);
    assert_eq!(rooms.path_room.as_deref(), Some("/collab/{room}"));
    assert!(rooms.echo);
}

#[test]
fn yjs_document_settings_reach_the_compiled_route_and_unset_ones_take_the_gateway_defaults() {
    let yjs = "mode: rooms\npath: {value: /docs}\nrooms: {protocol: yjs, pathRoom: '/docs/{room}'";
    let r = compiled(&format!(
        "{yjs}, documents: {{maxUpdateBytes: 1024, maxDocumentBytes: 65536, compactAfterUpdates: 20, idleUnload: 5s, notify: {{url: 'http://app.collab.svc/changed'}}, notifyNats: true, notifyDebounce: 1s}}}}"
    ));
    let rooms = r.rooms.unwrap();
    assert_eq!(rooms.protocol, ConfigRoomProtocol::Yjs);
    let d = rooms.documents.unwrap();
    assert_eq!(
        (
            d.max_update_bytes,
            d.max_document_bytes,
            d.compact_after_updates
        ),
        (1024, 65536, 20)
    );
    assert_eq!(d.idle_unload, StdDuration::from_secs(5));
    assert_eq!(
        d.notify.as_ref().map(|h| h.url.as_str()),
        Some("http://app.collab.svc/changed")
    );
    assert!(d.notify_nats);
    assert_eq!(d.notify_debounce, StdDuration::from_secs(1));

    let partial = compiled(&format!("{yjs}, documents: {{compactAfterUpdates: 7}}}}"));
    let d = partial.rooms.unwrap().documents.unwrap();
    assert_eq!(d.compact_after_updates, 7);
    assert_eq!(
        Documents {
            compact_after_updates: 7,
            ..d.clone()
        },
        Documents {
            compact_after_updates: 7,
            ..Documents::default()
        },
        "the other fields are the gateway defaults"
    );
    assert!(
        compiled(&format!("{yjs}}}"))
            .rooms
            .unwrap()
            .documents
            .is_none()
    );
}

#[test]
fn a_proxy_route_is_websocket_only_and_has_no_rooms() {
    let r = compiled("backend: {name: chat, port: 80}");
    assert!(r.rooms.is_none());
    assert!(r.transports.websocket && !r.transports.sse && !r.transports.long_polling);
}

#[test]
fn rooms_namespaces_are_scoped_to_the_kubernetes_namespace() {
    let ns = |k8s_ns: &str, name: &str, yaml: &str| rooms_namespace(&route(k8s_ns, name, yaml));
    assert_eq!(
        ns("team-a", "chat", "mode: rooms").as_deref(),
        Some("team-a_chat")
    );
    assert_eq!(
        ns("team-a", "chat.v2", "mode: rooms").as_deref(),
        Some("team-a_chat_v2")
    );
    assert_eq!(
        ns("team-b", "x", "mode: rooms\nrooms: {namespace: chat}").as_deref(),
        Some("team-b_chat")
    );
    assert_eq!(ns("team-a", "p", "backend: {name: c, port: 1}"), None);
}

#[test]
fn the_room_pattern_grammar_is_the_gateways() {
    for good in [
        "*",
        "chat:*",
        "user:{sub}",
        "org:{org}:*",
        "a*b*c",
        "*{sub}*",
        "x@y+z=w-v_u",
        "{a}{b}",
    ] {
        assert_eq!(room_pattern_problem(good), None, "{good}");
    }
    for (bad, why) in [
        ("", "empty"),
        ("chat:**", "`**`"),
        ("user:{}", "must name a claim"),
        ("user:{su b}", "must name a claim"),
        ("user:{sub", "without its"),
        ("a.b", "`.` cannot appear"),
        ("a/b", "`/` cannot appear"),
        ("caf\u{e9}", "`\u{e9}` cannot appear"),
        ("a}b", "`}` cannot appear"),
    ] {
        let problem = room_pattern_problem(bad).unwrap_or_default();
        assert!(problem.contains(why), "{bad:?}: {problem:?}");
    }
}

#[test]
fn rooms_rules_the_schema_checks_are_checked_again() {
    let cases = [
        (
            "mode: rooms\nrooms: {protocol: raw}",
            "spec.rooms.pathRoom: protocols raw and yjs need pathRoom",
        ),
        (
            "mode: rooms\nrooms: {pathRoom: '/r/{room}'}",
            "spec.rooms.pathRoom: only used with protocols raw and yjs",
        ),
        ("mode: rooms\nrooms: {echo: false}", "spec.rooms.echo:"),
        (
            "mode: rooms\nrooms: {protocol: raw, pathRoom: '/r/{room}', publishHook: {url: 'http://h/p'}}",
            "spec.rooms.publishHook: not called for raw or yjs rooms",
        ),
        (
            "mode: rooms\ntransports: [WebSocket, SSE]\nrooms: {protocol: raw, pathRoom: '/r/{room}'}",
            "spec.transports: raw and yjs rooms are WebSocket only",
        ),
        (
            "mode: rooms\npath: {value: /collab}\nrooms: {protocol: raw, pathRoom: '/docs/{room}'}",
            "spec.rooms.pathRoom: must lie under spec.path.value `/collab`",
        ),
        (
            "mode: rooms\npath: {value: /collab}\nrooms: {protocol: raw, pathRoom: '/collabx/{room}'}",
            "spec.rooms.pathRoom: must lie under",
        ),
        (
            "mode: rooms\nrooms: {protocol: raw, pathRoom: '/r/{room}/{room}'}",
            "spec.rooms.pathRoom: must contain `{room}` exactly once",
        ),
        (
            "mode: rooms\nrooms: {protocol: raw, pathRoom: 'r/{room}'}",
            "spec.rooms.pathRoom: must start with `/`",
        ),
        (
            "mode: rooms\nrooms: {protocol: raw, pathRoom: '/r/{room}?x'}",
            "spec.rooms.pathRoom: a path with one `{room}`",
        ),
        (
            "mode: rooms\nrooms: {join: ['chat:**']}",
            "spec.rooms.join[0]:",
        ),
        (
            "mode: rooms\nrooms: {publish: [ok, 'a.b']}",
            "spec.rooms.publish[1]:",
        ),
        (
            "mode: rooms\nrooms: {namespace: 'a.b'}",
            "spec.rooms.namespace:",
        ),
        (
            "mode: rooms\nrooms: {maxQueueBytes: 100}",
            "spec.rooms.maxQueueBytes:",
        ),
        (
            "mode: rooms\nrooms: {documents: {maxUpdateBytes: 10}}",
            "spec.rooms.documents: only used with protocol yjs",
        ),
        (
            "mode: rooms\nrooms: {protocol: yjs, pathRoom: '/r/{room}', documents: {maxUpdateBytes: 10, maxDocumentBytes: 5}}",
            "spec.rooms.documents.maxUpdateBytes: must be at most maxDocumentBytes",
        ),
        (
            "mode: rooms\nrooms: {protocol: yjs, pathRoom: '/r/{room}', documents: {compactAfterUpdates: 0}}",
            "spec.rooms.documents.compactAfterUpdates:",
        ),
        (
            "mode: rooms\nrooms: {protocol: yjs, pathRoom: '/r/{room}', documents: {notifyNats: true, notifyDebounce: 1m}}",
            "spec.rooms.documents.notifyDebounce: must be more than 0s and shorter than idleUnload",
        ),
        (
            "mode: rooms\nrooms: {history: {maxMessages: 0}}",
            "spec.rooms.history.maxMessages:",
        ),
        (
            "mode: rooms\nrooms: {history: {maxAge: 0s}}",
            "spec.rooms.history.maxAge: must be more than 0s",
        ),
        (
            "mode: rooms\nrooms: {history: {maxAge: forever}}",
            "spec.rooms.history.maxAge:",
        ),
        (
            "mode: rooms\nrooms: {notify: {url: 'http://h/n', timeout: 0s}}",
            "spec.rooms.notify.timeout:",
        ),
        (
            "mode: rooms\ntransports: []",
            "spec.transports: list at least one",
        ),
        (
            "mode: rooms\nauth: {jwt: {providers: [{name: i, jwksUri: 'https://i/j', claimsToHeaders: [{claim: sub, header: X-User}]}]}}",
            "spec.auth.jwt.providers[0].claimsToHeaders: only used in mode proxy",
        ),
    ];
    for (yaml, expected) in cases {
        let p = problems(yaml);
        assert!(p.iter().any(|x| x.starts_with(expected)), "{yaml}: {p:?}");
    }
}

#[test]
fn raw_path_rooms_fit_exact_and_prefix_paths() {
    for yaml in [
        "mode: rooms\nrooms: {protocol: raw, pathRoom: '/r/{room}'}",
        "mode: rooms\npath: {value: /collab/}\nrooms: {protocol: raw, pathRoom: '/collab/{room}'}",
        "mode: rooms\npath: {value: /collab}\nrooms: {protocol: raw, pathRoom: '/collab/{room}/ws'}",
        "mode: rooms\npath: {type: Exact, value: /collab/doc-1}\nrooms: {protocol: raw, pathRoom: '/collab/{room}'}",
    ] {
        assert!(
            compile(&route("default", "r", yaml), &BTreeMap::new()).is_ok(),
            "{yaml}"
        );
    }
    let p = problems(
        "mode: rooms\npath: {type: Exact, value: /collab/}\nrooms: {protocol: raw, pathRoom: '/collab/{room}'}",
    );
    assert!(
        p[0].starts_with("spec.rooms.pathRoom: must lie under"),
        "{p:?}"
    );
}

#[test]
fn rooms_config_paths_map_to_crd_fields() {
    let rt = route("ns", "r", "mode: rooms");
    for (from, to) in [
        ("rooms.join[1]", "spec.rooms.join[1]"),
        ("rooms.publishHook.url", "spec.rooms.publishHook.url"),
        ("rooms.history", "spec.rooms.history"),
        ("transports", "spec.transports"),
    ] {
        assert_eq!(crd_path(&rt, from), to, "{from}");
    }
}
