//! One `y-websocket` editor's WebSocket on a `yjs` rooms route: binary y-protocols messages
//! in, the replica's sync/update/awareness messages out through a bounded outbox.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::Documents;
use crate::error::{CloseCause, Side};
use crate::rooms::outbox::{Item, Outbox};
use crate::rooms::session::{SessionCtx, ws_config};
use crate::tunnel::bucket::TokenBucket;

/// How long a closing connection gets for its Close to be written and answered.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

enum Ctl {
    Close(CloseCause),
    Ping,
}

fn close_frame(cause: &CloseCause) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(cause.code()),
        reason: cause.reason().to_string().into(),
    }
}

fn to_message(item: Item) -> Option<Message> {
    match item {
        Item::RawBinary(b) => Some(Message::binary(b)),
        _ => None,
    }
}

/// Serve one editor until its connection ends; returns why it ended.
pub async fn run(io: Upgraded, ctx: SessionCtx, docs: Arc<Documents>) -> CloseCause {
    let ws = WebSocketStream::from_raw_socket(
        TokioIo::new(io),
        Role::Server,
        Some(ws_config(ctx.limits.max_message_bytes)),
    )
    .await;
    let (mut sink, mut stream) = ws.split();
    let cfg = ctx.policy.cfg.documents.clone().unwrap_or_default();
    let room = ctx.raw_room.clone().unwrap_or_default();
    let key = ctx.policy.key(&room);
    let replica = match docs.open(&key, &cfg).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(document = %room, error = %e, "document unavailable");
            let cause = CloseCause::BusUnavailable;
            let _ = tokio::time::timeout(
                CLOSE_WAIT,
                sink.send(Message::Close(Some(close_frame(&cause)))),
            )
            .await;
            return cause;
        }
    };
    let may_write = ctx.policy.may_publish(&room, ctx.claims.as_ref());
    let outbox = Outbox::new(ctx.policy.cfg.max_queue_bytes);
    replica.attach(&ctx.conn_id, outbox.clone());

    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Ctl>(4);
    let writer_outbox = outbox.clone();
    let writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                ctl = ctl_rx.recv() => match ctl {
                    Some(Ctl::Ping) => {
                        if sink.send(Message::Ping(Vec::from(&b"sb"[..]).into())).await.is_err() {
                            return None;
                        }
                    }
                    Some(Ctl::Close(cause)) => {
                        let _ = tokio::time::timeout(CLOSE_WAIT, async {
                            let queued = futures_util::FutureExt::now_or_never(writer_outbox.take_all()).unwrap_or_default();
                            for m in queued.into_iter().filter_map(to_message) {
                                let _ = sink.feed(m).await;
                            }
                            let _ = sink.send(Message::Close(Some(close_frame(&cause)))).await;
                        })
                        .await;
                        return Some(cause);
                    }
                    None => return None,
                },
                items = writer_outbox.take_all() => {
                    if items.is_empty() {
                        if writer_outbox.is_overflowed() {
                            return Some(close_slow(&mut sink).await);
                        }
                        return None;
                    }
                    tokio::select! {
                        written = async {
                            for m in items.into_iter().filter_map(to_message) {
                                sink.feed(m).await?;
                            }
                            sink.flush().await
                        } => if written.is_err() {
                            return None;
                        },
                        _ = writer_outbox.overflowed() => {
                            return Some(close_slow(&mut sink).await);
                        }
                    }
                }
            }
        }
    });

    let cause = read_loop(&ctx, &replica, &ctl_tx, &mut stream, may_write).await;
    replica.detach(&ctx.conn_id).await;
    docs.close(&replica, cfg.idle_unload);
    outbox.close();
    drop(ctl_tx);
    let written = writer.await.ok().flatten();
    written.unwrap_or(cause)
}

async fn close_slow<S>(sink: &mut S) -> CloseCause
where
    S: futures_util::Sink<Message> + Unpin,
{
    let cause = CloseCause::SlowConsumer;
    let close = Message::Close(Some(close_frame(&cause)));
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.send(close)).await;
    cause
}

