//! Where an admitted rooms-route request goes: a WebSocket (JSON protocol or raw relay,
//! [`super::ws`]), an SSE stream ([`super::sse`]), or a long-poll ([`super::longpoll`]). All
//! three serve the same rooms through the pod's hub.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use super::conn::Services;
use super::cursor::rooms_param;
use super::route::RoomsPolicy;
use crate::admission::Passed;
use crate::error::Refusal;
use crate::http::{Body, is_event_stream};
use crate::routes::CompiledRoute;

pub use super::conn::next_conn_id;
pub use super::longpoll::MAX_POLL_WAIT;
pub use super::sse::{SSE_KEEPALIVE, SSE_RETRY_MS, draining_stream, wants_draining_stream};

/// The refusal reason for a token whose `sub` is empty on a route with user rooms.
pub const EMPTY_SUB: &str = "token sub is empty (user rooms need a subject)";

/// Serve an admitted request on a rooms route.
pub async fn serve(
    svc: &Services<'_>,
    route: &Arc<CompiledRoute>,
    policy: Arc<RoomsPolicy>,
    adm: Passed,
    req: Request<Incoming>,
) -> Result<Response<Body>, Refusal> {
    let transports = &route.cfg.transports;
    // Every token with a `sub` joins its user room `user:<sub>`; an empty one would join every
    // such token to the one shared room `user:`.
    if !policy.is_raw() && adm.claims.as_ref().and_then(|c| c.sub.as_deref()) == Some("") {
        return Err(Refusal::TokenInvalid(EMPTY_SUB));
    }
    if adm.websocket {
        if !transports.websocket {
            return Err(Refusal::BadRoomsRequest("WebSocket is off for this route"));
        }
        return super::ws::websocket(svc, route, policy, adm, req);
    }
    if policy.is_raw() {
        return Err(Refusal::BadRoomsRequest("raw rooms are WebSocket only"));
    }
    // Drain and CORS are the pipeline's: after the propagation window nothing reaches here.
    if is_event_stream(&req) {
        if !transports.sse {
            return Err(Refusal::BadRoomsRequest("SSE is off for this route"));
        }
        return super::sse::sse(svc, route, policy, adm, &req);
    }
    if req.method() == http::Method::GET
        && transports.long_polling
        && !rooms_param(req.uri().query()).is_empty()
    {
        return super::longpoll::long_poll(svc, route, policy, adm, &req).await;
    }
    Err(Refusal::BadRoomsRequest(
        "rooms route: use WebSocket, SSE or ?rooms= long-polling",
    ))
}
