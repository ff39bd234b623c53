use std::time::Duration;

use crate::{Error, GatewayConfig};

const BASE: &str = "apiVersion: switchboard.dev/v1alpha1\nkind: GatewayConfig\nlisteners: [{name: public, address: '127.0.0.1:8080'}]\n";

fn problems(extra: &str) -> Vec<String> {
    match GatewayConfig::from_yaml(&format!("{BASE}{extra}")) {
        Ok(_) => vec![],
        Err(Error::Invalid(p)) => p.into_iter().map(|p| p.to_string()).collect(),
        Err(e) => vec![e.to_string()],
    }
}

#[test]
fn minimal_document_is_valid_with_defaults() {
    let cfg = GatewayConfig::from_yaml(BASE).unwrap();
    assert_eq!(cfg.admin.address.port(), 9090);
    assert_eq!(cfg.limits.max_connections, 10_000);
    assert!(cfg.routes.is_empty());
}

#[test]
fn listener_paths_default_to_merging_and_refusing_and_read_every_action() {
    use crate::{EscapedSlashes, ListenerPaths};
    let cfg = GatewayConfig::from_yaml(BASE).unwrap();
    assert_eq!(cfg.listeners[0].paths, ListenerPaths::default());
    assert!(cfg.listeners[0].paths.merge_slashes);
    assert_eq!(
        cfg.listeners[0].paths.escaped_slashes,
        EscapedSlashes::Reject
    );
    assert!(
        !cfg.to_yaml().contains("paths"),
        "defaults are not written back"
    );
    for (text, action) in [
        ("reject", EscapedSlashes::Reject),
        ("keep", EscapedSlashes::Keep),
        ("unescapeAndForward", EscapedSlashes::UnescapeAndForward),
    ] {
        let cfg = GatewayConfig::from_yaml(&BASE.replace(
            "address: '127.0.0.1:8080'",
            &format!(
                "address: '127.0.0.1:8080', paths: {{mergeSlashes: false, escapedSlashes: {text}}}"
            ),
        ))
        .unwrap();
        assert_eq!(
            cfg.listeners[0].paths,
            ListenerPaths {
                merge_slashes: false,
                escaped_slashes: action
            }
        );
        let again = GatewayConfig::from_yaml(&cfg.to_yaml()).unwrap();
        assert_eq!(again.listeners[0].paths, cfg.listeners[0].paths);
    }
    let err = GatewayConfig::from_yaml(&BASE.replace(
        "address: '127.0.0.1:8080'",
        "address: '127.0.0.1:8080', paths: {escapedSlashes: decode}",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("listeners[0].paths.escapedSlashes"), "{err}");
}

#[test]
fn unknown_fields_are_refused_with_their_path() {
    let err = GatewayConfig::from_yaml(&format!(
        "{BASE}routes: [{{name: a, path: {{value: /}}, prxy: {{}}}}]"
    ))
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("routes[0]"), "{text}");
    assert!(text.contains("prxy"), "{text}");
}

#[test]
fn bad_origin_pattern_names_its_path() {
    let p = problems(
        "routes: [{name: a, path: {value: /ws}, origins: {allowed: ['https://ok.example.com', 'https://*.com']}, proxy: {backends: []}}]",
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("routes[0].origins.allowed[1]:"), "{p:?}");
}

#[test]
fn duplicate_host_and_path_is_a_conflict() {
    let p = problems(
        "routes: [{name: a, path: {value: /ws}, proxy: {backends: []}}, {name: b, path: {value: /ws}, proxy: {backends: []}}]",
    );
    assert!(p.iter().any(|x| x.starts_with("routes[1].path:")), "{p:?}");
}

