//! What an idle proxied tunnel holds in memory: live heap bytes counted by dhat's allocator (the
//! tunnel task with its state, and whatever it allocates; deterministic byte counts, never
//! timings). The tunnels relay over in-memory streams, which are created and warmed before
//! counting, so only the tunnel is measured. One test in its own binary: dhat counts the whole
//! process, so the runtime is current-thread and nothing else runs meanwhile.
//! `cargo nextest run -p switchboard-gateway --test tunnel_idle_memory --no-capture` prints the
//! numbers; the bound only tells "holds a read buffer" (8 KiB or more) apart from "holds none".
//! Measured twice: plain tunnels, then tunnels with permessage-deflate negotiated that relayed
//! a compressed message each way (the collection buffers must be gone once the message is).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::time::Duration;

use support::tunnel::{counted, counters, frame, frame_rsv1, limits};
use switchboard_gateway::drain::CloseSignal;
use switchboard_gateway::engine::deflate::{self, Deflate};
use switchboard_gateway::tunnel::relay::run;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Heap bytes live now.
fn live() -> isize {
    dhat::HeapStats::get().curr_bytes as isize
}

const TUNNELS: usize = 200;
const MASK: [u8; 4] = [1, 2, 3, 4];

/// Compression on, for messages of 64 bytes and more (zlib level 6, 15-bit window).
fn agreed() -> Deflate {
    let cfg = switchboard_config::Compression {
        enabled: true,
        threshold_bytes: 64,
        ..Default::default()
    };
    deflate::negotiate(["permessage-deflate"], &cfg).unwrap()
}

/// Write `bytes` into one end of a pipe and read them back at the other, so the pipe's own
/// buffer exists before counting starts.
async fn warm(a: &mut DuplexStream, b: &mut DuplexStream, len: usize) {
    let bytes = vec![7u8; len];
    a.write_all(&bytes).await.unwrap();
    b.read_exact(&mut vec![0; len]).await.unwrap();
    b.write_all(&bytes).await.unwrap();
    a.read_exact(&mut vec![0; len]).await.unwrap();
}

async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
}

#[test]
fn an_idle_tunnel_holds_no_read_buffer_before_or_after_relaying() {
    counted(async {
        idle_tunnels(None).await;
        idle_tunnels(Some(agreed())).await;
    });
}

/// What one tunnel relays each way, and what the other end must receive (with deflate: a
/// compressed client message reaches the app inflated under a fresh mask, a large app message
/// reaches the client compressed).
struct Traffic {
    to_app: Vec<u8>,
    app_gets: usize,
    to_client: Vec<u8>,
    client_gets: Vec<u8>,
}

fn traffic(deflate: Option<Deflate>) -> Traffic {
    match deflate {
        None => Traffic {
            to_app: frame(b"hello app", Some(MASK)),
            app_gets: 15,
            to_client: frame(b"hello client", None),
            client_gets: frame(b"hello client", None),
        },
        Some(_) => {
            let to_app = deflate::compress(b"hello app, compressed", 6, 15).unwrap();
            let big = [b'c'; 100];
            let z = deflate::compress(&big, 6, 15).unwrap();
            Traffic {
                to_app: frame_rsv1(&to_app, Some(MASK), true),
                app_gets: 2 + 4 + 21,
                to_client: frame(&big, None),
                client_gets: frame_rsv1(&z, None, true),
            }
        }
    }
}

async fn idle_tunnels(deflate: Option<Deflate>) {
    let t = traffic(deflate);
    let drain_rx = CloseSignal::default();
    let mut ends = Vec::new();
    let mut gateway_sides = Vec::new();
    for _ in 0..=TUNNELS {
        let (mut client, mut client_gw) = tokio::io::duplex(4096);
        let (mut app, mut app_gw) = tokio::io::duplex(4096);
        warm(&mut client, &mut client_gw, 256).await;
        warm(&mut app, &mut app_gw, 256).await;
        ends.push((client, app));
        gateway_sides.push((client_gw, app_gw, counters(), counters(), drain_rx.clone()));
    }
    // One tunnel relays first: what a worker keeps for all its tunnels is not per tunnel.
    let (c_gw, a_gw, ci, co, d) = gateway_sides.pop().unwrap();
    let (mut c, mut a) = ends.pop().unwrap();
    // (With deflate, its zlib contexts are the worker's, allocated once.)
    let first = tokio::spawn(run(
        c_gw,
        a_gw,
        limits(deflate),
        ci,
        co,
        d,
        tokio::time::sleep_until,
    ));
    c.write_all(&t.to_app).await.unwrap();
    a.read_exact(&mut vec![0u8; t.app_gets]).await.unwrap();
    a.write_all(&t.to_client).await.unwrap();
    c.read_exact(&mut vec![0u8; t.client_gets.len()])
        .await
        .unwrap();
    let limits = limits(deflate);
    settle().await;

    let before = live();
    let mut tasks = Vec::new();
    for (c_gw, a_gw, ci, co, d) in gateway_sides {
        tasks.push(tokio::spawn(run(
            c_gw,
            a_gw,
            limits.clone(),
            ci,
            co,
            d,
            tokio::time::sleep_until,
        )));
    }
    settle().await;
    let fresh = (live() - before) / TUNNELS as isize;

    for (c, a) in &mut ends {
        c.write_all(&t.to_app).await.unwrap();
        a.write_all(&t.to_client).await.unwrap();
    }
    for (c, a) in &mut ends {
        let mut got = vec![0u8; t.app_gets];
        a.read_exact(&mut got).await.unwrap();
        if deflate.is_none() {
            assert_eq!(got, t.to_app, "relayed as sent");
        } else {
            assert_eq!(got[0], 0x82, "one plain frame for the app");
        }
        let mut got = vec![0u8; t.client_gets.len()];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(got, t.client_gets);
    }
    settle().await;
    let after_traffic = (live() - before) / TUNNELS as isize;
    println!(
        "idle tunnel (deflate: {}) holds: {fresh} B when fresh, {after_traffic} B after relaying a message each way",
        deflate.is_some()
    );
    for limit in [fresh, after_traffic] {
        assert!(
            limit < 4096,
            "an idle tunnel holds {limit} B: a read buffer?"
        );
    }
    drop(ends);
    for t in tasks {
        t.await.unwrap();
    }
    drop((c, a));
    first.await.unwrap();
}