async fn read_loop<S>(
    ctx: &SessionCtx,
    replica: &Arc<super::replica::Replica>,
    ctl: &mpsc::Sender<Ctl>,
    stream: &mut S,
    may_write: bool,
) -> CloseCause
where
    S: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
{
    let far = Instant::now() + Duration::from_secs(86400 * 365);
    let mut bucket = TokenBucket::new(
        ctx.limits.messages_per_second,
        ctx.limits.message_burst,
        std::time::Instant::now(),
    );
    let ka = ctx.keepalive.clone();
    let mut ping_at = if ka.interval.is_zero() {
        far
    } else {
        Instant::now() + ka.interval
    };
    let mut pong_deadline = far;
    let expiry = ctx.expires_at.unwrap_or(far);
    let mut drain = ctx.drain.clone();
    let mut drain_at = if *drain.borrow() { Instant::now() } else { far };
    let mut drain_seen = drain_at != far;
    let mut closing: Option<(CloseCause, Instant)> = None;
    let close = |cause: CloseCause| {
        let ctl = ctl.clone();
        async move {
            let _ = ctl.send(Ctl::Close(cause.clone())).await;
            (cause, Instant::now() + CLOSE_WAIT)
        }
    };

    loop {
        let close_deadline = closing.as_ref().map_or(far, |(_, t)| *t);
        tokio::select! {
            msg = stream.next() => {
                let msg = match msg {
                    None => return closing.map_or(CloseCause::Abnormal(Side::Downstream), |(c, _)| c),
                    Some(Err(e)) => {
                        let cause = match e {
                            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                                return CloseCause::Abnormal(Side::Downstream);
                            }
                            WsError::Capacity(CapacityError::MessageTooLong { size, .. })
                                if (size as u64) >> 63 != 0 => CloseCause::ProtocolError,
                            WsError::Capacity(_) => CloseCause::MessageTooBig,
                            WsError::Protocol(_) => CloseCause::ProtocolError,
                            WsError::Utf8(_) => CloseCause::InvalidUtf8,
                            _ => return CloseCause::Abnormal(Side::Downstream),
                        };
                        return close(cause).await.0;
                    }
                    Some(Ok(m)) => m,
                };
                if closing.is_some() {
                    continue;
                }
                match msg {
                    Message::Pong(_) => pong_deadline = far,
                    Message::Ping(_) | Message::Frame(_) | Message::Text(_) => {}
                    Message::Close(frame) => {
                        let code = frame.map_or(1005, |f| u16::from(f.code));
                        while stream.next().await.is_some() {}
                        return CloseCause::Peer(Side::Downstream, code);
                    }
                    Message::Binary(b) => {
                        if !bucket.try_take(std::time::Instant::now()) {
                            closing = Some(close(CloseCause::RateLimited).await);
                            continue;
                        }
                        if let Err(cause) = replica.handle(&ctx.conn_id, &b, may_write).await {
                            closing = Some(close(cause).await);
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(ping_at), if closing.is_none() => {
                let _ = ctl.try_send(Ctl::Ping);
                if pong_deadline == far {
                    pong_deadline = Instant::now() + ka.timeout;
                }
                ping_at = Instant::now() + ka.interval;
            }
            _ = tokio::time::sleep_until(pong_deadline), if closing.is_none() => {
                return close(CloseCause::PongTimeout).await.0;
            }
            _ = tokio::time::sleep_until(expiry), if closing.is_none() => {
                closing = Some(close(CloseCause::TokenExpired).await);
            }
            changed = drain.changed(), if !drain_seen => {
                if changed.is_err() || *drain.borrow() {
                    drain_seen = true;
                    drain_at = Instant::now() + crate::drain::jitter(ctx.drain_window);
                }
            }
            // Every update read so far is stored (each is appended before the next is read):
            // the editor reconnects elsewhere and resyncs from the stored document.
            _ = tokio::time::sleep_until(drain_at), if closing.is_none() => {
                let c = CloseCause::Draining { code: ctx.drain_code, reason: ctx.drain_reason.clone() };
                closing = Some(close(c).await);
            }
            _ = ctl.closed(), if closing.is_none() => {
                closing = Some((CloseCause::Abnormal(Side::Downstream), Instant::now() + CLOSE_WAIT));
            }
            _ = tokio::time::sleep_until(close_deadline) => {
                return closing.map_or(CloseCause::Abnormal(Side::Downstream), |(c, _)| c);
            }
        }
    }
}
