//! The session loop over an in-memory pipe under paused time: keep-alive, expiry, drain, the
//! close handshake and slow consumers, with the rooms outbox as the queue.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

use super::*;
use crate::engine::frame::{self, Event, OpCode, Scanner, Sender};
use crate::rooms::outbox::{Item, Outbox};

const M: Option<[u8; 4]> = Some([1, 2, 3, 4]);

/// Echoes text messages through its outbox; counts drains; keeps what it is given while
/// closing.
struct Echo {
    outbox: Arc<Outbox>,
    drained: usize,
    while_closing: Vec<(CloseCause, String)>,
}

impl Handler for Echo {
    type Queue = Outbox;

    fn queue(&self) -> &Outbox {
        &self.outbox
    }

    fn frames(
        &mut self,
        items: Vec<Item>,
        deflate: Option<&Deflate>,
        out: &mut Vec<Frame>,
    ) -> Option<CloseCause> {
        for i in items {
            if let Item::Reply(r) = i {
                out.push(Frame::message(true, Bytes::from(r), deflate));
            }
        }
        None
    }
    async fn message(&mut self, msg: Message) -> Option<CloseCause> {
        match msg {
            Message::Text(t) if t == "quit" => Some(CloseCause::PublishForbidden),
            Message::Text(t) => {
                self.outbox.push(Item::Reply(t));
                None
            }
            _ => None,
        }
    }
    fn draining(&mut self) {
        self.drained += 1;
        self.outbox.push(Item::Reply("bye".into()));
    }
    async fn closing_message(&mut self, cause: &CloseCause, msg: Message) {
        if let Message::Text(t) = msg {
            self.while_closing.push((cause.clone(), t));
        }
    }
}

/// The route's drain close (routes hold theirs for all their connections).
static DRAIN_CLOSE: std::sync::LazyLock<CloseCause> =
    std::sync::LazyLock::new(|| CloseCause::Draining {
        code: 1001,
        reason: "server draining, reconnect".into(),
    });

struct Setup {
    conn: Conn<DuplexStream>,
    life: Lifecycle<'static>,
    echo: Echo,
    drain: CloseSignal,
}

fn setup(pipe: usize, ping: Duration, expires: Option<Duration>) -> (Setup, DuplexStream) {
    let (server, client) = duplex(pipe);
    let drain = CloseSignal::default();
    let s = Setup {
        conn: Conn::new(server, 1 << 20, None),
        life: Lifecycle {
            ping_interval: ping,
            pong_timeout: Duration::from_secs(10),
            expires_at: expires.map(|d| Instant::now() + d),
            drain: drain.clone(),
            drain_close: &DRAIN_CLOSE,
            drain_window: Duration::from_secs(1),
        },
        echo: Echo {
            outbox: Outbox::new(4096),
            drained: 0,
            while_closing: Vec::new(),
        },
        drain,
    };
    (s, client)
}

/// Frames the client reads until the gateway's Close (included), as (opcode, payload).
async fn read_until_close(client: &mut DuplexStream) -> Vec<(OpCode, Vec<u8>)> {
    let mut s = Scanner::new(Sender::Server, u64::MAX);
    let mut out = Vec::new();
    let mut cur: Option<(OpCode, Vec<u8>)> = None;
    let mut buf = vec![0u8; 8192];
    loop {
        let n = client.read(&mut buf).await.unwrap();
        assert!(n > 0, "the pipe ended before a Close: {out:?}");
        let mut pos = 0;
        while let Some(ev) = s.next(&buf[..n], &mut pos).unwrap() {
            match ev {
                Event::Header(h) => {
                    cur = Some((h.opcode, Vec::new()));
                    if h.payload_len == 0 {
                        out.extend(cur.take());
                    }
                }
                Event::Payload(p) => {
                    if let Some((_, d)) = cur.as_mut() {
                        d.extend_from_slice(p);
                    }
                    if s.at_boundary() {
                        out.extend(cur.take());
                    }
                }
                Event::Control(c) => {
                    let close = c.opcode == OpCode::Close;
                    out.push((c.opcode, c.payload));
                    if close {
                        return out;
                    }
                }
            }
        }
    }
}

fn close_code(payload: &[u8]) -> u16 {
    u16::from_be_bytes([payload[0], payload[1]])
}

