use super::*;
use crate::fixtures::{BASE_YAML, base_config, route, route_created_at};

const NO_LIMITS: Limits = Limits { grace_period: None };

fn refs() -> Refs {
    Refs::default()
        .with_service("default", "chat", &[80])
        .with_service("other", "chat", &[80])
}

#[test]
fn a_valid_route_is_accepted_and_lands_in_the_snapshot() {
    let rt = route(
        "default",
        "chat",
        "hostnames: [chat.example.com]\nbackend: {name: chat, port: 80}",
    );
    let p = plan(&base_config(), &[rt], &refs(), NO_LIMITS);
    let e = &p.routes["default/chat"];
    assert!(e.accepted.ok, "{e:?}");
    assert!(e.resolved_refs.ok);
    assert_eq!(p.config.routes.len(), 1);
    assert_eq!(p.config.routes[0].name, "default/chat");
    assert_eq!(p.config.listeners, base_config().listeners);
    assert!(p.base_problems.is_empty());
}

#[test]
fn the_base_configs_listener_path_settings_reach_the_snapshot() {
    let base = GatewayConfig::from_yaml(&BASE_YAML.replace(
        "  address: 0.0.0.0:8443\n",
        "  address: 0.0.0.0:8443\n  paths: {mergeSlashes: false, escapedSlashes: keep}\n",
    ))
    .unwrap();
    let rt = route("default", "chat", "backend: {name: chat, port: 80}");
    let p = plan(&base, &[rt], &refs(), NO_LIMITS);
    let written = GatewayConfig::from_yaml(&p.config.to_yaml()).unwrap();
    assert_eq!(
        written.listeners[0].paths,
        switchboard_config::ListenerPaths {
            merge_slashes: false,
            escaped_slashes: switchboard_config::EscapedSlashes::Keep,
        }
    );
}

#[test]
fn the_older_route_wins_a_conflict_and_the_loser_names_it() {
    let old = route_created_at(
        "other",
        "first",
        "hostnames: [chat.example.com]\npath: {value: /ws}\nbackend: {name: chat, port: 80}",
        100,
    );
    let new = route_created_at(
        "default",
        "second",
        "hostnames: [chat.example.com]\npath: {value: /ws}\nbackend: {name: chat, port: 80}",
        200,
    );
    // Input order must not matter.
    let p = plan(&base_config(), &[new, old], &refs(), NO_LIMITS);
    assert!(p.routes["other/first"].accepted.ok);
    let loser = &p.routes["default/second"].accepted;
    assert_eq!(loser.reason, reasons::CONFLICTED);
    assert!(loser.message.contains("other/first"), "{}", loser.message);
    assert!(
        loser.message.contains("chat.example.com"),
        "{}",
        loser.message
    );
    assert_eq!(p.config.routes.len(), 1);
    assert_eq!(p.config.routes[0].name, "other/first");
}

#[test]
fn a_creation_time_tie_goes_to_namespace_name_order() {
    let a = route_created_at("b-ns", "x", "backend: {name: chat, port: 80}", 100);
    let b = route_created_at("a-ns", "z", "backend: {name: chat, port: 80}", 100);
    let refs = Refs::default()
        .with_service("a-ns", "chat", &[80])
        .with_service("b-ns", "chat", &[80]);
    let p = plan(&base_config(), &[a, b], &refs, NO_LIMITS);
    assert!(p.routes["a-ns/z"].accepted.ok);
    assert_eq!(p.routes["b-ns/x"].accepted.reason, reasons::CONFLICTED);
}

#[test]
fn hosts_conflict_case_insensitively_and_any_shared_host_is_enough() {
    let old = route_created_at(
        "default",
        "a",
        "hostnames: [a.example.com, b.example.com]\nbackend: {name: chat, port: 80}",
        1,
    );
    let new = route_created_at(
        "default",
        "b",
        "hostnames: [c.example.com, B.EXAMPLE.COM]\nbackend: {name: chat, port: 80}",
        2,
    );
    let p = plan(&base_config(), &[old, new], &refs(), NO_LIMITS);
    assert_eq!(p.routes["default/b"].accepted.reason, reasons::CONFLICTED);
}