#[test]
fn prefixes_that_differ_only_by_a_trailing_slash_are_the_same_route() {
    // Both match `/ws` and everything under `/ws/` alike: which one served was a tie.
    let p = problems(
        "routes: [{name: a, path: {value: /ws}, proxy: {backends: []}}, {name: b, path: {value: /ws/}, proxy: {backends: []}}]",
    );
    assert!(
        p.iter()
            .any(|x| x.starts_with("routes[1].path:") && x.contains("already served")),
        "{p:?}"
    );
    // An exact path is not a prefix: `/ws/` exactly is another path than `/ws`.
    let p = problems(
        "routes: [{name: a, path: {type: Exact, value: /ws}, proxy: {backends: []}}, {name: b, path: {type: Exact, value: /ws/}, proxy: {backends: []}}]",
    );
    assert!(p.is_empty(), "{p:?}");
}

#[test]
fn a_route_path_no_normalized_request_can_have_is_refused_with_the_path_to_write() {
    let route = |path: &str| {
        format!("routes: [{{name: a, path: {{value: '{path}'}}, proxy: {{backends: []}}}}]")
    };
    for (path, says) in [
        ("/a/../x", "`/x`"),
        ("/a/./b", "`/a/b`"),
        ("//a", "`/a`"),
        ("/rooms//chat", "`/rooms/chat`"),
        ("/%61pi", "`/api`"),
        ("/a%2cb%3a", "`/a%2Cb%3A`"),
        ("/a%2Fb", "encoded slash"),
        ("/a/..;x/b", "dot segment"),
        ("/a%zz", "percent-encoding"),
        ("/a?b=1", "query"),
        ("/a#b", "query"),
        ("/caf\u{e9}", "`/caf%C3%A9`"),
        ("/a b", "`/a%20b`"),
        ("/a<b>", "`/a%3Cb%3E`"),
        ("/a|b", "`/a%7Cb`"),
    ] {
        let p = problems(&route(path));
        assert!(
            p.iter()
                .any(|x| x.starts_with("routes[0].path.value:") && x.contains(says)),
            "{path}: {p:?}"
        );
    }
    for path in ["/", "/ws", "/rooms/", "/a%2Cb", "/~user/x.y"] {
        assert_eq!(problems(&route(path)), Vec::<String>::new(), "{path}");
    }
    // What a listener keeps, a route may name: `//a` where slashes are not merged, `%2F` where
    // encoded slashes are kept.
    let keep = BASE.replace(
        "address: '127.0.0.1:8080'",
        "address: '127.0.0.1:8080', paths: {mergeSlashes: false, escapedSlashes: keep}",
    );
    for path in ["//a", "/a%2Fb"] {
        let cfg = GatewayConfig::from_yaml(&format!("{keep}{}", route(path)));
        assert!(
            cfg.is_ok(),
            "{path}: {:?}",
            cfg.err().map(|e| e.to_string())
        );
    }
}

#[test]
fn a_listener_on_a_port_that_a_wildcard_address_already_binds_is_refused() {
    let doc = |a: &str, b: &str, admin: &str| {
        format!(
            "apiVersion: switchboard.dev/v1alpha1\nkind: GatewayConfig\nlisteners: [{{name: a, address: '{a}'}}, {{name: b, address: '{b}'}}]\nadmin: {{address: '{admin}'}}\n"
        )
    };
    for (a, b, admin, problem) in [
        (
            "0.0.0.0:8080",
            "127.0.0.1:8080",
            "127.0.0.1:9090",
            "listeners[1].address",
        ),
        (
            "127.0.0.1:8080",
            "[::]:8080",
            "127.0.0.1:9090",
            "listeners[1].address",
        ),
        (
            "127.0.0.1:8080",
            "127.0.0.2:8081",
            "0.0.0.0:8081",
            "listeners[1].address",
        ),
        (
            "0.0.0.0:8080",
            "[::]:8080",
            "127.0.0.1:9090",
            "listeners[1].address",
        ),
        (
            "[::ffff:127.0.0.1]:8080",
            "127.0.0.1:8080",
            "127.0.0.1:9090",
            "listeners[1].address",
        ),
    ] {
        let Err(Error::Invalid(p)) = GatewayConfig::from_yaml(&doc(a, b, admin)) else {
            panic!("{a} {b} admin {admin} must be refused");
        };
        let p: Vec<String> = p.into_iter().map(|p| p.to_string()).collect();
        assert!(
            p.iter()
                .any(|x| x.starts_with(problem) && x.contains("port")),
            "{a} {b} {admin}: {p:?}"
        );
    }
    // Different ports, or two specific addresses on one port, bind side by side.
    for (a, b) in [
        ("0.0.0.0:8080", "0.0.0.0:8081"),
        ("127.0.0.1:8080", "127.0.0.2:8080"),
        ("0.0.0.0:8080", "[::1]:8080"),
    ] {
        assert!(
            GatewayConfig::from_yaml(&doc(a, b, "127.0.0.1:9090")).is_ok(),
            "{a} {b}"
        );
    }
}

