//! Yjs documents (rooms `protocol: yjs`, docs/documents.md) with the stock `yjs` and
//! `y-websocket` npm clients (`e2e/yjs/client.js`): two gateway pods on one `nats-server`,
//! documents stored in JetStream.
//!
//! Needs `e2e/yjs/node_modules` (installed by `scripts/setup.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::config::{ConfigBuilder, route};
use support::nats::NatsServer;
use support::{Gateway, repo_root};
use switchboard_gateway::documents::Documents;
use switchboard_gateway::documents::store::OP_TIMEOUT;

/// `/docs/<doc>` may edit, `/view/<doc>` may only read; both serve namespace `docs`. Updates
/// over 4 KiB and documents over 8 KiB (embedded bus) are refused; snapshots every 50 updates.
fn config(nats: Option<&str>) -> String {
    config_with(nats, json!({}))
}

/// [`config`] with more `documents` settings.
fn config_with(nats: Option<&str>, more_documents: Value) -> String {
    builder(nats, more_documents).yaml()
}

/// The routes of [`config_with`], to add more.
fn builder(nats: Option<&str>, more_documents: Value) -> ConfigBuilder {
    // In memory a document lives while it has editors and `idleUnload` after; with NATS the
    // replicas are dropped 1 s after their last editor leaves (the store keeps the document).
    // The embedded-bus pod has the small document limit the oversized test fills.
    let (idle, max_doc) = if nats.is_some() {
        ("1s", 1 << 20)
    } else {
        ("60s", 8192)
    };
    let mut documents = json!({
        "maxUpdateBytes": 4096,
        "maxDocumentBytes": max_doc,
        "compactAfterUpdates": 50,
        "idleUnload": idle,
    });
    for (k, v) in more_documents.as_object().unwrap() {
        documents[k] = v.clone();
    }
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
        route(name, &format!("/{name}"))
            .prefix()
            .rooms(rooms)
            .set(
                "transports",
                json!({"websocket": true, "sse": false, "longPolling": false}),
            )
            .drain(json!({"window": "1s", "closeCode": DRAIN_CODE, "closeReason": "draining"}))
    };
    let mut cfg = ConfigBuilder::new()
        .publish_token(TOKEN)
        .route(doc_route("docs", true).messages_per_second(100_000, 100_000))
        .route(doc_route("view", false));
    if let Some(url) = nats {
        cfg = cfg.nats(url, "sbdocs");
    }
    cfg
}

const TOKEN: &str = "documents-api-test-token";
/// The document routes' drain close code.
const DRAIN_CODE: u16 = 1012;

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
    NodeRun::spawn(scenario, args).result().await
}

/// One scenario of `e2e/yjs/client.js` running in the background: its stdout lines are
/// progress lines (`{"at": "..."}`), the last one the result.
struct NodeRun {
    scenario: String,
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    stderr: tokio::task::JoinHandle<String>,
}

impl NodeRun {
    fn spawn(scenario: &str, args: Value) -> Self {
        Self::spawn_script("client.js", &[], scenario, args)
    }

    /// A scenario through another script of `e2e/yjs` (e.g. `fastclock.js`), with `env`.
    fn spawn_script(script: &str, env: &[(&str, &str)], scenario: &str, args: Value) -> Self {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        let dir = e2e_dir();
        let mut child = tokio::process::Command::new("node")
            .envs(env.iter().copied())
            .arg(dir.join(script))
            .arg(scenario)
            .arg(args.to_string())
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run node client.js");
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut err = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s).await;
            s
        });
        Self {
            scenario: scenario.into(),
            child,
            lines,
            stderr,
        }
    }

    /// Wait (up to 60 s) for the progress line `{"at": at}`.
    async fn reached(&mut self, at: &str) {
        let want = json!({ "at": at });
        let wait = async {
            while let Some(line) = self.lines.next_line().await.unwrap() {
                if serde_json::from_str::<Value>(&line).ok().as_ref() == Some(&want) {
                    return;
                }
            }
            panic!("{}: ended before {at}", self.scenario);
        };
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .unwrap_or_else(|_| panic!("{}: not at {at} in 60s", self.scenario));
    }

    /// The scenario's JSON result (it must succeed within 120 s).
    async fn result(mut self) -> Value {
        let scenario = self.scenario.clone();
        let run = async {
            let mut last = String::new();
            while let Some(line) = self.lines.next_line().await.unwrap() {
                last = line;
            }
            let status = self.child.wait().await.unwrap();
            (status, last, self.stderr.await.unwrap_or_default())
        };
        let (status, last, stderr) = tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .expect("the client ran for 120s");
        assert!(
            status.success(),
            "{scenario}: exit {status}: {last}\n{stderr}"
        );
        serde_json::from_str(&last).unwrap_or_else(|e| panic!("{scenario} result {last:?}: {e}"))
    }
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

