use super::*;
use crate::engine::frame::{self, Event, OpCode, Scanner};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

fn counters() -> DirCounters {
    DirCounters {
        frames: IntCounter::new("f", "f").expect("counter"),
        bytes: IntCounter::new("b", "b").expect("counter"),
    }
}

fn limits() -> TunnelLimits {
    TunnelLimits {
        max_message_bytes: 1000,
        messages_per_second: 100,
        message_burst: 10,
        ping_interval: Duration::ZERO,
        pong_timeout: Duration::from_secs(1),
        app_ping_interval: Duration::ZERO,
        app_pong_timeout: Duration::from_secs(1),
        close_timeout: Duration::from_secs(2),
        expires_at: None,
        drain_code: 1012,
        drain_reason: "restart".into(),
        drain_window: Duration::from_secs(1),
        deflate: None,
    }
}

struct Harness {
    client: DirectionReader,
    upstream: DirectionReader,
    drain: CloseSignal,
    task: tokio::task::JoinHandle<Outcome>,
}

/// One test-side end: writes raw frames, reads frames back with the scanner.
struct DirectionReader {
    io: DuplexStream,
    scanner: Scanner,
    buf: Vec<u8>,
}

#[derive(Debug, PartialEq)]
enum Got {
    Data(Vec<u8>),
    Close(Option<u16>),
    Ping,
    Pong,
    Eof,
}

