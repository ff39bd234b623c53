//! Rooms over WebSocket: the 101 (with the chosen subprotocol), then a task that runs the
//! session (JSON protocol or raw relay) and sends the `connect` / `disconnect` notifications.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::Either;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::conn::{Services, SessionRunner, connect_event, disconnect_event, next_conn_id};
use super::hooks::{Notifier, Sent};
use super::protocol;
use super::route::RoomsPolicy;
use super::session::{self, SessionCtx};
use crate::admission::{Admitted, Passed};
use crate::auth::token;
use crate::drain::LiveGuard;
use crate::engine::{deflate, handshake, unbox};
use crate::error::Refusal;
use crate::http::{Body, full};
use crate::metrics::metrics;
use crate::routes::CompiledRoute;

/// Answer a rooms WebSocket upgrade and spawn its session.
pub(crate) fn websocket(
    svc: &Services<'_>,
    route: &Arc<CompiledRoute>,
    policy: Arc<RoomsPolicy>,
    adm: Passed,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Refusal> {
    let raw_room = if policy.is_raw() {
        let room = policy.raw_room(req.uri().path()).ok_or(Refusal::NoRoute)?;
        if !policy.may_join(&room, adm.claims.as_ref()) {
            return Err(Refusal::RoomForbidden);
        }
        Some(room)
    } else {
        None
    };
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|v| handshake::accept_key(v.as_bytes()))
        .ok_or(Refusal::BadHandshake(
            "missing or invalid Sec-WebSocket-Key",
        ))?;
    // Echo a real subprotocol only: `switchboard.v1` for the JSON protocol, the first offered
    // (never a token carrier) for raw rooms.
    let token_prefixes: Vec<String> = route
        .cfg
        .jwt
        .iter()
        .flat_map(|j| &j.token_sources)
        .filter_map(|s| match s {
            switchboard_config::TokenSource::Subprotocol { prefix } => Some(prefix.clone()),
            _ => None,
        })
        .collect();
    let offered: Vec<String> = token::subprotocols(req.headers())
        .into_iter()
        .filter(|p| !token_prefixes.iter().any(|t| p.starts_with(t.as_str())))
        .map(str::to_string)
        .collect();
    let chosen = if policy.is_raw() {
        offered.first().cloned()
    } else {
        // The client's first offered encoding: JSON or the binary `switchboard.v1.proto`.
        offered
            .iter()
            .find(|p| *p == protocol::SUBPROTOCOL || *p == super::proto::SUBPROTOCOL)
            .cloned()
    };
    let proto = !policy.is_raw() && chosen.as_deref() == Some(super::proto::SUBPROTOCOL);
    // permessage-deflate when the route has `compression` on and the client offers it.
    let deflate = deflate::negotiate_request(req.headers(), &route.cfg.compression);

    let on_upgrade = hyper::upgrade::on(&mut req);
    // `rooms.notify` / `rooms.notifyNats` (SSE streams notify too; long-polls do not): only on
    // routes that notify, boxed, so a connection of any other route holds nothing for them.
    let notifier = (policy.cfg.notify.is_some() || policy.cfg.notify_nats).then(|| {
        Box::new(Notifying {
            notifier: Notifier::new(svc.hooks, &route.cfg.name, &policy, svc.hub.bus()),
            connected: Sent::default(),
        })
    });
    // Only what the session reads after admission (sub, exp, claims the room patterns name).
    let claims = adm.claims.map(|c| Arc::new(policy.session_claims(c)));
    let ctx = SessionCtx {
        hub: (*svc.hub).clone(),
        hooks: (*svc.hooks).clone(),
        conn_id: next_conn_id().into(),
        expires_at: route.close_at_expiry(claims.as_deref()),
        claims,
        drain: svc.drain.close_signal(),
        raw_room,
        proto,
        deflate,
        policy,
    };
    metrics()
        .connections_total
        .with_label_values(&[&route.cfg.name, "upgraded"])
        .inc();
    let live = svc.drain.enter();
    tokio::spawn(connection(
        Box::new(Start {
            on_upgrade,
            runner: svc.session.clone(),
            ctx,
        }),
        notifier,
        Held {
            _live: live,
            admitted: adm.admitted,
        },
    ));

    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&key) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = chosen.and_then(|p| HeaderValue::from_str(&p).ok()) {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    if let Some(v) = deflate.and_then(|d| HeaderValue::from_str(&d.response_header()).ok()) {
        h.insert(header::SEC_WEBSOCKET_EXTENSIONS, v);
    }
    Ok(resp)
}

