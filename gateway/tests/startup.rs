//! Start-up of the real binary: a second gateway on a busy address fails at once with one line
//! naming the address and a non-zero exit (it does not wait for the port forever), and a
//! gateway with NATS and room history starts without an ERROR line, creating the history
//! stream once the connection is up. The binary allocates with jemalloc and runs its
//! background purge threads, which give the pages a connect burst freed back to the system,
//! and no thread that wakes on a fixed tick.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use support::nats::NatsServer;
use support::{ConfigBuilder, route};
use support::{Gateway, PROMPTLY, eventually, gateway_bin, http_get};

/// A gateway without routes, its listener and admin at these addresses.
fn bare(public: SocketAddr, admin: SocketAddr) -> String {
    ConfigBuilder::new()
        .listen(public)
        .set("admin.address", json!(admin.to_string()))
        .yaml()
}

/// Run the binary on `yaml` until it exits (panics if it is still running after `within`);
/// returns its exit code and stderr.
fn run_to_exit(yaml: &str, within: Duration) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).expect("write config");
    let stderr_path = dir.path().join("stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut child = Command::new(gateway_bin())
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("spawn the gateway");
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the second gateway still runs after {within:?}; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&stderr_path).expect("read stderr");
    (status.code(), text)
}

#[tokio::test]
async fn a_second_gateway_on_a_busy_address_exits_non_zero_naming_it() {
    let first = Gateway::start(&ConfigBuilder::new().yaml()).await;
    let (public, admin) = (first.addr(), first.admin());
    let elsewhere = SocketAddr::from(([127, 0, 0, 1], 0));

    // Same public port.
    let second = bare(public, elsewhere);
    let (code, stderr) = tokio::task::spawn_blocking(move || run_to_exit(&second, PROMPTLY))
        .await
        .expect("runner");
    println!("second gateway, same listener: exit {code:?}\n{stderr}");
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}");
    let expected = format!("cannot listen on {public} (listener public): address already in use");
    assert!(stderr.contains(&expected), "{stderr}");

    // Same admin port.
    let second = bare(elsewhere, admin);
    let (code, stderr) = tokio::task::spawn_blocking(move || run_to_exit(&second, PROMPTLY))
        .await
        .expect("runner");
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}");
    let expected = format!("cannot listen on {admin} (admin): address already in use");
    assert!(stderr.contains(&expected), "{stderr}");

    // The first one never noticed.
    let (status, body) = http_get(first.admin(), "/readyz").await;
    assert_eq!((status, body.trim()), (200, "ready"));
}