#[test]
fn different_paths_or_match_types_or_hosts_do_not_conflict() {
    let routes = [
        route_created_at(
            "default",
            "a",
            "path: {value: /ws}\nbackend: {name: chat, port: 80}",
            1,
        ),
        route_created_at(
            "default",
            "b",
            "path: {value: /ws, type: Exact}\nbackend: {name: chat, port: 80}",
            2,
        ),
        route_created_at(
            "default",
            "c",
            "path: {value: /other}\nbackend: {name: chat, port: 80}",
            3,
        ),
        route_created_at(
            "default",
            "d",
            "hostnames: [x.example.com]\npath: {value: /ws}\nbackend: {name: chat, port: 80}",
            4,
        ),
    ];
    let p = plan(&base_config(), &routes, &refs(), NO_LIMITS);
    assert!(p.routes.values().all(|e| e.accepted.ok), "{:?}", p.routes);
    assert_eq!(p.config.routes.len(), 4);
}

#[test]
fn an_invalid_older_route_does_not_block_a_valid_newer_one() {
    let old = route_created_at(
        "default",
        "a",
        "auth: {allowedOrigins: ['https://*.com']}\nbackend: {name: chat, port: 80}",
        1,
    );
    let new = route_created_at("default", "b", "backend: {name: chat, port: 80}", 2);
    let p = plan(&base_config(), &[old, new], &refs(), NO_LIMITS);
    let a = &p.routes["default/a"].accepted;
    assert_eq!(a.reason, reasons::INVALID);
    assert!(
        a.message.starts_with("spec.auth.allowedOrigins[0]:"),
        "{}",
        a.message
    );
    assert!(p.routes["default/b"].accepted.ok);
}

#[test]
fn the_gateway_validator_messages_name_crd_fields() {
    let rt = route(
        "default",
        "chat",
        "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: i, jwksUri: 'https://i/j', leeway: 1m}]}}",
    );
    let p = plan(&base_config(), &[rt], &refs(), NO_LIMITS);
    let a = &p.routes["default/chat"].accepted;
    assert_eq!(a.reason, reasons::INVALID);
    assert_eq!(
        a.message,
        "spec.auth.jwt.providers[0].leeway: must be at most 30s"
    );
}

/// One route on its own, case by case: the `Accepted` and `ResolvedRefs` reasons its spec
/// earns, whether it reaches the snapshot, and how the message that explains it starts (the
/// `Accepted` message when that is False, else the `ResolvedRefs` one).
#[test]
fn a_route_alone_gets_the_verdicts_its_spec_earns() {
    struct Case {
        what: &'static str,
        spec: &'static str,
        /// The value of key `k` of Secret `default/keys`, when it exists.
        secret: Option<&'static [u8]>,
        accepted: &'static str,
        resolved_refs: &'static str,
        served: bool,
        message: &'static str,
    }
    const WITH_SECRET_KEY: &str = "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: i, secretRef: {name: keys, key: k}, algorithms: [HS256]}]}}";
    let cases = [
        Case {
            what: "a drain longer than the gateway deadline is invalid",
            spec: "backend: {name: chat, port: 80}\ndrain: {window: 2h}",
            secret: None,
            accepted: reasons::INVALID,
            resolved_refs: reasons::RESOLVED_REFS,
            served: false,
            message: "spec.drain.window:",
        },
        Case {
            what: "a missing backend Service keeps the route accepted",
            spec: "backend: {name: gone, port: 80}",
            secret: None,
            accepted: reasons::ACCEPTED,
            resolved_refs: reasons::BACKEND_NOT_FOUND,
            served: true,
            message: "spec.backend: Service default/gone not found",
        },
        Case {
            what: "a missing Secret keeps the route out of the snapshot",
            spec: WITH_SECRET_KEY,
            secret: None,
            accepted: reasons::UNRESOLVED_REFS,
            resolved_refs: reasons::SECRET_NOT_FOUND,
            served: false,
            message: "not served until its Secrets resolve: spec.auth.jwt.providers[0].secretRef: Secret default/keys not found",
        },
        Case {
            what: "a short HMAC secret is an invalid Secret, with the secretRef named",
            spec: WITH_SECRET_KEY,
            secret: Some(b"short"),
            accepted: reasons::UNRESOLVED_REFS,
            resolved_refs: reasons::INVALID_SECRET,
            served: false,
            message: "not served until its Secrets resolve: spec.auth.jwt.providers[0].secretRef: key `k` of Secret default/keys: HMAC secrets must be at least 32 bytes (this one has 5)",
        },
        Case {
            what: "a feature the gateways cannot serve yet is unsupported",
            spec: "mode: rooms\nrooms: {presence: true}\ndrain: {reconnectHint: 2s}",
            secret: None,
            accepted: reasons::UNSUPPORTED,
            resolved_refs: reasons::RESOLVED_REFS,
            served: false,
            message: "spec.drain.reconnectHint:",
        },
    ];
    for c in cases {
        let mut refs = refs();
        if let Some(value) = c.secret {
            refs = refs.with_secret("default", "keys", "k", value);
        }
        let p = plan(
            &base_config(),
            &[route("default", "chat", c.spec)],
            &refs,
            NO_LIMITS,
        );
        let e = &p.routes["default/chat"];
        assert_eq!(e.accepted.reason, c.accepted, "{}: {e:?}", c.what);
        assert_eq!(e.resolved_refs.reason, c.resolved_refs, "{}: {e:?}", c.what);
        assert_eq!(p.config.routes.len(), usize::from(c.served), "{}", c.what);
        let message = if e.accepted.ok {
            &e.resolved_refs.message
        } else {
            &e.accepted.message
        };
        assert!(message.starts_with(c.message), "{}: {message}", c.what);
    }
}

