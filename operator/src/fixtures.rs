//! Test builders and a mock API server (kube's `tower_test` pattern from controller-rs):
//! each [`Scenario`] lists the exact calls a reconcile pass must make, asserts on each request
//! and answers it; a call that is missing makes [`timeout_after_1s`] fail, an unexpected extra
//! call fails the pass because the mock is gone.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use http::{Method, Request, Response};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};
use switchboard_config::{GatewayConfig, Route};

use crate::api::{RealtimeRoute, RealtimeRouteSpec};
use crate::compile::Refs;
use crate::controller::{Context, World, desired_status};
use crate::fleet::{Fleet, GatewayStatus};
use crate::metrics::Metrics;
use crate::plan::{self, Limits};
use crate::snapshot;

/// The base config every test uses.
pub const BASE_YAML: &str = "apiVersion: switchboard.dev/v1alpha1
kind: GatewayConfig
listeners:
- name: public
  address: 0.0.0.0:8443
admin:
  address: 0.0.0.0:9090
drain:
  propagation: 5s
  deadline: 60s
";

/// [`BASE_YAML`], parsed.
pub fn base_config() -> GatewayConfig {
    GatewayConfig::from_yaml(BASE_YAML).unwrap()
}

/// The gateway's fixture RSA public key (PEM), for routes that take a key from a Secret.
pub const RSA_PUB_PEM: &str = include_str!("../../gateway/tests/fixtures/keys/rsa.pub.pem");

/// [`RSA_PUB_PEM`] with its second half cut off: what a bad copy into a Secret looks like.
pub fn truncated_pem() -> String {
    RSA_PUB_PEM
        .lines()
        .take(3)
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A fixed "now" for condition timestamps.
pub fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

/// A route created at a fixed time, generation 1.
pub fn route(namespace: &str, name: &str, spec_yaml: &str) -> RealtimeRoute {
    route_created_at(namespace, name, spec_yaml, 1_700_000_000)
}

/// A route created at `created` (unix seconds), generation 1.
pub fn route_created_at(
    namespace: &str,
    name: &str,
    spec_yaml: &str,
    created: i64,
) -> RealtimeRoute {
    let spec: RealtimeRouteSpec = serde_yaml_ng::from_str(spec_yaml).unwrap();
    let mut rt = RealtimeRoute::new(name, spec);
    rt.metadata = ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        generation: Some(1),
        uid: Some(format!("uid-{namespace}-{name}")),
        resource_version: Some("1".into()),
        creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
        ..ObjectMeta::default()
    };
    rt
}

/// A compiled route with a Service backend, for snapshot tests.
pub fn compiled_route(name: &str, path: &str) -> Route {
    let (ns, n) = name.split_once('/').unwrap();
    let rt = route(
        ns,
        n,
        &format!("path: {{value: '{path}'}}\nbackend: {{name: svc, port: 80}}"),
    );
    crate::compile::compile(&rt, &BTreeMap::new()).unwrap()
}

const NS: &str = "sys";
const SNAPSHOT: &str = "switchboard-gateway-snapshot";

type ApiServerHandle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// The mock API server's side of the connection.
pub struct ApiServerVerifier {
    handle: ApiServerHandle,
    /// The snapshot Secret as last created or replaced, served by later reads.
    stored: Option<Value>,
}

/// What the mock API server expects from one reconcile pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// One valid route, no snapshot yet: create the snapshot, patch the status, two Events.
    Accepted,
    /// Two routes on the same host+path: the snapshot has only the older; the newer is
    /// `Conflicted` naming it.
    Conflicted,
    /// A route whose Service is missing (accepted, `BackendNotFound`) and one whose Secret is
    /// missing (`UnresolvedRefs`, not in the snapshot).
    MissingRefs,
    /// A route with a bad origin pattern: `Invalid`, the snapshot is created without it.
    Invalid,
    /// Two routes, one whose JWT key Secret holds a truncated PEM: only that one is
    /// `Accepted=False` (`UnresolvedRefs`, `ResolvedRefs=False` `InvalidSecret` saying why) and
    /// left out of the snapshot; the other is accepted and in it.
    BrokenKey,
    /// The only route was deleted: the snapshot is replaced without it, generation 2.
    Deleted,
    /// Snapshot and status already as desired: one read, no write.
    SnapshotUnchanged,
    /// Gateways caught up: only the status changes, to `Programmed=True`, with an Event.
    Programmed,
    /// [`Scenario::Accepted`], then a second pass whose watch cache has not yet seen the
    /// status it just wrote: one read, no write, no repeated Events.
    StaleCacheAfterWrite,
    /// Another writer changed the snapshot in between: the replace gets 409.
    SnapshotConflict,
}