impl DirectionReader {
    async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("write");
    }

    async fn next(&mut self) -> Got {
        let mut data = Vec::new();
        loop {
            let mut pos = 0;
            let buf = std::mem::take(&mut self.buf);
            while let Some(ev) = self.scanner.next(&buf, &mut pos).expect("valid frames") {
                match ev {
                    Event::Header(_) => {}
                    Event::Payload(p) => data.extend_from_slice(p),
                    Event::Control(c) if c.opcode == OpCode::Close => {
                        self.buf = buf[pos..].to_vec();
                        return Got::Close(c.close_code());
                    }
                    Event::Control(c) if c.opcode == OpCode::Ping => {
                        self.buf = buf[pos..].to_vec();
                        return Got::Ping;
                    }
                    Event::Control(c) if c.opcode == OpCode::Pong => {
                        self.buf = buf[pos..].to_vec();
                        return Got::Pong;
                    }
                    Event::Control(_) => {}
                }
                if self.scanner.at_boundary() && !data.is_empty() && !self.scanner.in_message() {
                    self.buf = buf[pos..].to_vec();
                    return Got::Data(data);
                }
            }
            let mut chunk = vec![0u8; 4096];
            match self.io.read(&mut chunk).await {
                Ok(0) | Err(_) => return Got::Eof,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

const MASK: Option<[u8; 4]> = Some([1, 2, 3, 4]);

/// `payload` as it reaches the app inside a frame masked with [`MASK`] (relayed verbatim).
fn masked(payload: &[u8]) -> Vec<u8> {
    payload
        .iter()
        .zip([1u8, 2, 3, 4].iter().cycle())
        .map(|(b, m)| b ^ m)
        .collect()
}

fn reader(io: DuplexStream, sender: Sender) -> DirectionReader {
    DirectionReader {
        io,
        scanner: Scanner::new(sender, u64::MAX),
        buf: vec![],
    }
}

fn start(l: TunnelLimits) -> Harness {
    start_with_pipes(l, 64 * 1024, 64 * 1024)
}

#[tokio::test]
async fn data_frames_pass_both_ways_unchanged() {
    let mut h = start(limits());
    h.client
        .send(&frame::encode(OpCode::Text, b"hello", MASK))
        .await;
    assert_eq!(
        h.upstream.next().await,
        Got::Data(
            b"hello"
                .iter()
                .zip([1u8, 2, 3, 4].iter().cycle())
                .map(|(b, m)| b ^ m)
                .collect()
        )
    );
    h.upstream
        .send(&frame::encode(OpCode::Binary, b"back", None))
        .await;
    assert_eq!(h.client.next().await, Got::Data(b"back".to_vec()));
}

#[tokio::test]
async fn close_frames_pass_through_with_their_codes_and_end_the_tunnel() {
    let mut h = start(limits());
    h.client.send(&frame::close_frame(4321, "bye", MASK)).await;
    assert_eq!(h.upstream.next().await, Got::Close(Some(4321)));
    h.upstream.send(&frame::close_frame(4321, "", None)).await;
    assert_eq!(h.client.next().await, Got::Close(Some(4321)));
    let out = h.task.await.expect("tunnel task");
    assert_eq!(out.cause, CloseCause::Peer(Side::Downstream, 4321));
}

/// A Close with a code no peer may send (RFC 6455 §7.4) fails the tunnel with 1002 both ways
/// and is not forwarded: it reached the app, and each code became a metrics label.
#[tokio::test]
async fn a_close_with_a_code_no_peer_may_send_fails_the_tunnel_with_1002_unforwarded() {
    for (from_client, code) in [(true, 5000), (true, 1005), (false, 1006), (false, 2000)] {
        let mut h = start(limits());
        if from_client {
            h.client.send(&frame::close_frame(code, "", MASK)).await;
        } else {
            h.upstream.send(&frame::close_frame(code, "", None)).await;
        }
        assert_eq!(close_code(&mut h.upstream).await, Some(1002), "{code}");
        assert_eq!(close_code(&mut h.client).await, Some(1002), "{code}");
        // A failed connection is not closed cleanly: the gateway stops reading the sender.
        let out = h.task.await.expect("tunnel task");
        assert_eq!(out.cause, CloseCause::ProtocolError, "{code}");
    }
}

#[tokio::test]
async fn oversized_client_message_closes_both_sides_with_1009_and_is_not_forwarded() {
    let mut h = start(limits());
    h.client
        .send(&frame::encode(OpCode::Binary, &[0u8; 1001], MASK))
        .await;
    assert_eq!(
        h.upstream.next().await,
        Got::Close(Some(1009)),
        "the app gets a close, not the message"
    );
    assert_eq!(h.client.next().await, Got::Close(Some(1009)));
    h.client.send(&frame::close_frame(1009, "", MASK)).await;
    h.upstream.send(&frame::close_frame(1009, "", None)).await;
    let out = h.task.await.expect("tunnel task");
    assert_eq!(out.cause, CloseCause::MessageTooBig);
}

#[tokio::test]
async fn oversized_app_message_closes_with_1009_too() {
    let mut h = start(limits());
    h.upstream
        .send(&frame::encode(OpCode::Text, &[b'a'; 2000], None))
        .await;
    assert_eq!(h.client.next().await, Got::Close(Some(1009)));
    assert_eq!(h.upstream.next().await, Got::Close(Some(1009)));
}

#[tokio::test]
async fn an_app_close_right_behind_an_oversized_message_still_gets_the_client_its_1009() {
    // The app's own Close arrives in the same read as the refused message, before the
    // tunnel's close command reaches the pump: the client must still get 1009, not a reset.
    let mut h = start(limits());
    let mut burst = frame::encode(OpCode::Text, &[b'a'; 2000], None);
    burst.extend_from_slice(&frame::close_frame(1000, "done", None));
    h.upstream.send(&burst).await;
    assert_eq!(h.client.next().await, Got::Close(Some(1009)));
    assert_eq!(h.upstream.next().await, Got::Close(Some(1009)));
}

#[tokio::test]
async fn a_burst_beyond_the_rate_limit_closes_with_1008() {
    let mut h = start(TunnelLimits {
        messages_per_second: 1,
        message_burst: 3,
        ..limits()
    });
    for _ in 0..4 {
        h.client
            .send(&frame::encode(OpCode::Text, b"x", MASK))
            .await;
    }
    for _ in 0..3 {
        assert!(matches!(h.upstream.next().await, Got::Data(_)));
    }
    assert_eq!(h.upstream.next().await, Got::Close(Some(1008)));
    assert_eq!(h.client.next().await, Got::Close(Some(1008)));
}

/// The next Close the test end gets, skipping anything before it.
async fn close_code(end: &mut DirectionReader) -> Option<u16> {
    let close = async {
        loop {
            match end.next().await {
                Got::Close(code) => return code,
                Got::Eof => panic!("the stream ended without a Close"),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), close)
        .await
        .expect("a Close in time")
}

#[tokio::test]
async fn a_flood_of_empty_continuation_frames_counts_against_the_rate_limit() {
    // A message that never ends, in empty frames: no message start after the first and no
    // byte toward maxMessageBytes, yet every frame is relayed to the app.
    let mut h = start(TunnelLimits {
        messages_per_second: 1,
        message_burst: 3,
        ..limits()
    });
    let mask = MASK.expect("client frames are masked");
    let frame = |first: u8| [&[first, 0x80][..], &mask[..]].concat();
    h.client.send(&frame(0x01)).await; // Text, not final, empty
    for _ in 0..100 {
        h.client.send(&frame(0x00)).await; // Continuation, not final, empty
    }
    assert_eq!(close_code(&mut h.client).await, Some(1008));
}

#[tokio::test]
async fn a_message_streamed_in_many_fragments_stays_within_the_rate() {
    // A client that writes a large message in write-buffer-sized frames is not a flood: each
    // fragment after the first costs a sixteenth of a message.
    let mut h = start(TunnelLimits {
        messages_per_second: 1,
        message_burst: 10,
        ..limits()
    });
    let mask = MASK.expect("client frames are masked");
    let fragment = |first: u8| [&[first, 0x80 | 10][..], &mask[..], &[0u8; 10][..]].concat();
    h.client.send(&fragment(0x02)).await; // Binary, not final
    for _ in 0..62 {
        h.client.send(&fragment(0x00)).await;
    }
    h.client.send(&fragment(0x80)).await; // final continuation
    assert!(
        matches!(h.upstream.next().await, Got::Data(d) if d.len() == 640),
        "the whole message reached the app"
    );
}

#[tokio::test]
async fn a_ping_flood_counts_against_the_rate_limit() {
    let mut h = start(TunnelLimits {
        messages_per_second: 1,
        message_burst: 3,
        ..limits()
    });
    for _ in 0..10 {
        h.client
            .send(&frame::encode(OpCode::Ping, b"p", MASK))
            .await;
    }
    assert_eq!(close_code(&mut h.client).await, Some(1008));
}

#[tokio::test(start_paused = true)]
async fn token_expiry_closes_both_sides_with_4001() {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut h = start(TunnelLimits {
        expires_at: Some(deadline),
        ..limits()
    });
    assert_eq!(h.client.next().await, Got::Close(Some(4001)));
    assert_eq!(h.upstream.next().await, Got::Close(Some(4001)));
    assert!(Instant::now() >= deadline);
}

#[tokio::test(start_paused = true)]
async fn a_drain_closes_the_client_first_relays_what_it_still_sends_then_closes_the_app_with_the_same_code()
 {
    let mut h = start(limits());
    let started = Instant::now();
    h.drain.close();
    assert_eq!(h.client.next().await, Got::Close(Some(1012)));
    assert!(started.elapsed() <= Duration::from_secs(1));
    // A message the client sent before it read our Close: it crossed the Close on the wire.
    h.client
        .send(&frame::encode(OpCode::Text, b"crossed the close", MASK))
        .await;
    h.client.send(&frame::close_frame(1000, "", MASK)).await;
    assert_eq!(
        h.upstream.next().await,
        Got::Data(masked(b"crossed the close")),
        "the app gets what the client sent before its Close"
    );
    assert_eq!(
        h.upstream.next().await,
        Got::Close(Some(1012)),
        "then the drain's Close, with the code the client got"
    );
    h.upstream.send(&frame::close_frame(1012, "", None)).await;
    let out = h.task.await.expect("tunnel task");
    assert_eq!(out.cause.code(), 1012);
    assert_eq!(out.cause.reason(), "restart");
    assert_eq!(out.frames_in, 2, "the late message and the Close");
}

#[tokio::test(start_paused = true)]
async fn frames_dropped_after_a_close_are_not_counted_as_relayed() {
    // The metric and the log's frames_out say what reached the client, not what was read.
    let mut h = start(limits());
    h.drain.close();
    assert_eq!(h.client.next().await, Got::Close(Some(1012)));
    for _ in 0..5 {
        // Nothing follows a Close to the client: these are read and dropped.
        h.upstream
            .send(&frame::encode(OpCode::Text, b"too late", None))
            .await;
    }
    h.client.send(&frame::close_frame(1012, "", MASK)).await;
    assert_eq!(h.upstream.next().await, Got::Close(Some(1012)));
    h.upstream.send(&frame::close_frame(1012, "", None)).await;
    let out = h.task.await.expect("tunnel task");
    assert_eq!(out.frames_out, 0, "nothing of the app's reached the client");
    assert_eq!(out.frames_in, 1, "the client's Close went to the app");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_answers_the_drain_close_gets_the_app_closed_after_the_close_timeout() {
    let mut h = start(limits());
    h.drain.close();
    assert_eq!(h.client.next().await, Got::Close(Some(1012)));
    let client_closed = Instant::now();
    assert_eq!(h.upstream.next().await, Got::Close(Some(1012)));
    assert!(
        client_closed.elapsed() >= limits().close_timeout,
        "the client had the close timeout to answer"
    );
    h.upstream.send(&frame::close_frame(1012, "", None)).await;
    let out = h.task.await.expect("tunnel task");
    assert_eq!(out.cause.code(), 1012);
}

/// Drive one direction on its own until it is done (what the supervisor would look at is
/// cleared and ignored).
async fn drive_dir<S, D>(mut dir: Dir, mut src: S, mut dst: D) -> End
where
    S: AsyncRead + Unpin,
    D: AsyncWrite + Unpin,
{
    let mut first_close = 0;
    poll_fn(|cx| {
        loop {
            let polled = dir.poll(cx, &mut src, &mut dst, &mut first_close);
            dir.pong = false;
            dir.violation = None;
            if let Some(end) = dir.done() {
                return Poll::Ready(end);
            }
            if polled.is_pending() {
                return Poll::Pending;
            }
        }
    })
    .await
}

#[tokio::test]
async fn app_frames_already_at_the_gateway_when_a_close_starts_reach_the_client_before_it() {
    let (mut app, app_gw) = tokio::io::duplex(64 * 1024);
    let (client_gw, client) = tokio::io::duplex(64 * 1024);
    // The app sent two messages; they wait in the gateway's socket when the close starts.
    app.write_all(&frame::encode(OpCode::Text, b"one", None))
        .await
        .expect("write");
    app.write_all(&frame::encode(OpCode::Text, b"two", None))
        .await
        .expect("write");
    let mut dir = Dir::new(Sender::Server, &limits(), counters());
    dir.close(1012, "restart".into(), false);
    let task = tokio::spawn(drive_dir(dir, app_gw, client_gw));
    let mut client = reader(client, Sender::Server);
    assert_eq!(client.next().await, Got::Data(b"one".to_vec()));
    assert_eq!(client.next().await, Got::Data(b"two".to_vec()));
    assert_eq!(client.next().await, Got::Close(Some(1012)));
    app.write_all(&frame::close_frame(1012, "", None))
        .await
        .expect("write");
    let end = task.await.expect("direction task");
    assert_eq!(end, End::CloseAck);
}

#[tokio::test(start_paused = true)]
async fn keepalive_pings_the_client_and_a_silent_client_is_closed() {
    let mut h = start(TunnelLimits {
        ping_interval: Duration::from_secs(5),
        ..limits()
    });
    assert_eq!(h.client.next().await, Got::Ping);
    // no pong: the pong deadline passes
    assert_eq!(h.client.next().await, Got::Close(Some(1001)));
    let out = h.task.await.expect("tunnel task");
    assert_eq!(out.cause, CloseCause::PongTimeout);
}

#[tokio::test(start_paused = true)]
async fn no_keepalive_ping_follows_the_close_of_a_silent_client() {
    // The next ping falls due at the same instant as the pong deadline: the Close wins and
    // nothing follows it (CI caught a ping after the Close in the keepalive suite).
    let mut h = start(TunnelLimits {
        ping_interval: Duration::from_secs(1),
        pong_timeout: Duration::from_secs(1),
        ..limits()
    });
    assert_eq!(h.client.next().await, Got::Ping);
    let mut after = Vec::new();
    loop {
        match h.client.next().await {
            Got::Close(code) => {
                assert_eq!(code, Some(1001));
                break;
            }
            Got::Ping => after.push("ping"),
            other => panic!("{other:?}"),
        }
    }
    h.client.send(&frame::close_frame(1001, "", MASK)).await;
    let rest = tokio::time::timeout(Duration::from_secs(10), h.client.next()).await;
    assert!(
        matches!(rest, Ok(Got::Eof)),
        "only EOF may follow our Close: {rest:?} (pings before it: {after:?})"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_answering_pings_stays_open_and_its_pongs_are_not_forwarded() {
    let mut h = start(TunnelLimits {
        ping_interval: Duration::from_secs(5),
        ..limits()
    });
    for _ in 0..5 {
        assert_eq!(h.client.next().await, Got::Ping);
        h.client
            .send(&frame::encode(OpCode::Pong, b"sb-ka:1", MASK))
            .await;
    }
    h.client
        .send(&frame::encode(OpCode::Text, b"still here", MASK))
        .await;
    assert!(
        matches!(h.upstream.next().await, Got::Data(_)),
        "the app sees data, never our pongs"
    );
}

#[tokio::test(start_paused = true)]
async fn an_app_that_stops_answering_pings_gets_the_client_closed_with_1011() {
    let mut h = start(TunnelLimits {
        app_ping_interval: Duration::from_secs(5),
        app_pong_timeout: Duration::from_secs(2),
        ..limits()
    });
    assert_eq!(h.upstream.next().await, Got::Ping);
    h.upstream
        .send(&frame::encode(OpCode::Pong, b"sb-ka:1", None))
        .await;
    // Answered: the next ping comes, and this time the app stays silent.
    assert_eq!(h.upstream.next().await, Got::Ping);
    assert_eq!(
        h.client.next().await,
        Got::Close(Some(1011)),
        "the client hears of the hung app (and never sees the gateway's pongs)"
    );
    h.client.send(&frame::close_frame(1011, "", MASK)).await;
    let answered = Instant::now();
    assert_eq!(h.client.next().await, Got::Eof);
    assert!(
        answered.elapsed() < limits().close_timeout,
        "the client's stream ends with its handshake, not when the hung app gives up"
    );
    let out = h.task.await.expect("tunnel task");
    assert_eq!(out.cause, CloseCause::UpstreamPongTimeout);
    assert_eq!(out.cause.label(), "upstream_pong_timeout");
}

#[tokio::test(start_paused = true)]
async fn an_app_answering_pings_stays_open_and_the_client_keepalive_is_separate() {
    let mut h = start(TunnelLimits {
        app_ping_interval: Duration::from_secs(5),
        app_pong_timeout: Duration::from_secs(2),
        ..limits()
    });
    for _ in 0..5 {
        assert_eq!(h.upstream.next().await, Got::Ping);
        h.upstream
            .send(&frame::encode(OpCode::Pong, b"sb-ka:1", None))
            .await;
    }
    h.upstream
        .send(&frame::encode(OpCode::Text, b"still here", None))
        .await;
    assert_eq!(
        h.client.next().await,
        Got::Data(b"still here".to_vec()),
        "the client sees data, never the app's answers to our pings"
    );
}

#[tokio::test]
async fn an_app_connection_reset_tells_the_client_1011_and_is_recorded_as_upstream_gone() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app_gw = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (app, _) = listener.accept().await.expect("accept");
    let (client_test, client_gw) = tokio::io::duplex(64 * 1024);
    let drain_rx = CloseSignal::default();
    let task = tokio::spawn(run(
        client_gw,
        app_gw,
        limits(),
        counters(),
        counters(),
        drain_rx,
        tokio::time::sleep_until,
    ));
    // The app pod dies: its kernel answers with a reset, no Close frame.
    app.set_zero_linger().expect("SO_LINGER 0");
    drop(app);
    let mut client = reader(client_test, Sender::Server);
    assert_eq!(client.next().await, Got::Close(Some(1011)));
    client.send(&frame::close_frame(1011, "", MASK)).await;
    let out = task.await.expect("tunnel task");
    assert_eq!(
        (out.cause.code(), out.cause.label()),
        (1011, "upstream_gone"),
        "recorded as what the client got"
    );
}

#[tokio::test]
async fn an_app_that_ends_its_stream_without_a_close_frame_is_mirrored_to_the_client() {
    let mut h = start(limits());
    drop(h.upstream);
    assert_eq!(
        h.client.next().await,
        Got::Eof,
        "no close frame invented for a clean end"
    );
    drop(h.client);
    let out = h.task.await.expect("tunnel task");
    assert_eq!(out.cause, CloseCause::Abnormal(Side::Upstream));
}

#[tokio::test]
async fn a_protocol_error_closes_both_sides_with_1002() {
    let mut h = start(limits());
    h.client
        .send(&frame::encode(OpCode::Text, b"unmasked", None))
        .await;
    assert_eq!(h.upstream.next().await, Got::Close(Some(1002)));
    assert_eq!(h.client.next().await, Got::Close(Some(1002)));
    assert_eq!(
        h.client.next().await,
        Got::Eof,
        "the connection is failed, not left waiting for a reply"
    );
    assert_eq!(h.upstream.next().await, Got::Eof);
    let out = h.task.await.expect("tunnel task");
    assert_eq!(out.cause, CloseCause::ProtocolError);
}

/// A tunnel over pipes of `client_buf` and `app_buf` bytes (small pipes make writes wait).
fn start_with_pipes(l: TunnelLimits, client_buf: usize, app_buf: usize) -> Harness {
    let (client_test, client_gw) = tokio::io::duplex(client_buf);
    let (up_test, up_gw) = tokio::io::duplex(app_buf);
    let drain = CloseSignal::default();
    let drain_rx = drain.clone();
    let task = tokio::spawn(run(
        client_gw,
        up_gw,
        l,
        counters(),
        counters(),
        drain_rx,
        tokio::time::sleep_until,
    ));
    Harness {
        // The test's client end reads what the gateway sends to clients (server frames).
        client: reader(client_test, Sender::Server),
        upstream: reader(up_test, Sender::Client),
        drain,
        task,
    }
}

#[tokio::test(start_paused = true)]
async fn frames_split_across_reads_reach_the_app_byte_for_byte_with_the_client_mask() {
    let mut h = start(limits());
    // A fragmented message with a ping between its fragments.
    let mut first = frame::encode(OpCode::Text, b"hel", MASK);
    first[0] &= 0x7F;
    let mut sent = first;
    sent.extend_from_slice(&frame::encode(OpCode::Ping, b"p", MASK));
    sent.extend_from_slice(&frame::encode(OpCode::Continuation, b"lo", MASK));
    for b in &sent {
        h.client.send(&[*b]).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut got = vec![0u8; sent.len()];
    tokio::time::timeout(Duration::from_secs(5), h.upstream.io.read_exact(&mut got))
        .await
        .expect("every byte arrives")
        .expect("read");
    assert_eq!(
        got, sent,
        "headers, mask and payload as the client sent them"
    );
}

#[tokio::test]
async fn an_app_slower_than_the_client_gets_every_byte_in_order() {
    // The app's pipe holds 64 bytes: most writes toward it wait and what is left over is
    // kept until it reads.
    let mut h = start_with_pipes(
        TunnelLimits {
            messages_per_second: 10_000,
            message_burst: 10_000,
            ..limits()
        },
        64 * 1024,
        64,
    );
    let mut sent = Vec::new();
    for i in 0..200u8 {
        sent.extend_from_slice(&frame::encode(OpCode::Binary, &[i; 100], MASK));
    }
    let writer = tokio::spawn(async move {
        h.client.send(&sent).await;
        (h.client, sent)
    });
    let mut got = Vec::new();
    let mut chunk = [0u8; 37];
    while got.len() < 200 * 106 {
        let n = h.upstream.io.read(&mut chunk).await.expect("read");
        assert!(n > 0, "the stream ended early");
        got.extend_from_slice(&chunk[..n]);
    }
    let (_client, sent) = writer.await.expect("writer");
    assert_eq!(got, sent);
}

#[tokio::test(start_paused = true)]
async fn a_close_that_starts_while_a_client_frame_is_half_relayed_follows_the_rest_of_that_frame() {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut h = start(TunnelLimits {
        expires_at: Some(deadline),
        ..limits()
    });
    let message = frame::encode(OpCode::Binary, &[9u8; 500], MASK);
    let (head, tail) = message.split_at(200);
    h.client.send(head).await;
    tokio::time::sleep_until(deadline + Duration::from_millis(1)).await;
    assert_eq!(
        h.client.next().await,
        Got::Close(Some(4001)),
        "the client is closed at once"
    );
    h.client.send(tail).await;
    assert_eq!(
        h.upstream.next().await,
        Got::Data(masked(&[9u8; 500])),
        "the app gets the whole frame"
    );
    assert_eq!(
        h.upstream.next().await,
        Got::Close(Some(4001)),
        "then the Close"
    );
}

/// Frames of every kind the relay forwards: short and 16-bit lengths, a fragmented message
/// with a ping inside, an empty frame, a foreign pong.
fn mixed_frames(mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = frame::encode(OpCode::Text, b"short", mask);
    out.extend_from_slice(&frame::encode(OpCode::Binary, &[3u8; 300], mask));
    let mut first = frame::encode(OpCode::Text, b"frag", mask);
    first[0] &= 0x7F;
    out.extend_from_slice(&first);
    out.extend_from_slice(&frame::encode(OpCode::Ping, b"are you there", mask));
    let mut empty = frame::encode(OpCode::Continuation, b"", mask);
    empty[0] &= 0x7F;
    out.extend_from_slice(&empty);
    out.extend_from_slice(&frame::encode(OpCode::Continuation, b"mented", mask));
    out.extend_from_slice(&frame::encode(OpCode::Pong, b"not ours", mask));
    out.extend_from_slice(&frame::encode(OpCode::Binary, b"", mask));
    out
}

#[tokio::test(start_paused = true)]
async fn every_split_of_the_input_is_relayed_byte_for_byte_both_ways() {
    for chunk in [1, 2, 3, 5, 7, 13, 64, 127, 300, 4096] {
        let mut h = start(limits());
        for (sent, from_client) in [(mixed_frames(MASK), true), (mixed_frames(None), false)] {
            let (src, dst) = if from_client {
                (&mut h.client, &mut h.upstream)
            } else {
                (&mut h.upstream, &mut h.client)
            };
            for piece in sent.chunks(chunk) {
                src.send(piece).await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let mut got = vec![0u8; sent.len()];
            tokio::time::timeout(Duration::from_secs(5), dst.io.read_exact(&mut got))
                .await
                .expect("every byte arrives")
                .expect("read");
            assert_eq!(
                got, sent,
                "chunks of {chunk}, from the client: {from_client}"
            );
        }
    }
}

mod compression;

/// The future a tunnel's task holds while it idles: the tunnel (streams, directions, limits,
/// deadlines), its one timer and the drain waiter, and no second copy of what the tunnel was
/// built from (an `async fn`'s arguments stay in its future beside what is made of them).
#[tokio::test]
async fn an_idle_tunnel_future_holds_its_streams_and_limits_once() {
    let (client_gw, _client) = tokio::io::duplex(64);
    let (up_gw, _up) = tokio::io::duplex(64);
    let drain_rx = CloseSignal::default();
    let drain_parts =
        std::mem::size_of::<CloseSignal>() + std::mem::size_of_val(&drain_rx.clone().closed());
    let future = run(
        client_gw,
        up_gw,
        limits(),
        counters(),
        counters(),
        drain_rx,
        tokio::time::sleep_until,
    );
    let tunnel = std::mem::size_of::<Tunnel<DuplexStream, DuplexStream>>();
    let parts = tunnel + std::mem::size_of::<Sleep>() + drain_parts;
    let size = std::mem::size_of_val(&future);
    // Slack for the loop's flags and the poll closure's references; less than the limits a
    // second copy would add.
    let slack = 96;
    assert!(slack < std::mem::size_of::<TunnelLimits>());
    assert!(
        size <= parts + slack,
        "the tunnel future is {size} B for {parts} B of parts (tunnel {tunnel} B)"
    );
}
