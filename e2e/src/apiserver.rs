//! A Kubernetes API-server stand-in: just enough of the REST API, over plain HTTP, for the real
//! `switchboard-operator` and `switchboard-gateway` binaries (and a kube-rs client in the test)
//! to run against it unchanged.
//!
//! # What it does
//! - Serves the kinds Switchboard touches, namespaced, under their real paths: `Secret`,
//!   `Service` (`/api/v1`), `EndpointSlice` (`discovery.k8s.io/v1`), `Lease`
//!   (`coordination.k8s.io/v1`), `Event` (`events.k8s.io/v1`) and `RealtimeRoute`
//!   (`switchboard.dev/v1alpha1`, with the status subresource). Cluster-wide list/watch
//!   (`/api/v1/secrets`) and per-namespace paths both work.
//! - Verbs: list, watch, get, create (POST), replace (PUT), patch with
//!   `application/merge-patch+json` (RFC 7386), delete; `/status` get/replace/patch for kinds
//!   with the status subresource.
//! - `resourceVersion`: one counter for all objects, bumped by every write that changes
//!   something (a no-op write returns the object unchanged, like the real server). A replace or
//!   patch carrying a `metadata.resourceVersion` that is not the current one fails with 409
//!   Conflict; a create of an existing name fails with 409 AlreadyExists.
//! - `metadata.uid` and `creationTimestamp` (second precision) on create; `metadata.generation`
//!   for the status-subresource kind: 1 on create, +1 when anything outside `metadata` and
//!   `status` changes. The main resource ignores `status` and `/status` ignores everything
//!   else, like a CRD with `subresources.status`.
//! - Watch: `?watch=true` streams newline-delimited `{"type", "object"}` events from the given
//!   `resourceVersion` (a recent-changes log replays what the client missed; `0` or none
//!   starts with synthetic `ADDED`s for what exists), honours `timeoutSeconds`, and sends an
//!   `ERROR` 410 Expired event when the version is older than the log (the client re-lists).
//!   An object that starts or stops matching the selectors is sent as `ADDED` / `DELETED`.
//! - Selectors: `labelSelector` with equality terms (`k=v`, `k==v`, `k!=v`, `k`, `!k`);
//!   `fieldSelector` on `metadata.name`, `metadata.namespace`, and `type` for Secrets, with
//!   `=`, `==`, `!=`. Anything else is a 400, as on a real server for unknown field labels.
//! - [`ApiServer::set_unreachable`] simulates an outage (every connection cut, new ones closed)
//!   without losing state, to test that clients keep serving and resume.
//! - Errors are `Status` objects with the real `reason`s and codes (NotFound, AlreadyExists,
//!   Conflict, BadRequest, MethodNotAllowed, UnsupportedMediaType, Expired).
//!
//! # What it does NOT emulate
//! - No authentication, authorization or RBAC: every request is allowed. (RBAC for the
//!   operator and the gateways is documented in docs/operator.md, not tested here.)
//! - No admission: no OpenAPI schema validation, no defaulting, no CEL rules
//!   (`x-kubernetes-validations`), no webhooks; any JSON object is stored as sent. The CRD
//!   schema and CEL rules are tested by `operator/tests/crd.rs` instead.
//! - No CRD registration or discovery (`/apis`, `/openapi`): the kinds are built in.
//! - No server-side apply, strategic-merge or JSON patch (415), no `dryRun`, no
//!   `managedFields`, no `generateName`, no `deletionTimestamp`/finalizers/graceful deletion,
//!   no garbage collection (ownerReferences are ignored), no Namespace objects (every
//!   namespace exists).
//! - Consistency: one process, one lock, one resourceVersion counter; `resourceVersionMatch`
//!   and `limit`/`continue` are accepted and ignored (a list is always complete and current),
//!   no watch bookmarks, no `sendInitialEvents` streaming lists, a bounded change log
//!   ([`LOG_CAPACITY`]) instead of etcd's compaction window.
//! - Replace without a `resourceVersion` is an unconditional update for every kind (the real
//!   server refuses that for custom resources).
//! - No HTTP/2, no TLS, no protobuf: JSON over HTTP/1.1 only.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

/// How many past changes a watch can resume from.
pub const LOG_CAPACITY: usize = 10_000;
/// Largest request body (a Secret is at most 1 MiB; leave room for JSON).
const MAX_BODY: usize = 3 << 20;

