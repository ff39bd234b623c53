//! The container images, run: what `make image` builds (scripts/image.sh, the Containerfile's
//! runtime stages) started with podman the way Kubernetes runs them — as UID/GID 65532, read-only
//! root filesystem, the binary as PID 1.
//!
//! Images: `switchboard/gateway:$SWITCHBOARD_IMAGE_TAG` and `switchboard/operator:…` (tag
//! `test` by default; `make test` builds them first with `IMAGE_PROFILE=debug IMAGE_TAG=test
//! scripts/image.sh`). Containers use the host network (`--network host`), so every address is
//! on 127.0.0.1, and podman's flags for this kind of machine: `--cgroup-manager=cgroupfs`,
//! `--runtime runc` (crun fails on hybrid cgroups) and lowered `--ulimit`s (raising is refused).
//!
//! When podman is missing, cannot run a container, or the images are not built, every test
//! prints `SKIPPED: <reason>` and passes — unless `SWITCHBOARD_IMAGE_TESTS_STRICT=1` (CI:
//! `make test` sets it), where that is a failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use serde_json::Value;
use switchboard_e2e::apiserver::ApiServer;
use switchboard_e2e::harness::{eventually, free_port, http_get};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const STEP: Duration = Duration::from_secs(60);
const SYSTEM_NS: &str = "switchboard-system";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ is inside the workspace")
        .to_path_buf()
}

fn image(name: &str) -> String {
    let tag = std::env::var("SWITCHBOARD_IMAGE_TAG").unwrap_or_else(|_| "test".into());
    format!("switchboard/{name}:{tag}")
}

fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .arg("--cgroup-manager=cgroupfs")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run podman {args:?}: {e}"))
}

/// `podman run` flags every container here gets.
const RUN: &[&str] = &[
    "run",
    "--runtime",
    "runc",
    "--network",
    "host",
    "--ulimit",
    "nofile=4096:4096",
    "--ulimit",
    "nproc=1024:1024",
    "--read-only",
    "--user",
    "65532:65532",
];

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Why the images cannot be tested here, or `None` when they can (both exist and a container
/// runs).
fn unavailable() -> Option<String> {
    match Command::new("podman").arg("--version").output() {
        Err(e) => {
            return Some(format!(
                "podman not found ({e}); scripts/setup.sh installs it"
            ));
        }
        Ok(o) if !o.status.success() => return Some(format!("podman --version: {}", text(&o))),
        Ok(_) => {}
    }
    for name in ["gateway", "operator"] {
        let img = image(name);
        if !podman(&["image", "exists", &img]).status.success() {
            return Some(format!(
                "image {img} not built: IMAGE_PROFILE=debug IMAGE_TAG=test scripts/image.sh"
            ));
        }
    }
    let mut args = RUN.to_vec();
    args.extend(["--rm", "--entrypoint", "/usr/local/bin/switchboard-gateway"]);
    let img = image("gateway");
    args.extend([img.as_str(), "--version"]);
    let out = podman(&args);
    if !out.status.success() {
        return Some(format!(
            "podman cannot run a container here: {}",
            text(&out)
        ));
    }
    None
}

/// True when the images can be tested; otherwise prints the reason and returns false, or
/// panics with it in strict mode.
fn runnable(test: &str) -> bool {
    let Some(reason) = unavailable() else {
        return true;
    };
    if std::env::var("SWITCHBOARD_IMAGE_TESTS_STRICT").as_deref() == Ok("1") {
        panic!("{test}: {reason} (SWITCHBOARD_IMAGE_TESTS_STRICT=1)");
    }
    eprintln!("SKIPPED {test}: {reason}");
    false
}

/// A detached container, removed (killed first) on drop.
struct Container {
    name: String,
}

impl Container {
    fn start(name: &str, extra: &[&str], image: &str, args: &[&str]) -> Self {
        let name = format!("switchboard-test-{name}-{}", std::process::id());
        let _ = podman(&["rm", "-f", &name]);
        let mut all = RUN.to_vec();
        all.extend(["-d", "--name", &name]);
        all.extend(extra);
        all.push(image);
        all.extend(args);
        let out = podman(&all);
        assert!(out.status.success(), "podman run {image}: {}", text(&out));
        Self { name }
    }

    fn logs(&self) -> String {
        text(&podman(&["logs", &self.name]))
    }

    fn inspect(&self, format: &str) -> String {
        let out = podman(&["inspect", "--format", format, &self.name]);
        assert!(out.status.success(), "podman inspect: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// SIGTERM, then wait for the exit: `(exit code, time from the signal to the exit)`.
    /// `podman stop` sends SIGKILL after `grace` (exit code 137 then).
    fn stop(&self, grace: Duration) -> (i32, Duration) {
        let started = Instant::now();
        let out = podman(&["stop", "--time", &grace.as_secs().to_string(), &self.name]);
        let took = started.elapsed();
        assert!(out.status.success(), "podman stop: {}", text(&out));
        let code = self.inspect("{{.State.ExitCode}}");
        (code.parse().expect("exit code"), took)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- podman logs {} -----\n{}\n-----",
                self.name,
                self.logs()
            );
        }
        let _ = podman(&["rm", "-f", "--time", "0", &self.name]);
    }
}

/// `Uid:` and the innermost `NSpid:` of a process, from the host's /proc.
fn uid_and_pid_in_namespace(host_pid: &str) -> (String, String) {
    let status = std::fs::read_to_string(format!("/proc/{host_pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{host_pid}/status: {e}"));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/{host_pid}/status"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    (
        field("Uid:")[0].clone(),
        field("NSpid:").last().cloned().unwrap_or_default(),
    )
}

