//! Every sample in `examples/k8s/` deserializes into the Rust types without losing a field,
//! passes the CRD's CEL rules, and gets the verdict its comments promise from the operator's
//! own validation: every route accepted (proxy and rooms, JSON and raw relay), and the base
//! config's `bus` and `publishApi` carried into the snapshot.
//! The OpenAPI part of the schema (patterns, bounds, enums) is checked against the same files
//! by `operator/tests/validate_examples.py`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::CustomResourceExt;
use kube::core::cel;
use serde::Deserialize;
use serde_json::Value;
use switchboard_config::{Mode, RoomProtocol};
use switchboard_operator::api::RealtimeRoute;
use switchboard_operator::compile::Refs;
use switchboard_operator::conditions::reasons;
use switchboard_operator::controller::refs_from;
use switchboard_operator::plan::{Limits, plan};
use switchboard_operator::settings::parse_base_config;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/k8s")
}

/// Every YAML document in `examples/k8s/`, with the file it came from.
fn documents() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no samples in examples/k8s");
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).unwrap();
            if !v.is_null() {
                docs.push((name.clone(), v));
            }
        }
    }
    docs
}

fn of_kind(kind: &str) -> Vec<(String, Value)> {
    documents()
        .into_iter()
        .filter(|(_, v)| v["kind"] == kind)
        .collect()
}

/// Secrets as the API server would store them (`stringData` folded into `data`).
fn secret(v: &Value) -> Secret {
    let mut v = v.clone();
    if let Some(string_data) = v.get("stringData").cloned() {
        use base64::Engine as _;
        let data = v
            .as_object_mut()
            .unwrap()
            .entry("data")
            .or_insert_with(|| serde_json::json!({}));
        for (k, s) in string_data.as_object().unwrap() {
            data[k] = Value::String(
                base64::engine::general_purpose::STANDARD.encode(s.as_str().unwrap()),
            );
        }
        v.as_object_mut().unwrap().remove("stringData");
    }
    serde_json::from_value(v).unwrap()
}

fn refs() -> Refs {
    let services: Vec<Service> = of_kind("Service")
        .iter()
        .map(|(_, v)| serde_json::from_value(v.clone()).unwrap())
        .collect();
    let secrets: Vec<Secret> = of_kind("Secret").iter().map(|(_, v)| secret(v)).collect();
    refs_from(&services, &secrets)
}

/// The first path in `written` that is missing or different in `read`.
fn lost(written: &Value, read: &Value, path: &str) -> Option<String> {
    match (written, read) {
        (Value::Object(w), Value::Object(r)) => w.iter().find_map(|(k, v)| match r.get(k) {
            Some(rv) => lost(v, rv, &format!("{path}.{k}")),
            None => Some(format!("{path}.{k}")),
        }),
        (Value::Array(w), Value::Array(r)) if w.len() == r.len() => w
            .iter()
            .zip(r)
            .enumerate()
            .find_map(|(i, (a, b))| lost(a, b, &format!("{path}[{i}]"))),
        (w, r) if w == r => None,
        _ => Some(path.to_owned()),
    }
}

#[test]
fn samples_deserialize_into_the_rust_types_without_losing_fields() {
    let routes = of_kind("RealtimeRoute");
    assert!(routes.len() >= 4, "expected at least four sample routes");
    for (file, v) in routes {
        let rt: RealtimeRoute =
            serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
        // Serde ignores unknown fields; the API server would prune them. A round trip that
        // loses a field means a typo in the sample.
        // Defaults may be filled in on the way back; nothing written may be lost.
        let back = serde_json::to_value(&rt).unwrap();
        if let Some(path) = lost(&v["spec"], &back["spec"], "spec") {
            panic!("{file}: {path} did not survive the round trip (unknown field or typo?)");
        }
    }
}

#[test]
fn samples_pass_the_crd_cel_rules() {
    let crd = RealtimeRoute::crd();
    let schema = serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap();
    for (file, v) in of_kind("RealtimeRoute") {
        if let Err(errors) = cel::Validator::new().validate(&schema, &v, None) {
            let messages: Vec<String> = errors.into_vec().into_iter().map(|e| e.message).collect();
            panic!("{file}: {messages:?}");
        }
    }
}

#[test]
fn samples_get_the_verdicts_their_comments_promise() {
    let (_, base_cm) = of_kind("ConfigMap")
        .into_iter()
        .find(|(_, v)| v["metadata"]["name"] == "switchboard-operator-base")
        .expect("the operator base config sample");
    let base =
        parse_base_config(base_cm["data"]["base.yaml"].as_str().unwrap(), "base.yaml").unwrap();
    let routes: Vec<RealtimeRoute> = of_kind("RealtimeRoute")
        .into_iter()
        .map(|(_, v)| serde_json::from_value(v).unwrap())
        .collect();
    let p = plan(
        &base,
        &routes,
        &refs(),
        Limits {
            grace_period: Some(std::time::Duration::from_secs(60)),
        },
    );
    for rt in &routes {
        let e = &p.routes[&rt.key()];
        assert_eq!(e.accepted.reason, reasons::ACCEPTED, "{}: {e:?}", rt.key());
        assert!(e.accepted.ok, "{}: {:?}", rt.key(), e.accepted);
        assert!(e.resolved_refs.ok, "{}: {:?}", rt.key(), e.resolved_refs);
        assert!(
            e.drain_fits.as_ref().is_some_and(|d| d.ok),
            "{}: {:?}",
            rt.key(),
            e.drain_fits
        );
    }
    assert_eq!(p.config.routes.len(), routes.len());
    assert_eq!(switchboard_config::validate(&p.config), vec![]);
    assert!(base.bus.nats.is_some() && base.publish_api.is_some());
    assert_eq!(p.config.bus, base.bus);
    assert_eq!(p.config.publish_api, base.publish_api);

    let compiled = |key: &str| {
        p.config
            .routes
            .iter()
            .find(|r| r.name == key)
            .unwrap_or_else(|| panic!("{key} is in the snapshot"))
    };
    let json = compiled("collab/presence");
    assert_eq!(json.mode, Mode::Rooms);
    let rooms = json.rooms.as_ref().unwrap();
    assert_eq!(rooms.protocol, RoomProtocol::Json);
    assert_eq!(rooms.namespace.as_deref(), Some("collab_presence"));
    assert!(json.transports.sse && json.transports.long_polling);
    let raw = compiled("collab/yjs");
    assert_eq!(raw.mode, Mode::Rooms);
    let rooms = raw.rooms.as_ref().unwrap();
    assert_eq!(rooms.protocol, RoomProtocol::Raw);
    assert_eq!(rooms.path_room.as_deref(), Some("/yjs/{room}"));
    assert_eq!(rooms.namespace.as_deref(), Some("collab_yjs"));
    assert!(raw.transports.websocket && !raw.transports.sse && !raw.transports.long_polling);
}
