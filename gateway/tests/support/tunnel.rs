//! A tunnel relayed in-process (`tunnel::relay::run` over in-memory pipes), for the tests that
//! count what it holds or allocates: its limits, counters and the frames fed to it.

use std::future::Future;
use std::time::Duration;

use prometheus::IntCounter;
use switchboard_gateway::engine::deflate::Deflate;
use switchboard_gateway::engine::frame::{OpCode, encode_frame};
use switchboard_gateway::tunnel::relay::{DirCounters, TunnelLimits};

/// Production-like limits: keep-alive on (its timer is part of what a tunnel holds; it stays
/// armed and is polled on every wake-up), 1,000 messages a second, permessage-deflate as
/// given.
pub fn limits(deflate: Option<Deflate>) -> TunnelLimits {
    TunnelLimits {
        max_message_bytes: 1 << 20,
        messages_per_second: 1000,
        message_burst: 1000,
        ping_interval: Duration::from_secs(30),
        pong_timeout: Duration::from_secs(10),
        app_ping_interval: Duration::ZERO,
        app_pong_timeout: Duration::from_secs(10),
        close_timeout: Duration::from_secs(5),
        expires_at: None,
        drain_code: 1012,
        drain_reason: "restart".into(),
        drain_window: Duration::from_secs(1),
        deflate,
    }
}

/// Counters no registry reads.
pub fn counters() -> DirCounters {
    DirCounters {
        frames: IntCounter::new("f", "f").expect("counter"),
        bytes: IntCounter::new("b", "b").expect("counter"),
    }
}

/// A small binary frame: masked (from a client) or not (from the app).
pub fn frame(payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    frame_rsv1(payload, mask, false)
}

/// A binary frame, with RSV1 (compressed) or not: the gateway's own encoder.
pub fn frame_rsv1(payload: &[u8], mask: Option<[u8; 4]>, rsv1: bool) -> Vec<u8> {
    encode_frame(OpCode::Binary, true, rsv1, payload, mask)
}

/// Run `test` on a current-thread runtime under dhat's testing profiler: nothing else runs, so
/// what dhat counts is the test's (the binary must have dhat's `#[global_allocator]`).
pub fn counted<F: Future>(test: F) -> F::Output {
    let _profiler = dhat::Profiler::builder().testing().build();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(test)
}
