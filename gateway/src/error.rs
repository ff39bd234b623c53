//! The one table that maps every refusal and every gateway-initiated close to what the client
//! sees: an HTTP status before the upgrade, a WebSocket close code after it. `docs/errors.md`
//! is the user-facing copy; a test keeps the two in step.

use std::time::Duration;

use http::StatusCode;

/// Which side caused a failure: the client, the app pod, or the gateway itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Downstream,
    Upstream,
    Internal,
}

/// Why a handshake (or plain request) was refused before any 101.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    #[error("malformed request body")]
    BadRequestBody,
    #[error("no route for this host and path")]
    NoRoute,
    #[error("route not programmed")]
    RouteNotProgrammed,
    #[error("origin not allowed")]
    OriginNotAllowed,
    #[error("token missing")]
    TokenMissing,
    #[error("{0}")]
    TokenInvalid(&'static str),
    #[error("too many connections from this address")]
    PerIpCap,
    #[error("too many connections for this user")]
    PerUserCap,
    #[error("too many new connections from this address")]
    PerIpRate,
    #[error("gateway at connection capacity")]
    PodCap,
    #[error("gateway is draining")]
    Draining,
    #[error("unsupported WebSocket version")]
    BadWebSocketVersion,
    #[error("malformed WebSocket handshake: {0}")]
    BadHandshake(&'static str),
    #[error("no ready backend")]
    NoBackend,
    #[error("backend unreachable")]
    BackendUnreachable,
    #[error("backend timed out")]
    BackendTimeout,
    #[error("backend answered an invalid WebSocket handshake: {0}")]
    BackendBadUpgrade(&'static str),
    #[error("too many request headers")]
    HeadersTooLarge,
    #[error("not allowed to join this room")]
    RoomForbidden,
    #[error("room bus unavailable")]
    BusUnavailable,
    #[error("{0}")]
    BadRoomsRequest(&'static str),
    #[error("more rooms in one publish call than publishApi.maxRoomsPerCall")]
    TooManyRooms,
}

impl Refusal {
    /// The HTTP status for this refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::BadRequestBody => StatusCode::BAD_REQUEST,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::RouteNotProgrammed => StatusCode::SERVICE_UNAVAILABLE,
            Self::OriginNotAllowed => StatusCode::FORBIDDEN,
            Self::TokenMissing | Self::TokenInvalid(_) => StatusCode::UNAUTHORIZED,
            Self::PerIpCap | Self::PerUserCap | Self::PerIpRate => StatusCode::TOO_MANY_REQUESTS,
            Self::PodCap | Self::Draining | Self::NoBackend => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadWebSocketVersion => StatusCode::UPGRADE_REQUIRED,
            Self::BadHandshake(_) => StatusCode::BAD_REQUEST,
            Self::BackendUnreachable => StatusCode::BAD_GATEWAY,
            Self::BackendTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::BackendBadUpgrade(_) => StatusCode::BAD_GATEWAY,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::RoomForbidden => StatusCode::FORBIDDEN,
            Self::BusUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadRoomsRequest(_) => StatusCode::BAD_REQUEST,
            Self::TooManyRooms => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// Stable label for metrics (`switchboard_handshake_refusals_total{reason=...}`) and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::BadRequestBody => "bad_request_body",
            Self::NoRoute => "no_route",
            Self::RouteNotProgrammed => "route_not_programmed",
            Self::OriginNotAllowed => "origin",
            Self::TokenMissing => "token_missing",
            Self::TokenInvalid(_) => "token_invalid",
            Self::PerIpCap => "per_ip_cap",
            Self::PerUserCap => "per_user_cap",
            Self::PerIpRate => "per_ip_rate",
            Self::PodCap => "pod_cap",
            Self::Draining => "draining",
            Self::BadWebSocketVersion => "ws_version",
            Self::BadHandshake(_) => "bad_handshake",
            Self::NoBackend => "no_backend",
            Self::BackendUnreachable => "backend_unreachable",
            Self::BackendTimeout => "backend_timeout",
            Self::BackendBadUpgrade(_) => "backend_bad_upgrade",
            Self::HeadersTooLarge => "headers_too_large",
            Self::RoomForbidden => "room_forbidden",
            Self::BusUnavailable => "bus_unavailable",
            Self::BadRoomsRequest(_) => "bad_rooms_request",
            Self::TooManyRooms => "too_many_rooms",
        }
    }

    /// Who is at fault.
    pub fn side(&self) -> Side {
        match self {
            Self::NoBackend
            | Self::BackendUnreachable
            | Self::BackendTimeout
            | Self::BackendBadUpgrade(_) => Side::Upstream,
            Self::PodCap | Self::Draining | Self::RouteNotProgrammed => Side::Internal,
            _ => Side::Downstream,
        }
    }

    /// `Retry-After` for refusals a client should retry later.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::PerIpRate => Some(Duration::from_secs(1)),
            Self::PerIpCap | Self::PerUserCap | Self::RouteNotProgrammed => {
                Some(Duration::from_secs(5))
            }
            Self::PodCap | Self::NoBackend | Self::BusUnavailable => Some(Duration::from_secs(2)),
            Self::Draining => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// `WWW-Authenticate` for 401s: RFC 6750 `Bearer error=..., error_description=...`.
    pub fn www_authenticate(&self) -> Option<String> {
        match self {
            Self::TokenMissing => Some(r#"Bearer realm="switchboard""#.to_string()),
            Self::TokenInvalid(reason) => Some(format!(
                r#"Bearer realm="switchboard", error="invalid_token", error_description="{reason}""#
            )),
            _ => None,
        }
    }
}

/// Why the gateway closed (or saw closed) a live WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseCause {
    /// A message larger than the route's `maxMessageBytes`.
    MessageTooBig,
    /// The client sent faster than the route's message rate.
    RateLimited,
    /// The token's `exp` passed.
    TokenExpired,
    /// Shutdown drain with the route's configured code and reason.
    Draining { code: u16, reason: String },
    /// The client did not answer a keep-alive ping in time.
    PongTimeout,
    /// A frame that breaks RFC 6455 framing (reserved opcode, bad length, unmasked client frame).
    ProtocolError,
    /// Rooms: a text message that is not valid UTF-8 (RFC 6455 section 8.1: close 1007).
    InvalidUtf8,
    /// A compressed message (permessage-deflate) that does not inflate, or stops inside a DEFLATE
    /// block (RFC 7692 §7.2.2, §8).
    InvalidCompressed,
    /// The backend pod went away or broke the connection without a close frame.
    UpstreamGone,
    /// Proxy mode: the app did not answer a keep-alive ping in time (hung or unreachable).
    UpstreamPongTimeout,
    /// One side sent a Close frame; the gateway relayed it unchanged.
    Peer(Side, u16),
    /// A side's TCP connection ended without a close handshake.
    Abnormal(Side),
    /// Rooms: the connection's outbound queue overflowed (it reads too slowly).
    SlowConsumer,
    /// Rooms: the room bus (NATS) could not be reached for a join or raw publish.
    BusUnavailable,
    /// Raw rooms: a message within `maxMessageBytes` that the bus cannot carry (its envelope
    /// is over the NATS server's `max_payload`).
    BusMessageTooBig,
    /// Raw rooms: the pod fell behind and history could not repair what this member missed
    /// (JSON members are sent `lost` instead; raw ones have no in-band signal).
    MessagesLost,
    /// Raw rooms: the connection may join but not publish, and sent a message.
    PublishForbidden,
    /// Yjs documents: an update would grow the document past `rooms.documents.maxDocumentBytes`.
    DocumentTooLarge,
}

impl CloseCause {
    /// The close code sent to both sides (for gateway-initiated closes).
    pub fn code(&self) -> u16 {
        match self {
            Self::MessageTooBig => 1009,
            Self::RateLimited => 1008,
            Self::TokenExpired => 4001,
            Self::Draining { code, .. } => *code,
            Self::PongTimeout => 1001,
            Self::ProtocolError => 1002,
            Self::InvalidUtf8 => 1007,
            Self::InvalidCompressed => 1007,
            Self::UpstreamGone => 1011,
            Self::UpstreamPongTimeout => 1011,
            Self::Peer(_, code) => *code,
            Self::Abnormal(_) => 1006,
            Self::SlowConsumer => 4008,
            Self::BusUnavailable => 1013,
            Self::BusMessageTooBig => 1009,
            Self::MessagesLost => 4009,
            Self::PublishForbidden => 1008,
            Self::DocumentTooLarge => 4010,
        }
    }

    /// The `code` label of `switchboard_closes_total`: the code, except that a code a peer
    /// chose from the application ranges (3000-4999) is counted as `3xxx` or `4xxx` — one
    /// client could otherwise add 2,000 series per route (the log line keeps the code).
    pub fn code_label(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Self::Peer(_, 3000..=3999) => "3xxx".into(),
            Self::Peer(_, 4000..=4999) => "4xxx".into(),
            _ => self.code().to_string().into(),
        }
    }

    /// The close reason sent with the code.
    pub fn reason(&self) -> &str {
        match self {
            Self::MessageTooBig => "message too big",
            Self::RateLimited => "message rate exceeded",
            Self::TokenExpired => "token expired",
            Self::Draining { reason, .. } => reason,
            Self::PongTimeout => "ping timeout",
            Self::ProtocolError => "protocol error",
            Self::InvalidUtf8 => "invalid UTF-8",
            Self::InvalidCompressed => "invalid compressed data",
            Self::UpstreamGone => "backend went away",
            Self::UpstreamPongTimeout => "backend not responding",
            Self::Peer(..) | Self::Abnormal(_) => "",
            Self::SlowConsumer => "slow consumer",
            Self::BusUnavailable => "room bus unavailable, try again later",
            Self::BusMessageTooBig => "message too big for the room bus",
            Self::MessagesLost => "messages lost, reconnect and resync",
            Self::PublishForbidden => "not allowed to publish in this room",
            Self::DocumentTooLarge => "document too large",
        }
    }

    /// Stable label for metrics and the connection-end log line.
    pub fn label(&self) -> &'static str {
        match self {
            Self::MessageTooBig => "message_too_big",
            Self::RateLimited => "rate_limited",
            Self::TokenExpired => "token_expired",
            Self::Draining { .. } => "draining",
            Self::PongTimeout => "pong_timeout",
            Self::ProtocolError => "protocol_error",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::InvalidCompressed => "invalid_compressed",
            Self::UpstreamGone => "upstream_gone",
            Self::UpstreamPongTimeout => "upstream_pong_timeout",
            Self::Peer(Side::Upstream, _) => "upstream_close",
            Self::Peer(..) => "client_close",
            Self::Abnormal(Side::Upstream) => "upstream_reset",
            Self::Abnormal(_) => "client_reset",
            Self::SlowConsumer => "slow_consumer",
            Self::BusUnavailable => "bus_unavailable",
            Self::BusMessageTooBig => "bus_message_too_big",
            Self::PublishForbidden => "publish_forbidden",
            Self::MessagesLost => "messages_lost",
            Self::DocumentTooLarge => "document_too_large",
        }
    }
}