#[test]
fn listeners_on_port_0_may_share_an_address_listeners_on_a_fixed_port_may_not() {
    let doc = |port: u16| {
        format!(
            "apiVersion: switchboard.dev/v1alpha1\nkind: GatewayConfig\nlisteners: [{{name: a, address: '127.0.0.1:{port}'}}, {{name: b, address: '127.0.0.1:{port}'}}]\nadmin: {{address: '127.0.0.1:{port}'}}\n"
        )
    };
    assert!(GatewayConfig::from_yaml(&doc(0)).is_ok());
    let Err(Error::Invalid(p)) = GatewayConfig::from_yaml(&doc(8080)) else {
        panic!("two listeners and the admin on 127.0.0.1:8080 must be refused");
    };
    let p: Vec<String> = p.into_iter().map(|p| p.to_string()).collect();
    assert_eq!(
        p,
        vec![
            "listeners[0].address: is the same as admin.address",
            "listeners[1].address: 127.0.0.1:8080 is used twice",
            "listeners[1].address: is the same as admin.address",
        ],
    );
}

#[test]
fn app_keepalive_is_on_by_default_and_needs_a_timeout_when_on() {
    let cfg = GatewayConfig::from_yaml(&format!(
        "{BASE}routes: [{{name: a, path: {{value: /}}, proxy: {{backends: []}}}}]"
    ))
    .unwrap();
    let app = &cfg.routes[0].keepalive.app;
    assert_eq!(
        (app.interval, app.timeout),
        (Duration::from_secs(15), Duration::from_secs(10))
    );
    let p = problems(
        "routes: [{name: a, path: {value: /}, proxy: {backends: []}, keepalive: {app: {interval: 5s, timeout: 0s}}}]",
    );
    assert_eq!(
            p,
            vec![
                "routes[0].keepalive.app.timeout: must be more than 0s when pings toward the app are on"
                    .to_string()
            ]
        );
    assert!(
            problems(
                "routes: [{name: a, path: {value: /}, proxy: {backends: []}, keepalive: {app: {interval: 0s, timeout: 0s}}}]"
            )
            .is_empty()
        );
}

#[test]
fn leeway_over_thirty_seconds_is_refused() {
    let p = problems(
        "routes: [{name: a, path: {value: /}, jwt: {keys: [{inline: {algorithm: HS256, secret: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'}}], leeway: 31s}, proxy: {backends: []}}]",
    );
    assert_eq!(
        p,
        vec!["routes[0].jwt.leeway: must be at most 30s".to_string()]
    );
}

#[test]
fn an_identity_signature_secret_shorter_than_32_bytes_is_refused() {
    let route = |secret: &str| {
        format!(
            "routes: [{{name: a, path: {{value: /}}, proxy: {{backends: [], signature: {{secret: '{secret}'}}}}}}]"
        )
    };
    assert_eq!(
        problems(&route(&"k".repeat(31))),
        vec![
            "routes[0].proxy.signature.secret: is 31 bytes; an HMAC-SHA256 key needs at least 32"
                .to_string()
        ]
    );
    assert!(problems(&route(&"k".repeat(32))).is_empty());
}