#[test]
fn a_rooms_route_is_accepted_and_its_message_names_the_rooms_namespace() {
    let rt = route(
        "collab",
        "docs",
        "mode: rooms\npath: {value: /rooms}\nrooms: {join: ['doc:*'], presence: true}",
    );
    let p = plan(&base_config(), &[rt], &refs(), NO_LIMITS);
    let e = &p.routes["collab/docs"];
    assert!(e.accepted.ok, "{e:?}");
    assert!(e.resolved_refs.ok, "no backend to resolve: {e:?}");
    assert!(
        e.accepted.message.contains("rooms namespace `collab_docs`"),
        "{}",
        e.accepted.message
    );
    assert_eq!(p.config.routes.len(), 1);
    let r = &p.config.routes[0];
    assert_eq!(r.mode, switchboard_config::Mode::Rooms);
    assert_eq!(
        r.rooms.as_ref().and_then(|r| r.namespace.as_deref()),
        Some("collab_docs")
    );
    assert_eq!(validate(&p.config), vec![]);
}

#[test]
fn the_same_rooms_namespace_in_two_kubernetes_namespaces_is_two_namespaces() {
    let a = route_created_at(
        "team-a",
        "x",
        "mode: rooms\npath: {value: /a}\nrooms: {namespace: chat, history: {maxMessages: 5}}",
        1,
    );
    let b = route_created_at(
        "team-b",
        "x",
        "mode: rooms\npath: {value: /b}\nrooms: {namespace: chat}",
        2,
    );
    let p = plan(&base_config(), &[a, b], &refs(), NO_LIMITS);
    assert!(p.routes.values().all(|e| e.accepted.ok), "{:?}", p.routes);
    let namespaces: Vec<_> = p
        .config
        .routes
        .iter()
        .map(|r| r.rooms.as_ref().unwrap().namespace.clone().unwrap())
        .collect();
    assert_eq!(namespaces, ["team-a_chat", "team-b_chat"]);
}

#[test]
fn routes_sharing_a_rooms_namespace_must_keep_the_same_history_and_the_older_wins() {
    // The newer route sorts first by name, so the gateway validator alone would blame the
    // older one; the plan blames the newer, like a host/path conflict.
    let old = route_created_at(
        "collab",
        "z-old",
        "mode: rooms\npath: {value: /a}\nrooms: {namespace: shared, history: {maxMessages: 10}}",
        1,
    );
    let new = route_created_at(
        "collab",
        "a-new",
        "mode: rooms\npath: {value: /b}\nrooms: {namespace: shared}",
        2,
    );
    let same = route_created_at(
        "collab",
        "m-same",
        "mode: rooms\npath: {value: /c}\nrooms: {namespace: shared, history: {maxMessages: 10}}",
        3,
    );
    let p = plan(&base_config(), &[new, old, same], &refs(), NO_LIMITS);
    assert!(p.routes["collab/z-old"].accepted.ok);
    assert!(p.routes["collab/m-same"].accepted.ok);
    let a = &p.routes["collab/a-new"].accepted;
    assert_eq!(a.reason, reasons::INVALID);
    assert!(
        a.message.starts_with(
            "spec.rooms.history: rooms namespace `collab_shared` is shared with collab/z-old"
        ),
        "{}",
        a.message
    );
    assert_eq!(p.config.routes.len(), 2);
    assert_eq!(validate(&p.config), vec![]);
}

