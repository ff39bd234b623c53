//! Proxy routes: defaults, every field, compression, the identity signature.

use super::*;

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
fn a_proxy_route_is_websocket_only_and_has_no_rooms() {
    let r = compiled("backend: {name: chat, port: 80}");
    assert!(r.rooms.is_none());
    assert!(r.transports.websocket && !r.transports.sse && !r.transports.long_polling);
}