#[tokio::test(start_paused = true)]
async fn messages_are_answered_through_the_queue_and_a_client_close_is_echoed() {
    let (mut s, mut client) = setup(1 << 16, Duration::ZERO, None);
    let task = tokio::spawn(async move {
        let cause = run(&mut s.conn, &mut s.life, &mut s.echo).await;
        (cause, s)
    });
    client
        .write_all(&frame::encode(OpCode::Text, b"hi", M))
        .await
        .unwrap();
    client
        .write_all(&frame::close_frame(1000, "", M))
        .await
        .unwrap();
    let frames = read_until_close(&mut client).await;
    assert_eq!(frames[0], (OpCode::Text, b"hi".to_vec()));
    assert_eq!(close_code(&frames[1].1), 1000);
    let (cause, _) = task.await.unwrap();
    assert_eq!(cause, CloseCause::Peer(Side::Downstream, 1000));
}

#[tokio::test(start_paused = true)]
async fn a_client_that_does_not_answer_pings_is_closed_1001_after_the_timeout() {
    let (mut s, mut client) = setup(1 << 16, Duration::from_secs(30), None);
    let task = tokio::spawn(async move { run(&mut s.conn, &mut s.life, &mut s.echo).await });
    let frames = read_until_close(&mut client).await;
    assert_eq!(frames[0], (OpCode::Ping, b"sb".to_vec()));
    let (op, payload) = frames.last().unwrap();
    assert_eq!((*op, close_code(payload)), (OpCode::Close, 1001));
    assert_eq!(task.await.unwrap(), CloseCause::PongTimeout);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_answers_pings_stays_open() {
    let (mut s, mut client) = setup(1 << 16, Duration::from_secs(30), None);
    let task = tokio::spawn(async move { run(&mut s.conn, &mut s.life, &mut s.echo).await });
    let mut s2 = Scanner::new(Sender::Server, u64::MAX);
    let mut buf = vec![0u8; 1024];
    for _ in 0..5 {
        let n = client.read(&mut buf).await.unwrap();
        let mut pos = 0;
        match s2.next(&buf[..n], &mut pos).unwrap() {
            Some(Event::Control(c)) if c.opcode == OpCode::Ping => {}
            other => panic!("a ping, got {other:?}"),
        }
        client
            .write_all(&frame::encode(OpCode::Pong, b"sb", M))
            .await
            .unwrap();
    }
    assert!(!task.is_finished(), "five pings answered: still open");
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_closes_4001_and_waits_for_the_clients_close() {
    let (mut s, mut client) = setup(1 << 16, Duration::ZERO, Some(Duration::from_secs(60)));
    let task = tokio::spawn(async move { run(&mut s.conn, &mut s.life, &mut s.echo).await });
    let frames = read_until_close(&mut client).await;
    assert_eq!(close_code(&frames[0].1), 4001);
    assert!(!task.is_finished());
    client
        .write_all(&frame::close_frame(4001, "", M))
        .await
        .unwrap();
    assert_eq!(task.await.unwrap(), CloseCause::TokenExpired);
}

#[tokio::test(start_paused = true)]
async fn a_close_that_is_not_answered_ends_after_the_close_wait() {
    let (mut s, mut client) = setup(1 << 16, Duration::ZERO, Some(Duration::from_secs(1)));
    let task = tokio::spawn(async move { run(&mut s.conn, &mut s.life, &mut s.echo).await });
    let _ = read_until_close(&mut client).await;
    tokio::time::sleep(CLOSE_WAIT + Duration::from_millis(10)).await;
    assert_eq!(task.await.unwrap(), CloseCause::TokenExpired);
}

#[tokio::test(start_paused = true)]
async fn the_drain_says_goodbye_then_closes_with_the_routes_code() {
    let (mut s, mut client) = setup(1 << 16, Duration::ZERO, None);
    let drain = s.drain.clone();
    let task = tokio::spawn(async move {
        let cause = run(&mut s.conn, &mut s.life, &mut s.echo).await;
        (cause, s.echo.drained)
    });
    tokio::task::yield_now().await;
    drain.close();
    let frames = read_until_close(&mut client).await;
    assert_eq!(frames[0], (OpCode::Text, b"bye".to_vec()));
    assert_eq!(close_code(&frames[1].1), 1001);
    client
        .write_all(&frame::close_frame(1001, "", M))
        .await
        .unwrap();
    let (cause, drained) = task.await.unwrap();
    assert_eq!(drained, 1);
    assert!(matches!(cause, CloseCause::Draining { code: 1001, .. }));
}

#[tokio::test(start_paused = true)]
async fn a_handler_close_is_sent_after_the_replies_queued_before_it() {
    let (mut s, mut client) = setup(1 << 16, Duration::ZERO, None);
    let task = tokio::spawn(async move { run(&mut s.conn, &mut s.life, &mut s.echo).await });
    let mut burst = frame::encode(OpCode::Text, b"one", M);
    burst.extend(frame::encode(OpCode::Text, b"quit", M));
    client.write_all(&burst).await.unwrap();
    let frames = read_until_close(&mut client).await;
    assert_eq!(frames[0], (OpCode::Text, b"one".to_vec()));
    assert_eq!(close_code(&frames[1].1), 1008);
    client
        .write_all(&frame::close_frame(1008, "", M))
        .await
        .unwrap();
    assert_eq!(task.await.unwrap(), CloseCause::PublishForbidden);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_closed_as_a_slow_consumer() {
    // A 64-byte pipe the client never reads: the first batch blocks the socket, the outbox
    // (4 KiB) fills behind it and overflows.
    let (mut s, _client_not_reading) = setup(64, Duration::ZERO, None);
    let outbox = s.echo.outbox.clone();
    let task = tokio::spawn(async move { run(&mut s.conn, &mut s.life, &mut s.echo).await });
    for _ in 0..100 {
        outbox.push(Item::Reply("x".repeat(200)));
        tokio::task::yield_now().await;
    }
    assert_eq!(task.await.unwrap(), CloseCause::SlowConsumer);
}

#[tokio::test(start_paused = true)]
async fn a_protocol_error_closes_1002_without_waiting() {
    let (mut s, mut client) = setup(1 << 16, Duration::ZERO, None);
    let task = tokio::spawn(async move { run(&mut s.conn, &mut s.life, &mut s.echo).await });
    client
        .write_all(&frame::encode(OpCode::Text, b"unmasked", None))
        .await
        .unwrap();
    let frames = read_until_close(&mut client).await;
    assert_eq!(close_code(&frames[0].1), 1002);
    assert_eq!(task.await.unwrap(), CloseCause::ProtocolError);
}

#[tokio::test(start_paused = true)]
async fn a_client_gone_without_a_close_is_abnormal() {
    let (mut s, client) = setup(1 << 16, Duration::ZERO, None);
    let task = tokio::spawn(async move { run(&mut s.conn, &mut s.life, &mut s.echo).await });
    drop(client);
    assert_eq!(task.await.unwrap(), CloseCause::Abnormal(Side::Downstream));
}

/// A peer that never stops sending pings, as fast as the reader takes them, and takes whatever
/// is written (like a real socket, each read spends the task's cooperative budget). Records
/// the code of the gateway's Close.
struct PingFlood {
    pings: Vec<u8>,
    written: Scanner,
    close: Arc<std::sync::Mutex<Option<u16>>>,
}

impl tokio::io::AsyncRead for PingFlood {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        coop.made_progress();
        // A few dozen pings a read (a real socket returns what arrived): each poll of the
        // session stays short even in a debug build on a loaded machine.
        let one = self.pings.len() / 2000;
        let n = (buf.remaining() / one).min(64) * one;
        buf.put_slice(&self.pings[..n]);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for PingFlood {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        b: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut pos = 0;
        while let Ok(Some(ev)) = self.written.next(b, &mut pos) {
            if let Event::Control(c) = ev
                && c.opcode == OpCode::Close
            {
                *self.close.lock().unwrap() = Some(close_code(&c.payload));
            }
        }
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A peer that keeps the socket readable (a flood of pings, answered inside the connection
/// core and never rate limited) must not starve the timers: its token still expires.
#[tokio::test]
async fn a_client_flooding_pings_is_still_closed_when_its_token_expires() {
    let close = Arc::new(std::sync::Mutex::new(None));
    let flood = PingFlood {
        pings: (0..2000)
            .flat_map(|_| frame::encode(OpCode::Ping, b"x", M))
            .collect(),
        written: Scanner::new(Sender::Server, u64::MAX),
        close: close.clone(),
    };
    let (mut s, _client) = setup(1024, Duration::ZERO, Some(Duration::from_millis(100)));
    let mut conn = Conn::new(flood, 1 << 20, None);
    let task = tokio::spawn(async move { run(&mut conn, &mut s.life, &mut s.echo).await });
    // Real time (the flood never lets the session wait): the token expired after 100 ms; a
    // starved timer would never close it, so waiting long is only slow when broken.
    let started = std::time::Instant::now();
    while close.lock().unwrap().is_none() && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    assert_eq!(
        *close.lock().unwrap(),
        Some(4001),
        "the token expired 100 ms in while the client flooded pings; waited {:?}",
        started.elapsed()
    );
}

/// Hands each message to another task (as a publish hands it to the bus's task) and queues a
/// reply to it from its own task, logging when each happens; writes replies as [`Echo`] does.
struct HandsOff {
    echo: Echo,
    to_bus: tokio::sync::mpsc::UnboundedSender<String>,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Handler for HandsOff {
    type Queue = Outbox;

    fn queue(&self) -> &Outbox {
        self.echo.queue()
    }

    fn frames(
        &mut self,
        items: Vec<Item>,
        deflate: Option<&Deflate>,
        out: &mut Vec<Frame>,
    ) -> Option<CloseCause> {
        let mut log = self.log.lock().unwrap();
        log.extend(items.iter().filter_map(|i| match i {
            Item::Reply(r) => Some(format!("reply {r}")),
            _ => None,
        }));
        self.echo.frames(items, deflate, out)
    }

    async fn message(&mut self, msg: Message) -> Option<CloseCause> {
        if let Message::Text(t) = msg {
            let _ = self.to_bus.send(t.to_string());
            self.echo.outbox.push_own(Item::Reply(format!("ack {t}")));
        }
        None
    }
}

/// Runs a [`HandsOff`] session on a pipe: `input` (whole frames) in one write, then, once it
/// was handled, a Close (read together with the messages, it would be one more message
/// waiting). Returns the frames the session wrote and its log.
async fn hand_off(input: &[u8]) -> (Vec<(OpCode, Vec<u8>)>, Vec<String>) {
    let (mut s, mut client) = setup(1 << 16, Duration::ZERO, None);
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (to_bus, mut bus) = tokio::sync::mpsc::unbounded_channel::<String>();
    let bus_log = log.clone();
    tokio::spawn(async move {
        while let Some(m) = bus.recv().await {
            bus_log.lock().unwrap().push(format!("bus {m}"));
        }
    });
    let mut h = HandsOff {
        echo: s.echo,
        to_bus,
        log: log.clone(),
    };
    tokio::spawn(async move { run(&mut s.conn, &mut s.life, &mut h).await });
    client.write_all(input).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    client
        .write_all(&frame::close_frame(1000, "", M))
        .await
        .unwrap();
    let frames = read_until_close(&mut client).await;
    let log = log.lock().unwrap().clone();
    (frames, log)
}

#[tokio::test(start_paused = true)]
async fn a_messages_reply_is_written_after_the_task_it_handed_the_message_to_has_run() {
    let (frames, log) = hand_off(&frame::encode(OpCode::Text, b"m1", M)).await;
    assert_eq!(frames[0], (OpCode::Text, b"ack m1".to_vec()));
    // The message leaves (the bus writes it) before its ack does: one message in flight
    // crosses the pods without waiting for the ack's write.
    assert_eq!(log, ["bus m1", "reply ack m1"]);
}

#[tokio::test(start_paused = true)]
async fn a_burst_is_handled_without_yielding_and_only_its_last_reply_waits_for_the_woken_tasks() {
    // Both messages arrive in one read: the second is handled at once (a publisher's burst
    // is fanned out as a batch, not one message per turn of the worker); only after the last
    // one read does the loop let the tasks they woke go first.
    let mut burst = frame::encode(OpCode::Text, b"m1", M);
    burst.extend_from_slice(&frame::encode(OpCode::Text, b"m2", M));
    let (frames, log) = hand_off(&burst).await;
    assert_eq!(frames[0], (OpCode::Text, b"ack m1".to_vec()));
    assert_eq!(frames[1], (OpCode::Text, b"ack m2".to_vec()));
    assert_eq!(log, ["reply ack m1", "bus m1", "bus m2", "reply ack m2"]);
}

#[tokio::test(start_paused = true)]
async fn messages_the_peer_sent_before_it_saw_our_close_reach_the_handler_and_are_not_answered() {
    // They were dropped unread: a document editor's edits in flight when its store failed
    // (closed 1013) were lost if it then went away instead of reconnecting.
    let (mut s, mut client) = setup(1 << 16, Duration::ZERO, None);
    let task = tokio::spawn(async move {
        let cause = run(&mut s.conn, &mut s.life, &mut s.echo).await;
        (cause, s)
    });
    for text in ["quit", "late-1", "late-2"] {
        client
            .write_all(&frame::encode(OpCode::Text, text.as_bytes(), M))
            .await
            .unwrap();
    }
    let frames = read_until_close(&mut client).await;
    assert_eq!(frames.len(), 1, "nothing but the Close: {frames:?}");
    client
        .write_all(&frame::close_frame(1000, "", M))
        .await
        .unwrap();
    let (cause, s) = task.await.unwrap();
    assert_eq!(cause, CloseCause::PublishForbidden);
    assert_eq!(
        s.echo.while_closing,
        [
            (CloseCause::PublishForbidden, "late-1".to_string()),
            (CloseCause::PublishForbidden, "late-2".to_string())
        ]
    );
}