#[test]
fn nats_notifications_are_invalid_unless_the_gateways_have_a_nats_bus() {
    let rt = route(
        "default",
        "r",
        "mode: rooms\nrooms: {join: ['*'], notifyNats: true}",
    );
    let p = plan(
        &base_config(),
        std::slice::from_ref(&rt),
        &refs(),
        NO_LIMITS,
    );
    let a = &p.routes["default/r"].accepted;
    assert_eq!(a.reason, reasons::INVALID);
    assert!(
        a.message
            .starts_with("spec.rooms.notifyNats: needs bus.nats"),
        "{}",
        a.message
    );
    assert!(p.config.routes.is_empty());

    let text = format!(
        "{}bus:\n  nats:\n    urls: ['nats://nats.switchboard-system.svc:4222']\n",
        crate::fixtures::BASE_YAML
    );
    let base = crate::settings::parse_base_config(&text, "base.yaml").unwrap();
    let p = plan(&base, &[rt], &refs(), NO_LIMITS);
    assert!(p.routes["default/r"].accepted.ok, "{:?}", p.routes);
    assert!(p.config.routes[0].rooms.as_ref().unwrap().notify_nats);
    assert_eq!(validate(&p.config), vec![]);
}

#[test]
fn the_base_configs_bus_and_publish_api_reach_the_snapshot_unchanged() {
    let text = format!(
        "{}bus:\n  nats:\n    urls: ['nats://nats.switchboard-system.svc:4222']\n    subjectPrefix: sb\n    credentialsFile: /etc/nats/gw.creds\n    presenceTtl: 20s\npublishApi:\n  tokenFile: /etc/switchboard/publish-token\n",
        crate::fixtures::BASE_YAML
    );
    let base = crate::settings::parse_base_config(&text, "base.yaml").unwrap();
    assert!(base.bus.nats.is_some() && base.publish_api.is_some());
    let rt = route("default", "r", "mode: rooms\nrooms: {join: ['*']}");
    let p = plan(&base, &[rt], &refs(), NO_LIMITS);
    assert_eq!(p.config.bus, base.bus);
    assert_eq!(p.config.publish_api, base.publish_api);
    let back = GatewayConfig::from_yaml(&p.config.to_yaml()).unwrap();
    assert_eq!(back.bus, base.bus);
    assert_eq!(back.publish_api, base.publish_api);
    assert_eq!(validate(&p.config), vec![]);
}

#[test]
fn routes_being_deleted_are_left_out_entirely() {
    let mut rt = route("default", "chat", "backend: {name: chat, port: 80}");
    rt.metadata.deletion_timestamp = rt.metadata.creation_timestamp.clone();
    let p = plan(&base_config(), &[rt], &refs(), NO_LIMITS);
    assert!(p.routes.is_empty());
    assert!(p.config.routes.is_empty());
}

#[test]
fn drain_fits_compares_propagation_plus_window_with_the_grace_period() {
    let rt = route(
        "default",
        "chat",
        "backend: {name: chat, port: 80}\ndrain: {window: 40s}",
    );
    let fits = plan(
        &base_config(),
        std::slice::from_ref(&rt),
        &refs(),
        Limits {
            grace_period: Some(StdDuration::from_secs(90)),
        },
    );
    let v = fits.routes["default/chat"].drain_fits.clone().unwrap();
    assert!(v.ok, "{v:?}");
    let tight = plan(
        &base_config(),
        &[rt],
        &refs(),
        Limits {
            grace_period: Some(StdDuration::from_secs(30)),
        },
    );
    let v = tight.routes["default/chat"].drain_fits.clone().unwrap();
    assert_eq!(v.reason, reasons::EXCEEDS_GRACE_PERIOD);
    assert!(v.message.contains("45s"), "{}", v.message);
    assert!(v.message.contains("30s"), "{}", v.message);
}

#[test]
fn drain_fits_is_absent_when_the_grace_period_is_unknown() {
    let rt = route("default", "chat", "backend: {name: chat, port: 80}");
    let p = plan(&base_config(), &[rt], &refs(), NO_LIMITS);
    assert_eq!(p.routes["default/chat"].drain_fits, None);
}

#[test]
fn the_snapshot_is_sorted_by_route_name_whatever_the_input_order() {
    let routes = [
        route_created_at(
            "default",
            "z",
            "path: {value: /z}\nbackend: {name: chat, port: 80}",
            1,
        ),
        route_created_at(
            "default",
            "a",
            "path: {value: /a}\nbackend: {name: chat, port: 80}",
            2,
        ),
    ];
    let p = plan(&base_config(), &routes, &refs(), NO_LIMITS);
    let names: Vec<_> = p.config.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["default/a", "default/z"]);
    assert_eq!(p.config.generation, 0);
}