/// A context whose client talks to the mock.
pub fn test_context() -> (Context, ApiServerVerifier) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let ctx = Context {
        client: client.clone(),
        base: base_config(),
        snapshot_namespace: NS.into(),
        snapshot_name: SNAPSHOT.into(),
        grace_period: None,
        metrics: Metrics::new().unwrap(),
        recorder: Recorder::new(
            client,
            Reporter {
                controller: "switchboard-operator".into(),
                instance: Some("test".into()),
            },
        ),
        written: Default::default(),
    };
    (
        ctx,
        ApiServerVerifier {
            handle,
            stored: None,
        },
    )
}

/// Fail unless the mock finished its scenario within a second.
pub async fn timeout_after_1s(handle: tokio::task::JoinHandle<()>) {
    tokio::time::timeout(StdDuration::from_secs(1), handle)
        .await
        .expect("timeout on mock apiserver: a call the scenario expects was not made")
        .expect("scenario succeeded");
}

const CHAT: &str =
    "hostnames: [chat.example.com]\npath: {value: /ws}\nbackend: {name: chat, port: 80}";

fn services() -> Refs {
    Refs::default()
        .with_service("default", "chat", &[80])
        .with_service("other", "chat", &[80])
}

fn fleet_at(generation: u64) -> Fleet {
    let mut gateways = BTreeMap::new();
    gateways.insert(
        "http://10.0.0.1:9090/status".to_string(),
        Ok(GatewayStatus {
            generation,
            ready: true,
            route_failures: Vec::new(),
        }),
    );
    Fleet {
        configured: true,
        gateways,
    }
}

/// The stored snapshot for these routes, as the operator would have written it, at
/// `resourceVersion` 5.
fn stored_snapshot(routes: &[RealtimeRoute], refs: &Refs) -> Secret {
    let p = plan::plan(&base_config(), routes, refs, Limits { grace_period: None });
    let d = snapshot::decide(None, &p.config, SNAPSHOT, NS, 0).unwrap();
    let mut s = d.write.unwrap();
    s.metadata.resource_version = Some("5".into());
    s
}

/// A route whose stored status is what a pass would write with this fleet.
fn settled(rt: RealtimeRoute, refs: &Refs, fleet: &Fleet) -> RealtimeRoute {
    let p = plan::plan(
        &base_config(),
        std::slice::from_ref(&rt),
        refs,
        Limits { grace_period: None },
    );
    let mut rt = rt;
    let status = desired_status(
        &rt,
        None,
        &p.routes[&rt.key()],
        Some(1),
        fleet,
        &Time(now()),
    );
    rt.status = Some(status);
    rt
}