/// The tokens two or more editors appended (`editlog` and `drain` scenarios): every one of them
/// is in the converged document exactly once; returns how many were made.
fn every_edit_once(r: &Value) -> u64 {
    let made: u64 = r["made"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert!(made > 0, "{r}");
    assert_eq!(r["missing"], json!([]), "edits lost: {r}");
    assert_eq!(r["length"], made, "{r}");
    assert_eq!(r["unique"], made, "{r}");
    made
}

/// After every editor left (and the replicas were dropped, `idleUnload` 1 s), a fresh editor on
/// each pod loads the document from JetStream: `made` tokens, the same on every pod.
async fn stored_log_on_each(pods: &[&Gateway], doc: &str, made: u64) {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut first: Option<Value> = None;
    for gw in pods {
        let read = node("readlog", json!({"url": docs_url(gw), "doc": doc})).await;
        assert_eq!(read["length"], made, "stored document: {read}");
        match &first {
            None => first = Some(read["log"].clone()),
            Some(log) => assert_eq!(&read["log"], log, "same document on every pod"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editors_on_two_pods_lose_no_edit_when_nats_restarts_or_is_down_past_an_append_in_the_middle_of_their_edits()
 {
    let mut nats = NatsServer::start();
    let a = Gateway::start(&config(Some(&nats.url()))).await;
    let b = Gateway::start(&config(Some(&nats.url()))).await;
    let doc = "nats-restart-1";
    let mut editing = NodeRun::spawn(
        "editlog",
        json!({
            "editors": [["a", docs_url(&a)], ["b", docs_url(&b)]],
            "doc": doc, "ms": 20000, "every": 20,
        }),
    );
    editing.reached("editing").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Same port, same JetStream store: the server comes back with what it acknowledged. A
    // quick restart: the gateways' NATS clients hold the appends and acknowledgements across it.
    tokio::task::block_in_place(|| nats.restart());
    // An append the restart lost is logged when its store operation times out (5 s after it
    // was sent): wait past that, so that only the outage below can add a line.
    tokio::time::sleep(OP_TIMEOUT + Duration::from_secs(1)).await;
    // An outage longer than a store operation may take: appends fail, their editors are closed
    // 1013 and reconnect, the edits are owed to the log as snapshots. NATS stays down until a
    // pod has logged an append it did not store, and at least one store operation's time.
    let not_stored = || {
        (a.log() + &b.log())
            .matches("document update not stored")
            .count()
    };
    let before = not_stored();
    tokio::task::block_in_place(|| nats.stop());
    let stopped = std::time::Instant::now();
    support::eventually(
        "a pod to log an append NATS did not store while it was down",
        Duration::from_secs(20),
        || async { not_stored() > before && stopped.elapsed() > OP_TIMEOUT },
    )
    .await;
    tokio::task::block_in_place(|| nats.start_again());
    let r = editing.result().await;
    eprintln!("edits: {r}");
    let closed_1013 = r["closes"]
        .as_object()
        .unwrap()
        .values()
        .any(|c| c.as_array().unwrap().contains(&json!(1013)));
    assert!(closed_1013, "the outage hit an append: {r}");
    let made = every_edit_once(&r);
    stored_log_on_each(&[&a, &b], doc, made).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_pods_editors_get_the_drain_code_resume_on_the_other_pod_and_lose_no_edit() {
    let nats = NatsServer::start();
    let mut a = Gateway::start(&config(Some(&nats.url()))).await;
    let b = Gateway::start(&config(Some(&nats.url()))).await;
    let doc = "drain-1";
    let mut editing = NodeRun::spawn(
        "drain",
        json!({
            "editors": [["a1", docs_url(&a)], ["a2", docs_url(&a)], ["b", docs_url(&b)]],
            "doc": doc, "ms": 5000, "every": 20,
            "drainCode": DRAIN_CODE, "failover": docs_url(&b),
        }),
    );
    editing.reached("editing").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.terminate();
    let r = editing.result().await;
    eprintln!("edits: {r}");
    let made = every_edit_once(&r);
    for name in ["a1", "a2"] {
        assert_eq!(
            r["closes"][name],
            json!([DRAIN_CODE]),
            "{name} was closed once, with the drain code: {r}"
        );
    }
    assert_eq!(r["closes"]["b"], json!([]), "{r}");
    let exit = a.wait_exit(Duration::from_secs(10)).await;
    assert!(
        exit.is_some_and(|s| s.success()),
        "drained pod exit: {exit:?}"
    );
    stored_log_on_each(&[&b], doc, made).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_pods_editors_vanish_from_the_other_pods_awareness() {
    let nats = NatsServer::start();
    let a = Gateway::start(&config(Some(&nats.url()))).await;
    let b = Gateway::start(&config(Some(&nats.url()))).await;
    let mut run = NodeRun::spawn(
        "crash",
        json!({"urlA": docs_url(&a), "urlB": docs_url(&b), "doc": "crash-1"}),
    );
    run.reached("seen").await;
    a.signal("KILL");
    let r = run.result().await;
    // Removed by the gateway (pod heartbeats, docs/documents.md), before y-protocols' own
    // 30 s timeout would have removed it on the client.
    assert_eq!(r["removedBy"], "gateway", "{r}");
    assert_eq!(r["bCloses"], json!([]), "B stayed connected: {r}");
    assert_eq!(r["newcomerSeesA"], false, "{r}");
}

/// The app's "document changed" endpoint: answers 503 to the first POST, 204 to every later
/// one, and hands every body it got to the test.
async fn changed_receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/changed", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let seen = std::sync::Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (tx, seen) = (tx.clone(), seen.clone());
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (tx, seen) = (tx.clone(), seen.clone());
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let _ = tx.send(serde_json::from_slice::<Value>(&body).unwrap());
                            let status = if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                                503
                            } else {
                                204
                            };
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .status(status)
                                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (url, rx)
}

/// The next notification the app got (within 5 s).
async fn next_changed(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a notification within 5s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_is_told_once_after_a_burst_of_edits_with_the_state_vector_and_where_to_fetch_the_state()
 {
    use base64::Engine;
    use yrs::updates::decoder::Decode;
    use yrs::updates::encoder::Encode;
    use yrs::{ReadTxn, Transact, Update};
    let (url, mut changed) = changed_receiver().await;
    let gw = Gateway::start(&config_with(
        None,
        json!({"notify": {"url": url}, "notifyDebounce": "500ms"}),
    ))
    .await;
    // Two editors, several edits within one window (`write` types, then a second editor syncs).
    node(
        "write",
        json!({"url": docs_url(&gw), "doc": "notify-1", "insert": "hello"}),
    )
    .await;
    // The first POST is answered 503: the same notification is sent again.
    let first = next_changed(&mut changed).await;
    let retried = next_changed(&mut changed).await;
    assert_eq!(first, retried, "a retry repeats the notification");
    assert_eq!(first["event"], "document.changed", "{first}");
    assert_eq!(first["namespace"], "docs");
    assert_eq!(first["document"], "notify-1");
    assert_eq!(first["statePath"], "/v1/documents/docs/notify-1");
    assert!(first["updates"].as_u64().unwrap() >= 1, "{first}");
    assert!(first["bytes"].as_u64().unwrap() > 0, "{first}");
    // Nothing more: one notification covered the burst.
    let more = tokio::time::timeout(Duration::from_millis(1500), changed.recv()).await;
    assert!(more.is_err(), "one notification per window: {more:?}");
    // An editor that only reads (its sync answer is an empty update) changes nothing.
    node("read", json!({"url": docs_url(&gw), "doc": "notify-1"})).await;
    let more = tokio::time::timeout(Duration::from_millis(1500), changed.recv()).await;
    assert!(more.is_err(), "no change, no notification: {more:?}");

    // The state behind statePath has the state vector the notification carried.
    let (status, state) = admin_call(&gw, "GET", first["statePath"].as_str().unwrap(), b"").await;
    assert_eq!(status, 200);
    let doc = yrs::Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(&state).unwrap())
        .unwrap();
    let sv = base64::engine::general_purpose::STANDARD
        .decode(first["stateVector"].as_str().unwrap())
        .unwrap();
    assert_eq!(sv, doc.transact().state_vector().encode_v1());

    let metrics = support::http_get(gw.admin(), "/metrics").await.1;
    for line in [
        "switchboard_document_notifications_total{result=\"retried\",via=\"http\"} 1",
        "switchboard_document_notifications_total{result=\"ok\",via=\"http\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    // A later edit: one more notification (after the last edit), with the new state vector.
    node(
        "write",
        json!({"url": docs_url(&gw), "doc": "notify-1", "insert": " again"}),
    )
    .await;
    let later = next_changed(&mut changed).await;
    assert_ne!(later["stateVector"], first["stateVector"], "{later}");
}

/// How much faster than real time the lone editor's clock runs (e2e/yjs/fastclock.js).
const FAST_CLOCK: u64 = 5;

/// The `lone` scenario for 130 s of the editor's clock (26 s of real time).
async fn lone_editor(url: &str, doc: &str, relay: bool) -> Value {
    NodeRun::spawn_script(
        "fastclock.js",
        &[("FAST_CLOCK", &FAST_CLOCK.to_string())],
        "lone",
        json!({"url": url, "doc": doc, "ms": 130_000, "relay": relay}),
    )
    .result()
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_editor_is_not_reconnected_by_y_websocket_in_two_minutes_of_its_clock() {
    // y-websocket closes and reconnects when nothing arrived for 30 s; it renews its awareness
    // every 15 s and the gateway echoes it. The editor's clock runs 5x (fastclock.js), the
    // gateway's does not: only what the gateway sends keeps the editor connected.
    let raw = route("raw", "/raw").prefix().rooms(json!({
        "protocol": "raw", "pathRoom": "/raw/{room}", "join": ["*"], "publish": ["*"],
    }));
    let gw = Gateway::start(
        &builder(None, json!({}))
            .route(raw.set(
                "transports",
                json!({"websocket": true, "sse": false, "longPolling": false}),
            ))
            .yaml(),
    )
    .await;

    // The same editor in a raw relay room (nothing echoed, nobody else), at the same time: it
    // is reconnected every 30 s of its clock. This is what the test would see if the gateway
    // stayed silent.
    let (docs, raw) = (docs_url(&gw), gw.ws_url("/raw"));
    let (lone, relay) = tokio::join!(
        lone_editor(&docs, "lone-1", false),
        lone_editor(&raw, "lone-2", true)
    );
    assert_eq!(lone["disconnects"], 0, "{lone}");
    assert_eq!(lone["synced"], true, "{lone}");
    // (The scenario waits until its own clock shows the whole span before it reports.)
    assert!(relay["disconnects"].as_u64().unwrap() >= 3, "{relay}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_editors_with_cursors_stay_connected_and_one_leaving_removes_only_its_own_cursor() {
    // y-websocket sends every awareness change it hears back to the server: those relays are
    // not the relaying editor's own states (it may announce at most 8), and when it leaves only
    // its own state goes.
    let gw = Gateway::start(&config(None)).await;
    let r = node(
        "crowd",
        json!({"url": docs_url(&gw), "doc": "crowd-1", "n": 12}),
    )
    .await;
    assert_eq!(r["closes"], json!([]), "{r}");
    assert_eq!(r["seen"], json!(vec![11; 11]), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_notify_nats_the_document_changed_notification_is_published_on_the_events_subject() {
    use futures_util::StreamExt;
    let nats = NatsServer::start();
    let app = async_nats::connect(nats.url()).await.unwrap();
    let mut events = app.subscribe("sbdocs.events.docs").await.unwrap();
    app.flush().await.unwrap();
    let gw = Gateway::start(&config_with(
        Some(&nats.url()),
        json!({"notifyNats": true, "notifyDebounce": "300ms"}),
    ))
    .await;
    node(
        "write",
        json!({"url": docs_url(&gw), "doc": "notify-nats-1", "insert": "hi"}),
    )
    .await;
    let msg = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("a notification on NATS within 5s")
        .unwrap();
    let n: Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(n["event"], "document.changed", "{n}");
    assert_eq!(n["document"], "notify-nats-1", "{n}");
    assert_eq!(n["statePath"], "/v1/documents/docs/notify-nats-1", "{n}");
}

/// A text update of a fresh Yjs document: `text` in its shared text `t`.
fn text_update(text: &str) -> Vec<u8> {
    use yrs::{GetString as _, ReadTxn as _, Text as _, Transact as _};
    let doc = yrs::Doc::new();
    let t = doc.get_or_insert_text("t");
    t.insert(&mut doc.transact_mut(), 0, text);
    assert_eq!(t.get_string(&doc.transact()), text);
    doc.transact()
        .encode_state_as_update_v1(&yrs::StateVector::default())
}

/// The shared text `t` of a document's state (one update, as the documents API reads it).
fn text_of(state: &[u8]) -> String {
    use yrs::updates::decoder::Decode as _;
    use yrs::{GetString as _, Transact as _};
    let doc = yrs::Doc::new();
    let t = doc.get_or_insert_text("t");
    doc.transact_mut()
        .apply_update(yrs::Update::decode_v1(state).unwrap())
        .unwrap();
    t.get_string(&doc.transact())
}

/// Two pods' documents over one NATS server (`prefix`: the subject prefix), connected on
/// `rt`.
fn two_nats_pods(
    server: &NatsServer,
    rt: &tokio::runtime::Runtime,
    prefix: &str,
) -> (Arc<Documents>, Arc<Documents>) {
    use switchboard_gateway::rooms::bus::Bus;
    use switchboard_gateway::rooms::bus::nats::NatsBus;
    let nats: switchboard_config::Nats =
        serde_json::from_value(json!({"urls": [server.url()], "subjectPrefix": prefix})).unwrap();
    let pod = || -> Arc<dyn Bus> {
        let bus = rt.block_on(NatsBus::connect(&nats)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !bus.healthy() {
            assert!(std::time::Instant::now() < deadline, "NATS not connected");
            std::thread::sleep(Duration::from_millis(20));
        }
        Arc::new(bus)
    };
    (Documents::new(&pod()), Documents::new(&pod()))
}

/// The admin listener has a runtime of its own. A document it loads first (a documents API
/// call) must follow the other pods from the NATS client's runtime, where the editors are: its
/// feeds must not live and die with the runtime that happened to load it.
#[test]
fn a_document_first_loaded_from_another_runtime_keeps_following_the_other_pods_after_that_runtime_ends()
 {
    use switchboard_gateway::rooms::bus::RoomKey;

    let server = NatsServer::start();
    let edge = support::runtime(2);
    let (a, b) = two_nats_pods(&server, &edge, "sbdocrt");
    let key = RoomKey {
        namespace: "docs".into(),
        room: "loaded-by-admin".into(),
    };
    let cfg = switchboard_config::Documents::default();

    let admin = support::runtime(0);
    let on_a = admin.block_on(a.open(&key, &cfg)).unwrap();
    drop(admin);

    edge.block_on(b.apply(&key, &cfg, text_update("from pod b")))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while text_of(&on_a.state()) != "from pod b" {
        assert!(
            std::time::Instant::now() < deadline,
            "pod a's replica never got pod b's update: its feed died with the runtime that loaded it"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Without NATS a replica's tasks run where they are spawned: closing a document on a live
/// runtime unloads it, even when the runtime that loaded it has ended.
#[test]
fn without_nats_a_document_loaded_on_a_runtime_that_ended_is_still_unloaded_when_closed() {
    use std::sync::Arc;
    use switchboard_gateway::documents::Documents;
    use switchboard_gateway::rooms::bus::memory::MemoryBus;
    use switchboard_gateway::rooms::bus::{Bus, RoomKey};

    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let docs = Documents::new(&bus);
    let key = RoomKey {
        namespace: "docs".into(),
        room: "loaded-elsewhere".into(),
    };
    let cfg = switchboard_config::Documents::default();
    let loader = support::runtime(0);
    let replica = loader.block_on(docs.open(&key, &cfg)).unwrap();
    drop(loader);
    assert_eq!(docs.loaded(), 1);

    let live = support::runtime(0);
    live.block_on(async {
        docs.close(&replica, Duration::ZERO);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while docs.loaded() != 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the idle unload was spawned on the runtime that had ended"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

/// An awareness state is a small JSON object (a name, a colour, a cursor). Unbounded, two
/// connections announcing 8 states of 110 KB each made every newcomer's first awareness
/// snapshot outgrow its queue (closed 4008 before it synced, for as long as they stayed); a
/// state that is not JSON made stock y-websocket editors throw and never sync.
#[tokio::test]
async fn an_awareness_state_over_its_bound_closes_1009_and_one_that_is_not_json_1002() {
    use std::sync::Arc;
    use switchboard_gateway::documents::Documents;
    use switchboard_gateway::documents::replica::MAX_AWARENESS_STATE_BYTES;
    use switchboard_gateway::error::CloseCause;
    use switchboard_gateway::rooms::bus::memory::MemoryBus;
    use switchboard_gateway::rooms::bus::{Bus, RoomKey};
    use switchboard_gateway::rooms::outbox::Outbox;
    use yrs::sync::Message;
    use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
    use yrs::updates::encoder::Encode;

    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let docs = Documents::new(&bus);
    let key = RoomKey {
        namespace: "docs".into(),
        room: "aw".into(),
    };
    let replica = docs
        .open(&key, &switchboard_config::Documents::default())
        .await
        .unwrap();
    let state = |clock: u32, json: &str| {
        let entry = AwarenessUpdateEntry {
            clock,
            json: json.into(),
        };
        let update = AwarenessUpdate {
            clients: [(yrs::ClientID::new(7), entry)].into_iter().collect(),
        };
        Message::Awareness(update).encode_v1()
    };
    let name = |n: usize| format!(r#"{{"user":{{"name":"{}"}}}}"#, "a".repeat(n));
    for (clock, (conn, json, want)) in [
        ("ok", name(10), Ok(())),
        ("at-bound", name(MAX_AWARENESS_STATE_BYTES - 20), Ok(())),
        (
            "over",
            name(MAX_AWARENESS_STATE_BYTES),
            Err(CloseCause::MessageTooBig),
        ),
        (
            "not-json",
            "not json {".to_string(),
            Err(CloseCause::ProtocolError),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        replica.attach(conn, None, Outbox::new(1 << 20));
        let clock = clock as u32 + 1;
        assert_eq!(
            replica.handle(conn, &state(clock, &json), true).await,
            want,
            "{conn}"
        );
    }
    // An editor's echo of a state it heard (clock 2, the at-bound one), re-encoded larger
    // (y-websocket sends every state back; `1e20` comes back as 21 digits), changes nothing
    // and closes nobody.
    replica.attach("echo", None, Outbox::new(1 << 20));
    let echo = state(2, &name(MAX_AWARENESS_STATE_BYTES + 100));
    assert_eq!(replica.handle("echo", &echo, true).await, Ok(()));
}

/// An awareness update for client `id` at `clock` (`null` removes), as an editor sends it.
fn awareness_frame(id: u64, clock: u32, json: &str) -> Vec<u8> {
    use yrs::sync::Message;
    use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
    use yrs::updates::encoder::Encode;
    let entry = AwarenessUpdateEntry {
        clock,
        json: json.into(),
    };
    let update = AwarenessUpdate {
        clients: [(yrs::ClientID::new(id), entry)].into_iter().collect(),
    };
    Message::Awareness(update).encode_v1()
}

/// What a newcomer to `replica` is shown for client `id`: its state's JSON, or None.
fn shown_to_a_newcomer(
    replica: &switchboard_gateway::documents::replica::Replica,
    look: &str,
    id: u64,
) -> Option<String> {
    use switchboard_gateway::rooms::outbox::{Item, Outbox};
    use yrs::sync::Message;
    use yrs::updates::decoder::Decode;
    let outbox = Outbox::new(1 << 20);
    replica.attach(look, Some("viewer"), outbox.clone());
    outbox.take_now().into_iter().find_map(|item| {
        let Item::RawBinary(b) = item else {
            return None;
        };
        let Ok(Message::Awareness(u)) = Message::decode_v1(&b) else {
            return None;
        };
        u.clients
            .get(&yrs::ClientID::new(id))
            .map(|e| e.json.to_string())
            .filter(|j| j != "null")
    })
}

/// y-websocket lets any connection send a state for any client id. A state announced by one
/// user's connection is that user's: another user's connection can neither remove it (`null`)
/// nor take it over; a connection of the same user can (y-websocket's reconnect takes over its
/// own id before the old connection has closed, a tab closing removes it). Stock editors relay
/// the removal of a state they timed out (same clock), so such a removal is dropped, not
/// closed. Without users (a route without JWT) a takeover is allowed and a removal is not.
#[tokio::test]
async fn an_editor_can_neither_remove_nor_take_over_another_users_awareness_state() {
    use std::sync::Arc;
    use switchboard_gateway::documents::Documents;
    use switchboard_gateway::rooms::bus::memory::MemoryBus;
    use switchboard_gateway::rooms::bus::{Bus, RoomKey};
    use switchboard_gateway::rooms::outbox::Outbox;

    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let docs = Documents::new(&bus);
    let key = RoomKey {
        namespace: "docs".into(),
        room: "owners".into(),
    };
    let replica = docs
        .open(&key, &switchboard_config::Documents::default())
        .await
        .unwrap();
    let shown = |n: usize, id: u64| shown_to_a_newcomer(&replica, &format!("look-{n}"), id);
    for (conn, user) in [
        ("alice-1", Some("alice")),
        ("bob", Some("bob")),
        ("alice-2", Some("alice")),
        ("anon-1", None),
        ("anon-2", None),
    ] {
        replica.attach(conn, user, Outbox::new(1 << 20));
    }
    let send = |conn: &'static str, id: u64, clock: u32, json: &'static str| {
        let replica = replica.clone();
        async move {
            replica
                .handle(conn, &awareness_frame(id, clock, json), true)
                .await
        }
    };
    let alice = r#"{"user":"alice"}"#;
    assert_eq!(send("alice-1", 7, 1, alice).await, Ok(()));
    assert_eq!(shown(1, 7).as_deref(), Some(alice));
    // Another user: a removal (newer, or a timed-out relay with the same clock) and a takeover
    // are dropped, and the sender stays.
    assert_eq!(send("bob", 7, 2, "null").await, Ok(()));
    assert_eq!(send("bob", 7, 1, "null").await, Ok(()));
    assert_eq!(
        shown(2, 7).as_deref(),
        Some(alice),
        "bob removed alice's state"
    );
    let forged = r#"{"user":"mallory"}"#;
    assert_eq!(send("bob", 7, 3, forged).await, Ok(()));
    assert_eq!(
        shown(3, 7).as_deref(),
        Some(alice),
        "bob took alice's state over"
    );
    // The same user's other connection takes it over; the first one leaving does not remove
    // it; the second may remove it.
    let moved = r#"{"user":"alice","tab":2}"#;
    assert_eq!(send("alice-2", 7, 4, moved).await, Ok(()));
    assert_eq!(shown(4, 7).as_deref(), Some(moved));
    replica.detach("alice-1").await;
    assert_eq!(
        shown(5, 7).as_deref(),
        Some(moved),
        "alice-1 leaving removed it"
    );
    assert_eq!(send("alice-2", 7, 5, "null").await, Ok(()));
    assert_eq!(shown(6, 7), None);
    // Without users: a takeover, not a removal.
    let anon = r#"{"user":"anon"}"#;
    assert_eq!(send("anon-1", 9, 1, anon).await, Ok(()));
    assert_eq!(send("anon-2", 9, 2, "null").await, Ok(()));
    assert_eq!(
        shown(7, 9).as_deref(),
        Some(anon),
        "anon-2 removed anon-1's state"
    );
    let again = r#"{"user":"anon","again":1}"#;
    assert_eq!(send("anon-2", 9, 3, again).await, Ok(()));
    assert_eq!(shown(8, 9).as_deref(), Some(again));
}

/// The same rule across pods: a state an editor of another pod holds can be taken over only
/// by the same user (a reconnect to this pod) and removed by no one here.
#[test]
fn an_editor_cannot_take_over_another_users_awareness_state_held_on_another_pod() {
    use switchboard_gateway::rooms::bus::RoomKey;
    use switchboard_gateway::rooms::outbox::Outbox;

    let server = NatsServer::start();
    let rt = support::runtime(2);
    let (a, b) = two_nats_pods(&server, &rt, "sbdocown");
    let key = RoomKey {
        namespace: "docs".into(),
        room: "owners-across".into(),
    };
    let cfg = switchboard_config::Documents::default();
    let on_a = rt.block_on(a.open(&key, &cfg)).unwrap();
    let on_b = rt.block_on(b.open(&key, &cfg)).unwrap();
    on_a.attach("alice", Some("alice"), Outbox::new(1 << 20));
    on_b.attach("bob", Some("bob"), Outbox::new(1 << 20));
    on_b.attach("alice-again", Some("alice"), Outbox::new(1 << 20));
    let alice = r#"{"user":"alice"}"#;
    rt.block_on(on_a.handle("alice", &awareness_frame(7, 1, alice), true))
        .unwrap();
    let wait_for = |n: usize, want: Option<&str>, what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let seen = shown_to_a_newcomer(&on_b, &format!("look-{n}"), 7);
            on_b_detach(&rt, &on_b, &format!("look-{n}"));
            if seen.as_deref() == want {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{what}: {seen:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(1, Some(alice), "alice's state never reached pod b");
    for (n, frame) in [
        (2, awareness_frame(7, 2, "null")),
        (3, awareness_frame(7, 3, r#"{"user":"mallory"}"#)),
    ] {
        rt.block_on(on_b.handle("bob", &frame, true)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        wait_for(n, Some(alice), "bob changed alice's state held on pod a");
    }
    let moved = r#"{"user":"alice","pod":"b"}"#;
    rt.block_on(on_b.handle("alice-again", &awareness_frame(7, 4, moved), true))
        .unwrap();
    wait_for(
        4,
        Some(moved),
        "alice's reconnect to pod b did not take her state over",
    );
}

fn on_b_detach(
    rt: &tokio::runtime::Runtime,
    replica: &switchboard_gateway::documents::replica::Replica,
    conn: &str,
) {
    rt.block_on(replica.detach(conn));
}

/// A document larger than the NATS server's `max_payload` cannot be written as one snapshot.
/// Its pod tries again once per `compactAfterUpdates` updates, not with every update past the
/// threshold (each try encodes the whole document), the document stays editable and whole,
/// and the start-up log warns about the route.
#[tokio::test]
async fn a_snapshot_over_the_nats_max_payload_is_retried_once_per_compaction_period_not_per_update()
{
    use support::http_client::{metric_sum, metrics_text};
    let nats = NatsServer::start_with_config("max_payload: 8192");
    let gw = Gateway::start(&config_with(
        Some(&nats.url()),
        json!({"compactAfterUpdates": 5}),
    ))
    .await;
    let doc = yrs::Doc::new();
    let t = doc.get_or_insert_text("t");
    let edit = |text: &str| {
        use yrs::{ReadTxn as _, Text as _, Transact as _};
        let sv = doc.transact().state_vector();
        let len = t.len(&doc.transact());
        t.insert(&mut doc.transact_mut(), len, text);
        doc.transact().encode_state_as_update_v1(&sv)
    };
    let path = "/v1/documents/docs/big-1";
    // Three updates of 3 KiB: the document is over 8 KiB, no snapshot of it fits.
    for i in 0..3 {
        let (status, _) = admin_call(&gw, "POST", path, &edit(&format!("{i}").repeat(3000))).await;
        assert_eq!(status, 204);
    }
    for i in 0..40 {
        let (status, _) = admin_call(&gw, "POST", path, &edit(&format!("<{i}>"))).await;
        assert_eq!(status, 204, "edit {i}");
        tokio::time::sleep(Duration::from_millis(20)).await; // room for a snapshot attempt
    }
    let metrics = metrics_text(&gw).await;
    let failed = metric_sum(
        &metrics,
        "switchboard_document_compactions_total",
        &[("result", "error")],
    );
    assert!(
        (1.0..=10.0).contains(&failed),
        "43 updates at 5 per compaction period: about 8 tries, not one per update; {failed}"
    );
    let (status, state) = admin_call(&gw, "GET", path, b"").await;
    assert_eq!(status, 200);
    assert!(text_of(&state).ends_with("<39>"));
    // The operator was told at start that such documents cannot be snapshotted.
    let log = gw.log();
    assert!(
        log.lines()
            .any(|l| l.contains("cannot be written as one snapshot")
                && l.contains("route=docs")
                && l.contains("max_payload=8192")),
        "no warning naming the documents route:\n{log}"
    );
}

/// An editor whose update could not be stored is closed 1013, but the edits it sent before it
/// saw that Close were read and dropped: a tab closed during a NATS stall lost them (29 of 30
/// edits typed during a 3 s stall). They are applied now, and stored with the snapshot the
/// document owes the log once NATS is back, though the editor never came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_sent_after_an_append_that_failed_reach_the_log_though_the_editor_then_goes_away() {
    use futures_util::SinkExt as _;
    use support::ws::{expect_close, ws_connect};
    use tokio_tungstenite::tungstenite::Message as Ws;
    use yrs::sync::{Message, SyncMessage};
    use yrs::updates::encoder::Encode as _;

    let mut nats = NatsServer::start();
    let gw = Gateway::start(&config(Some(&nats.url()))).await;
    let doc = "late-1";
    let mut ws = ws_connect(&format!("{}/{doc}", docs_url(&gw))).await;
    let frame = |text: &str| {
        Ws::Binary(
            Message::Sync(SyncMessage::Update(text_update(text)))
                .encode_v1()
                .into(),
        )
    };
    let path = format!("/v1/documents/docs/{doc}");
    ws.send(frame("[first]")).await.unwrap();
    support::eventually(
        "the first edit to be stored",
        Duration::from_secs(10),
        || async { text_of(&admin_call(&gw, "GET", &path, b"").await.1).contains("[first]") },
    )
    .await;
    tokio::task::block_in_place(|| nats.stop());
    // Its append fails after a store operation's time; the two after it wait in the socket.
    for text in ["[during]", "[late-1]", "[late-2]"] {
        ws.send(frame(text)).await.unwrap();
    }
    let (code, _, _) = expect_close(&mut ws, OP_TIMEOUT + Duration::from_secs(10)).await;
    assert_eq!(code, 1013);
    drop(ws);
    tokio::task::block_in_place(|| nats.start_again());
    // A second pod has the document from the log alone.
    let other = Gateway::start(&config(Some(&nats.url()))).await;
    support::eventually(
        "every edit in the stored document",
        Duration::from_secs(20),
        || async {
            let text = text_of(&admin_call(&other, "GET", &path, b"").await.1);
            ["[first]", "[during]", "[late-1]", "[late-2]"]
                .iter()
                .all(|t| text.contains(t))
        },
    )
    .await;
}