#[test]
fn every_example_passes_check_inside_the_gateway_image() {
    if !runnable("every_example_passes_check_inside_the_gateway_image") {
        return;
    }
    let examples = root().join("examples");
    let mount = format!("{}:/src/examples:ro", examples.display());
    let mut files: Vec<_> = std::fs::read_dir(&examples)
        .expect("examples/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples/*.yaml");
    let img = image("gateway");
    for file in files {
        let name = file.file_name().expect("file name").to_string_lossy();
        let config = format!("examples/{name}");
        let mut args = RUN.to_vec();
        args.extend([
            "--rm", "-v", &mount, "-w", "/src", &img, "--check", "--config",
        ]);
        args.push(&config);
        let out = podman(&args);
        let said = text(&out);
        println!("{config}: {}", said.trim());
        assert!(
            out.status.success() && said.lines().any(|l| l == "ok"),
            "{config} inside {img}: {said}"
        );
    }
}

#[test]
fn image_labels_user_and_entrypoint_match_the_binary_inside() {
    if !runnable("image_labels_user_and_entrypoint_match_the_binary_inside") {
        return;
    }
    for name in ["gateway", "operator"] {
        let img = image(name);
        let binary = format!("switchboard-{name}");
        let mut args = RUN.to_vec();
        args.extend(["--rm", &img, "--version"]);
        let out = podman(&args);
        assert!(out.status.success(), "{img} --version: {}", text(&out));
        let version_line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        println!("{img}: {version_line}");
        let commit = version_line
            .strip_prefix(&format!("{binary} {} (commit ", env!("CARGO_PKG_VERSION")))
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{img} --version printed {version_line:?}"));

        let out = podman(&["image", "inspect", "--format", "{{json .Config}}", &img]);
        assert!(out.status.success(), "inspect {img}: {}", text(&out));
        let config: Value = serde_json::from_slice(&out.stdout).expect("image config JSON");
        let labels = &config["Labels"];
        assert_eq!(
            labels["org.opencontainers.image.version"],
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(labels["org.opencontainers.image.revision"], commit, "{img}");
        assert_eq!(labels["org.opencontainers.image.title"], binary.as_str());
        assert!(
            labels["org.opencontainers.image.source"].is_string(),
            "{labels}"
        );
        assert_eq!(config["User"], "65532:65532", "{img}");
        assert_eq!(
            config["Entrypoint"],
            serde_json::json!([format!("/usr/local/bin/{binary}")]),
            "{img}"
        );
    }
}

/// An SSE stream of `path`: the response head, then the body text as it arrives, sent on a
/// channel chunk by chunk.
async fn sse(
    addr: SocketAddr,
    path: &str,
) -> (StatusCode, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let tcp = TcpStream::connect(addr).await.expect("connect for SSE");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::ACCEPT, "text/event-stream")
        .body(Full::new(Bytes::new()))
        .expect("SSE request");
    let resp = sender.send_request(req).await.expect("SSE response");
    let status = resp.status();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut body = resp.into_body();
    tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref()
                && tx.send(String::from_utf8_lossy(data).into_owned()).is_err()
            {
                return;
            }
        }
    });
    (status, rx)
}

