//! One `y-websocket` editor's WebSocket on a `yjs` rooms route: binary y-protocols messages
//! in, the replica's sync/update/awareness messages out through a bounded outbox, on the
//! engine's connection core ([`crate::engine::session`]).

use std::sync::Arc;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Documents;
use super::replica::Replica;
use crate::engine::conn::{Conn, Frame, Message};
use crate::engine::deflate::Deflate;
use crate::engine::session::{self as engine_session, CLOSE_WAIT, Handler};
use crate::error::CloseCause;
use crate::rooms::outbox::{Item, Outbox};
use crate::rooms::session::SessionCtx;

/// Serve one editor until its connection ends; returns why it ended.
pub async fn run(io: Upgraded, ctx: SessionCtx, docs: Arc<Documents>) -> CloseCause {
    let conn = ctx.conn(TokioIo::new(io));
    run_on(conn, ctx, docs).await
}

/// Serve one editor on any byte stream (the 101 already sent).
pub async fn run_on<S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: Conn<S>,
    ctx: SessionCtx,
    docs: Arc<Documents>,
) -> CloseCause {
    let cfg = ctx.policy.cfg.documents.clone().unwrap_or_default();
    let room = ctx.raw_room.clone().unwrap_or_default();
    let key = ctx.policy.key(&room);
    let replica = match docs.open(&key, &cfg).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(document = %room, error = %e, "document unavailable");
            let cause = CloseCause::BusUnavailable;
            conn.close_with(&cause);
            let _ = tokio::time::timeout(CLOSE_WAIT, conn.flush()).await;
            return cause;
        }
    };
    let may_write = ctx.policy.may_publish(&room, ctx.claims.as_deref());
    let outbox = Outbox::new(ctx.policy.cfg.max_queue_bytes);
    let user = ctx.claims.as_deref().and_then(|c| c.sub.as_deref());
    replica.attach(&ctx.conn_id, user, outbox.clone());
    let policy = ctx.policy.clone();
    let mut life = ctx.lifecycle(&policy.conn);
    let mut editor = Editor {
        ctx,
        replica: replica.clone(),
        outbox: outbox.clone(),
        may_write,
    };
    let cause = engine_session::run(&mut conn, &mut life, &mut editor).await;
    replica.detach(&editor.ctx.conn_id).await;
    docs.close(&replica, cfg.idle_unload);
    outbox.close();
    cause
}

/// One editor: its replica, its outbox, whether it may write.
struct Editor {
    ctx: SessionCtx,
    replica: Arc<Replica>,
    outbox: Arc<Outbox>,
    may_write: bool,
}

impl Handler for Editor {
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
        // Documents speak binary y-protocols only.
        out.extend(items.into_iter().filter_map(|i| match i {
            Item::RawBinary(b) => Some(Frame::message(false, b, deflate)),
            Item::Shared(s) => Some(s.frame(deflate)),
            _ => None,
        }));
        None
    }

    async fn message(&mut self, msg: Message) -> Option<CloseCause> {
        // Text frames are not part of y-protocols: ignored, as before.
        let Message::Binary(b) = msg else {
            return None;
        };
        // Every update read so far is stored (each is appended before the next is read): on
        // a drain the editor reconnects elsewhere and resyncs from the stored document. The
        // rate limit is the connection's (`SessionCtx::conn`).
        self.replica
            .handle(&self.ctx.conn_id, &b, self.may_write)
            .await
            .err()
    }

    async fn closing_message(&mut self, cause: &CloseCause, msg: Message) {
        // Closed because an update could not be stored (1013): the edits the editor sent
        // before it saw that are kept (owed to the log with the failed one), so an editor that
        // goes away instead of reconnecting loses none. After any other close they are
        // dropped: the editor resyncs them when it reconnects.
        if let (CloseCause::BusUnavailable, Message::Binary(b)) = (cause, msg) {
            self.replica.absorb(&self.ctx.conn_id, &b, self.may_write);
        }
    }
}
