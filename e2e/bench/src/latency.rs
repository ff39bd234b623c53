//! Request/response over one WebSocket: sequential round trips (latency), and many connections
//! each with one request in flight (closed-loop throughput).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::stats::{Lat, summarize};
use crate::wsclient::{Dialect, Ws, connect, round_trip};

/// A small request (32 bytes of text).
pub const PAYLOAD: &str = "0123456789abcdef0123456789abcdef";

/// Round trips per turn when paths are interleaved.
const CHUNK: usize = 250;

/// `n` sequential round trips per path, one connection per path, after `warmup` unrecorded
/// ones. The paths take turns in chunks of 250 round trips, so background load from other
/// processes on the machine lands on all of them alike.
pub async fn sequential_interleaved(
    paths: &[(u16, &str)],
    n: usize,
    warmup: usize,
) -> Result<Vec<Lat>> {
    let mut conns = Vec::with_capacity(paths.len());
    for (port, path) in paths {
        let mut ws = connect(*port, path, Dialect::Plain).await?;
        for _ in 0..warmup {
            round_trip(&mut ws, PAYLOAD).await?;
        }
        conns.push(ws);
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(n); paths.len()];
    let mut done = 0;
    while done < n {
        let k = CHUNK.min(n - done);
        for (ws, out) in conns.iter_mut().zip(samples.iter_mut()) {
            for _ in 0..k {
                let t = Instant::now();
                round_trip(ws, PAYLOAD).await?;
                out.push(t.elapsed());
            }
        }
        done += k;
    }
    for mut ws in conns {
        let _ = ws.close(None).await;
    }
    Ok(samples.iter().map(|s| summarize(s)).collect())
}

/// Result of a closed-loop run.
#[derive(Debug, Clone)]
pub struct Throughput {
    pub round_trips_per_s: f64,
    pub lat: Lat,
    pub errors: usize,
}

/// Connections to one path, kept open between measurement slices.
pub struct Pool {
    clients: Vec<Ws>,
}

impl Pool {
    /// Open `conns` connections (64 handshakes in flight at a time).
    pub async fn connect(port: u16, path: &str, conns: usize) -> Result<Self> {
        let sem = Arc::new(Semaphore::new(64));
        let mut set = JoinSet::new();
        for _ in 0..conns {
            let sem = sem.clone();
            let path = path.to_string();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await?;
                connect(port, &path, Dialect::Plain).await
            });
        }
        let mut clients = Vec::with_capacity(conns);
        while let Some(r) = set.join_next().await {
            clients.push(r??);
        }
        Ok(Self { clients })
    }

    /// Every connection does back-to-back round trips for `warmup + window`; counts those that
    /// start and end inside the window. Returns the samples and the number of failed clients
    /// (which are dropped from the pool).
    pub async fn slice(
        &mut self,
        warmup: Duration,
        window: Duration,
    ) -> Result<(Vec<Duration>, usize)> {
        let start = Instant::now() + Duration::from_millis(20);
        let from = start + warmup;
        let until = from + window;
        let mut set = JoinSet::new();
        for mut ws in self.clients.drain(..) {
            set.spawn(async move {
                tokio::time::sleep_until(start).await;
                let mut samples = Vec::new();
                loop {
                    let t = Instant::now();
                    if t >= until {
                        break;
                    }
                    if round_trip(&mut ws, PAYLOAD).await.is_err() {
                        return (samples, None);
                    }
                    let done = Instant::now();
                    if t >= from && done <= until {
                        samples.push(done - t);
                    }
                }
                (samples, Some(ws))
            });
        }
        let mut all = Vec::new();
        let mut failed = 0;
        while let Some(r) = set.join_next().await {
            let (s, ws) = r?;
            all.extend(s);
            match ws {
                Some(ws) => self.clients.push(ws),
                None => failed += 1,
            }
        }
        Ok((all, failed))
    }

    pub async fn close(self) {
        for mut ws in self.clients {
            let _ = ws.close(None).await;
        }
    }
}

/// Summarize the slices of one path in one repetition.
pub fn throughput(samples: &[Duration], windows: Duration, errors: usize) -> Throughput {
    Throughput {
        round_trips_per_s: samples.len() as f64 / windows.as_secs_f64(),
        lat: summarize(samples),
        errors,
    }
}
