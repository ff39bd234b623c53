//! References: Services and Secrets resolved (or reported), objects listed for event mapping,
//! config paths mapped to CRD fields, and compiled routes against the gateway's validator.

use super::*;

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
