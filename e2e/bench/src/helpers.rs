//! Load-generator helper processes, so that one server can be given more connections than one
//! client process may hold (the file-descriptor limit) and so that the clients of a big room are
//! spread over processes and source addresses (`127.0.0.N`), as real clients would be:
//!
//! - `sbbench hold key=value...`: open idle connections, answer keep-alives, and on `probe`
//!   check that every one still answers.
//! - `sbbench members key=value...`: join a room and count deliveries, with wall-clock
//!   timestamps the orchestrator compares with its own publish time.
//! - `sbbench relay nats=URL`: the minimal WebSocket -> NATS -> WebSocket relay (cross-pod
//!   baseline, see [`crate::relay`]).
//!
//! They talk to the orchestrator with lines: it writes commands to stdin, they answer on stdout.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::wsclient::{Dialect, Extra, Ws, connect_with, is_delivery, sb_join};

/// Nanoseconds since the Unix epoch (comparable across processes).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `key=value` arguments.
pub struct Kv(HashMap<String, String>);

impl Kv {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut m = HashMap::new();
        for a in args {
            let (k, v) = a
                .split_once('=')
                .with_context(|| format!("`{a}`: key=value"))?;
            m.insert(k.to_string(), v.to_string());
        }
        Ok(Self(m))
    }
    pub fn get(&self, k: &str) -> Result<&str> {
        self.0
            .get(k)
            .map(String::as_str)
            .with_context(|| format!("missing {k}="))
    }
    pub fn opt(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
    pub fn num<T: std::str::FromStr>(&self, k: &str) -> Result<T>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        Ok(self.get(k)?.parse()?)
    }
}

pub fn dialect_name(d: Dialect) -> &'static str {
    match d {
        Dialect::Plain => "plain",
        Dialect::Switchboard => "sb",
        Dialect::SwitchboardProto => "sbproto",
        Dialect::SocketIo => "sio",
    }
}

fn dialect_of(s: &str) -> Result<Dialect> {
    Ok(match s {
        "plain" => Dialect::Plain,
        "sb" => Dialect::Switchboard,
        "sbproto" => Dialect::SwitchboardProto,
        "sio" => Dialect::SocketIo,
        other => bail!("unknown dialect {other}"),
    })
}

/// How a helper's connections authenticate and which room each joins.
struct Plan {
    port: u16,
    path: String,
    dialect: Dialect,
    src: Option<Ipv4Addr>,
    /// `user`: join `user:<sub>` with that user's token (line `from + i` of `tokens`);
    /// `room:<name>`: join that room; absent: no join.
    join: Option<String>,
    tokens: Vec<String>,
    from: usize,
}

impl Plan {
    fn from_kv(kv: &Kv) -> Result<Self> {
        let from = kv.opt("from").map_or(Ok(0), str::parse)?;
        let tokens = match kv.opt("tokens") {
            Some(path) => std::fs::read_to_string(path)?
                .lines()
                .map(str::to_string)
                .collect(),
            None => Vec::new(),
        };
        Ok(Self {
            port: kv.num("port")?,
            path: kv.get("path")?.to_string(),
            dialect: dialect_of(kv.get("dialect")?)?,
            src: kv.opt("src").map(str::parse).transpose()?,
            join: kv.opt("join").map(str::to_string),
            tokens,
            from,
        })
    }

    /// Connect (and join) connection `i` of this helper.
    async fn open(&self, i: usize) -> Result<Ws> {
        let mut extra = Extra {
            src: self.src,
            headers: Vec::new(),
        };
        if !self.tokens.is_empty() {
            let t = self
                .tokens
                .get(self.from + i)
                .context("fewer tokens than connections")?;
            extra.headers.push(("Authorization", format!("Bearer {t}")));
            extra
                .headers
                .push(("Origin", crate::auth::ORIGIN.to_string()));
        }
        let mut ws = connect_with(self.port, &self.path, self.dialect, &extra).await?;
        match self.join.as_deref() {
            Some("user") => {
                sb_join(
                    &mut ws,
                    &format!("user:{}", crate::auth::user(self.from + i)),
                )
                .await?
            }
            Some(j) => {
                if let Some(room) = j.strip_prefix("room:") {
                    sb_join(&mut ws, room).await?
                }
            }
            None => {}
        }
        Ok(ws)
    }

    /// Open `n` connections, 64 handshakes in flight.
    async fn open_all(self: &Arc<Self>, n: usize) -> Result<Vec<Ws>> {
        let sem = Arc::new(Semaphore::new(64));
        let mut set = JoinSet::new();
        for i in 0..n {
            let (sem, plan) = (sem.clone(), self.clone());
            set.spawn(async move {
                let _permit = sem.acquire_owned().await?;
                plan.open(i).await
            });
        }
        let mut out = Vec::with_capacity(n);
        while let Some(r) = set.join_next().await {
            out.push(r?.context("helper connect")?);
        }
        Ok(out)
    }
}

/// Answer a keep-alive if `m` is one (Socket.IO's `2`; WebSocket pings are answered by the
/// client library while reading).
async fn keepalive(ws: &mut Ws, dialect: Dialect, m: &Message) {
    if dialect == Dialect::SocketIo
        && let Message::Text(t) = m
        && t.as_str() == "2"
    {
        let _ = ws.send(Message::text("3")).await;
    }
}

