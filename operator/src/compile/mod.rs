//! One `RealtimeRoute` -> one `switchboard_config::Route`. Pure: the Services and Secrets the
//! route names are looked up in [`Refs`], a plain copy of what the watches have seen.
//!
//! Defaults are never restated here: wherever the CRD leaves a field unset, the value is built
//! by deserializing the config crate's own wire format, so the gateway's documented defaults
//! apply (one source of truth).
//!
//! [`compile`] runs one step per section of the route; each section with more than a few
//! lines has its file: `refs` (what the route names, and whether it exists), `jwt`
//! (`spec.auth.jwt`), `proxy` (`spec.backend`), `rooms` (`spec.rooms`) and `paths` (`spec.path`,
//! and config paths mapped back to CRD fields). `problems` (the problem list every step writes
//! to) sits below them all; none of them imports this file.

mod jwt;
mod paths;
mod problems;
mod proxy;
mod refs;
mod rooms;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use switchboard_config::{
    Compression, GatewayConfig, Keepalive, Mode as ConfigMode, Origins, Route, RouteDrain,
    RouteLimits, Transports,
};

use crate::api::{
    Compression as CrdCompression, Drain, Keepalive as CrdKeepalive, Limits, Mode, RealtimeRoute,
    RealtimeRouteSpec, RoomProtocol, Transport,
};

use problems::Problems;

pub use paths::crd_path;
pub use refs::{Refs, Resolution, Verdict, referenced_secrets, referenced_service, resolve};
pub use rooms::{room_pattern_problem, rooms_namespace};

/// Features the schema accepts but the gateways cannot serve yet: `Some(message)` makes the
/// route `Accepted=False` with reason `Unsupported`.
pub fn unsupported(rt: &RealtimeRoute, base: &GatewayConfig) -> Option<String> {
    let spec = &rt.spec;
    // In mode proxy the field is refused as Invalid by `compile` (and by CEL).
    if spec.mode == Mode::Rooms
        && spec
            .drain
            .as_ref()
            .is_some_and(|d| d.reconnect_hint.is_some())
    {
        return Some(
            "spec.drain.reconnectHint: the gateways send a random 0.5-5s reconnect hint; a per-route hint is not supported in this release, remove it".into(),
        );
    }
    if let Some(jwt) = spec.auth.as_ref().and_then(|a| a.jwt.as_ref())
        && jwt.providers.len() > 1
    {
        return Some(format!(
            "spec.auth.jwt.providers: this release verifies one JWT provider per route (got {})",
            jwt.providers.len()
        ));
    }
    if let Some(p) = spec.drain.as_ref().and_then(|d| d.propagation.as_ref())
        && let Ok(p) = p.parse()
        && p > base.drain.propagation
    {
        return Some(format!(
            "spec.drain.propagation: {} is longer than the gateways' pod-wide drain.propagation ({}); per-route propagation is not supported, raise it in the gateway base config",
            crate::api::duration::format(p),
            crate::api::duration::format(base.drain.propagation)
        ));
    }
    None
}

/// How long this route's drain needs from SIGTERM: the longer of its own and the pod-wide
/// propagation, plus its window. `None` when a duration does not parse (the route is invalid).
pub fn drain_needed(rt: &RealtimeRoute, base: &GatewayConfig) -> Option<StdDuration> {
    let d = rt.spec.drain.clone().unwrap_or_default();
    let propagation = match &d.propagation {
        Some(p) => p.parse().ok()?.max(base.drain.propagation),
        None => base.drain.propagation,
    };
    let window = match &d.window {
        Some(w) => w.parse().ok()?,
        None => RouteDrain::default().window,
    };
    Some(propagation + window)
}