/// One row of the user-facing table (rendered into `docs/errors.md` and checked by a test).
pub struct Row {
    pub when: &'static str,
    pub label: &'static str,
    pub status_or_code: String,
    pub reason: String,
}

/// Every refusal and every gateway-initiated close, in table order.
pub fn table() -> Vec<Row> {
    let refusals = [
        (
            "a path that cannot be normalized safely (docs/config.md#path-normalization)",
            Refusal::BadRequest("encoded slash or backslash in the path"),
        ),
        (
            "HTTP/1.1 request without Host, or more than one Host (RFC 9112 §3.2)",
            Refusal::BadRequest("missing or repeated Host"),
        ),
        (
            "more than one `Authorization` header (RFC 9110 §5.3: not a list; the gateway and the app could each read another one)",
            Refusal::BadRequest("repeated Authorization"),
        ),
        (
            "the client's request body is malformed (e.g. a chunk size that overflows)",
            Refusal::BadRequestBody,
        ),
        ("no route matches host + path", Refusal::NoRoute),
        (
            "the matching route is configured but has never compiled (e.g. a bad JWT key; `/status` `routeFailures` says why)",
            Refusal::RouteNotProgrammed,
        ),
        (
            "Origin not in the route's allow-list (or null/missing when not allowed)",
            Refusal::OriginNotAllowed,
        ),
        ("no token in any configured source", Refusal::TokenMissing),
        (
            "token invalid (reason in WWW-Authenticate)",
            Refusal::TokenInvalid("token expired"),
        ),
        ("per-IP concurrent connection cap", Refusal::PerIpCap),
        ("per-user concurrent connection cap", Refusal::PerUserCap),
        ("per-IP new-connection rate", Refusal::PerIpRate),
        ("pod-wide connection cap", Refusal::PodCap),
        (
            "gateway draining (after the propagation window; with `Connection: close`). An SSE request gets a 200 `text/event-stream` with `retry:` and a `shutdown` event instead, which `EventSource` follows",
            Refusal::Draining,
        ),
        (
            "Sec-WebSocket-Version is not 13",
            Refusal::BadWebSocketVersion,
        ),
        (
            "Upgrade request without a valid Sec-WebSocket-Key",
            Refusal::BadHandshake("missing or invalid Sec-WebSocket-Key"),
        ),
        (
            "WebSocket upgrade over HTTP/1.0 (RFC 6455 §4.1 needs HTTP/1.1), before the app is asked",
            Refusal::BadHandshake("WebSocket needs HTTP/1.1"),
        ),
        (
            "WebSocket upgrade with a body (`Content-Length` other than 0, or `Transfer-Encoding`; RFC 6455 §4.1), before the app is asked",
            Refusal::BadHandshake("a WebSocket handshake has no body"),
        ),
        ("no ready, non-draining backend", Refusal::NoBackend),
        (
            "backend refused the TCP connection",
            Refusal::BackendUnreachable,
        ),
        (
            "backend did not answer the handshake in time",
            Refusal::BackendTimeout,
        ),
        (
            "backend answered the upgrade with a 101 a WebSocket client must refuse (RFC 6455 §4.1: no `Upgrade: websocket` or `Connection: Upgrade`, a wrong `Sec-WebSocket-Accept`, a subprotocol the client did not offer, an extension nobody offered); nothing of it reaches the client",
            Refusal::BackendBadUpgrade("wrong Sec-WebSocket-Accept"),
        ),
        (
            "more headers than limits.maxHeaderCount",
            Refusal::HeadersTooLarge,
        ),
        (
            "rooms: the room (raw path or SSE/long-poll `rooms`) is not in rooms.join",
            Refusal::RoomForbidden,
        ),
        (
            "rooms: the bus (NATS) is unreachable for a long-poll",
            Refusal::BusUnavailable,
        ),
        (
            "rooms: a request that is not WebSocket, SSE or long-polling, or names no valid room",
            Refusal::BadRoomsRequest("rooms route: use WebSocket, SSE or ?rooms= long-polling"),
        ),
        (
            "publish API: one call names more rooms and users than publishApi.maxRoomsPerCall",
            Refusal::TooManyRooms,
        ),
    ];
    let closes = [
        (
            "a message over maxMessageBytes (from the client; in proxy mode also from the app)",
            CloseCause::MessageTooBig,
        ),
        (
            "client messages faster than messagesPerSecond/messageBurst",
            CloseCause::RateLimited,
        ),
        (
            "the JWT's exp passed (closeOnExpiry)",
            CloseCause::TokenExpired,
        ),
        (
            "shutdown drain (route drain.closeCode/closeReason)",
            CloseCause::Draining {
                code: 1001,
                reason: "server draining, reconnect".into(),
            },
        ),
        ("no pong within keepalive.timeout", CloseCause::PongTimeout),
        (
            "invalid framing from either side (a 64-bit length with its top bit set included)",
            CloseCause::ProtocolError,
        ),
        (
            "rooms, and proxy mode for a compressed text message once inflated: a text message that is not valid UTF-8",
            CloseCause::InvalidUtf8,
        ),
        (
            "a compressed message (permessage-deflate, rooms and proxy mode) that does not inflate, or stops inside a DEFLATE block",
            CloseCause::InvalidCompressed,
        ),
        (
            "backend connection reset without a close frame (a clean TCP end is mirrored instead)",
            CloseCause::UpstreamGone,
        ),
        (
            "the app did not answer a ping within keepalive.app.timeout",
            CloseCause::UpstreamPongTimeout,
        ),
        (
            "rooms: outbound queue over rooms.maxQueueBytes (an SSE stream ends, counted with this code and cause)",
            CloseCause::SlowConsumer,
        ),
        (
            "rooms: the bus (NATS) is unreachable for a join or raw publish",
            CloseCause::BusUnavailable,
        ),
        (
            "raw rooms: a message within maxMessageBytes that is over the NATS server's max_payload once wrapped for the bus (binary travels as base64; see nats.md#sizing)",
            CloseCause::BusMessageTooBig,
        ),
        (
            "raw rooms: a message from a connection that may not publish",
            CloseCause::PublishForbidden,
        ),
        (
            "raw rooms: the pod fell behind and history could not repair what the member missed",
            CloseCause::MessagesLost,
        ),
        (
            "yjs documents: an update that would grow the document past rooms.documents.maxDocumentBytes (the update is not applied)",
            CloseCause::DocumentTooLarge,
        ),
    ];
    let mut rows: Vec<Row> = refusals
        .into_iter()
        .map(|(when, r)| Row {
            when,
            label: r.label(),
            status_or_code: format!("HTTP {}", r.status().as_u16()),
            reason: r.to_string(),
        })
        .collect();
    rows.extend(closes.into_iter().map(|(when, c)| Row {
        when,
        label: c.label(),
        status_or_code: format!("close {}", c.code()),
        reason: c.reason().to_string(),
    }));
    rows
}

