//! Gateway configs built in code: a test states what differs from a default gateway and a
//! default route, nothing more.
//!
//! ```ignore
//! let yaml = ConfigBuilder::new()
//!     .route(route("big", "/big").proxy(&[echo.port()]).max_message_bytes(1024))
//!     .yaml();
//! ```
//!
//! The default gateway: one listener `public` and the admin listener, both on `127.0.0.1:0`
//! (the harness reads the bound ports from the gateway's log), `drain: {propagation: 0s,
//! deadline: 5s}`. The default route ([`route`]): `keepalive: {interval: 0s}` (no pings to
//! interleave with what a test reads) and `drain: {window: 1s}`.
//!
//! The document is a JSON value written as JSON, which is YAML: the gateway reads it like any
//! config file, and the harness validates it with the config crate before starting a gateway.
//! Options without a method of their own are set by path with `set("proxy.pinning", json!(…))`.

use serde_json::{Value, json};

use super::{HS256_SECRET, MAX_MESSAGE_BYTES, fixture};

/// A whole `GatewayConfig` document.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    doc: Value,
    routes: Vec<Value>,
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigBuilder {
    /// The default gateway, with no routes.
    pub fn new() -> Self {
        Self {
            doc: json!({
                "apiVersion": "switchboard.dev/v1alpha1",
                "kind": "GatewayConfig",
                "listeners": [{"name": "public", "address": "127.0.0.1:0"}],
                "admin": {"address": "127.0.0.1:0"},
                "drain": {"propagation": "0s", "deadline": "5s"},
            }),
            routes: Vec::new(),
        }
    }

    /// Add a route (after the ones added before).
    pub fn route(mut self, route: RouteBuilder) -> Self {
        self.routes.push(route.doc);
        self
    }

    /// The gateway's `drain` section: `{propagation, deadline}`.
    pub fn drain(self, propagation: &str, deadline: &str) -> Self {
        self.set(
            "drain",
            json!({"propagation": propagation, "deadline": deadline}),
        )
    }

    /// Gateway-wide `limits` (merged into what is set already), e.g.
    /// `json!({"handshakeTimeout": "1s"})`.
    pub fn limits(self, limits: Value) -> Self {
        self.merge("limits", limits)
    }

    /// `publishApi: {token}`.
    pub fn publish_token(self, token: &str) -> Self {
        self.set("publishApi", json!({"token": token}))
    }

    /// `bus: {nats: {urls: [url], subjectPrefix}}`.
    pub fn nats(self, url: &str, subject_prefix: &str) -> Self {
        self.set(
            "bus",
            json!({"nats": {"urls": [url], "subjectPrefix": subject_prefix}}),
        )
    }

    /// The `public` listener's address (default `127.0.0.1:0`): a fixed one for a gateway that
    /// must take over another's port.
    pub fn listen(self, addr: std::net::SocketAddr) -> Self {
        self.set("listeners.0.address", json!(addr.to_string()))
    }

    /// Another listener on `127.0.0.1:0` with more settings (e.g. `json!({"paths": …})`); find
    /// its bound address with `Gateway::listener(name)`.
    pub fn listener(mut self, name: &str, more: Value) -> Self {
        let mut listener = json!({"name": name, "address": "127.0.0.1:0"});
        merge_path(&mut listener, "", more);
        if let Some(listeners) = self.doc["listeners"].as_array_mut() {
            listeners.push(listener);
        }
        self
    }

    /// The `public` listener's `tls` section.
    pub fn tls(self, tls: Value) -> Self {
        self.set("listeners.0.tls", tls)
    }

    /// Set the value at a dotted path (object keys, or list indexes), creating objects on the
    /// way: `set("limits.maxConnections", json!(3))`.
    pub fn set(mut self, path: &str, value: Value) -> Self {
        set_path(&mut self.doc, path, value);
        self
    }

    /// Merge the keys of `value` (an object) into the object at `path`.
    pub fn merge(mut self, path: &str, value: Value) -> Self {
        merge_path(&mut self.doc, path, value);
        self
    }

    /// The document (routes included).
    pub fn value(&self) -> Value {
        let mut doc = self.doc.clone();
        if !self.routes.is_empty() {
            doc["routes"] = Value::Array(self.routes.clone());
        }
        doc
    }

    /// The document as config-file text (JSON, which is YAML).
    pub fn yaml(&self) -> String {
        serde_json::to_string_pretty(&self.value()).expect("a JSON value serializes")
    }
}

/// A default route named `name` matching `path` exactly (see the module docs); give it a mode
/// with [`RouteBuilder::proxy`] or [`RouteBuilder::rooms`].
pub fn route(name: &str, path: &str) -> RouteBuilder {
    RouteBuilder {
        doc: json!({
            "name": name,
            "path": {"value": path},
            "keepalive": {"interval": "0s"},
            "drain": {"window": "1s"},
        }),
    }
}