/// `POST /v1/publish` on the admin listener.
async fn publish(admin: SocketAddr, token: &str, body: &Value) -> (StatusCode, String) {
    let tcp = TcpStream::connect(admin).await.expect("connect to admin");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    let req = Request::post("/v1/publish")
        .header(http::header::HOST, admin.to_string())
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("publish request");
    let resp = sender.send_request(req).await.expect("publish response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_container_serves_the_quickstart_read_only_as_65532_and_drains_on_sigterm_as_pid_1()
{
    if !runnable(
        "gateway_container_serves_the_quickstart_read_only_as_65532_and_drains_on_sigterm_as_pid_1",
    ) {
        return;
    }
    // examples/quickstart.yaml as it is, on free ports (the host network is shared).
    let public = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let quickstart =
        std::fs::read_to_string(root().join("examples/quickstart.yaml")).expect("quickstart");
    let yaml = quickstart
        .replace("\"127.0.0.1:8080\"", &format!("\"{public}\""))
        .replace("\"127.0.0.1:9090\"", &format!("\"{admin}\""));
    assert_ne!(
        yaml, quickstart,
        "the quickstart's addresses moved: update this test"
    );
    // The quickstart sets no `drain`: the defaults apply (docs/config.md: deadline 60 s).
    assert!(
        !yaml.contains("\ndrain:"),
        "the quickstart sets drain now: update this test"
    );
    let drain_deadline_secs = 60;
    let token = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("the quickstart's publishApi.token")
        .to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("quickstart.yaml"), &yaml).expect("write config");
    let mount = format!("{}:/etc/switchboard:ro", dir.path().display());
    let gateway = Container::start(
        "gateway",
        &["-v", &mount],
        &image("gateway"),
        &["--config", "/etc/switchboard/quickstart.yaml"],
    );

    eventually("/readyz answers 200", STEP, || async {
        let (code, _) = http_get(admin, "/readyz").await?;
        (code == StatusCode::OK).then_some(())
    })
    .await;
    let (uid, pid) = uid_and_pid_in_namespace(&gateway.inspect("{{.State.Pid}}"));
    assert_eq!(
        (uid.as_str(), pid.as_str()),
        ("65532", "1"),
        "UID and PID 1"
    );
    assert_eq!(gateway.inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");

    // An SSE client and a WebSocket client in room demo:lobby.
    let (status, mut events) = sse(public, "/rooms?rooms=demo:lobby").await;
    assert_eq!(status, StatusCode::OK);
    let mut req = format!("ws://{public}/rooms")
        .into_client_request()
        .expect("ws request");
    req.headers_mut().insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        http::HeaderValue::from_static("switchboard.v1"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("WebSocket upgrade");
    ws.send(Message::Text(
        r#"{"type":"join","room":"demo:lobby","id":"1"}"#.into(),
    ))
    .await
    .expect("send join");
    let mut ws_seen = String::new();
    tokio::time::timeout(STEP, async {
        while !ws_seen.contains("\"joined\"") {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => ws_seen.push_str(t.as_str()),
                Some(Ok(_)) => {}
                other => panic!("WebSocket ended before joined: {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no joined reply: {ws_seen}"));
    let mut sse_seen = String::new();
    tokio::time::timeout(STEP, async {
        while !sse_seen.contains("event: joined") {
            sse_seen.push_str(&events.recv().await.expect("SSE stream open"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no SSE joined event: {sse_seen}"));

    // One message through the publish API reaches both.
    let marker = format!("from-the-image-test-{}", std::process::id());
    let (code, body) = publish(
        admin,
        &token,
        &serde_json::json!({"room": "demo:lobby", "data": {"hello": marker}}),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "publish: {body}");
    tokio::time::timeout(STEP, async {
        while !ws_seen.contains(&marker) {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => ws_seen.push_str(t.as_str()),
                Some(Ok(_)) => {}
                other => panic!("WebSocket ended before the message: {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the WebSocket client did not get the message: {ws_seen}"));
    tokio::time::timeout(STEP, async {
        while !sse_seen.contains(&marker) {
            sse_seen.push_str(&events.recv().await.expect("SSE stream open"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the SSE client did not get the message: {sse_seen}"));

    // SIGTERM to PID 1 with both clients connected: the drain closes them and the process
    // exits 0 before `podman stop` would SIGKILL it (the drain deadline plus 10 s).
    let grace = Duration::from_secs(drain_deadline_secs + 10);
    let ws_close = tokio::spawn(async move {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    });
    let sse_end = tokio::spawn(async move {
        let mut rest = String::new();
        while let Some(chunk) = events.recv().await {
            rest.push_str(&chunk);
        }
        rest
    });
    let stop = tokio::task::spawn_blocking(move || {
        let result = gateway.stop(grace);
        (result, gateway)
    });
    let ((code, took), gateway) = stop.await.expect("podman stop");
    println!(
        "gateway container: SIGTERM as PID 1 -> exit code {code} after {:.1} s (drain deadline {} s)",
        took.as_secs_f64(),
        drain_deadline_secs
    );
    assert_eq!(
        code,
        0,
        "exit code after SIGTERM; logs:\n{}",
        gateway.logs()
    );
    let close = ws_close.await.expect("WebSocket reader");
    assert_eq!(
        close,
        Some(CloseCode::Away),
        "the WebSocket is closed by the drain with 1001"
    );
    let rest = sse_end.await.expect("SSE reader");
    assert!(
        rest.contains("event: shutdown"),
        "the SSE stream ends with a shutdown event: {rest}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_container_writes_the_snapshot_through_the_api_server_stand_in() {
    if !runnable("operator_container_writes_the_snapshot_through_the_api_server_stand_in") {
        return;
    }
    let api = ApiServer::start()
        .await
        .expect("start the API-server stand-in");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("kubeconfig"), api.kubeconfig(SYSTEM_NS))
        .expect("write kubeconfig");
    std::fs::write(
        dir.path().join("base.yaml"),
        "apiVersion: switchboard.dev/v1alpha1
kind: GatewayConfig
listeners:
  - name: public
    address: 0.0.0.0:8080
admin:
  address: 0.0.0.0:9090
",
    )
    .expect("write base.yaml");
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mount = format!("{}:/etc/switchboard:ro", dir.path().display());
    let metrics_arg = metrics.to_string();
    let operator = Container::start(
        "operator",
        &["-v", &mount, "-e", "KUBECONFIG=/etc/switchboard/kubeconfig"],
        &image("operator"),
        &[
            "--base-config",
            "/etc/switchboard/base.yaml",
            "--namespace",
            SYSTEM_NS,
            "--metrics-address",
            &metrics_arg,
            "--identity",
            "image-test",
        ],
    );

    let mut config = kube::Config::new(api.url().parse().expect("stand-in URL"));
    config.default_namespace = SYSTEM_NS.into();
    let client = Client::try_from(config).expect("kube client");
    let secrets: Api<Secret> = Api::namespaced(client, SYSTEM_NS);
    let snapshot = eventually("the operator writes the snapshot Secret", STEP, || {
        let secrets = secrets.clone();
        async move { secrets.get_opt("switchboard-gateway-snapshot").await.ok()? }
    })
    .await;
    let data = snapshot.data.expect("snapshot data");
    let yaml = data
        .get("config.yaml")
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .expect("config.yaml in the snapshot");
    assert!(
        yaml.contains("kind: GatewayConfig") && yaml.contains("0.0.0.0:9090"),
        "{yaml}"
    );
    eventually(
        "operator /metrics shows switchboard_build_info and leadership",
        STEP,
        || async {
            let (code, text) = http_get(metrics, "/metrics").await?;
            (code == StatusCode::OK
                && text.contains("switchboard_build_info{")
                && text.contains("switchboard_operator_leader 1"))
            .then_some(())
        },
    )
    .await;

    let (code, took) = tokio::task::spawn_blocking(move || operator.stop(Duration::from_secs(30)))
        .await
        .expect("podman stop");
    println!(
        "operator container: SIGTERM as PID 1 -> exit code {code} after {:.1} s",
        took.as_secs_f64()
    );
    assert_eq!(code, 0, "operator exit code after SIGTERM");
}