#[test]
fn hmac_algorithm_with_a_pem_key_is_refused() {
    let p = problems(
        "routes: [{name: a, path: {value: /}, jwt: {keys: [{inline: {algorithm: HS256, pem: x}}]}, proxy: {backends: []}}]",
    );
    assert!(p[0].contains("needs a secret"), "{p:?}");
}

#[test]
fn cookie_token_without_origin_list_is_refused() {
    let p = problems(
        "routes: [{name: a, path: {value: /}, jwt: {keys: [{jwks: {url: 'http://x/jwks'}}], tokenSources: [{cookie: {name: s}}]}, proxy: {backends: []}}]",
    );
    assert!(
        p.iter()
            .any(|x| x.starts_with("routes[0].origins.allowed:")),
        "{p:?}"
    );
}

#[test]
fn drain_longer_than_the_deadline_is_refused() {
    let p = problems(
        "drain: {deadline: 10s, propagation: 5s}\nroutes: [{name: a, path: {value: /}, proxy: {backends: []}, drain: {window: 6s}}]",
    );
    assert!(
        p.iter().any(|x| x.starts_with("routes[0].drain.window:")),
        "{p:?}"
    );
}

#[test]
fn invalid_close_code_is_refused() {
    let p = problems(
        "routes: [{name: a, path: {value: /}, proxy: {backends: []}, drain: {closeCode: 1006}}]",
    );
    assert!(p[0].starts_with("routes[0].drain.closeCode"), "{p:?}");
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let p = problems(
        "limits: {maxConnections: 0, maxHeaderBytes: 10}\nroutes: [{name: a, path: {value: nope}}]",
    );
    assert!(p.len() >= 4, "{p:?}");
}

#[test]
fn nats_notifications_without_a_nats_bus_are_refused_with_their_path() {
    let route = |name: &str, notify_nats: bool| {
        format!(
            "{{name: {name}, path: {{value: /{name}}}, mode: rooms, rooms: {{notifyNats: {notify_nats}}}}}"
        )
    };
    let routes = format!(
        "routes: [{}, {}, {}]",
        route("a", false),
        route("b", false),
        route("c", true)
    );
    assert_eq!(
            problems(&routes),
            vec![
                "routes[2].rooms.notifyNats: needs bus.nats (notifications are published on a NATS subject)"
                    .to_string()
            ]
        );
    let with_nats = format!("bus: {{nats: {{urls: ['nats://127.0.0.1:4222']}}}}\n{routes}");
    assert_eq!(problems(&with_nats), Vec::<String>::new());
    let cfg = GatewayConfig::from_yaml(&format!("{BASE}{with_nats}")).unwrap();
    let flags: Vec<bool> = cfg
        .routes
        .iter()
        .map(|r| r.rooms.as_ref().unwrap().notify_nats)
        .collect();
    assert_eq!(flags, [false, false, true], "default false");
}

#[test]
fn nats_replicas_default_to_one_and_must_be_one_to_five() {
    let bus = |extra: &str| {
        format!("bus: {{nats: {{urls: ['nats://127.0.0.1:4222']{extra}}}}}\nroutes: []")
    };
    let cfg = GatewayConfig::from_yaml(&format!("{BASE}{}", bus(""))).unwrap();
    assert_eq!(cfg.bus.nats.as_ref().map(|n| n.replicas), Some(1));
    for ok in [1, 3, 5] {
        assert_eq!(
            problems(&bus(&format!(", replicas: {ok}"))),
            Vec::<String>::new()
        );
    }
    for bad in [0, 6] {
        assert_eq!(
                problems(&bus(&format!(", replicas: {bad}"))),
                vec![
                    "bus.nats.replicas: must be 1 to 5 (JetStream's limit; 3 on a three-server cluster)"
                        .to_string()
                ]
            );
    }
}