/// One entry of `routes`.
#[derive(Debug, Clone)]
pub struct RouteBuilder {
    doc: Value,
}

impl RouteBuilder {
    /// Match the path as a prefix (`path.type: Prefix`).
    pub fn prefix(self) -> Self {
        self.set("path.type", json!("Prefix"))
    }

    /// Proxy mode to static backends on 127.0.0.1 (none: a route without a backend).
    pub fn proxy(self, backends: &[u16]) -> Self {
        let backends: Vec<Value> = backends
            .iter()
            .map(|p| json!({"address": format!("127.0.0.1:{p}")}))
            .collect();
        self.merge("proxy", json!({"backends": backends}))
    }

    /// Rooms mode with this `rooms` section, e.g. `json!({"join": ["chat:*"]})`.
    pub fn rooms(self, rooms: Value) -> Self {
        self.set("mode", json!("rooms")).set("rooms", rooms)
    }

    /// The route's `jwt` section ([`jwt_hs256`], [`jwt_rsa_file`]); add to it with
    /// `set("jwt.audiences", …)`.
    pub fn jwt(self, jwt: Value) -> Self {
        self.set("jwt", jwt)
    }

    /// `origins: {allowed}`.
    pub fn origins(self, allowed: &[&str]) -> Self {
        self.set("origins", json!({"allowed": allowed}))
    }

    /// Route `limits`, merged into what is set already.
    pub fn limits(self, limits: Value) -> Self {
        self.merge("limits", limits)
    }

    /// `limits.maxMessageBytes`.
    pub fn max_message_bytes(self, bytes: usize) -> Self {
        self.limits(json!({"maxMessageBytes": bytes}))
    }

    /// `limits.messagesPerSecond` and `limits.messageBurst`.
    pub fn messages_per_second(self, rate: usize, burst: usize) -> Self {
        self.limits(json!({"messagesPerSecond": rate, "messageBurst": burst}))
    }

    /// The route's `compression` section, e.g. `json!({"enabled": true})`.
    pub fn compression(self, compression: Value) -> Self {
        self.set("compression", compression)
    }

    /// Replace the `keepalive` section.
    pub fn keepalive(self, keepalive: Value) -> Self {
        self.set("keepalive", keepalive)
    }

    /// Replace the `drain` section, e.g. `json!({"window": "0s"})`.
    pub fn drain(self, drain: Value) -> Self {
        self.set("drain", drain)
    }

    /// Remove a top-level key of the route, so the gateway's default applies: `unset("drain")`
    /// (default drain window), `unset("keepalive")` (default pings).
    pub fn unset(mut self, key: &str) -> Self {
        if let Some(route) = self.doc.as_object_mut() {
            route.remove(key);
        }
        self
    }

    /// Set the value at a dotted path of the route, creating objects on the way.
    pub fn set(mut self, path: &str, value: Value) -> Self {
        set_path(&mut self.doc, path, value);
        self
    }

    /// Merge the keys of `value` (an object) into the object at `path` of the route.
    pub fn merge(mut self, path: &str, value: Value) -> Self {
        merge_path(&mut self.doc, path, value);
        self
    }
}

/// A `jwt` section verifying HS256 tokens signed with [`HS256_SECRET`].
pub fn jwt_hs256() -> Value {
    json!({"keys": [{"inline": {"algorithm": "HS256", "secret": HS256_SECRET}}]})
}

/// A `jwt` section verifying RS256 tokens with `fixtures/keys/rsa.pub.pem`.
pub fn jwt_rsa_file() -> Value {
    json!({"keys": [{"file": {
        "algorithm": "RS256",
        "path": fixture("keys/rsa.pub.pem").display().to_string(),
    }}]})
}

fn slot<'a>(mut at: &'a mut Value, path: &str) -> &'a mut Value {
    for key in path.split('.').filter(|k| !k.is_empty()) {
        at = match key.parse::<usize>() {
            Ok(i) if at.is_array() => &mut at[i],
            _ => {
                if !at.is_object() {
                    *at = json!({});
                }
                &mut at[key]
            }
        };
    }
    at
}

fn set_path(doc: &mut Value, path: &str, value: Value) {
    *slot(doc, path) = value;
}

fn merge_path(doc: &mut Value, path: &str, value: Value) {
    let at = slot(doc, path);
    if !at.is_object() {
        *at = json!({});
    }
    if let (Some(at), Value::Object(more)) = (at.as_object_mut(), value) {
        at.extend(more);
    }
}

/// One `Prefix /` route named `echo` proxying to `backends`, with limits generous enough for
/// Autobahn (messages up to [`MAX_MESSAGE_BYTES`], 100k messages a second).
pub fn proxy_config(backends: &[u16]) -> String {
    ConfigBuilder::new()
        .route(
            route("echo", "/")
                .prefix()
                .proxy(backends)
                .max_message_bytes(MAX_MESSAGE_BYTES)
                .messages_per_second(100_000, 100_000),
        )
        .yaml()
}
