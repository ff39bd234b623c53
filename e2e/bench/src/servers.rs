//! Starting the systems under test, each on fresh loopback ports: the gateway in proxy and rooms
//! mode (configs written here, in the format of `gateway/config/src/model.rs`), nginx as a
//! WebSocket reverse proxy, the Node peers and nats-server.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::procs::{Proc, free_port};

/// Where binaries, scripts and logs are.
#[derive(Debug, Clone)]
pub struct Env {
    pub gateway_bin: PathBuf,
    pub peers_dir: PathBuf,
    pub work_dir: PathBuf,
    pub node: String,
    pub nginx: String,
    pub nats_server: String,
}

/// A started server and where to reach it.
pub struct Server {
    pub proc: Proc,
    pub port: u16,
    /// Gateway admin port (readiness, metrics).
    pub admin: Option<u16>,
    /// Processes this server needs (an upstream echo app); stopped with it.
    pub deps: Vec<Proc>,
}

impl Server {
    pub fn stop(mut self) {
        self.proc.stop();
        for d in &mut self.deps {
            d.stop();
        }
    }
}

/// Per-route limits opened wide: the benchmark measures throughput, not the rate limiter.
const OPEN_LIMITS: &str = "{messagesPerSecond: 1000000, messageBurst: 1000000}";

fn common(port: u16, admin: u16, bus: &str) -> String {
    format!(
        "apiVersion: switchboard.dev/v1alpha1\n\
         kind: GatewayConfig\n\
         listeners:\n  - name: bench\n    address: \"127.0.0.1:{port}\"\n\
         admin:\n  address: \"127.0.0.1:{admin}\"\n\
         limits:\n  maxConnections: 40000\n\
         publishApi:\n  token: bench-token-0123456789\n\
         {bus}"
    )
}

/// Proxy mode: `/echo` pinned to one backend (the Node ws echo app).
pub fn gateway_proxy_config(port: u16, admin: u16, backend: u16) -> String {
    format!(
        "{}routes:\n  - name: echo\n    path: {{type: Prefix, value: /echo}}\n    mode: proxy\n\
         \x20   proxy:\n      backends:\n        - address: \"127.0.0.1:{backend}\"\n\
         \x20   limits: {OPEN_LIMITS}\n",
        common(port, admin, "")
    )
}

/// What an extra rooms route carries beyond the plain ones.
#[derive(Debug, Clone, Default)]
pub struct RoomsExtras<'a> {
    /// An ES256 public key (PEM): adds `/auth`, a rooms route with JWT (inline key, issuer
    /// `sbbench`) and an Origin allow-list, where a user may join `user:{sub}` and `bench:*`.
    pub jwt_pem: Option<&'a str>,
    /// Adds `/comp`: `/rooms` with per-route permessage-deflate (threshold 1 KiB, level 6).
    pub compression: bool,
}

/// The route-level compression settings the compression section asks for.
pub const COMPRESSION: &str = "{enabled: true, thresholdBytes: 1024, level: 6, maxWindowBits: 15}";

