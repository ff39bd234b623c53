//! A real `nats-server` with JetStream for one test: a free port on 127.0.0.1, a temporary store
//! directory, output in `<store>/server.log` (printed when a test panics), killed on drop.
//! [`NatsServer::stop`] and [`NatsServer::start_again`] make outages on the same port and store.
//!
//! The binary is `$NATS_SERVER`, else `/usr/sbin/nats-server`, else `nats-server` on `PATH`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a starting server may take to accept clients.
const START_TIMEOUT: Duration = Duration::from_secs(15);

pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
    /// Server name and cluster arguments, for a member of [`NatsServer::cluster`].
    name: String,
    cluster_args: Vec<String>,
    /// The monitoring port (`-m`) of a cluster member: `/jsz` tells when JetStream has a leader.
    monitor: Option<u16>,
}

impl NatsServer {
    /// Start a server with JetStream on a free port.
    pub fn start() -> Self {
        let store = tempfile::Builder::new()
            .prefix("nats-store-")
            .tempdir()
            .expect("temp store dir");
        let mut server = NatsServer {
            child: None,
            port: super::free_port(),
            store,
            name: "solo".into(),
            cluster_args: Vec::new(),
            monitor: None,
        };
        server.spawn();
        server
    }

    /// Start a server with JetStream on a free port and `config` (nats-server configuration
    /// syntax, e.g. `max_payload: 65536`) for settings without a command-line flag.
    pub fn start_with_config(config: &str) -> Self {
        let store = tempfile::Builder::new()
            .prefix("nats-store-")
            .tempdir()
            .expect("temp store dir");
        let file = store.path().join("server.conf");
        std::fs::write(&file, config).expect("write the server config");
        let mut server = NatsServer {
            child: None,
            port: super::free_port(),
            store,
            name: "solo".into(),
            cluster_args: vec!["-c".into(), file.display().to_string()],
            monitor: None,
        };
        server.spawn();
        server
    }

    /// `n` servers (named `n0`, `n1`, ...) forming one JetStream cluster on 127.0.0.1, returned
    /// once every member knows the JetStream meta leader (streams can be created).
    ///
    /// Each member takes three free ports; another test may take one of them between the
    /// check and the bind (nextest runs tests in parallel processes), so a cluster whose
    /// member could not bind is started again on other ports (twice at most).
    pub async fn cluster(n: usize) -> Vec<Self> {
        for attempt in 0.. {
            match Self::try_cluster(n) {
                Ok(servers) => {
                    for s in &servers {
                        s.wait_meta_leader().await;
                    }
                    return servers;
                }
                Err(log) if attempt < 2 && log.contains("address already in use") => {}
                Err(log) => panic!("a cluster member did not start:\n{log}"),
            }
        }
        unreachable!()
    }

    /// The members of [`NatsServer::cluster`], started; the log of one that exited.
    fn try_cluster(n: usize) -> Result<Vec<Self>, String> {
        let route_ports: Vec<u16> = (0..n).map(|_| super::free_port()).collect();
        let routes = route_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut servers: Vec<Self> = route_ports
            .iter()
            .enumerate()
            .map(|(i, route_port)| {
                let monitor = super::free_port();
                NatsServer {
                    child: None,
                    port: super::free_port(),
                    store: tempfile::Builder::new()
                        .prefix("nats-store-")
                        .tempdir()
                        .expect("temp store dir"),
                    name: format!("n{i}"),
                    cluster_args: vec![
                        "-n".into(),
                        format!("n{i}"),
                        "--cluster_name".into(),
                        "sbtest".into(),
                        "--cluster".into(),
                        format!("nats://127.0.0.1:{route_port}"),
                        "--routes".into(),
                        routes.clone(),
                        "-m".into(),
                        monitor.to_string(),
                    ],
                    monitor: Some(monitor),
                }
            })
            .collect();
        for s in &mut servers {
            s.try_spawn()?;
        }
        Ok(servers)
    }

    /// Until this member's `/jsz` names a JetStream meta leader.
    async fn wait_meta_leader(&self) {
        let monitor = self.monitor.expect("a cluster member");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], monitor));
        let deadline = Instant::now() + START_TIMEOUT * 2;
        loop {
            if let Ok((200, body)) = super::try_http_get(addr, "/jsz", &[]).await {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                if v["meta_cluster"]["leader"]
                    .as_str()
                    .is_some_and(|l| !l.is_empty())
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{}: no JetStream meta leader in {:?}:\n{}",
                self.name,
                START_TIMEOUT * 2,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The server name (`n0`, ... in a cluster), as JetStream names stream leaders.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn binary() -> PathBuf {
        if let Some(p) = std::env::var_os("NATS_SERVER") {
            return p.into();
        }
        let system = Path::new("/usr/sbin/nats-server");
        if system.exists() {
            system.to_path_buf()
        } else {
            "nats-server".into()
        }
    }

    fn log_path(&self) -> PathBuf {
        self.store.path().join("server.log")
    }

    fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("nats-server exited:\n{log}");
        }
    }

    /// Start the server and wait until it is ready; its log when it exited instead.
    fn try_spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "nats-server already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("server log");
        let child = Command::new(Self::binary())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path().join("js"))
            .args(&self.cluster_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", Self::binary().display()));
        self.child = Some(child);
        self.wait_ready()
    }

    /// Ready once a client gets the server's INFO line (JetStream is up before clients are
    /// accepted).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("exited with {status}:\n{}", self.log_tail()));
            }
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut line = String::new();
                if BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("INFO") {
                    assert!(
                        line.contains("\"jetstream\":true"),
                        "JetStream is off: {line}"
                    );
                    return Ok(());
                }
            }
            assert!(
                Instant::now() < deadline,
                "nats-server not ready in {START_TIMEOUT:?}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Hang the server (SIGSTOP): it keeps its connections open and answers nothing, as a
    /// server stuck in the kernel or a frozen VM does. [`NatsServer::thaw`] resumes it.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Resume a [`NatsServer::freeze`]d server (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status();
        }
    }

    /// Stop gracefully (SIGTERM: stores are flushed, connections closed) and wait for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Kill at once (SIGKILL), as a crash. Writes JetStream acknowledged but had not yet
    /// flushed to its files may be lost (single server, no replicas).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port with the same store.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Lose everything JetStream stored (an `emptyDir` or a lost volume): the server must be
    /// stopped; [`NatsServer::start_again`] then starts with no streams.
    pub fn wipe_store(&mut self) {
        assert!(
            self.child.is_none(),
            "stop the server before wiping its store"
        );
        let js = self.store.path().join("js");
        if js.exists() {
            std::fs::remove_dir_all(&js).expect("wipe the JetStream store");
        }
    }

    /// [`NatsServer::stop`] then [`NatsServer::start_again`].
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// The last lines of the server's output.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- nats-server on port {} (tail) ---\n{}",
                self.port,
                self.log_tail()
            );
        }
        self.kill();
    }
}
