//! Yjs documents (rooms `protocol: yjs`, docs/documents.md) with the stock `yjs` and
//! `y-websocket` npm clients (`e2e/yjs/client.js`): two gateway pods on one `nats-server`,
//! documents stored in JetStream.
//!
//! Needs `e2e/yjs/node_modules` (installed by `scripts/setup.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use support::config::{ConfigBuilder, route};
use support::nats::NatsServer;
use support::{Gateway, repo_root};

/// `/docs/<doc>` may edit, `/view/<doc>` may only read; both serve namespace `docs`. Updates
/// over 4 KiB and documents over 8 KiB (embedded bus) are refused; snapshots every 50 updates.
fn config(nats: Option<&str>) -> String {
    // In memory a document lives while it has editors and `idleUnload` after; with NATS the
    // replicas are dropped 1 s after their last editor leaves (the store keeps the document).
    // The embedded-bus pod has the small document limit the oversized test fills.
    let (idle, max_doc) = if nats.is_some() {
        ("1s", 1 << 20)
    } else {
        ("60s", 8192)
    };
    let documents = json!({
        "maxUpdateBytes": 4096,
        "maxDocumentBytes": max_doc,
        "compactAfterUpdates": 50,
        "idleUnload": idle,
    });
    let doc_route = |name: &str, may_edit: bool| {
        let mut rooms = json!({
            "protocol": "yjs",
            "pathRoom": format!("/{name}/{{room}}"),
            "namespace": "docs",
            "join": ["*"],
            "documents": documents,
        });
        if may_edit {
            rooms["publish"] = json!(["*"]);
        }
        route(name, &format!("/{name}")).prefix().rooms(rooms).set(
            "transports",
            json!({"websocket": true, "sse": false, "longPolling": false}),
        )
    };
    let mut cfg = ConfigBuilder::new()
        .publish_token(TOKEN)
        .route(doc_route("docs", true).messages_per_second(100_000, 100_000))
        .route(doc_route("view", false));
    if let Some(url) = nats {
        cfg = cfg.nats(url, "sbdocs");
    }
    cfg.yaml()
}

const TOKEN: &str = "documents-api-test-token";

/// One HTTP/1.1 request to the admin listener with the publish-API token: (status, body).
async fn admin_call(gw: &Gateway, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gw.admin()).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = std::str::from_utf8(&out[9..12]).unwrap().parse().unwrap();
    (status, out[split + 4..].to_vec())
}

fn e2e_dir() -> std::path::PathBuf {
    let dir = repo_root().join("e2e/yjs");
    assert!(
        dir.join("node_modules/y-websocket/package.json").is_file()
            && dir.join("node_modules/yjs/package.json").is_file(),
        "needs {}/node_modules: run scripts/setup.sh",
        dir.display()
    );
    dir
}

