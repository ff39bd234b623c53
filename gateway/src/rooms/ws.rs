//! Rooms over WebSocket: the 101 (with the chosen subprotocol), then a task that runs the
//! session (JSON protocol or raw relay) and sends the `connect` / `disconnect` notifications.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::conn::{Services, connect_event, disconnect_event, next_conn_id};
use super::hooks::{Notifier, Sent};
use super::protocol;
use super::route::RoomsPolicy;
use super::session::{self, SessionCtx};
use crate::admission::Passed;
use crate::auth::token;
use crate::engine::{deflate, handshake};
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
    let deflate = deflate::negotiate(
        req.headers()
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .filter_map(|v| v.to_str().ok()),
        &route.cfg.compression,
    );

    let on_upgrade = hyper::upgrade::on(&mut req);
    // `rooms.notify` / `rooms.notifyNats` (SSE streams notify too; long-polls do not).
    let notifier = Notifier::new(svc.hooks, &route.cfg.name, &policy, svc.hub.bus());
    let ctx = SessionCtx {
        hub: (*svc.hub).clone(),
        policy,
        hooks: (*svc.hooks).clone(),
        route: route.cfg.name.clone(),
        conn_id: next_conn_id(),
        expires_at: route.close_at_expiry(adm.claims.as_ref()),
        claims: adm.claims,
        limits: route.cfg.limits.clone(),
        keepalive: route.cfg.keepalive.clone(),
        drain: svc.drain.close_signal(),
        drain_code: route.cfg.drain.close_code,
        drain_reason: route.cfg.drain.close_reason.clone(),
        drain_window: route.cfg.drain.window,
        raw_room,
        proto,
        deflate,
    };
    let live = svc.drain.enter();
    let runner = svc.session.clone();
    let admitted = adm.admitted;
    let route_name = route.cfg.name.clone();
    metrics()
        .connections_total
        .with_label_values(&[&route_name, "upgraded"])
        .inc();
    tokio::spawn(async move {
        let _live = live;
        let Ok(io) = on_upgrade.await else { return };
        let active = metrics()
            .connections_active
            .with_label_values(&[&route_name]);
        active.inc();
        let started = std::time::Instant::now();
        let user = ctx.claims.as_ref().and_then(|c| c.sub.clone());
        let conn = ctx.conn_id.clone();
        let connected = notifier.send(Sent::default(), user.as_deref(), || {
            connect_event(&conn, user.as_deref(), &route_name, "websocket")
        });
        let cause = match runner {
            Some(run) => run(io, ctx).await,
            None => session::run(io, ctx).await,
        };
        active.dec();
        drop(admitted); // the admission slot frees with the connection
        let disconnected = notifier.send(connected, user.as_deref(), || {
            disconnect_event(&conn, user.as_deref(), &route_name, "websocket", &cause)
        });
        metrics()
            .closes
            .with_label_values(&[&route_name, &cause.code().to_string(), cause.label()])
            .inc();
        tracing::info!(
            target: "switchboard::connection",
            route = %route_name,
            conn = %conn,
            duration_ms = started.elapsed().as_millis() as u64,
            close_code = cause.code(),
            cause = cause.label(),
            "rooms connection ended"
        );
        disconnected.finished().await; // still counted as live for the drain
    });

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
