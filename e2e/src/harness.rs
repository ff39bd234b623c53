//! Real processes and real sockets for the end-to-end suites: the built binaries as child
//! processes (output to a log file, killed on drop), a WebSocket echo backend, a WebSocket
//! client that reports refusals by status, a tiny HTTP GET, and a poll-until helper.
//!
//! Test code: failures panic with a message.

// The one place outside `#[cfg(test)]` code where `expect` is the right call: every function
// here runs inside a test, where a failed setup must fail that test, saying what failed.
#![allow(
    clippy::expect_used,
    reason = "test harness: a failed setup fails the test with this message"
)]

use std::fs::File;
use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

/// A port that was free a moment ago on 127.0.0.1 (racy by nature; fine for config files).
pub fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A workspace binary built next to this test (`target/<profile>/<name>`), or the path in
/// `SWITCHBOARD_E2E_<NAME>` (dashes as underscores, upper case).
pub fn binary(name: &str) -> PathBuf {
    let var = format!(
        "SWITCHBOARD_E2E_{}",
        name.to_ascii_uppercase().replace('-', "_")
    );
    if let Ok(p) = std::env::var(&var) {
        return PathBuf::from(p);
    }
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} not found: `cargo nextest run --workspace` (or `cargo build -p switchboard-gateway -p switchboard-operator`) builds it, or set {var}",
        path.display()
    );
    path
}

/// A child process whose output goes to a log file; killed on drop.
pub struct Process {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Start `program args...` with extra environment variables, logging to `dir/<name>.log`.
    pub fn start(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, String)],
        dir: &Path,
    ) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file handle");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .env("RUST_LOG", "info,kube=warn,pingora_core=warn,pingora=warn")
            .env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// The last `lines` lines of the log.
    pub fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- last lines of {} ({}) -----\n{}\n-----",
                self.name,
                self.log.display(),
                self.tail(60)
            );
        }
    }
}

/// Poll `check` every 25 ms until it returns `Some`, or panic after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `GET http://addr/path`: status and body, or `None` when nothing answers.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(StatusCode, String)> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(2), sender.send_request(req))
        .await
        .ok()?
        .ok()?;
    let status = resp.status();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A WebSocket echo backend on `127.0.0.1:0`: echoes every message, except that the text
/// `who` is answered with `backend:<name>` so a test can tell backends apart.
pub struct EchoServer {
    pub name: String,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EchoServer {
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind echo server");
        let addr = listener.local_addr().expect("echo local_addr");
        let me = format!("backend:{name}");
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let me = me.clone();
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        let reply = match msg {
                            Message::Text(t) if t.as_str() == "who" => {
                                Message::Text(me.clone().into())
                            }
                            m @ (Message::Text(_) | Message::Binary(_)) => m,
                            Message::Close(_) => break,
                            _ => continue,
                        };
                        if ws.send(reply).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self {
            name: name.to_owned(),
            addr,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// Why a WebSocket could not be opened.
#[derive(Debug)]
pub enum WsRefused {
    /// The server answered the upgrade with this status (and body).
    Status(StatusCode, String),
    /// Nothing usable answered.
    Io(String),
}

/// Open `ws://addr/path` with `Host: host` and, when given, `Origin: origin`.
pub async fn ws_connect(
    addr: SocketAddr,
    host: &str,
    path: &str,
    origin: Option<&str>,
) -> Result<Ws, WsRefused> {
    let mut req = format!("ws://{addr}{path}")
        .into_client_request()
        .map_err(|e| WsRefused::Io(e.to_string()))?;
    let headers = req.headers_mut();
    headers.insert(
        http::header::HOST,
        host.parse().map_err(|_| WsRefused::Io("bad host".into()))?,
    );
    if let Some(o) = origin {
        headers.insert(
            http::header::ORIGIN,
            o.parse().map_err(|_| WsRefused::Io("bad origin".into()))?,
        );
    }
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| WsRefused::Io(e.to_string()))?;
    let handshake = tokio_tungstenite::client_async(req, tcp);
    match tokio::time::timeout(Duration::from_secs(5), handshake).await {
        Err(_) => Err(WsRefused::Io("handshake timed out".into())),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(resp))) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err(WsRefused::Status(resp.status(), body))
        }
        Ok(Err(e)) => Err(WsRefused::Io(e.to_string())),
    }
}

/// Send `text` and return the next text message (5 s at most).
pub async fn ws_roundtrip(ws: &mut Ws, text: &str) -> Result<String, String> {
    ws.send(Message::Text(text.to_owned().into()))
        .await
        .map_err(|e| format!("send: {e}"))?;
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => return Err(format!("unexpected {other:?}")),
                Some(Err(e)) => return Err(format!("receive: {e}")),
                None => return Err("connection ended".into()),
            }
        }
    })
    .await
    .map_err(|_| "no answer within 5s".to_owned())?
}
