//! Rooms routes: defaults, every field, history, raw relay, Yjs documents, namespaces, the room
//! pattern grammar and the rules the schema checks.

use super::*;

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
            max_age: StdDuration::from_secs(3600),
            max_bytes: None,
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