/// What a rooms connection's task starts from, boxed until the upgrade completes and then
/// taken apart: the session gets the context, the rest is dropped. One box for all three: a
/// value the task moves out of keeps its place in the task for the task's whole life, so
/// each of them captured alone would be held (dead) while the connection lives.
struct Start {
    on_upgrade: OnUpgrade,
    /// A document session instead of the room protocol (chosen by the dispatcher).
    runner: Option<SessionRunner>,
    ctx: SessionCtx,
}

/// A route's `connect` / `disconnect` notifications, boxed: a connection of a route that does
/// not notify holds nothing for them.
struct Notifying {
    notifier: Notifier,
    /// The `connect`, which the `disconnect` is sent after.
    connected: Sent,
}

/// What a connection holds until its task ends: its count in the drain (kept until the
/// `disconnect` notification went out) and its admission slot (freed as the session ends).
struct Held {
    _live: LiveGuard,
    admitted: Option<Admitted>,
}

impl Held {
    /// A method, not an assignment in the task: the task then captures the whole pair, where
    /// an assignment to one field would capture that field alone and drop the other (the
    /// drain's count) at once.
    fn free_admission(&mut self) {
        self.admitted = None;
    }
}

/// A type with `Drop` is always captured whole (its fields cannot be moved out one by one), so
/// no edit of the task can drop the drain's count early by capturing a field alone.
impl Drop for Held {
    fn drop(&mut self) {}
}

/// The task of one rooms WebSocket: the session, with its `connect` / `disconnect`
/// notifications, metrics and log line. `held` (the drain's live count and the admission slot)
/// is released when it ends. Not an `async fn` (whose arguments are moved into the future's
/// locals and kept twice): the block uses what it captures in place.
fn connection(
    start: Box<Start>,
    notifier: Option<Box<Notifying>>,
    held: Held,
) -> impl Future<Output = ()> {
    let (mut start, mut notifier, mut held) = (start, notifier, held);
    async move {
        let Ok(io) = (&mut start.on_upgrade).await else {
            return;
        };
        // Shared with the session, not copied: the route's name, the claims, the connection id.
        let route = start.ctx.policy.conn.route.clone();
        let claims = start.ctx.claims.clone();
        let conn = start.ctx.conn_id.clone();
        let user = || claims.as_deref().and_then(|c| c.sub.as_deref());
        let active = metrics().connections_active.with_label_values(&[&*route]);
        active.inc();
        let started = std::time::Instant::now();
        if let Some(n) = notifier.as_deref_mut() {
            n.connected = n.notifier.send(Sent::default(), user(), || {
                connect_event(&conn, user(), &route, "websocket")
            });
        }
        // Chosen before the await, so the runner is not held while the session runs.
        let session = match start.runner.take() {
            Some(run) => Either::Left(run(io, unbox(start).ctx)),
            None => Either::Right(session::run(io, unbox(start).ctx)),
        };
        let cause = session.await;
        active.dec();
        held.free_admission();
        let disconnected = notifier.take().map(|n| {
            let Notifying {
                notifier,
                connected,
            } = *n;
            notifier.send(connected, user(), || {
                disconnect_event(&conn, user(), &route, "websocket", &cause)
            })
        });
        metrics()
            .closes
            .with_label_values(&[&*route, &*cause.code_label(), cause.label()])
            .inc();
        tracing::info!(
            target: "switchboard::connection",
            route = %route,
            conn = %conn,
            duration_ms = started.elapsed().as_millis() as u64,
            close_code = cause.code(),
            cause = cause.label(),
            "rooms connection ended"
        );
        if let Some(d) = disconnected {
            d.finished().await; // still counted as live for the drain
        }
    }
}