#[test]
fn the_planned_snapshot_passes_the_gateway_validator() {
    let routes = [
        route_created_at(
            "default",
            "a",
            "hostnames: [a.example.com]\nbackend: {name: chat, port: 80}",
            1,
        ),
        route_created_at(
            "other",
            "b",
            "hostnames: [a.example.com]\nbackend: {name: chat, port: 80}",
            2,
        ),
        route_created_at(
            "default",
            "c",
            "auth: {allowedOrigins: [nope]}\nbackend: {name: chat, port: 80}",
            3,
        ),
    ];
    let p = plan(&base_config(), &routes, &refs(), NO_LIMITS);
    assert_eq!(validate(&p.config), vec![]);
    assert!(GatewayConfig::from_yaml(&p.config.to_yaml()).is_ok());
}

#[test]
fn a_truncated_pem_in_a_secret_keeps_only_its_route_out_with_the_reason() {
    use crate::fixtures::{RSA_PUB_PEM, truncated_pem};
    let with_key = |name: &str, path: &str| {
        route(
            "default",
            name,
            &format!(
                "path: {{value: {path}}}\nbackend: {{name: chat, port: 80}}\nauth: {{jwt: {{providers: [{{name: idp, secretRef: {{name: {name}-key, key: pub.pem}}, algorithms: [RS256]}}]}}}}"
            ),
        )
    };
    let refs = refs()
        .with_secret(
            "default",
            "broken-key",
            "pub.pem",
            truncated_pem().as_bytes(),
        )
        .with_secret("default", "good-key", "pub.pem", RSA_PUB_PEM.as_bytes());
    let p = plan(
        &base_config(),
        &[with_key("broken", "/broken"), with_key("good", "/good")],
        &refs,
        NO_LIMITS,
    );
    let good = &p.routes["default/good"];
    assert!(good.accepted.ok, "{good:?}");
    let broken = &p.routes["default/broken"];
    assert!(
        !broken.accepted.ok,
        "a truncated PEM is accepted: {broken:?}"
    );
    assert_eq!(broken.accepted.reason, reasons::UNRESOLVED_REFS);
    assert_eq!(broken.resolved_refs.reason, reasons::INVALID_SECRET);
    let message = &broken.resolved_refs.message;
    assert!(
        message.starts_with(
            "spec.auth.jwt.providers[0].secretRef: key `pub.pem` of Secret default/broken-key"
        ),
        "{message}"
    );
    assert!(message.contains("RS256"), "{message}");
    assert!(broken.compiled.is_none());
    let names: Vec<_> = p.config.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["default/good"]);
}

#[test]
fn routes_sharing_a_rooms_namespace_must_agree_on_what_it_serves_and_the_older_wins() {
    // The newer route sorts first by name, so the gateway validator alone would blame the
    // older one: documents and room messages, or two batch settings, in one namespace.
    for (older, newer, field) in [
        (
            "mode: rooms\npath: {value: /docs}\nrooms: {namespace: shared, protocol: yjs, pathRoom: '/docs/{room}'}",
            "mode: rooms\npath: {value: /b}\nrooms: {namespace: shared}",
            "spec.rooms.protocol",
        ),
        (
            "mode: rooms\npath: {value: /a}\nrooms: {namespace: shared}",
            "mode: rooms\npath: {value: /b}\nrooms: {namespace: shared, batch: {rooms: ['feed:*'], window: 50ms}}",
            "spec.rooms.batch",
        ),
    ] {
        let old = route_created_at("collab", "z-old", older, 1);
        let new = route_created_at("collab", "a-new", newer, 2);
        let p = plan(&base_config(), &[new, old], &refs(), NO_LIMITS);
        assert!(
            p.routes["collab/z-old"].accepted.ok,
            "{field}: {:?}",
            p.routes["collab/z-old"].accepted
        );
        let a = &p.routes["collab/a-new"].accepted;
        assert_eq!(a.reason, reasons::INVALID, "{field}");
        assert!(
            a.message.starts_with(&format!(
                "{field}: rooms namespace `collab_shared` is shared with collab/z-old"
            )),
            "{}",
            a.message
        );
        assert_eq!(validate(&p.config), vec![]);
    }
}

#[test]
fn prefix_routes_differing_only_by_a_trailing_slash_conflict_and_the_older_wins() {
    let old = route_created_at(
        "default",
        "z-old",
        "path: {value: /ws}\nbackend: {name: chat, port: 80}",
        1,
    );
    let new = route_created_at(
        "default",
        "a-new",
        "path: {value: /ws/}\nbackend: {name: chat, port: 80}",
        2,
    );
    let p = plan(&base_config(), &[new, old], &refs(), NO_LIMITS);
    assert!(p.routes["default/z-old"].accepted.ok);
    assert_eq!(
        p.routes["default/a-new"].accepted.reason,
        reasons::CONFLICTED
    );
}
