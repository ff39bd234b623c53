//! Identity to the app through the real binary: configured claims become headers, any
//! client-sent copy (exact, `_` spelling, `Connection:`-nominated) never reaches the app, the
//! HMAC signature verifies, and token carriers (query parameter, subprotocol entry,
//! `Authorization`) are removed before the request goes on. Plain HTTP on the same route gets
//! the same treatment.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde_json::json;
use sha2::Sha256;
use support::{ConfigBuilder, route};
use support::{
    EchoServer, Gateway, assert_echo, claims, close_normally, free_port, http_get_with,
    jwt_rsa_file, parse_http_echo, raw_upgrade, sign_rs256, ws_connect_with_response, ws_request,
};

const SECRET: &str = "identity-signing-secret-for-tests";

fn config(backend: u16) -> String {
    ConfigBuilder::new()
        .route(
            route("identity", "/app")
                .jwt(jwt_rsa_file())
                .set(
                    "jwt.tokenSources",
                    json!([{"bearer": {}}, {"subprotocol": {"prefix": "bearer."}}, {"query": {"name": "access_token"}}]),
                )
                .proxy(&[backend])
                .set(
                    "proxy.identityHeaders",
                    json!({"sub": "X-Switchboard-User", "tenant": "X-Tenant"}),
                )
                .set("proxy.signature", json!({"secret": SECRET})),
        )
        .yaml()
}

fn alice_token() -> String {
    sign_rs256(
        "rsa",
        None,
        &claims("alice", 600, serde_json::json!({"tenant": "acme"})),
    )
}

async fn start() -> (EchoServer, Gateway) {
    let echo = EchoServer::start().await;
    let gateway = Gateway::start(&config(echo.port())).await;
    (echo, gateway)
}

/// Every value of `name` in `headers`.
fn values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().expect("ASCII header value"))
        .collect()
}

/// Check `t=<unix>,v1=<hex>` against an independent HMAC-SHA256 over `"<t>\n"` and the sorted
/// `"<lowercase name>:<value>\n"` lines of `identity`.
fn assert_signature_verifies(header: &str, identity: &[(&str, &str)]) {
    let (t, v1) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("signature header shape: {header:?}"));
    let t: u64 = t.parse().expect("t is unix seconds");
    assert!(t.abs_diff(support::unix_now()) < 300, "t={t} is about now");
    let mut lines: Vec<String> = identity
        .iter()
        .map(|(n, v)| format!("{}:{v}\n", n.to_ascii_lowercase()))
        .collect();
    lines.sort();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).expect("HMAC key");
    mac.update(format!("{t}\n").as_bytes());
    for line in &lines {
        mac.update(line.as_bytes());
    }
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v1, expected, "signature over {lines:?}");
}

const IDENTITY: &[(&str, &str)] = &[("X-Switchboard-User", "alice"), ("X-Tenant", "acme")];

#[tokio::test]
async fn claims_become_identity_headers_and_client_copies_never_reach_the_app() {
    let (echo, gateway) = start().await;
    let bearer = format!("Bearer {}", alice_token());
    let (resp, ws) = raw_upgrade(
        gateway.addr(),
        "/app",
        &[
            ("Authorization", &bearer),
            ("X-Switchboard-User", "mallory"),
            ("x_switchboard_user", "mallory-underscore"),
            ("X-Tenant", "evil"),
            ("X_Tenant", "evil-underscore"),
            ("X-Switchboard-Signature", "t=1,v1=forged"),
            // Nominating our headers as hop-by-hop must not make the gateway drop its own copy.
            ("Connection", "X-Tenant, X-Switchboard-User"),
        ],
    )
    .await;
    assert_eq!(resp.status, 101, "{resp:?}");
    let mut ws = ws.expect("upgraded");
    assert_echo(&mut ws, "hello").await;

    let seen = &echo.handshakes()[0].headers;
    assert_eq!(values(seen, "x-switchboard-user"), ["alice"]);
    assert_eq!(values(seen, "x-tenant"), ["acme"]);
    for name in seen.keys() {
        assert!(
            !name.as_str().contains('_'),
            "underscore spelling {name} reached the app: {seen:?}"
        );
    }
    assert!(
        seen.get("authorization").is_none(),
        "the token reached the app"
    );
    let signature = values(seen, "x-switchboard-signature");
    assert_eq!(signature.len(), 1, "{signature:?}");
    assert_signature_verifies(signature[0], IDENTITY);
    close_normally(&mut ws).await;
}

#[tokio::test]
async fn a_query_token_is_stripped_before_the_app_sees_the_request_line() {
    let (echo, gateway) = start().await;
    let token = alice_token();
    let url = gateway.ws_url(&format!("/app/room?room=7&access_token={token}&x=1"));
    let (mut ws, _) = ws_connect_with_response(ws_request(&url, &[]))
        .await
        .expect("query-token upgrade");
    assert_echo(&mut ws, "hi").await;

    let handshake = &echo.handshakes()[0];
    assert_eq!(handshake.uri.to_string(), "/app/room?room=7&x=1");
    assert_eq!(values(&handshake.headers, "x-switchboard-user"), ["alice"]);
    close_normally(&mut ws).await;
    assert!(
        !gateway.log().contains(&token),
        "the token appears in the gateway log"
    );
}