/// Compile a route whose Secrets are resolved (`material`) into the gateway's route type.
/// Returns every problem found (as `spec.path: message`), not just the first; the config
/// validator then checks the result the same way the gateway will.
pub fn compile(
    rt: &RealtimeRoute,
    material: &BTreeMap<(String, String), String>,
) -> Result<Route, Vec<String>> {
    let spec = &rt.spec;
    let mut p = Problems::default();
    let path = paths::path_match(spec.path.as_ref());
    proxy_mode_problems(spec, &mut p);
    let auth = spec.auth.clone().unwrap_or_default();
    let origins = Origins {
        allowed: auth.allowed_origins.clone(),
        allow_null: auth.allow_null_origin.unwrap_or(false),
        allow_missing: auth.allow_missing_origin,
    };
    let provider = auth.jwt.as_ref().and_then(|j| j.providers.first());
    let jwt = provider.and_then(|pr| jwt::compile_jwt(pr, material, &mut p));
    let proxy = proxy::compile_proxy(rt, provider, material, &mut p);
    let limits = compile_limits(spec.limits.as_ref(), &mut p);
    let keepalive = compile_keepalive(spec.keepalive.as_ref(), &mut p);
    let compression = compile_compression(spec.compression.as_ref(), &mut p);
    let drain = compile_drain(spec.drain.as_ref(), &mut p);
    let transports = compile_transports(spec, &mut p);
    let rooms = match spec.mode {
        Mode::Proxy => None,
        Mode::Rooms => {
            if let Some(pr) = provider
                && !pr.claims_to_headers.is_empty()
            {
                p.push(
                    "spec.auth.jwt.providers[0].claimsToHeaders",
                    "only used in mode proxy (rooms hooks get the user as X-Switchboard-User)",
                );
            }
            rooms::compile_rooms(rt, &path, &mut p)
        }
    };

    if !p.0.is_empty() {
        return Err(p.0);
    }
    Ok(Route {
        name: rt.key(),
        hosts: spec.hostnames.clone(),
        path,
        mode: match spec.mode {
            Mode::Proxy => ConfigMode::Proxy,
            Mode::Rooms => ConfigMode::Rooms,
        },
        origins,
        jwt,
        proxy,
        rooms,
        transports,
        limits,
        keepalive,
        compression,
        drain,
        source_generation: rt.metadata.generation,
    })
}

/// Fields that only mean something in mode rooms, set on a proxy route (CEL refuses them too).
fn proxy_mode_problems(spec: &RealtimeRouteSpec, p: &mut Problems) {
    if spec.mode != Mode::Proxy {
        return;
    }
    if spec
        .transports
        .as_ref()
        .is_some_and(|t| t.iter().any(|t| *t != Transport::WebSocket))
    {
        p.push(
            "spec.transports",
            "SSE and LongPolling serve rooms; mode proxy carries WebSocket only",
        );
    }
    if spec.rooms.is_some() {
        p.push("spec.rooms", "only used in mode rooms");
    }
    if spec
        .drain
        .as_ref()
        .is_some_and(|d| d.reconnect_hint.is_some())
    {
        p.push(
            "spec.drain.reconnectHint",
            "only used in mode rooms; mode proxy closes with drain.closeCode and drain.closeReason",
        );
    }
}

/// `spec.limits` over the gateway's defaults.
fn compile_limits(l: Option<&Limits>, p: &mut Problems) -> RouteLimits {
    let mut limits = RouteLimits::default();
    let Some(l) = l else {
        return limits;
    };
    if let Some(v) = l.max_message_bytes {
        match u64::try_from(v) {
            Ok(n) if n > 0 => limits.max_message_bytes = n,
            _ => p.push(
                "spec.limits.maxMessageBytes",
                format!("must be at least 1, got {v}"),
            ),
        }
    }
    if let Some(v) = p.positive_u32("spec.limits.messagesPerSecond", l.messages_per_second) {
        limits.messages_per_second = v;
    }
    if let Some(v) = p.positive_u32("spec.limits.messageBurst", l.message_burst) {
        limits.message_burst = v;
    }
    limits.connections_per_ip =
        p.positive_u32("spec.limits.connectionsPerIp", l.connections_per_ip);
    limits.connections_per_user =
        p.positive_u32("spec.limits.connectionsPerUser", l.connections_per_user);
    limits.new_connections_per_ip_per_second = p.positive_u32(
        "spec.limits.newConnectionsPerIpPerSecond",
        l.new_connections_per_ip_per_second,
    );
    limits
}