#[test]
fn room_patterns_are_checked_with_the_gateways_grammar() {
    let route = |pattern: &str| {
        format!(
            "routes: [{{name: a, path: {{value: /}}, mode: rooms, rooms: {{join: ['chat:*', '{pattern}']}}}}]"
        )
    };
    assert_eq!(problems(&route("user:{sub}")), Vec::<String>::new());
    assert_eq!(
        problems(&route("user:{sub")),
        vec!["routes[0].rooms.join[1]: `user:{sub`: `{` without its `}`".to_string()]
    );
    let p = problems(&route("chat:**"));
    assert!(p[0].contains("`**` is not allowed"), "{p:?}");
}

#[test]
fn document_round_trips_through_yaml() {
    let cfg = GatewayConfig::from_yaml(&format!("{BASE}routes: [{{name: a, path: {{value: /ws}}, proxy: {{backends: [{{address: '127.0.0.1:9000'}}], pinning: {{claim: sub}}}}, jwt: {{keys: [{{jwks: {{url: 'https://idp/jwks'}}}}]}}}}]")).unwrap();
    let again = GatewayConfig::from_yaml(&cfg.to_yaml()).unwrap();
    assert_eq!(cfg, again);
}

#[test]
fn receipts_batches_and_offline_are_checked_with_their_paths() {
    let route = |name: &str, ns: &str, rooms: &str| {
        format!(
            "{{name: {name}, path: {{value: /{name}}}, mode: rooms, rooms: {{namespace: {ns}, {rooms}}}}}"
        )
    };
    let routes = format!(
        "routes: [{}, {}, {}]",
        route(
            "a",
            "x",
            "receipts: {rooms: ['chat:**'], interval: 0s}, batch: {rooms: ['user:{sub}'], maxMessages: 0}"
        ),
        route("b", "x", "batch: {rooms: ['user:{sub}'], window: 2s}"),
        route(
            "c",
            "y",
            "offline: {rooms: ['inbox:*', 'inbox:{sub}'], notifyNats: true}"
        ),
    );
    let p = problems(&routes);
    for want in [
        "routes[0].rooms.receipts.rooms[0]:",
        "routes[0].rooms.receipts.interval: must be more than 0",
        "routes[0].rooms.batch.maxMessages: must be 1 to 1000",
        "routes[1].rooms.batch: namespace `x` is shared with routes[0], which batches differently",
        "routes[2].rooms.offline.rooms[0]: `inbox:*`: a user room pattern",
        "routes[2].rooms.offline.notifyNats: needs bus.nats",
    ] {
        assert!(p.iter().any(|x| x.starts_with(want)), "{want}: {p:?}");
    }
    assert!(
        !p.iter().any(|x| x.contains("offline.rooms[1]")),
        "inbox:{{sub}} is a user room pattern: {p:?}"
    );
    assert_eq!(p.len(), 6, "{p:?}");
}

#[test]
fn chat_options_take_their_documented_defaults() {
    let cfg = GatewayConfig::from_yaml(&format!(
        "{BASE}routes: [{{name: a, path: {{value: /a}}, mode: rooms, rooms: {{receipts: {{rooms: ['chat:*']}}, batch: {{rooms: ['user:{{sub}}']}}, offline: {{}}}}}}]"
    ))
    .unwrap();
    let rooms = cfg.routes[0].rooms.as_ref().unwrap();
    assert_eq!(
        rooms.receipts.as_ref().unwrap().interval,
        std::time::Duration::from_secs(1)
    );
    let b = rooms.batch.as_ref().unwrap();
    assert_eq!(
        (b.window, b.max_messages, b.group_by.as_deref()),
        (std::time::Duration::from_secs(1), 50, None)
    );
    let o = rooms.offline.as_ref().unwrap();
    assert!(o.rooms.is_empty() && o.notify.is_none() && !o.notify_nats);
}