/// Rooms mode: `/rooms` (JSON protocol, rooms `bench:*`, no history: live fan-out only, like the
/// Node peers, with a 64 MiB outbound queue so the burst does not trip the slow-consumer close),
/// `/hist` (the same with history, so publishes are stored: JetStream on NATS) and `/raw/{room}`
/// (raw relay); plus the routes of `extras`.
pub fn gateway_rooms_config(
    port: u16,
    admin: u16,
    nats_url: Option<&str>,
    extras: &RoomsExtras,
) -> String {
    let bus = match nats_url {
        Some(u) => format!("bus:\n  nats:\n    urls: [\"{u}\"]\n    subjectPrefix: sbbench\n"),
        None => String::new(),
    };
    let mut cfg = format!(
        "{}routes:\n\
         \x20 - name: rooms\n    path: {{type: Prefix, value: /rooms}}\n    mode: rooms\n\
         \x20   rooms: {{namespace: bench, join: [\"bench:*\"], publish: [\"bench:*\"], maxQueueBytes: 67108864}}\n\
         \x20   limits: {OPEN_LIMITS}\n\
         \x20 - name: history\n    path: {{type: Prefix, value: /hist}}\n    mode: rooms\n\
         \x20   rooms: {{namespace: benchhist, join: [\"bench:*\"], publish: [\"bench:*\"], history: {{maxMessages: 100, maxAge: 10m}}}}\n\
         \x20   limits: {OPEN_LIMITS}\n\
         \x20 - name: raw\n    path: {{type: Prefix, value: /raw}}\n    mode: rooms\n\
         \x20   rooms: {{protocol: raw, namespace: benchraw, pathRoom: \"/raw/{{room}}\", join: [\"*\"], publish: [\"*\"], maxQueueBytes: 67108864}}\n\
         \x20   limits: {OPEN_LIMITS}\n",
        common(port, admin, &bus)
    );
    if let Some(pem) = extras.jwt_pem {
        // A JSON string is a valid YAML double-quoted scalar (the PEM's newlines escaped).
        let pem = serde_json::Value::from(pem).to_string();
        cfg.push_str(&format!(
            "\x20 - name: auth\n    path: {{type: Prefix, value: /auth}}\n    mode: rooms\n\
             \x20   origins: {{allowed: [\"{origin}\"]}}\n\
             \x20   jwt:\n      issuer: {iss}\n      keys:\n        - inline: {{algorithm: ES256, pem: {pem}}}\n\
             \x20   rooms: {{namespace: benchauth, join: [\"user:{{sub}}\", \"bench:*\"], publish: [\"bench:*\"], maxQueueBytes: 67108864}}\n\
             \x20   limits: {OPEN_LIMITS}\n",
            origin = crate::auth::ORIGIN,
            iss = crate::auth::ISSUER,
        ));
    }
    if extras.compression {
        cfg.push_str(&format!(
            "\x20 - name: comp\n    path: {{type: Prefix, value: /comp}}\n    mode: rooms\n\
             \x20   compression: {COMPRESSION}\n\
             \x20   rooms: {{namespace: bench, join: [\"bench:*\"], publish: [\"bench:*\"], maxQueueBytes: 67108864}}\n\
             \x20   limits: {OPEN_LIMITS}\n"
        ));
    }
    cfg
}

fn log_path(env: &Env, name: &str) -> PathBuf {
    env.work_dir.join(format!("{name}.log"))
}