#[tokio::test]
async fn listeners_on_port_0_are_bound_to_ports_the_system_picks_and_reported_in_the_log_and_status()
 {
    let yaml = ConfigBuilder::new().listener("internal", json!({})).yaml();
    assert!(yaml.matches("127.0.0.1:0").count() == 3, "{yaml}");
    let gateway = Gateway::start(&yaml).await;

    // One `listening` line per listener, each on its own port.
    let listening = support::listening_lines(&gateway.log());
    let reported: Vec<(&str, &str)> = listening
        .iter()
        .map(|l| (l.role.as_str(), l.name.as_str()))
        .collect();
    assert_eq!(
        reported,
        [("edge", "public"), ("edge", "internal"), ("admin", "admin")],
        "{listening:?}"
    );
    let ports: std::collections::BTreeSet<u16> = listening.iter().map(|l| l.addr.port()).collect();
    assert_eq!(ports.len(), 3, "three distinct ports: {listening:?}");
    assert!(!ports.contains(&0), "{listening:?}");

    // `/status` lists the same addresses.
    let (status, body) = http_get(gateway.admin(), "/status").await;
    assert_eq!(status, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("/status is JSON");
    let listed: Vec<(String, String, String)> = status["listeners"]
        .as_array()
        .expect("/status lists the listeners")
        .iter()
        .map(|l| {
            let field = |k: &str| l[k].as_str().unwrap_or_default().to_owned();
            (field("role"), field("name"), field("address"))
        })
        .collect();
    let logged: Vec<(String, String, String)> = listening
        .iter()
        .map(|l| (l.role.clone(), l.name.clone(), l.addr.to_string()))
        .collect();
    assert_eq!(listed, logged);

    // Each edge listener serves on its reported address (no route: 404 from the gateway).
    for l in listening.iter().filter(|l| l.role == "edge") {
        let (status, _) = http_get(l.addr, "/nothing-here").await;
        assert_eq!(status, 404, "{} at {}", l.name, l.addr);
    }
}

fn rooms_with_history(nats: &str) -> String {
    ConfigBuilder::new()
        .nats(nats, "sbstart")
        .route(
            route("chat", "/chat")
                .rooms(json!({
                    "join": ["chat:*"],
                    "publish": ["chat:*"],
                    "history": {"maxMessages": 100, "maxAge": "10m"},
                }))
                .unset("keepalive")
                .drain(json!({"window": "0s"})),
        )
        .yaml()
}

#[tokio::test]
async fn a_gateway_with_nats_and_history_starts_without_an_error_and_creates_the_stream() {
    let nats = NatsServer::start();
    let gateway = Gateway::start(&rooms_with_history(&nats.url())).await;

    eventually("NATS connected in the log", PROMPTLY, || async {
        gateway.log().contains("NATS connected")
    })
    .await;
    let log = gateway.log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors.is_empty(),
        "ERROR lines at start:\n{}",
        errors.join("\n")
    );

    // History is configured once the connection is up, not left to the first publish.
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    eventually("the history stream to exist", PROMPTLY, || {
        let js = js.clone();
        async move {
            let names: Vec<String> = js
                .stream_names()
                .filter_map(|n| async move { n.ok() })
                .collect()
                .await;
            names.iter().any(|n| n.starts_with("SBSTART_"))
        }
    })
    .await;
}

/// The names of the process's threads (`/proc/PID/task/*/comm`).
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the gateway's threads");
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}

/// glibc's malloc kept what a burst of handshakes freed as RSS for good; jemalloc's background
/// threads purge pages idle for 1 s, and its thread caches keep no freed object over 1 KiB
/// (`.cargo/config.toml`). A build without the allocator feature, with its background threads
/// off or without these settings fails here. jemalloc prints the settings it applied when
/// `_RJEM_MALLOC_CONF` asks it to confirm them.
#[cfg(feature = "jemalloc")]
#[tokio::test]
async fn the_binary_allocates_with_jemalloc_purging_idle_pages_after_a_second_and_caching_only_small_objects()
 {
    let gateway = Gateway::start_with_env(
        &ConfigBuilder::new().yaml(),
        &[("_RJEM_MALLOC_CONF", "confirm_conf:true")],
    )
    .await;
    let names = thread_names(gateway.pid());
    assert!(
        names.iter().any(|n| n == "jemalloc_bg_thd"),
        "no jemalloc background thread among {names:?}"
    );
    let log = gateway.log();
    for applied in [
        "background_thread:true",
        "dirty_decay_ms:1000",
        "muzzy_decay_ms:0",
        "tcache_max:1024",
    ] {
        // The whole line: `dirty_decay_ms:1000` is also the start of `dirty_decay_ms:10000`.
        let confirmed = format!("Set conf value: {applied}");
        assert!(
            log.lines().any(|l| l.ends_with(&confirmed)),
            "jemalloc did not confirm {applied}:\n{log}"
        );
    }
}

/// pingora's "fast" timeouts run a clock thread that wakes every 10 ms for the life of the
/// process once any of them was armed; its listening service arms one (60 s) around every
/// accepted connection's handshake. An edge pod mostly holds idle connections: its threads must
/// sleep until there is work, so pingora's timeouts of a second or more use tokio's timer.
#[tokio::test]
async fn serving_the_admin_port_starts_no_thread_that_wakes_on_a_fixed_tick() {
    let gateway = Gateway::start(&ConfigBuilder::new().yaml()).await;
    let (status, _) = http_get(gateway.admin(), "/readyz").await;
    assert_eq!(status, 200);
    let names = thread_names(gateway.pid());
    assert!(
        !names.iter().any(|n| n == "Timer thread"),
        "pingora's clock thread runs: {names:?}"
    );
}