#[test]
fn document_notifications_need_a_debounce_shorter_than_idle_unload_and_nats_for_notify_nats() {
    let route = |documents: &str| {
        format!(
            "routes: [{{name: d, path: {{value: /d}}, mode: rooms, rooms: {{protocol: yjs, pathRoom: '/d/{{room}}', documents: {documents}}}}}]"
        )
    };
    assert_eq!(
        problems(&route("{notify: {url: 'http://app/changed'}}")),
        Vec::<String>::new(),
        "defaults: 2s debounce, 30s idleUnload"
    );
    assert_eq!(
        problems(&route(
            "{notify: {url: 'http://app/changed'}, notifyDebounce: 30s, idleUnload: 30s}"
        )),
        [
            "routes[0].rooms.documents.notifyDebounce: must be more than 0 and shorter than idleUnload (the pending notification goes with the document)"
        ]
    );
    assert_eq!(
        problems(&route("{notify: {url: 'ftp://app/changed'}}")),
        ["routes[0].rooms.documents.notify.url: must be an http:// or https:// URL"]
    );
    assert_eq!(
        problems(&route("{notifyNats: true}")),
        [
            "routes[0].rooms.documents.notifyNats: needs bus.nats (notifications are published on a NATS subject)"
        ]
    );
    let cfg = GatewayConfig::from_yaml(&format!("{BASE}{}", route("{}"))).unwrap();
    let d = cfg.routes[0]
        .rooms
        .as_ref()
        .unwrap()
        .documents
        .clone()
        .unwrap();
    assert_eq!(
        (d.notify, d.notify_nats, d.notify_debounce),
        (None, false, Duration::from_secs(2))
    );
}

#[test]
fn compression_is_off_by_default_with_the_documented_settings() {
    let cfg = GatewayConfig::from_yaml(&format!(
        "{BASE}routes: [{{name: a, path: {{value: /}}, proxy: {{backends: []}}}}]"
    ))
    .unwrap();
    let c = &cfg.routes[0].compression;
    assert_eq!(
        (c.enabled, c.threshold_bytes, c.level, c.max_window_bits),
        (false, 1024, 6, 15)
    );
}

#[test]
fn compression_level_and_window_bits_out_of_range_are_refused() {
    let p = problems(
        "routes: [{name: a, path: {value: /}, proxy: {backends: []}, compression: {enabled: true, level: 0, maxWindowBits: 8}}]",
    );
    assert_eq!(
        p,
        vec![
            "routes[0].compression.level: must be 1 to 9".to_string(),
            "routes[0].compression.maxWindowBits: must be 9 to 15".to_string(),
        ]
    );
    assert!(
        problems(
            "routes: [{name: a, path: {value: /}, proxy: {backends: []}, compression: {enabled: true, thresholdBytes: 0, level: 9, maxWindowBits: 9}}]"
        )
        .is_empty()
    );
}