/// The table as Markdown, as it appears in `docs/errors.md`.
pub fn table_markdown() -> String {
    let mut out = String::from(
        "| when | status / close code | reason | metrics label |\n|---|---|---|---|\n",
    );
    for r in table() {
        out.push_str(&format!(
            "| {} | {} | {} | `{}` |\n",
            r.when, r.status_or_code, r.reason, r.label
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_application_close_code_is_counted_by_its_range() {
        let peer = |code| CloseCause::Peer(Side::Downstream, code);
        assert_eq!(peer(1000).code_label(), "1000");
        assert_eq!(peer(3001).code_label(), "3xxx");
        assert_eq!(peer(4999).code_label(), "4xxx");
        assert_eq!(peer(4999).code(), 4999, "the code itself is kept");
        assert_eq!(CloseCause::SlowConsumer.code_label(), "4008");
        assert_eq!(CloseCause::TokenExpired.code_label(), "4001");
    }

    #[test]
    fn docs_errors_md_contains_the_current_table() {
        let doc = include_str!("../../docs/errors.md");
        assert!(
            doc.contains(&table_markdown()),
            "docs/errors.md is out of date; paste this table into it:\n{}",
            table_markdown()
        );
    }

    #[test]
    fn every_retryable_refusal_carries_retry_after() {
        for r in [
            Refusal::PerIpCap,
            Refusal::PerUserCap,
            Refusal::PerIpRate,
            Refusal::PodCap,
            Refusal::Draining,
        ] {
            assert!(r.retry_after().is_some(), "{r:?}");
        }
    }

    #[test]
    fn invalid_token_reason_goes_into_www_authenticate() {
        let h = Refusal::TokenInvalid("token expired")
            .www_authenticate()
            .unwrap();
        assert!(h.contains(r#"error_description="token expired""#), "{h}");
    }
}
