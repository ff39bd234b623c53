//! docs/migrating-socketio.md kept honest: a real Socket.IO server (`socket.io`, two instances
//! without an adapter, `e2e/socketio/server.js`) behind a proxy route configured like
//! `examples/socketio.yaml`, and real `socket.io-client` connections (`e2e/socketio/client.js`,
//! default transports: long-polling first, then the upgrade to WebSocket) through the gateway.
//!
//! With the recommended pinning, `{query: pin}` and a random `pin` per client, every client
//! connects, upgrades, gets every ack, and a room broadcast reaches the room's members on the
//! emitting instance. With `{query: sid}` (the table's "no" row) the handshake breaks: the first
//! request has no `sid` and hashes by client IP, the later ones by `sid`, elsewhere. Across a
//! drain (SIGTERM; a new gateway on the same address) every upgraded client is closed with 1012,
//! reconnects, and its `pin` brings it back to the same instance.
//!
//! Needs `e2e/socketio/node_modules` (installed by `scripts/setup.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use serde_json::json;
use support::{ConfigBuilder, route};
use support::{Gateway, free_port, http_get, repo_root};
use tokio::io::{AsyncBufReadExt, BufReader};

const ORIGIN: &str = "http://localhost:3000";
const CLIENTS: u64 = 20;
const MESSAGES: u64 = 10;

fn config(backends: [u16; 2], pinning: Value, listen: Option<SocketAddr>) -> String {
    let gateway = ConfigBuilder::new().route(
        route("socketio", "/socket.io/")
            .prefix()
            .origins(&[ORIGIN])
            .proxy(&backends)
            .set("proxy.pinning", pinning)
            .drain(json!({"window": "1s", "closeCode": 1012, "closeReason": "service restart, reconnect"})),
    );
    match listen {
        Some(addr) => gateway.listen(addr).yaml(),
        None => gateway.yaml(),
    }
}

fn e2e_dir() -> std::path::PathBuf {
    let dir = repo_root().join("e2e/socketio");
    assert!(
        dir.join("node_modules/socket.io/package.json").is_file()
            && dir
                .join("node_modules/socket.io-client/package.json")
                .is_file(),
        "needs {}/node_modules: run scripts/setup.sh",
        dir.display()
    );
    dir
}