#[test]
fn a_duration_over_a_century_is_refused_with_its_path() {
    // Added to a clock reading it overflowed: a drain deadline of u64::MAX seconds passed
    // `--check` and the gateway panicked on SIGTERM instead of draining.
    let err =
        GatewayConfig::from_yaml(&format!("{BASE}drain: {{deadline: 18446744073709551615s}}"))
            .unwrap_err()
            .to_string();
    assert!(err.contains("drain"), "{err}");
    assert!(err.contains("at most 100 years"), "{err}");
    let ok = GatewayConfig::from_yaml(&format!("{BASE}drain: {{deadline: 100y}}"));
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn yjs_documents_and_room_messages_cannot_share_a_namespace() {
    // Documents live in their own store: a JSON route on a documents namespace had its
    // publishes acknowledged and never reach an editor.
    let route = |name: &str, protocol: &str, path_room: &str| {
        format!(
            "{{name: {name}, path: {{value: /{name}}}, mode: rooms, rooms: {{protocol: {protocol}, namespace: shared{path_room}}}}}"
        )
    };
    let p = problems(&format!(
        "routes: [{}, {}, {}]",
        route("d", "yjs", ", pathRoom: '/d/{room}'"),
        route("v", "yjs", ", pathRoom: '/v/{room}'"),
        route("j", "json", ""),
    ));
    assert_eq!(
        p,
        [
            "routes[2].rooms.protocol: namespace `shared` is shared with routes[0], which serves Yjs documents: documents and room messages need namespaces of their own"
        ],
    );
}

/// A key given twice in one mapping kept the last value silently: `jwt:` then `jwt: null`
/// served the route without authentication, a second `routes:` dropped the first list.
#[test]
fn a_key_repeated_in_one_mapping_is_refused_in_yaml_and_json() {
    let route = "routes:\n  - name: secure\n    path: {value: /api}\n    jwt:\n      keys: [{inline: {algorithm: HS256, secret: '0123456789abcdef0123456789abcdef'}}]\n    proxy: {backends: [{address: '127.0.0.1:8100'}]}\n";
    let docs = [
        format!("{BASE}{route}"),
        format!("{BASE}{}", route.replace("    proxy:", "    jwt: null\n    proxy:")),
        format!("{BASE}{route}{}", route.replace("secure", "open")),
        r#"{"apiVersion":"switchboard.dev/v1alpha1","kind":"GatewayConfig","listeners":[{"name":"p","address":"127.0.0.1:8080"}],"routes":[{"name":"s","path":{"value":"/api"},"jwt":{"keys":[{"inline":{"algorithm":"HS256","secret":"0123456789abcdef0123456789abcdef"}}]},"proxy":{"backends":[{"address":"127.0.0.1:8100"}]},"jwt":null}]}"#.to_string(),
    ];
    assert!(GatewayConfig::from_yaml(&docs[0]).is_ok());
    for (doc, key) in docs[1..].iter().zip(["jwt", "routes", "jwt"]) {
        let err = GatewayConfig::from_yaml(doc).unwrap_err().to_string();
        assert!(
            err.contains("duplicate") && err.contains(key),
            "{doc}\n-> {err}"
        );
    }
}

/// A `pathRoom` no path of the route can fit (`path: /r`, `pathRoom: /other/{room}`) served
/// nothing but 404s; it is refused at load.
#[test]
fn a_path_room_outside_the_routes_path_is_refused() {
    let doc = |kind: &str, path: &str, room: &str| {
        format!(
            "routes: [{{name: r, path: {{type: {kind}, value: '{path}'}}, mode: rooms, rooms: {{protocol: raw, join: ['*'], pathRoom: '{room}'}}}}]"
        )
    };
    for (kind, path, room) in [
        ("Prefix", "/r", "/other/{room}"),
        ("Prefix", "/r", "/rx/{room}"),
        ("Prefix", "/r/a", "/r/b{room}"),
        ("Exact", "/r/a", "/other/{room}"),
        ("Exact", "/r/", "/r/{room}"),
        ("Exact", "/r/a", "/r/{room}/x"),
    ] {
        let got = problems(&doc(kind, path, room));
        assert!(
            got.iter()
                .any(|p| p.contains("pathRoom") && p.contains("no path")),
            "{kind} {path} {room}: {got:?}"
        );
    }
    // A pattern normalization changes (its `..` removed) fits no request either.
    let got = problems(&doc("Prefix", "/", "/r/../x/{room}"));
    assert!(
        got.iter()
            .any(|p| p.contains("pathRoom") && p.contains("/x/r")),
        "{got:?}"
    );
    for (kind, path, room) in [
        ("Prefix", "/r", "/r/{room}"),
        ("Prefix", "/r/", "/r/{room}"),
        ("Prefix", "/", "/collab/{room}"),
        ("Prefix", "/r", "/r/x/{room}/y"),
        ("Prefix", "/r/a", "/r/{room}"),
        ("Exact", "/r/a", "/r/{room}"),
        ("Exact", "/r/a/x", "/r/{room}/x"),
    ] {
        assert_eq!(
            problems(&doc(kind, path, room)),
            Vec::<String>::new(),
            "{kind} {path} {room}"
        );
    }
}
