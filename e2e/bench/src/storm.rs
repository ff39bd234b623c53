//! Connect storm: `n` WebSocket connects with `inflight` handshakes in flight at a time, each
//! held open until the storm is over (as after a pod restart, when every client reconnects).
//! A connect counts when the client could use it: the `101` for WebSocket servers (after
//! authentication and the Origin check on the gateway's `/auth` route), the Socket.IO connect
//! acknowledgement (`40`) for Socket.IO.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::wsclient::{Dialect, Extra, Ws, connect_with};

/// One storm's outcome.
#[derive(Debug, Clone)]
pub struct Storm {
    pub ok: usize,
    pub failed: usize,
    pub seconds: f64,
    pub per_second: f64,
    pub first_error: Option<String>,
    /// Handshake time per connect (from its own start, not the storm's), microseconds.
    pub p50_us: f64,
    pub p99_us: f64,
    /// Server CPU seconds from the first connect to the last handshake.
    pub server_cpu_s: f64,
}

/// Run one storm against `port`/`path`; `tokens` (when given) are sent one per connect as
/// `Authorization: Bearer` with the allowed `Origin`.
pub async fn run(
    port: u16,
    path: &str,
    dialect: Dialect,
    tokens: Option<Arc<Vec<String>>>,
    n: usize,
    inflight: usize,
    cpu: &dyn Fn() -> f64,
) -> Result<Storm> {
    let cpu0 = cpu();
    let sem = Arc::new(Semaphore::new(inflight));
    let mut set: JoinSet<(Result<Ws>, Duration)> = JoinSet::new();
    let start = Instant::now();
    for i in 0..n {
        let sem = sem.clone();
        let path = path.to_string();
        let tokens = tokens.clone();
        set.spawn(async move {
            let Ok(_permit) = sem.acquire_owned().await else {
                return (Err(anyhow::anyhow!("semaphore closed")), Duration::ZERO);
            };
            let mut extra = Extra::default();
            if let Some(t) = tokens.as_ref().and_then(|t| t.get(i % t.len().max(1))) {
                extra.headers.push(("Authorization", format!("Bearer {t}")));
                extra
                    .headers
                    .push(("Origin", crate::auth::ORIGIN.to_string()));
            }
            let t0 = Instant::now();
            let r = connect_with(port, &path, dialect, &extra).await;
            (r, t0.elapsed())
        });
    }
    let mut held = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    let (mut failed, mut first_error) = (0, None);
    let mut end = start;
    while let Some(r) = set.join_next().await {
        match r {
            Ok((Ok(ws), took)) => {
                end = end.max(Instant::now());
                held.push(ws);
                times.push(took);
            }
            Ok((Err(e), _)) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let server_cpu_s = cpu() - cpu0;
    let seconds = (end - start).as_secs_f64().max(1e-9);
    let ok = held.len();
    let lat = crate::stats::summarize(&times);
    // Close politely (the server's close work is not part of the measurement).
    let mut closes = JoinSet::new();
    for mut ws in held {
        closes.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
        });
    }
    while closes.join_next().await.is_some() {}
    Ok(Storm {
        ok,
        failed,
        seconds,
        per_second: ok as f64 / seconds,
        first_error,
        p50_us: lat.p50,
        p99_us: lat.p99,
        server_cpu_s,
    })
}