/// The two Socket.IO instances; killed on drop.
async fn start_servers(ports: [u16; 2]) -> tokio::process::Child {
    let dir = e2e_dir();
    let mut server = tokio::process::Command::new("node")
        .arg(dir.join("server.js"))
        .arg(ports[0].to_string())
        .arg(ports[1].to_string())
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("run node server.js");
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the Socket.IO server said nothing for 60s")
        .expect("read the server's output")
        .expect("the Socket.IO server ended early");
    assert_eq!(line, r#"{"event":"ready"}"#);
    server
}

/// Runs the client driver to its end and returns its JSON summary.
async fn run_clients(gw: &Gateway, pin_key: &str) -> Value {
    let dir = e2e_dir();
    let out = tokio::time::timeout(
        Duration::from_secs(240),
        tokio::process::Command::new("node")
            .arg(dir.join("client.js"))
            .arg(format!("http://{}", gw.addr()))
            .arg(ORIGIN)
            .arg(CLIENTS.to_string())
            .arg(MESSAGES.to_string())
            .arg(pin_key)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the client driver ran for 240s")
    .expect("run node client.js");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "driver exit {}: {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("driver summary {line:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_clients_pinned_on_a_random_query_pin_connect_upgrade_and_get_every_ack() {
    let ports = [free_port(), free_port()];
    let _servers = start_servers(ports).await;
    let gw = Gateway::start(&config(ports, json!({"query": "pin"}), None)).await;

    let s = run_clients(&gw, "pin").await;
    eprintln!("socket.io through the gateway, {{query: pin}}: {s}");
    assert_eq!(s["errors"], serde_json::json!([]), "{s}");
    assert_eq!(s["connectErrors"], 0, "{s}");
    assert_eq!(s["connected"], CLIENTS, "{s}");
    assert_eq!(
        s["upgraded"], CLIENTS,
        "every client upgraded to WebSocket: {s}"
    );
    assert_eq!(s["upgradedAtEnd"], CLIENTS, "{s}");
    assert_eq!(s["acks"], CLIENTS * MESSAGES, "{s}");
    assert_eq!(s["shoutAcks"], CLIENTS, "{s}");
    let per_instance: Vec<u64> = ["a", "b"]
        .iter()
        .map(|i| s["instances"][i].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(per_instance.iter().sum::<u64>(), CLIENTS, "{s}");
    // Without an adapter a room broadcast reaches the members on the emitting instance: every
    // client's shout reaches each client on its instance.
    let expected: u64 = per_instance.iter().map(|k| k * k).sum();
    assert_eq!(s["expectedDeliveries"], expected, "{s}");
    assert_eq!(s["deliveries"], expected, "{s}");
    assert!(
        per_instance.iter().all(|&k| k > 0),
        "the pins spread the clients over both instances: {s}"
    );
    for port in ports {
        assert_eq!(
            session_id_unknown(port).await,
            0,
            "instance on {port} saw a request of another's session"
        );
    }
}

/// How many requests the instance on `port` refused with Engine.IO's "Session ID unknown".
async fn session_id_unknown(port: u16) -> u64 {
    let (status, body) = http_get(([127, 0, 0, 1], port).into(), "/stats").await;
    assert_eq!(status, 200, "{body}");
    let stats: Value = serde_json::from_str(&body).expect("stats JSON");
    stats["connectionErrors"]["Session ID unknown"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinning_socketio_on_the_sid_query_breaks_the_handshake() {
    let ports = [free_port(), free_port()];
    let _servers = start_servers(ports).await;
    let gw = Gateway::start(&config(ports, json!({"query": "sid"}), None)).await;

    let s = run_clients(&gw, "none").await;
    eprintln!("socket.io through the gateway, {{query: sid}}: {s}");
    let failed = CLIENTS - s["upgraded"].as_u64().unwrap_or(0);
    // The first request of each session hashes by the (one) client IP, the later ones by their
    // random sid: about half land on the other instance. All 20 landing right has odds of 2^-20.
    assert!(failed > 0, "no session broke: {s}");
    assert!(s["connectErrors"].as_u64() > Some(0), "{s}");
    let unknown = session_id_unknown(ports[0]).await + session_id_unknown(ports[1]).await;
    assert!(unknown > 0, "no instance saw another's session: {s}");
    eprintln!("{failed} of {CLIENTS} clients failed; {unknown} requests got Session ID unknown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_clients_reconnect_to_the_same_instance_after_a_gateway_drain() {
    let ports = [free_port(), free_port()];
    let _servers = start_servers(ports).await;
    let pin = || json!({"query": "pin"});
    let mut gw = Gateway::start(&config(ports, pin(), None)).await;

    let dir = e2e_dir();
    let mut driver = tokio::process::Command::new("node")
        .arg(dir.join("drain.js"))
        .arg(format!("http://{}", gw.addr()))
        .arg(ORIGIN)
        .arg(CLIENTS.to_string())
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("run node drain.js");
    let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(180), lines.next_line())
            .await
            .expect("the drain driver said nothing for 180s")
            .expect("read the drain driver's output")
            .expect("the drain driver ended early");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("driver line {line:?}: {e}"))
    };
    assert_eq!(next().await["event"], "ready");

    // The drain closes every proxied WebSocket (1012), and the gateway exits; a new one takes
    // its place on the same address (as another pod behind the load balancer would).
    gw.terminate();
    let status = gw
        .wait_exit(Duration::from_secs(60))
        .await
        .expect("the draining gateway exited");
    assert!(status.success(), "drain exit: {status}");
    let drained = gw.log().matches("close_code=1012").count();
    assert_eq!(
        drained as u64,
        CLIENTS,
        "the drain closed every WebSocket with 1012: {}",
        gw.log_tail(40)
    );
    // The new gateway takes over the drained one's port: the clients reconnect to it there.
    let _gw2 = Gateway::start(&config(ports, pin(), Some(gw.addr()))).await;

    let s = next().await;
    eprintln!("socket.io across a gateway drain: {s}");
    assert_eq!(s["event"], "summary", "{s}");
    assert_eq!(s["errors"], serde_json::json!([]), "{s}");
    assert_eq!(s["disconnects"]["transport close"], CLIENTS, "{s}");
    assert_eq!(s["reconnected"], CLIENTS, "{s}");
    assert_eq!(s["acksAfter"], CLIENTS, "{s}");
    assert_eq!(
        s["samePinnedInstance"], CLIENTS,
        "every client's pin brought it back to its instance: {s}"
    );
    assert!(driver.wait().await.expect("wait for the driver").success());
}
