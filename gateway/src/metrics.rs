//! The one metrics registry of the gateway, served as Prometheus text on the admin listener.

use std::sync::OnceLock;

use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The release version of this build (the workspace version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit this binary was built from (`build.rs`; `unknown` outside a git checkout).
pub const COMMIT: &str = env!("SWITCHBOARD_GIT_COMMIT");
/// What `--version` prints after the binary's name.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SWITCHBOARD_GIT_COMMIT"),
    ")"
);

/// Every metric the gateway exports.
pub struct Metrics {
    pub registry: Registry,
    /// `switchboard_connections_active{route}`
    pub connections_active: IntGaugeVec,
    /// `switchboard_connections_total{route,outcome}`: outcome = upgraded | refused | http
    pub connections_total: IntCounterVec,
    /// `switchboard_handshake_refusals_total{route,reason}`
    pub refusals: IntCounterVec,
    /// `switchboard_frames_total{route,direction}`: direction = inbound (client->app) | outbound
    pub frames: IntCounterVec,
    /// `switchboard_bytes_total{route,direction}`
    pub bytes: IntCounterVec,
    /// `switchboard_closes_total{route,code,cause}`
    pub closes: IntCounterVec,
    /// `switchboard_drain_connections_remaining`
    pub drain_remaining: IntGauge,
    /// `switchboard_drain_requests_remaining`: HTTP requests in flight during a drain
    pub drain_requests_remaining: IntGauge,
    /// `switchboard_draining` (1 while draining)
    pub draining: IntGauge,
    /// `switchboard_ready` (1 while `/readyz` would answer 200), set on every scrape
    pub ready: IntGauge,
    /// `switchboard_config_generation`
    pub config_generation: IntGauge,
    /// `switchboard_config_reloads_total{result}`
    pub config_reloads: IntCounterVec,
    /// `switchboard_route_compile_failures{route,serving}`: 1 for each route of the live
    /// document that did not compile; serving = last_good | none. Only failing routes have a
    /// series, so the cardinality is at most the number of configured routes.
    pub route_compile_failures: IntGaugeVec,
    /// `switchboard_jwks_fetches_total{result}`
    pub jwks_fetches: IntCounterVec,
    /// `switchboard_jwt_verify_cache_total{result}`: token verifications answered from the
    /// route's verified-token cache (`hit`) or by checking the signature (`miss`).
    pub jwt_cache: IntCounterVec,
    /// `switchboard_http_requests_total{route,status}` for proxied plain HTTP
    pub http_requests: IntCounterVec,
    /// `switchboard_room_deliveries_total`: room messages queued to members on this pod
    pub room_deliveries: IntCounter,
    /// `switchboard_room_publishes_total{result}`: client and API publishes (ok | error)
    pub room_publishes: IntCounterVec,
    /// `switchboard_room_overflows_total`: times a room's queue on this pod overflowed (the pod
    /// fell behind; its members are repaired from history or told)
    pub room_overflows: IntCounter,
    /// `switchboard_room_overflow_messages_total`: room messages that did not fit that queue
    pub room_overflow_messages: IntCounter,
    /// `switchboard_room_repairs_total{result}`: overflows handled, by result = repaired (from
    /// history) | lost (members were sent `lost`)
    pub room_repairs: IntCounterVec,
    /// `switchboard_room_lost_total`: `lost` signals sent to members (one per member and overflow
    /// that history could not repair)
    pub room_lost: IntCounter,
    /// `switchboard_notifications_total{via,result}`: rooms connect/disconnect notifications;
    /// via = http (`rooms.notify`) | nats (`rooms.notifyNats`), result = ok | error | dropped
    pub notifications: IntCounterVec,
    /// `switchboard_room_reads_total{result}`: `read` messages (ok | error | refused: not a position of the room)
    pub room_reads: IntCounterVec,
    /// `switchboard_room_receipts_total`: `receipt` events sent (one per room and pod; each
    /// reaches that room's members on the pod)
    pub room_receipts: IntCounter,
    /// `switchboard_room_receipts_coalesced_total`: reads merged into a later receipt
    pub room_receipts_coalesced: IntCounter,
    /// `switchboard_room_reads_forgotten_total`: read positions forgotten for a bound
    pub room_reads_forgotten: IntCounter,
    /// `switchboard_room_batches_total`: `batch` events built (one per batched room and pod)
    pub room_batches: IntCounter,
    /// `switchboard_room_batched_messages_total`: messages delivered inside batches
    pub room_batched_messages: IntCounter,
    /// `switchboard_offline_publishes_total`: publishes into the room of a user with no live
    /// connection in the cluster
    pub offline_publishes: IntCounter,
    /// `switchboard_offline_notifications_total{via,result}`: offline notifications; via = http
    /// | nats, result = ok | error | dropped
    pub offline_notifications: IntCounterVec,
    /// `switchboard_rooms_local`: rooms with members on this pod (one bus subscription each)
    pub rooms_local: IntGauge,
    /// `switchboard_bus_up`: 1 while the room bus (NATS) is connected
    pub bus_up: IntGauge,
    /// `switchboard_rooms_queued_bytes`: bytes queued for rooms connections on this pod (their
    /// outboxes, and SSE chunks not yet taken by the HTTP layer), each connection bounded by its
    /// route's `rooms.maxQueueBytes`
    pub rooms_queued_bytes: IntGauge,
    /// `switchboard_bus_rooms`: rooms the embedded bus holds (with a subscriber, a member or a
    /// retained message); 0 with the NATS bus
    pub bus_rooms: IntGauge,
    /// `switchboard_bus_history_bytes`: what the embedded bus's retained history costs, all
    /// namespaces (each bounded by its `history.maxBytes`); 0 with the NATS bus
    pub bus_history_bytes: IntGauge,
    /// `switchboard_backends{service,state}`: Service backends (`namespace/name:port`) by
    /// state = ready | draining (Kubernetes source only)
    pub backends: IntGaugeVec,
    /// `switchboard_kube_watch_errors_total{watch}`: watch = snapshot | endpointslices
    pub kube_watch_errors: IntCounterVec,
    /// `switchboard_handshake_timeouts_total{stage}`: client connections closed because the TLS
    /// handshake (stage = tls) or a request head (stage = headers; includes idle keep-alive
    /// connections) took longer than `limits.handshakeTimeout`
    pub handshake_timeouts: IntCounterVec,
    /// `switchboard_accept_errors_total{listener}`: failed accepts on an edge listener that made
    /// it pause (out of file descriptors or kernel memory; connections wait in the backlog)
    pub accept_errors: IntCounterVec,
    /// `switchboard_build_info{version,commit}`: always 1; the labels name the build
    pub build_info: IntGaugeVec,
    /// `switchboard_documents_loaded`: Yjs documents this pod holds a replica of
    pub documents_loaded: IntGauge,
    /// `switchboard_document_updates_total{result}`: Yjs updates by result = applied (from an
    /// editor or the API) | remote (from another pod) | read_only (dropped: the sender may only
    /// read) | too_large (refused: update or document over its limit) | invalid
    pub document_updates: IntCounterVec,
    /// `switchboard_document_update_bytes_total`: bytes of Yjs updates applied on this pod
    pub document_update_bytes: IntCounter,
    /// `switchboard_document_compactions_total{result}`: snapshots written (ok | error), or
    /// changes given up when a replica that owed one was unloaded (abandoned)
    pub document_compactions: IntCounterVec,
    /// `switchboard_document_notifications_total{via,result}`: "document changed"
    /// notifications by channel (http | nats) and result = ok | retried (an attempt failed,
    /// another follows) | error (every attempt failed)
    pub document_notifications: IntCounterVec,
    /// `switchboard_compression_bytes_total{direction,form}`: permessage-deflate payload bytes,
    /// direction = outbound (form = uncompressed | compressed: before and after compression) |
    /// inbound (form = compressed | uncompressed: on the wire and after inflation)
    pub compression_bytes: IntCounterVec,
}