#[tokio::test]
async fn a_subprotocol_token_is_removed_and_only_the_real_subprotocol_is_negotiated() {
    let (echo, gateway) = start().await;
    let offer = format!("chat.v1, bearer.{}", alice_token());
    let (mut ws, resp) = ws_connect_with_response(ws_request(
        &gateway.ws_url("/app"),
        &[("Sec-WebSocket-Protocol", &offer)],
    ))
    .await
    .expect("subprotocol-token upgrade");
    assert_eq!(
        resp.headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .collect::<Vec<_>>(),
        ["chat.v1"],
        "the client gets the real subprotocol echoed, nothing else"
    );
    assert_echo(&mut ws, "proto").await;

    let handshake = &echo.handshakes()[0];
    assert_eq!(
        values(&handshake.headers, "sec-websocket-protocol"),
        ["chat.v1"]
    );
    assert_eq!(handshake.subprotocol.as_deref(), Some("chat.v1"));
    assert_eq!(values(&handshake.headers, "x-switchboard-user"), ["alice"]);
    close_normally(&mut ws).await;
}

#[tokio::test]
async fn plain_http_on_a_proxy_route_carries_the_same_identity_headers() {
    let (echo, gateway) = start().await;
    let bearer = format!("Bearer {}", alice_token());
    let (status, body) = http_get_with(
        gateway.addr(),
        "/app/poll?access_token=decoy&q=1",
        &[
            ("Authorization", &bearer),
            ("X-Switchboard-User", "mallory"),
            ("x_switchboard_user", "mallory-underscore"),
            ("X-Tenant", "evil"),
            ("Connection", "X-Tenant"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer = parse_http_echo(&body);
    assert_eq!(answer.backend, format!("http:{}", echo.port()));
    assert_eq!(answer.path, "/app/poll?q=1");
    let h = &answer.headers;
    assert_eq!(
        h.get("x-switchboard-user").map(String::as_str),
        Some("alice")
    );
    assert_eq!(h.get("x-tenant").map(String::as_str), Some("acme"));
    assert!(h.get("authorization").is_none(), "{h:?}");
    assert!(h.keys().all(|k| !k.contains('_')), "{h:?}");
    assert_signature_verifies(
        h.get("x-switchboard-signature").expect("signature header"),
        IDENTITY,
    );
    // Not a WebSocket: nothing was upgraded.
    assert_eq!(echo.connections(), 0);
}

/// The Node verifier from docs/config.md (the ```js block after **Signature format**), taken
/// as it is written.
fn documented_node_verifier() -> String {
    let docs = std::fs::read_to_string(support::repo_root().join("docs/config.md"))
        .expect("docs/config.md");
    let from = docs
        .find("**Signature format**")
        .expect("docs/config.md has the signature format");
    let block = docs[from..]
        .split_once("```js\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .map(|(code, _)| code.to_owned())
        .expect("docs/config.md has a js verifier after the signature format");
    assert!(
        block.contains("export function verifyIdentity("),
        "the documented verifier is named verifyIdentity: {block}"
    );
    block
}

/// A `node:http` app that answers every request with what the documented verifier made of it.
struct NodeApp {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl NodeApp {
    async fn start(identity_names: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let app = format!(
            r#"{verifier}

import {{ createServer }} from "node:http";

const names = {names};
createServer((req, res) => {{
  const identity = verifyIdentity(req.headers, process.env.SECRET, names);
  res.setHeader("content-type", "application/json");
  res.end(JSON.stringify({{ verified: identity !== null, identity }}));
}}).listen({port}, "127.0.0.1");
"#,
            verifier = documented_node_verifier(),
            names = serde_json::to_string(identity_names).expect("names"),
        );
        let path = dir.path().join("app.mjs");
        std::fs::write(&path, app).expect("write app.mjs");
        let child = std::process::Command::new("node")
            .arg(&path)
            .env("SECRET", SECRET)
            .spawn()
            .expect("node is installed (scripts/setup.sh)");
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "node app did not listen on {addr}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Self {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for NodeApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_node_app_verifies_and_decodes_non_ascii_identity_with_the_documented_code() {
    let app = NodeApp::start(&["x-switchboard-user", "x-tenant"]).await;
    let gateway = Gateway::start(&config(app.port)).await;
    let token = sign_rs256(
        "rsa",
        None,
        &claims(
            "zoë 山田",
            600,
            serde_json::json!({"tenant": "Zürich utf-8''x %41"}),
        ),
    );
    let bearer = format!("Bearer {token}");
    let (status, body) =
        http_get_with(gateway.addr(), "/app/poll", &[("Authorization", &bearer)]).await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("the app answers JSON");
    assert_eq!(
        answer,
        serde_json::json!({
            "verified": true,
            "identity": {"x-switchboard-user": "zoë 山田", "x-tenant": "Zürich utf-8''x %41"},
        }),
        "the documented Node verifier accepts the signature and decodes the values"
    );

    // An ASCII value that looks like the encoded form is itself encoded, so it comes back as
    // it was, not decoded.
    let token = sign_rs256(
        "rsa",
        None,
        &claims("utf-8''%41", 600, serde_json::json!({"tenant": "acme"})),
    );
    let bearer = format!("Bearer {token}");
    let (status, body) =
        http_get_with(gateway.addr(), "/app/poll", &[("Authorization", &bearer)]).await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("the app answers JSON");
    assert_eq!(
        answer,
        serde_json::json!({
            "verified": true,
            "identity": {"x-switchboard-user": "utf-8''%41", "x-tenant": "acme"},
        })
    );
}