/// Validate a gateway config with `--check` (a clear error instead of a start-up timeout).
pub fn check_gateway_config(env: &Env, path: &Path) -> Result<()> {
    let out = Command::new(&env.gateway_bin)
        .arg("--config")
        .arg(path)
        .arg("--check")
        .output()
        .context("running switchboard-gateway --check")?;
    if !out.status.success() {
        bail!(
            "gateway config {} rejected:\n{}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Start the gateway with `config` and wait for `/readyz`.
pub fn gateway(env: &Env, name: &str, config: &str, port: u16, admin: u16) -> Result<Server> {
    let cfg_path = env.work_dir.join(format!("{name}.yaml"));
    fs::write(&cfg_path, config)?;
    check_gateway_config(env, &cfg_path)?;
    let mut cmd = Command::new(&env.gateway_bin);
    cmd.arg("--config").arg(&cfg_path);
    // Keep the default log level (info: one line per connection end) as in production, but make
    // sure an inherited RUST_LOG=debug from a developer shell does not slow the run.
    cmd.env("RUST_LOG", "info,pingora_core=warn,pingora=warn");
    let mut proc = Proc::spawn(name, &mut cmd, &log_path(env, name))?;
    proc.wait_http_ok(admin, "/readyz", Duration::from_secs(20))?;
    proc.wait_tcp(port, Duration::from_secs(5))?;
    Ok(Server {
        proc,
        port,
        admin: Some(admin),
        deps: Vec::new(),
    })
}

/// A Node peer script (`echo.js`, `ws-room.js`, `sio-room.js`) on a free port.
pub fn node_peer(env: &Env, name: &str, script: &str) -> Result<Server> {
    let mut cmd = Command::new(&env.node);
    cmd.arg(env.peers_dir.join(script)).arg("0");
    let mut proc = Proc::spawn(name, &mut cmd, &log_path(env, name))?;
    let port = proc.wait_listening_line(Duration::from_secs(15))?;
    Ok(Server {
        proc,
        port,
        admin: None,
        deps: Vec::new(),
    })
}

/// The gateway in proxy mode in front of `backend` (an echo app already running).
pub fn gateway_proxy_to(env: &Env, name: &str, backend: u16) -> Result<Server> {
    let (port, admin) = (free_port()?, free_port()?);
    gateway(
        env,
        name,
        &gateway_proxy_config(port, admin, backend),
        port,
        admin,
    )
}

/// The gateway in proxy mode in front of a fresh Node ws echo app (stopped with it).
pub fn gateway_proxy(env: &Env, name: &str) -> Result<Server> {
    let echo = node_peer(env, &format!("{name}-upstream-echo"), "echo.js")?;
    let mut gw = gateway_proxy_to(env, name, echo.port)?;
    gw.deps.push(echo.proc);
    Ok(gw)
}

/// The gateway in rooms mode (embedded bus unless `nats_url`).
pub fn gateway_rooms(env: &Env, name: &str, nats_url: Option<&str>) -> Result<Server> {
    gateway_rooms_with(env, name, nats_url, &RoomsExtras::default())
}

/// The gateway in rooms mode with extra routes.
pub fn gateway_rooms_with(
    env: &Env,
    name: &str,
    nats_url: Option<&str>,
    extras: &RoomsExtras,
) -> Result<Server> {
    let (port, admin) = (free_port()?, free_port()?);
    gateway(
        env,
        name,
        &gateway_rooms_config(port, admin, nats_url, extras),
        port,
        admin,
    )
}

/// nginx as a WebSocket reverse proxy (the documented `Upgrade`/`Connection` recipe), one worker
/// per core, access log off, in front of `backend`.
pub fn nginx_config(prefix: &Path, port: u16, backend: u16) -> String {
    format!(
        "daemon off;\n\
         master_process on;\n\
         worker_processes auto;\n\
         worker_rlimit_nofile {nofile};\n\
         pid {prefix}/nginx.pid;\n\
         error_log {prefix}/error.log warn;\n\
         events {{ worker_connections {nofile}; }}\n\
         http {{\n\
         \x20 access_log off;\n\
         \x20 client_body_temp_path {prefix}/body;\n\
         \x20 proxy_temp_path {prefix}/proxy;\n\
         \x20 map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}\n\
         \x20 server {{\n\
         \x20   listen 127.0.0.1:{port} backlog=4096;\n\
         \x20   location / {{\n\
         \x20     proxy_pass http://127.0.0.1:{backend};\n\
         \x20     proxy_http_version 1.1;\n\
         \x20     proxy_set_header Upgrade $http_upgrade;\n\
         \x20     proxy_set_header Connection $connection_upgrade;\n\
         \x20     proxy_set_header Host $host;\n\
         \x20     proxy_read_timeout 3600s;\n\
         \x20     proxy_send_timeout 3600s;\n\
         \x20   }}\n\
         \x20 }}\n\
         }}\n",
        prefix = prefix.display(),
        nofile = crate::procs::nofile_limit().clamp(1024, 70000) - 100
    )
}

/// nginx in front of a fresh Node ws echo app (stopped with it).
pub fn nginx_proxy(env: &Env, name: &str) -> Result<Server> {
    let echo = node_peer(env, &format!("{name}-upstream-echo"), "echo.js")?;
    let mut ngx = nginx_proxy_to(env, name, echo.port)?;
    ngx.deps.push(echo.proc);
    Ok(ngx)
}

/// nginx in front of `backend` (an echo app already running).
pub fn nginx_proxy_to(env: &Env, name: &str, backend: u16) -> Result<Server> {
    let prefix = env.work_dir.join(format!("{name}-prefix"));
    fs::create_dir_all(&prefix)?;
    let port = free_port()?;
    let conf = prefix.join("nginx.conf");
    fs::write(&conf, nginx_config(&prefix, port, backend))?;
    let mut cmd = Command::new(&env.nginx);
    cmd.arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(prefix.join("error.log"));
    let mut proc = Proc::spawn(name, &mut cmd, &log_path(env, name))?;
    proc.cleanup = Some(prefix);
    proc.wait_tcp(port, Duration::from_secs(10))?;
    Ok(Server {
        proc,
        port,
        admin: None,
        deps: Vec::new(),
    })
}

/// nats-server with JetStream on a free port; returns it and its URL.
pub fn nats(env: &Env, name: &str) -> Result<(Proc, String)> {
    let port = free_port()?;
    let store = env.work_dir.join(format!("{name}-store"));
    fs::create_dir_all(&store)?;
    let mut cmd = Command::new(&env.nats_server);
    cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(&store);
    let mut proc = Proc::spawn(name, &mut cmd, &log_path(env, name))?;
    proc.cleanup = Some(store);
    proc.wait_tcp(port, Duration::from_secs(10))?;
    Ok((proc, format!("nats://127.0.0.1:{port}")))
}