/// One served kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// API group, `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// Plural resource name as in the URL.
    pub plural: &'static str,
    pub kind: &'static str,
    /// Whether `/status` is a subresource (and `generation` is tracked).
    pub status_subresource: bool,
    /// Field labels `fieldSelector` accepts beyond `metadata.name` / `metadata.namespace`.
    pub extra_fields: &'static [&'static str],
}

impl Kind {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// Every kind the stand-in serves (all namespaced).
pub const KINDS: &[Kind] = &[
    Kind {
        group: "",
        version: "v1",
        plural: "secrets",
        kind: "Secret",
        status_subresource: false,
        extra_fields: &["type"],
    },
    Kind {
        group: "",
        version: "v1",
        plural: "services",
        kind: "Service",
        status_subresource: false,
        extra_fields: &[],
    },
    Kind {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        kind: "EndpointSlice",
        status_subresource: false,
        extra_fields: &[],
    },
    Kind {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        status_subresource: false,
        extra_fields: &[],
    },
    Kind {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        kind: "Event",
        status_subresource: false,
        extra_fields: &[],
    },
    Kind {
        group: "switchboard.dev",
        version: "v1alpha1",
        plural: "realtimeroutes",
        kind: "RealtimeRoute",
        status_subresource: true,
        extra_fields: &[],
    },
];

/// `(plural, namespace, name)`.
type Key = (&'static str, String, String);

/// One write, as watchers see it.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    plural: &'static str,
    namespace: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    kind: &'static str,
    object: Value,
    /// The object before a `MODIFIED` (to turn selector transitions into ADDED/DELETED).
    previous: Option<Value>,
}

#[derive(Default)]
struct Store {
    rv: u64,
    uid: u64,
    objects: BTreeMap<Key, Value>,
    log: VecDeque<Arc<Change>>,
}

struct State {
    store: Mutex<Store>,
    changes: broadcast::Sender<Arc<Change>>,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Store> {
        // Plain data; a panicking request handler cannot leave it half-written (every write
        // is one insert plus one log push).
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a write: bump the version, stamp the object, log and broadcast the change.
    fn commit(
        &self,
        store: &mut Store,
        kind: &Kind,
        ns: &str,
        event: &'static str,
        mut object: Value,
        previous: Option<Value>,
    ) -> Value {
        store.rv += 1;
        object["metadata"]["resourceVersion"] = json!(store.rv.to_string());
        let change = Arc::new(Change {
            rv: store.rv,
            plural: kind.plural,
            namespace: ns.to_owned(),
            kind: event,
            object: object.clone(),
            previous,
        });
        if store.log.len() == LOG_CAPACITY {
            store.log.pop_front();
        }
        store.log.push_back(change.clone());
        // No receivers is fine.
        let _ = self.changes.send(change);
        object
    }
}

/// A running stand-in on `127.0.0.1`.
pub struct ApiServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
    /// True while the server plays dead (see [`ApiServer::set_unreachable`]).
    unreachable: watch::Sender<bool>,
}

impl ApiServer {
    /// Bind `127.0.0.1:0` and serve until dropped.
    pub async fn start() -> std::io::Result<Self> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Bind `addr` and serve until dropped.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            store: Mutex::new(Store::default()),
            changes: broadcast::channel(4096).0,
        });
        let unreachable = watch::Sender::new(false);
        let outage = unreachable.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                if *outage.borrow() {
                    // Playing dead: the connection is closed before anything is read.
                    continue;
                }
                let state = state.clone();
                let mut down = outage.subscribe();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req).await) }
                    });
                    let conn = http1::Builder::new().serve_connection(TokioIo::new(tcp), svc);
                    tokio::select! {
                        _ = conn => {}
                        // An outage cuts every open connection, watches included.
                        _ = down.wait_for(|d| *d) => {}
                    }
                });
            }
        });
        Ok(Self {
            addr,
            task,
            unreachable,
        })
    }

    /// Simulate an API-server outage: while `true`, every open connection (watch streams
    /// included) is cut and new ones are closed at once; the stored objects are kept, so
    /// clients resume from their last resourceVersion when it ends.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.unreachable.send_replace(unreachable);
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kubeconfig pointing at this server, with `namespace` as the default namespace and no
    /// credentials.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters:
  - name: standin
    cluster:
      server: {url}
