//! What a busy proxied tunnel allocates per frame: heap blocks counted by dhat's allocator
//! (deterministic counts, never timings). Once a tunnel has relayed its first messages, a small
//! frame each way is forwarded from the bytes it was read into: no allocation per frame or per
//! wake-up. The streams are in-memory pipes, warmed before counting, and the test's own frames
//! and read buffers are made before counting starts, so only the relay is measured. One test in
//! its own binary: dhat counts the whole process, so the runtime is current-thread and nothing
//! else runs meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use support::tunnel::{counted, counters, frame, limits};
use switchboard_gateway::drain::CloseSignal;
use switchboard_gateway::tunnel::relay::run;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Heap blocks allocated so far (freed or not).
fn blocks() -> u64 {
    dhat::HeapStats::get().total_blocks
}

const MASK: [u8; 4] = [9, 8, 7, 6];
const ROUND_TRIPS: usize = 200;

/// One request and its reply through the tunnel, into buffers made beforehand.
async fn round_trip(
    client: &mut DuplexStream,
    app: &mut DuplexStream,
    request: &[u8],
    reply: &[u8],
    buf: &mut [u8],
) {
    client.write_all(request).await.unwrap();
    app.read_exact(&mut buf[..request.len()]).await.unwrap();
    assert_eq!(&buf[..request.len()], request, "relayed as sent");
    app.write_all(reply).await.unwrap();
    client.read_exact(&mut buf[..reply.len()]).await.unwrap();
    assert_eq!(&buf[..reply.len()], reply, "relayed as sent");
}

#[test]
fn a_busy_tunnel_relays_small_frames_without_allocating() {
    counted(async {
        let (mut client, client_gw) = tokio::io::duplex(4096);
        let (mut app, app_gw) = tokio::io::duplex(4096);
        let tunnel = tokio::spawn(run(
            client_gw,
            app_gw,
            limits(None),
            counters(),
            counters(),
            CloseSignal::default(),
            tokio::time::sleep_until,
        ));
        let request = frame(b"0123456789abcdef0123456789abcdef", Some(MASK));
        let reply = frame(b"0123456789abcdef0123456789abcdef", None);
        let mut buf = vec![0u8; 256];
        // The first messages may allocate what the tunnel and the pipes keep.
        for _ in 0..10 {
            round_trip(&mut client, &mut app, &request, &reply, &mut buf).await;
        }

        let before = blocks();
        for _ in 0..ROUND_TRIPS {
            round_trip(&mut client, &mut app, &request, &reply, &mut buf).await;
        }
        let allocated = blocks() - before;
        println!("{ROUND_TRIPS} round trips through a warmed tunnel: {allocated} allocations");
        assert_eq!(
            allocated,
            0,
            "a warmed tunnel allocated {allocated} heap blocks over {ROUND_TRIPS} round trips \
                 ({} frames)",
            2 * ROUND_TRIPS
        );

        drop((client, app));
        tunnel.await.unwrap();
    });
}