/// Run one scenario of `e2e/yjs/client.js`; its JSON result (the scenario must succeed).
async fn node(scenario: &str, args: Value) -> Value {
    let dir = e2e_dir();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("node")
            .arg(dir.join("client.js"))
            .arg(scenario)
            .arg(args.to_string())
            .current_dir(&dir)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the client ran for 120s")
    .expect("run node client.js");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{scenario}: exit {}: {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{scenario} result {line:?}: {e}"))
}

fn docs_url(gw: &Gateway) -> String {
    gw.ws_url("/docs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_editor_of_a_new_document_becomes_synced() {
    let gw = Gateway::start(&config(None)).await;
    let r = node("first", json!({"url": docs_url(&gw), "doc": "fresh-1"})).await;
    assert_eq!(r["synced"], true, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_converge_and_the_document_survives_every_editor_leaving_and_every_pod_restarting()
{
    let nats = NatsServer::start();
    let a = Gateway::start(&config(Some(&nats.url()))).await;
    let b = Gateway::start(&config(Some(&nats.url()))).await;
    let r = node(
        "interleave",
        json!({"urlA": docs_url(&a), "urlB": docs_url(&b), "doc": "shared-1", "edits": 1000}),
    )
    .await;
    assert_eq!(r["length"], 2000, "{r}");
    assert_eq!(r["as"], 1000, "{r}");
    let text = r["text"].as_str().unwrap().to_string();

    // Everyone left; a late joiner alone (on either pod) gets the whole document.
    tokio::time::sleep(Duration::from_millis(1500)).await; // past idleUnload: replicas dropped
    let late = node("read", json!({"url": docs_url(&b), "doc": "shared-1"})).await;
    assert_eq!(late["text"], text.as_str());

    // 2000 updates passed the 50-update threshold: snapshots were written and merged updates
    // purged, so the log is far shorter than the edits.
    let metrics = support::http_get(a.admin(), "/metrics").await.1
        + &support::http_get(b.admin(), "/metrics").await.1;
    assert!(
        metrics.contains("switchboard_document_compactions_total{result=\"ok\"}"),
        "no compaction counted"
    );

    // Every pod restarted: the document comes back from JetStream.
    drop(a);
    drop(b);
    let c = Gateway::start(&config(Some(&nats.url()))).await;
    let after = node("read", json!({"url": docs_url(&c), "doc": "shared-1"})).await;
    assert_eq!(after["text"], text.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_on_another_pod_sees_the_others_awareness_and_the_sender_hears_its_own() {
    let nats = NatsServer::start();
    let a = Gateway::start(&config(Some(&nats.url()))).await;
    let b = Gateway::start(&config(Some(&nats.url()))).await;
    let r = node(
        "awareness",
        json!({"urlA": docs_url(&a), "urlB": docs_url(&b), "doc": "cursors-1"}),
    )
    .await;
    assert_eq!(r["echoed"], true, "{r}");
    assert!(r["seenAfterMs"].is_u64(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_editors_changes_never_reach_the_others() {
    let gw = Gateway::start(&config(None)).await;
    let r = node(
        "readonly",
        json!({"urlRW": docs_url(&gw), "urlRO": gw.ws_url("/view"), "doc": "ro-1"}),
    )
    .await;
    assert_eq!(r["writerText"], "writer", "{r}");
    assert_eq!(r["freshText"], "writer", "{r}");
    let metrics = support::http_get(gw.admin(), "/metrics").await.1;
    assert!(
        metrics.contains("switchboard_document_updates_total{result=\"read_only\"}"),
        "read-only drop not counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_update_closes_1009_and_a_full_document_closes_4010() {
    let gw = Gateway::start(&config(None)).await;
    let r = node(
        "oversized",
        json!({"url": docs_url(&gw), "doc": "big-1", "bytes": 5000}),
    )
    .await;
    assert_eq!(r["code"], 1009, "{r}");
    // Two updates of 4000 characters fit (about 8040 bytes of 8192); one more does not.
    for n in [4000, 8000] {
        let w = node(
            "write",
            json!({"url": docs_url(&gw), "doc": "big-2", "insert": "y".repeat(4000)}),
        )
        .await;
        assert_eq!(w["length"], n, "{w}");
    }
    let r = node(
        "oversized",
        json!({"url": docs_url(&gw), "doc": "big-2", "bytes": 1000}),
    )
    .await;
    assert_eq!(r["code"], 4010, "{r}");
    let read = node("read", json!({"url": docs_url(&gw), "doc": "big-2"})).await;
    assert_eq!(
        read["length"], 8000,
        "the refused update is not applied: {read}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documents_api_reads_the_state_and_applies_a_server_side_update() {
    use yrs::updates::decoder::Decode;
    use yrs::{GetString, ReadTxn, Text, Transact, Update};
    let gw = Gateway::start(&config(None)).await;
    node(
        "write",
        json!({"url": docs_url(&gw), "doc": "api-1", "insert": "from editor"}),
    )
    .await;
    let (status, state) = admin_call(&gw, "GET", "/v1/documents/docs/api-1", b"").await;
    assert_eq!(status, 200);
    let doc = yrs::Doc::new();
    let t = doc.get_or_insert_text("t");
    doc.transact_mut()
        .apply_update(Update::decode_v1(&state).unwrap())
        .unwrap();
    assert_eq!(t.get_string(&doc.transact()), "from editor");

    // A server-side edit on top of that state reaches the next editor.
    let sv = doc.transact().state_vector();
    let len = t.len(&doc.transact());
    t.insert(&mut doc.transact_mut(), len, " + server");
    let update = doc.transact().encode_state_as_update_v1(&sv);
    let (status, _) = admin_call(&gw, "POST", "/v1/documents/docs/api-1", &update).await;
    assert_eq!(status, 204);
    let read = node("read", json!({"url": docs_url(&gw), "doc": "api-1"})).await;
    assert_eq!(read["text"], "from editor + server");

    let (status, _) = admin_call(&gw, "POST", "/v1/documents/docs/api-1", b"garbage").await;
    assert_eq!(status, 400, "an undecodable update is refused");
    let (status, _) = admin_call(&gw, "GET", "/v1/documents/nope/api-1", b"").await;
    assert_eq!(status, 404);
}