users:
  - name: standin
    user: {{}}
contexts:
  - name: standin
    context:
      cluster: standin
      user: standin
      namespace: {namespace}
current-context: standin
",
            url = self.url()
        )
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
        self.unreachable.send_replace(true);
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A failed request, rendered as a `Status`.
#[derive(Debug)]
struct Failure {
    code: StatusCode,
    reason: &'static str,
    message: String,
}

impl Failure {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    fn not_found(kind: &Kind, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{}.{} \"{name}\" not found", kind.plural, kind.group),
        )
    }

    fn status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        })
    }

    fn response(&self) -> Response<Body> {
        json_response(self.code, &self.status())
    }
}

/// What a URL addresses.
#[derive(Debug)]
struct Target {
    kind: &'static Kind,
    /// `None`: all namespaces (list/watch only).
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse_path(path: &str) -> Result<Target, Failure> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(Failure::new(StatusCode::NOT_FOUND, "NotFound", "not found")),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let (plural, name, status) = match rest {
        [plural] => (*plural, None, false),
        [plural, name] if namespace.is_some() => (*plural, Some((*name).to_owned()), false),
        [plural, name, "status"] if namespace.is_some() => {
            (*plural, Some((*name).to_owned()), true)
        }
        _ => return Err(Failure::new(StatusCode::NOT_FOUND, "NotFound", "not found")),
    };
    let kind = KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
        .ok_or_else(|| {
            Failure::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("the server could not find the requested resource ({path})"),
            )
        })?;
    if status && !kind.status_subresource {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{} has no status subresource", kind.plural),
        ));
    }
    Ok(Target {
        kind,
        namespace,
        name,
        status,
    })
}