/// The world each scenario reconciles.
pub fn world_for(scenario: Scenario) -> World {
    let empty_fleet = Fleet {
        configured: true,
        gateways: BTreeMap::new(),
    };
    match scenario {
        Scenario::Accepted => World {
            routes: vec![route("default", "chat", CHAT)],
            refs: services(),
            fleet: empty_fleet,
        },
        Scenario::Conflicted => World {
            routes: vec![
                route_created_at("default", "second", CHAT, 200),
                route_created_at("other", "first", CHAT, 100),
            ],
            refs: services(),
            fleet: empty_fleet,
        },
        Scenario::MissingRefs => World {
            routes: vec![
                route("default", "chat", "backend: {name: gone, port: 80}"),
                route(
                    "default",
                    "keyed",
                    "path: {value: /keyed}\nbackend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: idp, secretRef: {name: jwt-keys, key: hs256}, algorithms: [HS256]}]}}",
                ),
            ],
            refs: services(),
            fleet: empty_fleet,
        },
        Scenario::BrokenKey => World {
            routes: vec![
                route("default", "chat", CHAT),
                route(
                    "default",
                    "keyed",
                    "path: {value: /keyed}\nbackend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: idp, secretRef: {name: jwt-keys, key: pub.pem}, algorithms: [RS256]}]}}",
                ),
            ],
            refs: services().with_secret(
                "default",
                "jwt-keys",
                "pub.pem",
                truncated_pem().as_bytes(),
            ),
            fleet: empty_fleet,
        },
        Scenario::Invalid => World {
            routes: vec![route(
                "default",
                "bad",
                "backend: {name: chat, port: 80}\nauth: {allowedOrigins: ['https://*.com']}",
            )],
            refs: services(),
            fleet: empty_fleet,
        },
        Scenario::Deleted => World {
            routes: vec![],
            refs: services(),
            fleet: empty_fleet,
        },
        Scenario::SnapshotUnchanged => {
            let fleet = fleet_at(1);
            World {
                routes: vec![settled(route("default", "chat", CHAT), &services(), &fleet)],
                refs: services(),
                fleet,
            }
        }
        Scenario::Programmed => World {
            routes: vec![settled(
                route("default", "chat", CHAT),
                &services(),
                &fleet_at(0),
            )],
            refs: services(),
            fleet: fleet_at(1),
        },
        Scenario::StaleCacheAfterWrite => world_for(Scenario::Accepted),
        Scenario::SnapshotConflict => World {
            routes: vec![route("default", "chat", CHAT)],
            refs: services(),
            fleet: empty_fleet,
        },
    }
}