/// `spec.compression` over the gateway's defaults (the schema bounds the numbers; checked again
/// here for objects that skipped it).
fn compile_compression(c: Option<&CrdCompression>, p: &mut Problems) -> Compression {
    let mut out = Compression::default();
    let Some(c) = c else {
        return out;
    };
    out.enabled = c.enabled.unwrap_or(false);
    if let Some(v) = c.threshold_bytes {
        match u64::try_from(v) {
            Ok(n) => out.threshold_bytes = n,
            Err(_) => p.push(
                "spec.compression.thresholdBytes",
                format!("must be at least 0, got {v}"),
            ),
        }
    }
    if let Some(v) = c.level {
        match u32::try_from(v) {
            Ok(n @ 1..=9) => out.level = n,
            _ => p.push("spec.compression.level", format!("must be 1 to 9, got {v}")),
        }
    }
    if let Some(v) = c.max_window_bits {
        match u8::try_from(v) {
            Ok(n @ 9..=15) => out.max_window_bits = n,
            _ => p.push(
                "spec.compression.maxWindowBits",
                format!("must be 9 to 15, got {v}"),
            ),
        }
    }
    out
}

/// `spec.keepalive` over the gateway's defaults.
fn compile_keepalive(k: Option<&CrdKeepalive>, p: &mut Problems) -> Keepalive {
    let mut keepalive = Keepalive::default();
    let Some(k) = k else {
        return keepalive;
    };
    if let Some(v) = p.duration("spec.keepalive.interval", &k.interval) {
        keepalive.interval = v;
    }
    if let Some(v) = p.duration("spec.keepalive.timeout", &k.timeout) {
        keepalive.timeout = v;
    }
    if let Some(app) = &k.app {
        if let Some(v) = p.duration("spec.keepalive.app.interval", &app.interval) {
            keepalive.app.interval = v;
        }
        if let Some(v) = p.duration("spec.keepalive.app.timeout", &app.timeout) {
            keepalive.app.timeout = v;
        }
    }
    keepalive
}

/// `spec.drain` over the gateway's defaults (propagation and the reconnect hint are only
/// checked here: [`unsupported`] and [`drain_needed`] use them).
fn compile_drain(d: Option<&Drain>, p: &mut Problems) -> RouteDrain {
    let mut drain = RouteDrain::default();
    let Some(d) = d else {
        return drain;
    };
    p.duration("spec.drain.propagation", &d.propagation);
    p.duration("spec.drain.reconnectHint", &d.reconnect_hint);
    if let Some(v) = p.duration("spec.drain.window", &d.window) {
        drain.window = v;
    }
    if let Some(code) = d.close_code {
        match u16::try_from(code) {
            Ok(c) => drain.close_code = c,
            Err(_) => p.push(
                "spec.drain.closeCode",
                "must be 1000, 1001, 1012, 1013 or 4000-4999",
            ),
        }
    }
    if let Some(r) = &d.close_reason {
        drain.close_reason = r.clone();
    }
    drain
}

/// `spec.transports`: unset, JSON rooms get every transport (the gateway's default); proxy
/// routes and raw rooms get WebSocket.
fn compile_transports(spec: &RealtimeRouteSpec, p: &mut Problems) -> Transports {
    let raw = spec
        .rooms
        .as_ref()
        .is_some_and(|r| r.protocol != RoomProtocol::Json);
    match &spec.transports {
        None if spec.mode == Mode::Rooms && !raw => Transports::default(),
        None => Transports {
            websocket: true,
            sse: false,
            long_polling: false,
        },
        Some(list) => {
            if list.is_empty() {
                p.push("spec.transports", "list at least one transport");
            }
            if raw && list.iter().any(|t| *t != Transport::WebSocket) {
                p.push(
                    "spec.transports",
                    "raw and yjs rooms are WebSocket only: remove SSE and LongPolling",
                );
            }
            Transports {
                websocket: list.contains(&Transport::WebSocket),
                sse: list.contains(&Transport::Sse),
                long_polling: list.contains(&Transport::LongPolling),
            }
        }
    }
}