// Every `expect` here is on a metric defined from static names and labels, registered once in a
// fresh registry (the one `Metrics` lives in a `OnceLock`): they cannot fail at run time, and the
// first unit test that touches metrics would catch a bad definition.
#[allow(clippy::expect_used)]
fn counter_vec(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    reg.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

// Every `expect` here is on a metric defined from static names and labels, registered once in a
// fresh registry (the one `Metrics` lives in a `OnceLock`): they cannot fail at run time, and the
// first unit test that touches metrics would catch a bad definition.
#[allow(clippy::expect_used)]
fn counter(reg: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("static metric definition");
    reg.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

// Every `expect` here is on a metric defined from static names and labels, registered once in a
// fresh registry (the one `Metrics` lives in a `OnceLock`): they cannot fail at run time, and the
// first unit test that touches metrics would catch a bad definition.
#[allow(clippy::expect_used)]
impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let connections_active = IntGaugeVec::new(
            Opts::new(
                "switchboard_connections_active",
                "Open WebSocket connections",
            ),
            &["route"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(connections_active.clone()))
            .expect("metric registered once");
        let drain_remaining = IntGauge::new(
            "switchboard_drain_connections_remaining",
            "Connections still open during a drain",
        )
        .expect("static metric definition");
        registry
            .register(Box::new(drain_remaining.clone()))
            .expect("metric registered once");
        let drain_requests_remaining = IntGauge::new(
            "switchboard_drain_requests_remaining",
            "HTTP requests in flight (response not yet sent in full) during a drain",
        )
        .expect("static metric definition");
        registry
            .register(Box::new(drain_requests_remaining.clone()))
            .expect("metric registered once");
        let draining = IntGauge::new("switchboard_draining", "1 while the gateway drains")
            .expect("static metric definition");
        registry
            .register(Box::new(draining.clone()))
            .expect("metric registered once");
        let ready = IntGauge::new(
            "switchboard_ready",
            "1 while the gateway is ready (what /readyz answers), as of this scrape",
        )
        .expect("static metric definition");
        registry
            .register(Box::new(ready.clone()))
            .expect("metric registered once");
        let config_generation = IntGauge::new(
            "switchboard_config_generation",
            "Generation of the loaded config",
        )
        .expect("static metric definition");
        registry
            .register(Box::new(config_generation.clone()))
            .expect("metric registered once");
        let backends = IntGaugeVec::new(
            Opts::new(
                "switchboard_backends",
                "Backends of Kubernetes Services by state",
            ),
            &["service", "state"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(backends.clone()))
            .expect("metric registered once");
        let route_compile_failures = IntGaugeVec::new(
            Opts::new(
                "switchboard_route_compile_failures",
                "Routes of the live config that did not compile (1 each), by what serves them meanwhile",
            ),
            &["route", "serving"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(route_compile_failures.clone()))
            .expect("metric registered once");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "switchboard_build_info",
                "Always 1; the labels are the version and git commit of the running binary",
            ),
            &["version", "commit"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(build_info.clone()))
            .expect("metric registered once");
        build_info.with_label_values(&[VERSION, COMMIT]).set(1);
        Self {
            build_info,
            route_compile_failures,
            handshake_timeouts: counter_vec(
                &registry,
                "switchboard_handshake_timeouts_total",
                "Client connections closed for a TLS handshake or request head slower than limits.handshakeTimeout",
                &["stage"],
            ),
            accept_errors: counter_vec(
                &registry,
                "switchboard_accept_errors_total",
                "Failed accepts on an edge listener that paused it (out of file descriptors or kernel memory)",
                &["listener"],
            ),
            kube_watch_errors: counter_vec(
                &registry,
                "switchboard_kube_watch_errors_total",
                "Failed Kubernetes list/watch calls (retried with back-off)",
                &["watch"],
            ),
            backends,
            connections_total: counter_vec(
                &registry,
                "switchboard_connections_total",
                "Connection attempts by outcome",
                &["route", "outcome"],
            ),
            refusals: counter_vec(
                &registry,
                "switchboard_handshake_refusals_total",
                "Requests refused before the upgrade, by reason",
                &["route", "reason"],
            ),
            frames: counter_vec(
                &registry,
                "switchboard_frames_total",
                "WebSocket frames relayed",
                &["route", "direction"],
            ),
            bytes: counter_vec(
                &registry,
                "switchboard_bytes_total",
                "WebSocket bytes relayed",
                &["route", "direction"],
            ),
            closes: counter_vec(
                &registry,
                "switchboard_closes_total",
                "WebSocket connection ends by close code and cause",
                &["route", "code", "cause"],
            ),
            config_reloads: counter_vec(
                &registry,
                "switchboard_config_reloads_total",
                "Config reloads",
                &["result"],
            ),
            jwks_fetches: counter_vec(
                &registry,
                "switchboard_jwks_fetches_total",
                "JWKS fetches",
                &["result"],
            ),
            jwt_cache: counter_vec(
                &registry,
                "switchboard_jwt_verify_cache_total",
                "Token verifications: hit = answered from the verified-token cache, miss = signature checked",
                &["result"],
            ),
            http_requests: counter_vec(
                &registry,
                "switchboard_http_requests_total",
                "Plain HTTP requests proxied",
                &["route", "status"],
            ),
            room_publishes: counter_vec(
                &registry,
                "switchboard_room_publishes_total",
                "Room publishes by result",
                &["result"],
            ),
            notifications: counter_vec(
                &registry,
                "switchboard_notifications_total",
                "Rooms connect/disconnect notifications by channel and result",
                &["via", "result"],
            ),
            room_reads: counter_vec(
                &registry,
                "switchboard_room_reads_total",
                "Read receipts marked by clients, by result",
                &["result"],
            ),
            room_receipts: counter(
                &registry,
                "switchboard_room_receipts_total",
                "receipt events sent to a room's members on this pod",
            ),
            room_receipts_coalesced: counter(
                &registry,
                "switchboard_room_receipts_coalesced_total",
                "Reads merged into a later receipt (receipts.interval)",
            ),
            room_reads_forgotten: counter(
                &registry,
                "switchboard_room_reads_forgotten_total",
                "Read positions forgotten to keep under a bound (a user's or the pod's)",
            ),
            room_batches: counter(
                &registry,
                "switchboard_room_batches_total",
                "batch events built for a room's members on this pod",
            ),
            room_batched_messages: counter(
                &registry,
                "switchboard_room_batched_messages_total",
                "Room messages delivered inside batch events",
            ),
            offline_publishes: counter(
                &registry,
                "switchboard_offline_publishes_total",
                "Publishes into the room of a user with no live connection",
            ),
            offline_notifications: counter_vec(
                &registry,
                "switchboard_offline_notifications_total",
                "Offline notifications by channel and result",
                &["via", "result"],
            ),
            room_repairs: counter_vec(
                &registry,
                "switchboard_room_repairs_total",
                "Room queue overflows handled, by result (repaired from history, or lost signalled)",
                &["result"],
            ),
            room_overflows: counter(
                &registry,
                "switchboard_room_overflows_total",
                "Times a room queue on this pod overflowed",
            ),
            room_overflow_messages: counter(
                &registry,
                "switchboard_room_overflow_messages_total",
                "Room messages that did not fit a room queue on this pod",
            ),
            room_lost: counter(
                &registry,
                "switchboard_room_lost_total",
                "lost signals sent to room members",
            ),
            room_deliveries: {
                let c = IntCounter::new(
                    "switchboard_room_deliveries_total",
                    "Room messages queued to members",
                )
                .expect("static metric definition");
                registry
                    .register(Box::new(c.clone()))
                    .expect("metric registered once");
                c
            },
            rooms_local: {
                let g = IntGauge::new("switchboard_rooms_local", "Rooms with members on this pod")
                    .expect("static metric definition");
                registry
                    .register(Box::new(g.clone()))
                    .expect("metric registered once");
                g
            },
            bus_up: {
                let g = IntGauge::new("switchboard_bus_up", "1 while the room bus is connected")
                    .expect("static metric definition");
                registry
                    .register(Box::new(g.clone()))
                    .expect("metric registered once");
                g
            },
            documents_loaded: {
                let g = IntGauge::new(
                    "switchboard_documents_loaded",
                    "Yjs documents this pod holds a replica of",
                )
                .expect("static metric definition");
                registry
                    .register(Box::new(g.clone()))
                    .expect("metric registered once");
                g
            },
            document_updates: counter_vec(
                &registry,
                "switchboard_document_updates_total",
                "Yjs document updates by result",
                &["result"],
            ),
            document_update_bytes: counter(
                &registry,
                "switchboard_document_update_bytes_total",
                "Bytes of Yjs updates applied on this pod",
            ),
            document_compactions: counter_vec(
                &registry,
                "switchboard_document_compactions_total",
                "Yjs document snapshots written, by result",
                &["result"],
            ),
            document_notifications: counter_vec(
                &registry,
                "switchboard_document_notifications_total",
                "Yjs \"document changed\" notifications by channel and result",
                &["via", "result"],
            ),
            compression_bytes: counter_vec(
                &registry,
                "switchboard_compression_bytes_total",
                "permessage-deflate payload bytes by direction, before and after (de)compression",
                &["direction", "form"],
            ),
            rooms_queued_bytes: {
                let g = IntGauge::new(
                    "switchboard_rooms_queued_bytes",
                    "Bytes queued for rooms connections (outboxes and unsent SSE chunks)",
                )
                .expect("static metric definition");
                registry
                    .register(Box::new(g.clone()))
                    .expect("metric registered once");
                g
            },
            bus_rooms: {
                let g = IntGauge::new(
                    "switchboard_bus_rooms",
                    "Rooms held by the embedded bus (subscribed, with members or retained messages)",
                )
                .expect("static metric definition");
                registry
                    .register(Box::new(g.clone()))
                    .expect("metric registered once");
                g
            },
            bus_history_bytes: {
                let g = IntGauge::new(
                    "switchboard_bus_history_bytes",
                    "Bytes of retained history held by the embedded bus (each namespace bounded by history.maxBytes)",
                )
                .expect("static metric definition");
                registry
                    .register(Box::new(g.clone()))
                    .expect("metric registered once");
                g
            },
            registry,
            connections_active,
            drain_remaining,
            drain_requests_remaining,
            draining,
            ready,
            config_generation,
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding gathered families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Frame and byte counters for one route and direction.
    pub fn dir(&self, route: &str, direction: &str) -> (IntCounter, IntCounter) {
        (
            self.frames.with_label_values(&[route, direction]),
            self.bytes.with_label_values(&[route, direction]),
        )
    }
}

/// The process-wide registry.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}