fn json_response(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn status_error(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn snapshot_text(body: &Value) -> String {
    use base64::Engine as _;
    let b64 = body["data"]["config.yaml"]
        .as_str()
        .expect("config.yaml in data");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64 data");
    String::from_utf8(bytes).unwrap()
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

impl ApiServerVerifier {
    /// Serve the scenario in a task.
    pub fn run(self, scenario: Scenario) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            match scenario {
                Scenario::Accepted => {
                    self.get_snapshot(None)
                        .await
                        .create_snapshot(|text| {
                            assert!(text.contains("name: default/chat"), "{text}");
                            assert!(text.contains("generation: 1"), "{text}");
                        })
                        .await
                        .patch_status("default", "chat", |s| {
                            assert_eq!(condition(s, "Accepted")["status"], "True");
                            assert_eq!(condition(s, "ResolvedRefs")["status"], "True");
                            let p = condition(s, "Programmed");
                            assert_eq!(p["status"], "False");
                            assert_eq!(p["reason"], "Pending");
                            assert_eq!(s["snapshotGeneration"], 1);
                            assert_eq!(s["observedGeneration"], 1);
                        })
                        .await
                        .events("default", &["Accepted", "ResolvedRefs"])
                        .await;
                }
                Scenario::StaleCacheAfterWrite => {
                    let v = self
                        .get_snapshot(None)
                        .await
                        .create_snapshot(|_| {})
                        .await
                        .patch_status("default", "chat", |_| {})
                        .await
                        .events("default", &["Accepted", "ResolvedRefs"])
                        .await;
                    let stored = v.stored.clone().map(|s| serde_json::from_value(s).unwrap());
                    v.get_snapshot(stored).await;
                }
                Scenario::Conflicted => {
                    self.get_snapshot(None)
                        .await
                        .create_snapshot(|text| {
                            assert!(text.contains("name: other/first"), "{text}");
                            assert!(!text.contains("default/second"), "{text}");
                        })
                        .await
                        .patch_status("default", "second", |s| {
                            let a = condition(s, "Accepted");
                            assert_eq!(a["status"], "False");
                            assert_eq!(a["reason"], "Conflicted");
                            assert!(
                                a["message"].as_str().unwrap().contains("other/first"),
                                "{a}"
                            );
                            assert_eq!(condition(s, "Programmed")["reason"], "NotAccepted");
                            assert_eq!(s["snapshotGeneration"], Value::Null);
                        })
                        .await
                        .events("default", &["Conflicted", "ResolvedRefs"])
                        .await
                        .patch_status("other", "first", |s| {
                            assert_eq!(condition(s, "Accepted")["status"], "True");
                        })
                        .await
                        .events("other", &["Accepted", "ResolvedRefs"])
                        .await;
                }
                Scenario::MissingRefs => {
                    self.get_snapshot(None)
                        .await
                        .create_snapshot(|text| {
                            assert!(text.contains("name: default/chat"), "{text}");
                            assert!(!text.contains("default/keyed"), "{text}");
                        })
                        .await
                        .patch_status("default", "chat", |s| {
                            assert_eq!(condition(s, "Accepted")["status"], "True");
                            let r = condition(s, "ResolvedRefs");
                            assert_eq!(r["status"], "False");
                            assert_eq!(r["reason"], "BackendNotFound");
                            assert!(
                                r["message"]
                                    .as_str()
                                    .unwrap()
                                    .contains("Service default/gone not found"),
                                "{r}"
                            );
                        })
                        .await
                        .events("default", &["Accepted", "BackendNotFound"])
                        .await
                        .patch_status("default", "keyed", |s| {
                            let a = condition(s, "Accepted");
                            assert_eq!(a["reason"], "UnresolvedRefs");
                            let r = condition(s, "ResolvedRefs");
                            assert_eq!(r["reason"], "SecretNotFound");
                            assert!(
                                r["message"]
                                    .as_str()
                                    .unwrap()
                                    .contains("Secret default/jwt-keys not found"),
                                "{r}"
                            );
                        })
                        .await
                        .events("default", &["UnresolvedRefs", "SecretNotFound"])
                        .await;
                }
                Scenario::BrokenKey => {
                    self.get_snapshot(None)
                        .await
                        .create_snapshot(|text| {
                            assert!(text.contains("name: default/chat"), "{text}");
                            assert!(!text.contains("default/keyed"), "{text}");
                        })
                        .await
                        .patch_status("default", "chat", |s| {
                            assert_eq!(condition(s, "Accepted")["status"], "True");
                            assert_eq!(condition(s, "ResolvedRefs")["status"], "True");
                        })
                        .await
                        .events("default", &["Accepted", "ResolvedRefs"])
                        .await
                        .patch_status("default", "keyed", |s| {
                            let a = condition(s, "Accepted");
                            assert_eq!(a["status"], "False");
                            assert_eq!(a["reason"], "UnresolvedRefs");
                            let r = condition(s, "ResolvedRefs");
                            assert_eq!(r["status"], "False");
                            assert_eq!(r["reason"], "InvalidSecret");
                            assert_eq!(
                                r["message"],
                                "spec.auth.jwt.providers[0].secretRef: key `pub.pem` of Secret default/jwt-keys: the PEM is not a public key usable with RS256"
                            );
                            let p = condition(s, "Programmed");
                            assert_eq!(p["status"], "False");
                            assert_eq!(p["reason"], "NotAccepted");
                        })
                        .await
                        .events("default", &["UnresolvedRefs", "InvalidSecret"])
                        .await;
                }
                Scenario::Invalid => {
                    self.get_snapshot(None)
                        .await
                        .create_snapshot(|text| assert!(text.contains("routes: []"), "{text}"))
                        .await
                        .patch_status("default", "bad", |s| {
                            let a = condition(s, "Accepted");
                            assert_eq!(a["reason"], "Invalid");
                            assert!(
                                a["message"]
                                    .as_str()
                                    .unwrap()
                                    .starts_with("spec.auth.allowedOrigins[0]:"),
                                "{a}"
                            );
                        })
                        .await
                        .events("default", &["Invalid", "ResolvedRefs"])
                        .await;
                }
                Scenario::Deleted => {
                    let stored = stored_snapshot(&[route("default", "chat", CHAT)], &services());
                    self.get_snapshot(Some(stored))
                        .await
                        .replace_snapshot(200, |body| {
                            let text = snapshot_text(body);
                            assert!(!text.contains("default/chat"), "{text}");
                            assert!(text.contains("generation: 2"), "{text}");
                            assert_eq!(body["metadata"]["resourceVersion"], "5");
                            assert_eq!(
                                body["metadata"]["annotations"]["switchboard.dev/generation"],
                                "2"
                            );
                        })
                        .await;
                }
                Scenario::SnapshotUnchanged => {
                    let stored = stored_snapshot(&[route("default", "chat", CHAT)], &services());
                    self.get_snapshot(Some(stored)).await;
                }
                Scenario::Programmed => {
                    let stored = stored_snapshot(&[route("default", "chat", CHAT)], &services());
                    self.get_snapshot(Some(stored))
                        .await
                        .patch_status("default", "chat", |s| {
                            let p = condition(s, "Programmed");
                            assert_eq!(p["status"], "True");
                            assert_eq!(p["reason"], "Programmed");
                        })
                        .await
                        .events("default", &["Programmed"])
                        .await;
                }
                Scenario::SnapshotConflict => {
                    let stored = stored_snapshot(&[], &services());
                    self.get_snapshot(Some(stored))
                        .await
                        .replace_snapshot(409, |_| {})
                        .await;
                }
            }
        })
    }

    async fn next(
        &mut self,
    ) -> (
        Request<Body>,
        tower_test::mock::SendResponse<Response<Body>>,
    ) {
        self.handle
            .next_request()
            .await
            .expect("service not called")
    }

    async fn body_json(req: Request<Body>) -> Value {
        let bytes = req.into_body().collect_bytes().await.unwrap();
        serde_json::from_slice(&bytes).expect("request body is JSON")
    }

    async fn get_snapshot(mut self, stored: Option<Secret>) -> Self {
        let (req, send) = self.next().await;
        assert_eq!(req.method(), Method::GET);
        assert_eq!(
            req.uri().path(),
            format!("/api/v1/namespaces/{NS}/secrets/{SNAPSHOT}")
        );
        send.send_response(match stored {
            Some(s) => json_response(200, &serde_json::to_value(s).unwrap()),
            None => json_response(
                404,
                &status_error(
                    404,
                    "NotFound",
                    "secrets \"switchboard-gateway-snapshot\" not found",
                ),
            ),
        });
        self
    }

    async fn create_snapshot(mut self, check: impl FnOnce(&str)) -> Self {
        let (req, send) = self.next().await;
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri().path(), format!("/api/v1/namespaces/{NS}/secrets"));
        let body = Self::body_json(req).await;
        assert_eq!(body["type"], snapshot::SECRET_TYPE);
        assert_eq!(body["metadata"]["resourceVersion"], Value::Null);
        check(&snapshot_text(&body));
        let mut stored = body.clone();
        stored["metadata"]["resourceVersion"] = json!("1");
        self.stored = Some(stored);
        send.send_response(json_response(201, &body));
        self
    }

    async fn replace_snapshot(mut self, code: u16, check: impl FnOnce(&Value)) -> Self {
        let (req, send) = self.next().await;
        assert_eq!(req.method(), Method::PUT);
        assert_eq!(
            req.uri().path(),
            format!("/api/v1/namespaces/{NS}/secrets/{SNAPSHOT}")
        );
        let body = Self::body_json(req).await;
        check(&body);
        send.send_response(if code == 200 {
            json_response(200, &body)
        } else {
            json_response(
                code,
                &status_error(code, "Conflict", "the object has been modified"),
            )
        });
        self
    }

    async fn patch_status(mut self, ns: &str, name: &str, check: impl FnOnce(&Value)) -> Self {
        let (req, send) = self.next().await;
        assert_eq!(req.method(), Method::PATCH);
        assert_eq!(
            req.uri().path(),
            format!("/apis/switchboard.dev/v1alpha1/namespaces/{ns}/realtimeroutes/{name}/status")
        );
        assert_eq!(
            req.headers()["content-type"],
            "application/merge-patch+json"
        );
        let body = Self::body_json(req).await;
        check(&body["status"]);
        let mut rt = route(ns, name, "backend: {name: chat, port: 80}");
        rt.status = serde_json::from_value(body["status"].clone()).ok();
        send.send_response(json_response(200, &serde_json::to_value(rt).unwrap()));
        self
    }

    async fn events(mut self, ns: &str, reasons: &[&str]) -> Self {
        for reason in reasons {
            let (req, send) = self.next().await;
            assert_eq!(req.method(), Method::POST);
            assert_eq!(
                req.uri().path(),
                format!("/apis/events.k8s.io/v1/namespaces/{ns}/events")
            );
            let body = Self::body_json(req).await;
            assert_eq!(body["reason"], *reason, "{body}");
            assert_eq!(body["reportingController"], "switchboard-operator");
            send.send_response(json_response(201, &body));
        }
        self
    }
}
