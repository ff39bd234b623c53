//! The committed CRD YAML is exactly what the Rust types generate (drift check), has the
//! Gateway API shape, and its CEL rules compile and refuse what their messages say.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kube::CustomResourceExt;
use kube::core::cel;
use serde_json::{Value, json};
use switchboard_operator::api::{RealtimeRoute, crd_yaml};

const REGENERATE: &str =
    "cargo run -p switchboard-operator --bin crdgen -- crds/realtimeroutes.yaml";

fn committed_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/realtimeroutes.yaml")
}

fn schema() -> Value {
    let crd = RealtimeRoute::crd();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn the_committed_crd_matches_the_rust_types() {
    let committed =
        std::fs::read_to_string(committed_path()).expect("crds/realtimeroutes.yaml exists");
    let generated = crd_yaml().unwrap();
    assert!(
        committed == generated,
        "crds/realtimeroutes.yaml is out of date with operator/src/api; regenerate it with:\n  {REGENERATE}"
    );
}

#[test]
fn the_crd_follows_gateway_api_conventions() {
    let crd = serde_json::to_value(RealtimeRoute::crd()).unwrap();
    assert_eq!(crd["metadata"]["name"], "realtimeroutes.switchboard.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["rtr"]));
    let v = &crd["spec"]["versions"][0];
    assert_eq!(v["name"], "v1alpha1");
    assert_eq!(v["subresources"]["status"], json!({}));
    let columns: Vec<&str> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Hosts", "Mode", "Accepted", "Programmed", "Age"]);
    let conditions =
        &v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    assert!(conditions["maxItems"].is_number());
}

#[test]
fn every_list_in_the_spec_is_bounded() {
    fn walk(path: &str, s: &Value, unbounded: &mut Vec<String>) {
        if s["type"] == "array" && s.get("maxItems").is_none() {
            unbounded.push(path.to_owned());
        }
        if let Some(props) = s["properties"].as_object() {
            for (k, v) in props {
                walk(&format!("{path}.{k}"), v, unbounded);
            }
        }
        if s.get("items").is_some() {
            walk(&format!("{path}[]"), &s["items"], unbounded);
        }
    }
    let mut unbounded = Vec::new();
    walk("spec", &schema()["properties"]["spec"], &mut unbounded);
    assert!(
        unbounded.is_empty(),
        "lists without maxItems (CEL cost and etcd size): {unbounded:?}"
    );
}

#[test]
fn every_cel_rule_compiles() {
    let compiled = cel::compile_schema(&schema());
    let errors: Vec<String> = compiled
        .compilation_errors()
        .iter()
        .map(|e| format!("{e:?}"))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

fn object(spec_yaml: &str) -> Value {
    let spec: Value = serde_yaml_ng::from_str(spec_yaml).unwrap();
    json!({
        "apiVersion": "switchboard.dev/v1alpha1",
        "kind": "RealtimeRoute",
        "metadata": {"name": "r", "namespace": "default"},
        "spec": spec,
    })
}

fn cel_messages(spec_yaml: &str) -> Vec<String> {
    match cel::Validator::new().validate(&schema(), &object(spec_yaml), None) {
        Ok(()) => vec![],
        Err(errors) => errors.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

#[test]
fn a_minimal_proxy_route_passes_every_cel_rule() {
    assert_eq!(
        cel_messages("backend: {name: chat, port: 80}"),
        Vec::<String>::new()
    );
}

#[test]
fn cel_rules_refuse_what_their_messages_say() {
    let cases = [
        ("mode: proxy", "mode proxy needs spec.backend"),
        (
            "mode: rooms\nbackend: {name: chat, port: 80}",
            "spec.backend is only used in mode proxy",
        ),
        (
            "backend: {name: chat, port: 80}\nrooms: {presence: true}",
            "spec.rooms is only used in mode rooms",
        ),
        (
            "backend: {name: chat, port: 80}\ntransports: [WebSocket, SSE]",
            "mode proxy carries WebSocket only",
        ),
        (
            "backend: {name: chat, port: 80}\ndrain: {reconnectHint: 2s}",
            "drain.reconnectHint",
        ),
        (
            "backend: {name: chat, port: 80}\nlimits: {connectionsPerUser: 2}",
            "limits.connectionsPerUser needs auth.jwt",
        ),
        (
            "backend: {name: chat, port: 80, pinning: {source: Claim, name: sub}}",
            "pinning with source Claim needs auth.jwt",
        ),
        (
            "backend: {name: chat, port: 80, pinning: {source: Header}}",
            "name is required for sources",
        ),
        (
            "backend: {name: chat, port: 80, pinning: {source: ClientIP, name: x}}",
            "name is required for sources",
        ),
        (
            "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: i, jwksUri: 'https://i/j', tokenSources: [{type: Cookie, name: s}]}]}}",
            "must list auth.allowedOrigins",
        ),
        (
            "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: i}]}}",
            "set exactly one of jwksUri and secretRef",
        ),
        (
            "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: i, jwksUri: 'https://i/j', secretRef: {name: s, key: k}}]}}",
            "set exactly one of jwksUri and secretRef",
        ),
        (
            "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: i, secretRef: {name: s, key: k}}]}}",
            "a secretRef key needs algorithms",
        ),
        (
            "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: i, jwksUri: 'https://i/j', tokenSources: [{type: Query}]}]}}",
            "name is required for types Query and Cookie",
        ),
        (
            "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: i, jwksUri: 'https://i/j', tokenSources: [{type: Bearer, prefix: x}]}]}}",
            "prefix is only used with type Subprotocol",
        ),
        (
            "backend: {name: chat, port: 80}\ndrain: {closeCode: 1006}",
            "closeCode must be 1000, 1001, 1012, 1013 or 4000-4999",
        ),
        (
            "mode: rooms\nrooms: {protocol: raw}",
            "protocols raw and yjs need pathRoom",
        ),
        (
            "mode: rooms\nrooms: {pathRoom: '/r/{room}'}",
            "pathRoom is only used with protocols raw and yjs",
        ),
        (
            "mode: rooms\nrooms: {protocol: json, pathRoom: '/r/{room}'}",
            "pathRoom is only used with protocols raw and yjs",
        ),
        (
            "mode: rooms\nrooms: {echo: true}",
            "echo is only used with protocol raw",
        ),
        (
            "mode: rooms\nrooms: {protocol: raw, pathRoom: '/r/{room}', publishHook: {url: 'http://h/p'}}",
            "publishHook is not called for raw or yjs rooms",
        ),
        (
            "mode: rooms\ntransports: [WebSocket, LongPolling]\nrooms: {protocol: raw, pathRoom: '/r/{room}'}",
            "raw and yjs rooms are WebSocket only",
        ),
        (
            "mode: rooms\npath: {type: PathPrefix, value: /collab}\nrooms: {protocol: raw, pathRoom: '/docs/{room}'}",
            "rooms.pathRoom must lie under spec.path.value",
        ),
        (
            "mode: rooms\nauth: {jwt: {providers: [{name: i, jwksUri: 'https://i/j', claimsToHeaders: [{claim: sub, header: X-User}]}]}}",
            "claimsToHeaders is only used in mode proxy",
        ),
    ];
    for (yaml, expected) in cases {
        let messages = cel_messages(yaml);
        assert!(
            messages.iter().any(|m| m.contains(expected)),
            "{yaml}\nexpected a message containing {expected:?}, got {messages:?}"
        );
    }
}

#[test]
fn cel_rules_accept_the_valid_variants() {
    for yaml in [
        "mode: rooms\ntransports: [WebSocket, SSE, LongPolling]\nrooms: {presence: true}\ndrain: {reconnectHint: 2s}",
        "mode: rooms",
        "mode: rooms\nrooms: {protocol: json, join: ['chat:*', 'user:{sub}'], publish: ['chat:*'], history: {maxMessages: 10, maxAge: 5m}, maxQueueBytes: 65536, publishHook: {url: 'http://h/p', timeout: 1s}, notify: {url: 'http://h/n'}}",
        "mode: rooms\npath: {type: PathPrefix, value: /collab}\ntransports: [WebSocket]\nrooms: {protocol: raw, pathRoom: '/collab/{room}', echo: true, join: ['*'], publish: ['*']}",
        "mode: rooms\npath: {type: Exact, value: /collab/doc}\nrooms: {protocol: raw, pathRoom: '/collab/{room}'}",
        "mode: rooms\nrooms: {protocol: raw, pathRoom: '/collab/{room}'}",
        "mode: rooms\nauth: {jwt: {providers: [{name: i, jwksUri: 'https://i/j'}]}}",
        "backend: {name: chat, port: 80, pinning: {source: ClientIP}}",
        "backend: {name: chat, port: 80}\ndrain: {closeCode: 4999}",
        "backend: {name: chat, port: 80}\nauth: {allowedOrigins: ['https://a.example.com'], jwt: {providers: [{name: i, jwksUri: 'https://i/j', tokenSources: [{type: Cookie, name: s}, {type: Subprotocol, prefix: 'tok.'}]}]}}",
    ] {
        assert_eq!(cel_messages(yaml), Vec::<String>::new(), "{yaml}");
    }
}