fn query_params(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Selectors
// ---------------------------------------------------------------------------------------------

/// One `key op value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

/// Parsed `labelSelector` and `fieldSelector`.
#[derive(Debug, Default, Clone)]
struct Selector {
    labels: Vec<Term>,
    fields: Vec<Term>,
}

fn parse_terms(text: &str, allow_existence: bool) -> Result<Vec<Term>, Failure> {
    let mut out = Vec::new();
    for raw in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if raw.contains('(') || raw.contains(" in ") || raw.contains(" notin ") {
            return Err(Failure::bad_request(format!(
                "set-based selector `{raw}` is not supported by the stand-in"
            )));
        }
        let term = if let Some((k, v)) = raw.split_once("!=") {
            Term::NotEquals(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = raw.split_once("==") {
            Term::Equals(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = raw.split_once('=') {
            Term::Equals(k.trim().into(), v.trim().into())
        } else if !allow_existence {
            return Err(Failure::bad_request(format!("invalid selector: `{raw}`")));
        } else if let Some(k) = raw.strip_prefix('!') {
            Term::NotExists(k.trim().into())
        } else {
            Term::Exists(raw.into())
        };
        out.push(term);
    }
    Ok(out)
}

impl Selector {
    fn parse(kind: &Kind, q: &BTreeMap<String, String>) -> Result<Self, Failure> {
        let labels = parse_terms(q.get("labelSelector").map_or("", String::as_str), true)?;
        let fields = parse_terms(q.get("fieldSelector").map_or("", String::as_str), false)?;
        for t in &fields {
            let (Term::Equals(k, _) | Term::NotEquals(k, _)) = t else {
                continue;
            };
            let known = ["metadata.name", "metadata.namespace"].contains(&k.as_str())
                || kind.extra_fields.contains(&k.as_str());
            if !known {
                return Err(Failure::bad_request(format!(
                    "field label not supported: {k}"
                )));
            }
        }
        Ok(Self { labels, fields })
    }

    fn matches(&self, object: &Value) -> bool {
        let label = |k: &str| object["metadata"]["labels"][k].as_str().map(str::to_owned);
        let field = |k: &str| {
            let v = match k {
                "metadata.name" => &object["metadata"]["name"],
                "metadata.namespace" => &object["metadata"]["namespace"],
                other => &object[other],
            };
            Some(v.as_str().unwrap_or_default().to_owned())
        };
        let check = |terms: &[Term], get: &dyn Fn(&str) -> Option<String>| {
            terms.iter().all(|t| match t {
                Term::Equals(k, v) => get(k).as_deref() == Some(v.as_str()),
                Term::NotEquals(k, v) => get(k).as_deref() != Some(v.as_str()),
                Term::Exists(k) => get(k).is_some(),
                Term::NotExists(k) => get(k).is_none(),
            })
        };
        check(&self.labels, &label) && check(&self.fields, &field)
    }
}

// ---------------------------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------------------------

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            let Value::Object(map) = target else {
                return; // made an object just above
            };
            for (k, v) in fields {
                if v.is_null() {
                    map.remove(k);
                } else {
                    merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Everything but the type, `metadata` and `status` (what `generation` tracks).
fn spec_part(object: &Value) -> Value {
    let mut v = object.clone();
    if let Some(map) = v.as_object_mut() {
        for field in ["apiVersion", "kind", "metadata", "status"] {
            map.remove(field);
        }
    }
    v
}

/// Equal apart from `resourceVersion` (a no-op write).
fn same_content(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        v
    };
    strip(a) == strip(b)
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn check_identity(kind: &Kind, ns: &str, name: Option<&str>, body: &Value) -> Result<(), Failure> {
    if let Some(v) = body["apiVersion"].as_str()
        && v != kind.api_version()
    {
        return Err(Failure::bad_request(format!(
            "apiVersion `{v}` does not match {}",
            kind.api_version()
        )));
    }
    if let Some(k) = body["kind"].as_str()
        && k != kind.kind
    {
        return Err(Failure::bad_request(format!(
            "kind `{k}` does not match {}",
            kind.kind
        )));
    }
    if let Some(n) = body["metadata"]["namespace"].as_str()
        && n != ns
    {
        return Err(Failure::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if let (Some(want), Some(got)) = (name, body["metadata"]["name"].as_str())
        && want != got
    {
        return Err(Failure::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    Ok(())
}

/// Fail with 409 when `body` carries a resourceVersion other than `current`'s.
fn check_precondition(
    kind: &Kind,
    name: &str,
    body: &Value,
    current: &Value,
) -> Result<(), Failure> {
    match body["metadata"]["resourceVersion"].as_str() {
        Some(rv)
            if !rv.is_empty() && Some(rv) != current["metadata"]["resourceVersion"].as_str() =>
        {
            Err(Failure::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {}.{} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    kind.plural, kind.group
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// The stored form of an update of `current` to `desired` (through `/status` or not).
fn updated(kind: &Kind, current: &Value, mut desired: Value, status: bool) -> Value {
    if kind.status_subresource {
        if status {
            // Only the status moves.
            let new_status = desired.get("status").cloned();
            desired = current.clone();
            match new_status {
                Some(s) => desired["status"] = s,
                None => {
                    if let Some(m) = desired.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        } else {
            match current.get("status") {
                Some(s) => desired["status"] = s.clone(),
                None => {
                    if let Some(m) = desired.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
    }
    // Server-owned metadata is kept.
    for field in [
        "uid",
        "creationTimestamp",
        "name",
        "namespace",
        "generation",
    ] {
        match current["metadata"].get(field) {
            Some(v) => desired["metadata"][field] = v.clone(),
            None => {
                if let Some(m) = desired["metadata"].as_object_mut() {
                    m.remove(field);
                }
            }
        }
    }
    desired["apiVersion"] = json!(kind.api_version());
    desired["kind"] = json!(kind.kind);
    if kind.status_subresource && spec_part(current) != spec_part(&desired) {
        let g = current["metadata"]["generation"].as_i64().unwrap_or(0);
        desired["metadata"]["generation"] = json!(g + 1);
    }
    desired
}

// ---------------------------------------------------------------------------------------------
// Verbs
// ---------------------------------------------------------------------------------------------

async fn read_json(req: Request<Incoming>) -> Result<(String, Value), Failure> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| Failure::bad_request(format!("reading the body: {e}")))?
        .to_bytes();
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Failure::bad_request(format!("the body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(Failure::bad_request("the body must be a JSON object"));
    }
    Ok((content_type, value))
}

async fn handle(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    match route(state, req).await {
        Ok(resp) => resp,
        Err(f) => f.response(),
    }
}

async fn route(state: &Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Failure> {
    let target = parse_path(req.uri().path())?;
    let q = query_params(&req);
    let kind = target.kind;
    let method = req.method().clone();
    match (&method, &target.name, &target.namespace) {
        (&Method::GET, None, _) => {
            let selector = Selector::parse(kind, &q)?;
            if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) {
                Ok(watch(state, &target, selector, &q))
            } else {
                Ok(list(state, &target, &selector))
            }
        }
        (&Method::POST, None, Some(ns)) => {
            let (_, body) = read_json(req).await?;
            create(state, kind, ns, body)
        }
        (&Method::GET, Some(name), Some(ns)) => {
            let store = state.lock();
            let key = (kind.plural, ns.clone(), name.clone());
            store
                .objects
                .get(&key)
                .map(|o| json_response(StatusCode::OK, o))
                .ok_or_else(|| Failure::not_found(kind, name))
        }
        (&Method::PUT, Some(name), Some(ns)) => {
            let (_, body) = read_json(req).await?;
            check_identity(kind, ns, Some(name), &body)?;
            write(state, &target, ns, name, |current| {
                check_precondition(kind, name, &body, current)?;
                Ok(body.clone())
            })
        }
        (&Method::PATCH, Some(name), Some(ns)) => {
            let (content_type, patch) = read_json(req).await?;
            if content_type != "application/merge-patch+json" {
                return Err(Failure::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    format!(
                        "the stand-in supports only application/merge-patch+json, not {content_type}"
                    ),
                ));
            }
            write(state, &target, ns, name, |current| {
                check_precondition(kind, name, &patch, current)?;
                let mut merged = current.clone();
                merge_patch(&mut merged, &patch);
                Ok(merged)
            })
        }
        (&Method::DELETE, Some(name), Some(ns)) => delete(state, kind, ns, name),
        _ => Err(Failure::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not supported on {}", req.uri().path()),
        )),
    }
}

fn list(state: &State, target: &Target, selector: &Selector) -> Response<Body> {
    let store = state.lock();
    let items: Vec<Value> = store
        .objects
        .iter()
        .filter(|((plural, ns, _), _)| {
            *plural == target.kind.plural && target.namespace.as_ref().is_none_or(|want| want == ns)
        })
        .map(|(_, o)| o)
        .filter(|o| selector.matches(o))
        .cloned()
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": target.kind.api_version(),
            "kind": format!("{}List", target.kind.kind),
            "metadata": {"resourceVersion": store.rv.to_string()},
            "items": items,
        }),
    )
}

fn create(
    state: &State,
    kind: &Kind,
    ns: &str,
    mut body: Value,
) -> Result<Response<Body>, Failure> {
    check_identity(kind, ns, None, &body)?;
    let name = body["metadata"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Failure::bad_request("metadata.name is required (no generateName here)"))?
        .to_owned();
    let mut store = state.lock();
    let key = (kind.plural, ns.to_owned(), name.clone());
    if store.objects.contains_key(&key) {
        return Err(Failure::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{}.{} \"{name}\" already exists", kind.plural, kind.group),
        ));
    }
    store.uid += 1;
    body["apiVersion"] = json!(kind.api_version());
    body["kind"] = json!(kind.kind);
    body["metadata"]["namespace"] = json!(ns);
    body["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", store.uid));
    body["metadata"]["creationTimestamp"] = json!(now_rfc3339());
    if kind.status_subresource {
        body["metadata"]["generation"] = json!(1);
        if let Some(m) = body.as_object_mut() {
            m.remove("status");
        }
    }
    let stored = state.commit(&mut store, kind, ns, "ADDED", body, None);
    store.objects.insert(key, stored.clone());
    Ok(json_response(StatusCode::CREATED, &stored))
}

/// Replace or patch: `change` turns the current object into the desired one.
fn write(
    state: &State,
    target: &Target,
    ns: &str,
    name: &str,
    change: impl FnOnce(&Value) -> Result<Value, Failure>,
) -> Result<Response<Body>, Failure> {
    let kind = target.kind;
    let mut store = state.lock();
    let key = (kind.plural, ns.to_owned(), name.to_owned());
    let current = store
        .objects
        .get(&key)
        .cloned()
        .ok_or_else(|| Failure::not_found(kind, name))?;
    let desired = updated(kind, &current, change(&current)?, target.status);
    if same_content(&current, &desired) {
        return Ok(json_response(StatusCode::OK, &current));
    }
    let stored = state.commit(&mut store, kind, ns, "MODIFIED", desired, Some(current));
    store.objects.insert(key, stored.clone());
    Ok(json_response(StatusCode::OK, &stored))
}

fn delete(state: &State, kind: &Kind, ns: &str, name: &str) -> Result<Response<Body>, Failure> {
    let mut store = state.lock();
    let key = (kind.plural, ns.to_owned(), name.to_owned());
    let current = store
        .objects
        .remove(&key)
        .ok_or_else(|| Failure::not_found(kind, name))?;
    let gone = state.commit(&mut store, kind, ns, "DELETED", current, None);
    Ok(json_response(StatusCode::OK, &gone))
}

/// The event a watcher with `selector` gets for `change`, if any.
fn event_for(change: &Change, selector: &Selector) -> Option<Value> {
    let now = selector.matches(&change.object);
    let before = change
        .previous
        .as_ref()
        .is_some_and(|p| selector.matches(p));
    let event = match (change.kind, before, now) {
        ("MODIFIED", true, true) => "MODIFIED",
        ("MODIFIED", false, true) => "ADDED",
        ("MODIFIED", true, false) => "DELETED",
        ("ADDED" | "DELETED", _, true) => change.kind,
        _ => return None,
    };
    Some(json!({"type": event, "object": change.object}))
}

fn watch(
    state: &Arc<State>,
    target: &Target,
    selector: Selector,
    q: &BTreeMap<String, String>,
) -> Response<Body> {
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let from: Option<u64> = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0);
    let in_scope = {
        let plural = target.kind.plural;
        let namespace = target.namespace.clone();
        move |c: &Change| {
            c.plural == plural && namespace.as_ref().is_none_or(|ns| *ns == c.namespace)
        }
    };

    // Under the lock: what the client missed, and a subscription for what comes next, so
    // nothing falls between the two.
    let (backlog, mut live, mut last_rv) = {
        let store = state.lock();
        let mut backlog = Vec::new();
        match from {
            Some(rv) => {
                let oldest = store.log.front().map_or(store.rv + 1, |c| c.rv);
                if rv + 1 < oldest && rv < store.rv {
                    backlog.push(json!({"type": "ERROR", "object": Failure::new(
                        StatusCode::GONE,
                        "Expired",
                        format!("too old resource version: {rv} ({})", oldest - 1),
                    ).status()}));
                } else {
                    backlog.extend(
                        store
                            .log
                            .iter()
                            .filter(|c| c.rv > rv && in_scope(c))
                            .filter_map(|c| event_for(c, &selector)),
                    );
                }
            }
            None => backlog.extend(
                store
                    .objects
                    .iter()
                    .filter(|((plural, ns, _), _)| {
                        *plural == target.kind.plural
                            && target.namespace.as_ref().is_none_or(|want| want == ns)
                    })
                    .filter(|(_, o)| selector.matches(o))
                    .map(|(_, o)| json!({"type": "ADDED", "object": o})),
            ),
        }
        (backlog, state.changes.subscribe(), store.rv)
    };
    let expired = backlog.iter().any(|e| e["type"] == "ERROR");

    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    tokio::spawn(async move {
        let line = |v: &Value| Ok(Frame::data(Bytes::from(format!("{v}\n"))));
        for event in &backlog {
            if tx.send(line(event)).await.is_err() {
                return;
            }
        }
        if expired {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let change = tokio::select! {
                () = &mut deadline => return,
                () = tx.closed() => return,
                c = live.recv() => c,
            };
            match change {
                Ok(c) if c.rv > last_rv && in_scope(&c) => {
                    last_rv = c.rv;
                    if let Some(event) = event_for(&c, &selector)
                        && tx.send(line(&event)).await.is_err()
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // This watcher fell behind: end it the way etcd compaction would.
                    let gone = Failure::new(StatusCode::GONE, "Expired", "watcher fell behind");
                    let _ = tx
                        .send(line(&json!({"type": "ERROR", "object": gone.status()})))
                        .await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let body = StreamBody::new(tokio_stream_from(rx)).boxed();
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// An mpsc receiver as a `Stream`.
fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(
            &mut doc,
            &json!({"a": "z", "c": {"f": null}, "l": [3], "n": {"x": 1}}),
        );
        assert_eq!(
            doc,
            json!({"a": "z", "c": {"d": "e"}, "l": [3], "n": {"x": 1}})
        );
    }

    #[test]
    fn paths_map_to_kinds_namespaces_names_and_status() {
        let t =
            parse_path("/apis/switchboard.dev/v1alpha1/namespaces/apps/realtimeroutes/chat/status")
                .unwrap();
        assert_eq!(t.kind.kind, "RealtimeRoute");
        assert_eq!(t.namespace.as_deref(), Some("apps"));
        assert_eq!(t.name.as_deref(), Some("chat"));
        assert!(t.status);
        let all = parse_path("/api/v1/secrets").unwrap();
        assert!(all.namespace.is_none() && all.name.is_none());
        assert!(parse_path("/api/v1/namespaces/a/secrets/s/status").is_err());
        assert!(parse_path("/api/v1/pods").is_err());
    }

    #[test]
    fn selectors_support_equality_terms_and_refuse_the_rest() {
        let secrets = &KINDS[0];
        let q = |l: &str, f: &str| {
            BTreeMap::from([
                ("labelSelector".to_owned(), l.to_owned()),
                ("fieldSelector".to_owned(), f.to_owned()),
            ])
        };
        let obj = json!({"metadata": {"name": "s", "labels": {"app": "x"}}, "type": "Opaque"});
        let sel = Selector::parse(secrets, &q("app=x,!gone", "type!=helm.sh/release.v1")).unwrap();
        assert!(sel.matches(&obj));
        let sel = Selector::parse(secrets, &q("app!=x", "")).unwrap();
        assert!(!sel.matches(&obj));
        let sel = Selector::parse(secrets, &q("", "metadata.name=other")).unwrap();
        assert!(!sel.matches(&obj));
        assert!(Selector::parse(secrets, &q("app in (x)", "")).is_err());
        assert!(Selector::parse(&KINDS[1], &q("", "type=Opaque")).is_err());
    }

    #[test]
    fn status_subresource_writes_move_only_their_half_and_spec_changes_bump_generation() {
        let kind = KINDS.iter().find(|k| k.status_subresource).unwrap();
        let current = json!({"metadata": {"name": "r", "generation": 1, "uid": "u"}, "spec": {"a": 1}, "status": {"s": 1}});
        let main = updated(
            kind,
            &current,
            json!({"metadata": {"name": "r"}, "spec": {"a": 2}, "status": {"s": 9}}),
            false,
        );
        assert_eq!(main["spec"]["a"], 2);
        assert_eq!(main["status"]["s"], 1);
        assert_eq!(main["metadata"]["generation"], 2);
        assert_eq!(main["metadata"]["uid"], "u");
        let status = updated(
            kind,
            &current,
            json!({"metadata": {"name": "r"}, "spec": {"a": 5}, "status": {"s": 2}}),
            true,
        );
        assert_eq!(status["spec"]["a"], 1);
        assert_eq!(status["status"]["s"], 2);
        assert_eq!(status["metadata"]["generation"], 1);
    }

    #[test]
    fn selector_transitions_become_added_and_deleted() {
        let sel = Selector {
            labels: vec![Term::Equals("app".into(), "x".into())],
            fields: vec![],
        };
        let change = |prev: Value, now: Value| Change {
            rv: 2,
            plural: "services",
            namespace: "n".into(),
            kind: "MODIFIED",
            object: now,
            previous: Some(prev),
        };
        let with = json!({"metadata": {"labels": {"app": "x"}}});
        let without = json!({"metadata": {"labels": {"app": "y"}}});
        let ty = |c: Change| event_for(&c, &sel).map(|e| e["type"].as_str().unwrap().to_owned());
        assert_eq!(
            ty(change(with.clone(), with.clone())).as_deref(),
            Some("MODIFIED")
        );
        assert_eq!(
            ty(change(without.clone(), with.clone())).as_deref(),
            Some("ADDED")
        );
        assert_eq!(
            ty(change(with.clone(), without.clone())).as_deref(),
            Some("DELETED")
        );
        assert_eq!(ty(change(without.clone(), without)), None);
    }
}