async fn stdin_lines() -> tokio::io::Lines<BufReader<tokio::io::Stdin>> {
    BufReader::new(tokio::io::stdin()).lines()
}

/// `sbbench hold`: prints `ready`, then `alive A dead D` after each `probe`; `close` (or the
/// end of stdin) closes everything and exits.
pub async fn hold(kv: &Kv) -> Result<()> {
    let plan = Arc::new(Plan::from_kv(kv)?);
    let n: usize = kv.num("n")?;
    let conns = plan.open_all(n).await?;
    // 0: hold, k > 0: probe round k, u32::MAX: close.
    let (tx, rx) = watch::channel(0u32);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let mut tasks = JoinSet::new();
    for mut ws in conns {
        let mut rx = rx.clone();
        let done = done_tx.clone();
        let dialect = plan.dialect;
        tasks.spawn(async move {
            let mut open = true;
            loop {
                tokio::select! {
                    changed = rx.changed() => {
                        if changed.is_err() { break; }
                        let cmd = *rx.borrow_and_update();
                        if cmd == u32::MAX {
                            if open {
                                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                            }
                            break;
                        }
                        let ok = open
                            && tokio::time::timeout(
                                Duration::from_secs(20),
                                crate::idle::probe(&mut ws, dialect),
                            )
                            .await
                            .unwrap_or(false);
                        let _ = done.send(ok);
                    }
                    m = ws.next(), if open => match m {
                        Some(Ok(m)) => keepalive(&mut ws, dialect, &m).await,
                        _ => open = false,
                    },
                }
            }
        });
    }
    println!("ready {n}");
    let mut lines = stdin_lines().await;
    let mut round = 0;
    while let Ok(Some(line)) = lines.next_line().await {
        match line.trim() {
            "probe" => {
                round += 1;
                let _ = tx.send(round);
                let (mut alive, mut dead) = (0, 0);
                while alive + dead < n {
                    match done_rx.recv().await {
                        Some(true) => alive += 1,
                        Some(false) => dead += 1,
                        None => break,
                    }
                }
                println!("alive {alive} dead {dead}");
            }
            "close" => break,
            _ => {}
        }
    }
    let _ = tx.send(u32::MAX);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// `sbbench members`: join, print `ready`; after `go`, count deliveries until every member has
/// `messages` or `timeout` seconds passed, then print
/// `done <deliveries> <first delivery ns> <last delivery ns> <bytes of one delivery>`; close on
/// `close`. Each member counts for itself (no shared counters on the per-delivery path, so the
/// helper's own cost stays small next to the server's); only finishing is shared.
pub async fn members(kv: &Kv) -> Result<()> {
    let plan = Arc::new(Plan::from_kv(kv)?);
    let n: usize = kv.num("n")?;
    let messages: u64 = kv.num("messages")?;
    let timeout = Duration::from_secs(kv.num("timeout")?);
    let conns = plan.open_all(n).await?;
    let finished = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for mut ws in conns {
        let finished = finished.clone();
        let mut stop = stop_rx.clone();
        let dialect = plan.dialect;
        tasks.spawn(async move {
            let (mut got, mut first, mut last, mut size) = (0u64, u64::MAX, 0u64, 0u64);
            let mut reading = true;
            loop {
                let m = tokio::select! {
                    _ = stop.changed() => break,
                    m = ws.next(), if reading => match m {
                        Some(Ok(m)) => m,
                        _ => {
                            reading = false;
                            finished.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    },
                };
                let delivery = match &m {
                    Message::Text(t) => is_delivery(dialect, t),
                    Message::Binary(_) => dialect == Dialect::Plain,
                    _ => false,
                };
                if !delivery {
                    keepalive(&mut ws, dialect, &m).await;
                    continue;
                }
                let t = now_ns();
                got += 1;
                first = first.min(t);
                last = t;
                size = m.len() as u64;
                if got == messages {
                    reading = false;
                    finished.fetch_add(1, Ordering::Relaxed);
                }
            }
            (got, first, last, size, ws)
        });
    }
    println!("ready {n}");
    let mut lines = stdin_lines().await;
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() == "go" {
            break;
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    while finished.load(Ordering::Relaxed) < n as u64 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);
    let (mut got, mut first, mut last, mut size) = (0u64, u64::MAX, 0u64, 0u64);
    let mut held = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        let (g, f, l, s, ws) = r?;
        got += g;
        first = first.min(f);
        last = last.max(l);
        size = size.max(s);
        held.push(ws);
    }
    println!(
        "done {got} {} {last} {size}",
        if first == u64::MAX { 0 } else { first }
    );
    // Wait for `close` before closing, so no member leaves while others still count.
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() == "close" {
            break;
        }
    }
    let mut closes = JoinSet::new();
    for mut ws in held {
        closes.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
        });
    }
    while closes.join_next().await.is_some() {}
    Ok(())
}

/// A source address for the next helper: 127.0.0.2, 127.0.0.3, ... 127.0.1.2, ... Each helper
/// of a run gets its own, so a few thousand connections per address never run out of
/// ephemeral ports, even with the previous rows' sockets still in TIME_WAIT.
pub fn next_source() -> Ipv4Addr {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let k = NEXT.fetch_add(1, Ordering::Relaxed) % (250 * 250);
    Ipv4Addr::new(127, 0, (k / 250) as u8, (k % 250 + 2) as u8)
}
