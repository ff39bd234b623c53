//! Compiling routes: defaults, every field, the problems the schema checks again, refs.

use serde_json::json;
use switchboard_config::{
    Algorithm, Documents, History, Hook, KeySource, PathMatchKind, PinningKey,
    RoomProtocol as ConfigRoomProtocol, Rooms as ConfigRooms, ServiceRef,
    TokenSource as ConfigTokenSource,
};

use super::*;
use crate::conditions::reasons;
use crate::fixtures::{base_config, route};

mod jwt;
mod problems;
mod proxy;
mod refs;
mod rooms;

fn compiled(yaml: &str) -> Route {
    compile(&route("default", "chat", yaml), &BTreeMap::new()).unwrap()
}

fn problems(yaml: &str) -> Vec<String> {
    compile(&route("default", "chat", yaml), &BTreeMap::new()).unwrap_err()
}

fn with_secret(yaml: &str, material: &str) -> Result<Route, Vec<String>> {
    let mut m = BTreeMap::new();
    m.insert(("keys".to_string(), "k".to_string()), material.to_string());
    compile(&route("default", "chat", yaml), &m)
}

const SECRET_ROUTE: &str = "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: idp, secretRef: {name: keys, key: k}, algorithms: [ALGS]}]}}";

const ROOMS_EVERYTHING: &str = r#"
mode: rooms
path: {value: /rooms}
transports: [WebSocket, SSE]
auth:
  jwt:
    providers:
    - name: idp
      jwksUri: https://idp.example.com/jwks
rooms:
  namespace: collab
  join: ["doc:{org}:*", "user:{sub}", "lobby"]
  publish: ["doc:{org}:*"]
  history: {maxMessages: 500, maxAge: 1h}
  presence: true
  maxQueueBytes: 65536
  publishHook: {url: "http://api.collab.svc:8080/hooks/publish", timeout: 500ms}
  notify: {url: "https://api.example.com/hooks/notify"}
"#;

const RAW_RELAY: &str = r#"
mode: rooms
path: {value: /collab}
rooms:
  protocol: raw
  pathRoom: /collab/{room}
  echo: true
  join: ["*"]
  publish: ["*"]
"#;
