//! The gateway binary as a child process ([`Gateway`]), and `--check` runs.

use super::*;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The gateway binary: `$SWITCHBOARD_GATEWAY_BIN` if set (a release build, say), else the one
/// cargo built for these tests.
pub fn gateway_bin() -> PathBuf {
    std::env::var_os("SWITCHBOARD_GATEWAY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_switchboard-gateway")))
}

/// A running `switchboard-gateway --config <tempfile>`; killed on drop.
pub struct Gateway {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    dir: tempfile::TempDir,
    exit: Option<ExitStatus>,
}

impl Gateway {
    /// Start the binary with this YAML and wait until `/readyz` answers 200 (up to 20 s).
    /// `addr()` is the first listener's address and `admin()` the admin address, as the
    /// gateway reports them once bound (its `listening` log lines): listeners on port 0 get a
    /// port the system picks, with no race against other processes. The YAML must be valid
    /// (test bad configs with [`check_config`]).
    pub async fn start(yaml: &str) -> Self {
        Self::start_with_env(yaml, &[]).await
    }

    /// [`Gateway::start`] with extra environment variables (e.g. `RUST_LOG`).
    pub async fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Self {
        let cfg = switchboard_config::GatewayConfig::from_yaml(yaml)
            .unwrap_or_else(|e| panic!("the test's gateway config is invalid: {e}\n{yaml}"));
        let first = cfg
            .listeners
            .first()
            .expect("validated config has a listener")
            .name
            .clone();

        let dir = tempfile::tempdir().expect("tempdir for the gateway");
        let config_path = dir.path().join("gateway.yaml");
        std::fs::write(&config_path, yaml).expect("write gateway config");
        let log_path = dir.path().join("gateway.log");
        let log = std::fs::File::create(&log_path).expect("create gateway log");
        let log_err = log.try_clone().expect("clone gateway log handle");

        let mut cmd = Command::new(gateway_bin());
        cmd.arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        // The bound addresses are read from the `listening` lines, whatever else is filtered.
        let rust_log = env
            .iter()
            .find(|(k, _)| *k == "RUST_LOG")
            .map(|(_, v)| (*v).to_owned())
            .or_else(|| std::env::var("RUST_LOG").ok())
            .unwrap_or_else(|| "info".to_owned());
        // The log is a file read by people and asserted on by tests: no ANSI colours.
        cmd.env("NO_COLOR", "1");
        // A developer's own OpenTelemetry settings must not make test gateways export (or
        // change what the trace test sees): only what a test passes counts.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.env(
            "RUST_LOG",
            format!("{rust_log},switchboard_gateway::listener=info"),
        );
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", gateway_bin().display()));

        let unbound = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut gw = Self {
            child,
            addr: unbound,
            admin: unbound,
            dir,
            exit: None,
        };
        let within = Duration::from_secs(20);
        let deadline = Instant::now() + within;
        (gw.addr, gw.admin) = gw.wait_listening(&first, within).await;
        gw.wait_ready(deadline.saturating_duration_since(Instant::now()))
            .await;
        gw
    }

    /// Wait for the `listening` log lines of listener `first` and of the admin listener;
    /// returns their bound addresses.
    async fn wait_listening(&mut self, first: &str, within: Duration) -> (SocketAddr, SocketAddr) {
        let deadline = Instant::now() + within;
        loop {
            let listening = listening_lines(&self.log());
            let find = |role: &str, name: &str| {
                listening
                    .iter()
                    .find(|l| l.role == role && l.name == name)
                    .map(|l| l.addr)
            };
            if let (Some(addr), Some(admin)) = (find("edge", first), find("admin", "admin")) {
                return (addr, admin);
            }
            if let Some(status) = self.try_exit_status() {
                panic!(
                    "gateway exited before it was listening ({status}); log tail:\n{}",
                    self.log_tail(60)
                );
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not report its listeners within {within:?}; log tail:\n{}",
                self.log_tail(60)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit_status() {
                panic!(
                    "gateway exited before it was ready ({status}); log tail:\n{}",
                    self.log_tail(60)
                );
            }
            match try_http_get(self.admin, "/readyz", &[]).await {
                // The first listener's socket is bound before anything starts; a connect
                // checks it is still there (ready means it is served too).
                Ok((200, _)) if tokio::net::TcpStream::connect(self.addr).await.is_ok() => return,
                Ok((200, _)) => last = format!("/readyz 200 but {} refuses", self.addr),
                Ok((status, body)) => last = format!("{status} {}", body.trim()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "gateway not ready within {within:?} (last /readyz: {last}); log tail:\n{}",
            self.log_tail(60)
        );
    }

    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address listener `name` was bound to (from its `listening` log line).
    pub fn listener(&self, name: &str) -> SocketAddr {
        listening_lines(&self.log())
            .into_iter()
            .find(|l| l.role == "edge" && l.name == name)
            .map(|l| l.addr)
            .unwrap_or_else(|| panic!("no listener {name:?} in the gateway log"))
    }

    /// The admin listener's address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// `ws://<listener><path>`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The config file the gateway was started with (rewrite it for reload tests).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    /// Everything the gateway printed so far (stdout and stderr interleaved).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// The last `lines` lines of [`Self::log`].
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Send SIGTERM (graceful drain).
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Send a signal by name (`TERM`, `INT`, `HUP`...) with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_exit_status().is_none()
    }

    fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait on the gateway");
        }
        self.exit
    }

    /// Wait up to `timeout` for the process to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- gateway log tail (pid {}) ----\n{}\n---- end of gateway log ----",
                self.child.id(),
                self.log_tail(80)
            );
        }
        if self.try_exit_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One `listening` line of a gateway log: a listener and the address it was bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    /// `edge` or `admin`.
    pub role: String,
    pub name: String,
    pub addr: SocketAddr,
}

/// The `listening` lines of a gateway log, text or JSON (`--log-format json`), in order.
pub fn listening_lines(log: &str) -> Vec<Listening> {
    log.lines()
        .filter_map(|line| {
            let field = |key: &str| -> Option<String> {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                    return v["fields"][key].as_str().map(str::to_owned);
                }
                line.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .map(str::to_owned)
            };
            let message = match serde_json::from_str::<serde_json::Value>(line) {
                Ok(v) => v["fields"]["message"].as_str()? == "listening",
                Err(_) => line.contains("switchboard_gateway::listener: listening "),
            };
            message.then_some(())?;
            Some(Listening {
                role: field("role")?,
                name: field("name")?,
                addr: field("addr")?.parse().ok()?,
            })
        })
        .collect()
}

/// Run `switchboard-gateway --check --config <yaml in a tempfile>`; returns the exit status and
/// stdout + stderr.
pub fn check_config(yaml: &str) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).expect("write config");
    let out = Command::new(gateway_bin())
        .arg("--check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("run {} --check: {e}", gateway_bin().display()));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status, text)
}
