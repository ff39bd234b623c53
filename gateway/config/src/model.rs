//! The typed document. Every field says its default and what happens when it is unset;
//! `docs/config.md` is the user-facing copy of the same facts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The whole gateway configuration: listeners, admin, global limits, drain and routes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayConfig {
    /// Must be `switchboard.dev/v1alpha1`.
    pub api_version: String,
    /// Must be `GatewayConfig`.
    pub kind: String,
    /// Monotonic version of this document. The operator bumps it on every change; gateways
    /// report the generation they loaded on `/readyz` and `/status`. Default 0.
    #[serde(default)]
    pub generation: u64,
    /// Where clients connect. At least one.
    pub listeners: Vec<Listener>,
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`). Default `127.0.0.1:9090`.
    #[serde(default)]
    pub admin: Admin,
    /// Pod-wide limits and handshake hardening.
    #[serde(default)]
    pub limits: GlobalLimits,
    /// Peers whose `X-Forwarded-For` is believed (CIDRs). Default: none, the TCP peer is the client.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// Shutdown behaviour shared by all routes.
    #[serde(default)]
    pub drain: GlobalDrain,
    /// How rooms are relayed between gateway pods. Default: in-process (one pod, no NATS).
    #[serde(default)]
    pub bus: Bus,
    /// The server publish API on the admin listener (`POST /v1/publish`). Unset: disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_api: Option<PublishApi>,
    /// Routes, matched by host then longest path. Default: none (every request gets 404).
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// The room bus.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bus {
    /// NATS (core subjects for live fan-out, JetStream for history). Unset: the embedded
    /// in-process bus with in-memory history (single pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<Nats>,
}

/// NATS connection settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Nats {
    /// Server URLs (`nats://host:4222`, `tls://host:4222`). At least one.
    pub urls: Vec<String>,
    /// Prefix of every subject and stream the gateway uses. Default `switchboard`.
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,
    /// A `.creds` file (JWT + NKey). Unset: no credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<String>,
    /// A token for token auth. Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Require TLS to the servers. Default false (use `tls://` URLs or this).
    #[serde(default)]
    pub tls_required: bool,
    /// Members of a pod that stops refreshing presence disappear after this long. Default 15s.
    #[serde(default = "default_presence_ttl", with = "crate::duration")]
    pub presence_ttl: Duration,
    /// JetStream replicas of the history streams and the presence bucket: 1 (one server holds
    /// them), or 3 / 5 on a JetStream cluster so losing a server loses nothing. Default 1.
    #[serde(default = "default_replicas")]
    pub replicas: u8,
}

fn default_subject_prefix() -> String {
    "switchboard".into()
}
fn default_presence_ttl() -> Duration {
    Duration::from_secs(15)
}
fn default_replicas() -> u8 {
    1
}

/// Bearer-token auth for the server publish API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishApi {
    /// The token inline. One of `token` / `tokenFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A file holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// Most rooms one call may publish to (`room`, `rooms` and `users` together); a call naming
    /// more is refused with 413 `too_many_rooms`. Default 1000.
    #[serde(default = "default_max_rooms_per_call")]
    pub max_rooms_per_call: u32,
}

fn default_max_rooms_per_call() -> u32 {
    1000
}

/// Rooms-mode settings of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rooms {
    /// `json`: the Switchboard room protocol (docs/protocol.md). `raw`: opaque relay, the room
    /// comes from the path (`pathRoom`), every message goes unchanged to the other members.
    /// `yjs`: a Yjs document per room, held and persisted by the gateway, for stock
    /// `y-websocket` clients (docs/documents.md); the document name comes from `pathRoom`.
    #[serde(default)]
    pub protocol: RoomProtocol,
    /// For `raw` and `yjs`: a path pattern with one `{room}` segment, e.g. `/collab/{room}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_room: Option<String>,
    /// For `raw`: also send each message back to its sender. Default false.
    #[serde(default)]
    pub echo: bool,
    /// Rooms are shared by routes with the same namespace. Default: the route name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Room patterns a connection may join: `*` matches any run of characters, `{claim}` is
    /// replaced by that JWT claim (e.g. `user:{sub}`, `chat:*`). Empty: none (default deny).
    #[serde(default)]
    pub join: Vec<String>,
    /// Room patterns a connection may publish to. Empty: none (default deny).
    #[serde(default)]
    pub publish: Vec<String>,
    /// Kept history per room, for resume. Unset: none (resume always says `recovered: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<History>,
    /// Track who is in each room and send join/leave events. Default false.
    #[serde(default)]
    pub presence: bool,
    /// Outbound bytes queued for one connection before it is closed as a slow consumer
    /// (close 4008). Default 1 MiB.
    #[serde(default = "default_max_queue_bytes")]
    pub max_queue_bytes: u64,
    /// POST each client publish to the app first; 2xx accepts (a JSON body replaces the data),
    /// anything else refuses with the app's reason. Unset: publishes are accepted as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_hook: Option<Hook>,
    /// POST connect/disconnect notifications to the app. Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Hook>,
    /// Also publish each connect/disconnect notification (the same JSON `notify` POSTs) on
    /// the core NATS subject `<bus.nats.subjectPrefix>.events.<namespace>`, fire-and-forget.
    /// Needs `bus.nats`. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notify_nats: bool,
    /// For `yjs`: document limits and compaction (docs/documents.md). Unset: the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<Documents>,
    /// Read receipts and unread counts in the rooms matching `receipts.rooms`
    /// (docs/protocol.md, "Read receipts"). Unset: off (a `read` is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipts: Option<Receipts>,
    /// Batched delivery in the rooms matching `batch.rooms` (docs/protocol.md, "Batched
    /// delivery"). Routes that share a namespace must agree on it. Unset: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Batch>,
    /// Offline hand-off for publishes into user rooms (docs/protocol.md, "Offline hand-off").
    /// Unset: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline: Option<Offline>,
}

/// Read receipts of a rooms route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Receipts {
    /// Room patterns (as in `join`) where members may mark a position read and get receipts.
    pub rooms: Vec<String>,
    /// At most one `receipt` per user per room per interval reaches each member (the latest
    /// position wins). Default 1s.
    #[serde(default = "default_receipt_interval", with = "crate::duration")]
    pub interval: Duration,
}

fn default_receipt_interval() -> Duration {
    Duration::from_secs(1)
}

/// Batched delivery of a rooms route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Batch {
    /// Room patterns (as in `join`; `{claim}` is the joining member's) whose messages are
    /// delivered in batches.
    pub rooms: Vec<String>,
    /// A batch is sent this long after its first message. Default 1s.
    #[serde(default = "default_batch_window", with = "crate::duration")]
    pub window: Duration,
    /// A batch is sent as soon as it holds this many messages. Default 50.
    #[serde(default = "default_batch_max")]
    pub max_messages: u32,
    /// Group a batch's messages by this top-level field of their JSON payload (e.g. `type`).
    /// Unset: one group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
}

fn default_batch_window() -> Duration {
    Duration::from_secs(1)
}
fn default_batch_max() -> u32 {
    50
}

/// Offline hand-off of a rooms route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Offline {
    /// User rooms besides `user:{sub}`: patterns with one `{sub}` and no `*` (e.g.
    /// `inbox:{sub}`); the `{sub}` part names the user. Default: none.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// POST an `offline` notification for each stored message into the room of a user with no
    /// live connection anywhere in the cluster (retried). Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Hook>,
    /// Also publish it on the core NATS subject `<bus.nats.subjectPrefix>.offline.<namespace>`.
    /// Needs `bus.nats`. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notify_nats: bool,
}

/// Yjs document settings of a `yjs` rooms route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Documents {
    /// Largest single document update a client may send; larger closes the connection with
    /// 1009. Default 262144 (256 KiB).
    #[serde(default = "default_max_update_bytes")]
    pub max_update_bytes: u64,
    /// Largest document (its encoded state); an update that would grow it past this is
    /// refused and the connection closed with 4010. Default 8388608 (8 MiB).
    #[serde(default = "default_max_document_bytes")]
    pub max_document_bytes: u64,
    /// With `bus.nats`: merge a document's stored updates into one snapshot once this many
    /// are stored after the last snapshot. Default 500.
    #[serde(default = "default_compact_after")]
    pub compact_after_updates: u32,
    /// A document with no editors on this pod is dropped from memory after this long (with
    /// the embedded bus this forgets it: documents are kept in memory only). Default 30s.
    #[serde(default = "default_doc_idle", with = "crate::duration")]
    pub idle_unload: Duration,
    /// POST a "document changed" notification to the app (JSON: the document, its state
    /// vector and size, and the documents API path to fetch its state), at most one per
    /// document per `notifyDebounce`; retried twice. Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Hook>,
    /// Also publish each "document changed" notification on the core NATS subject
    /// `<bus.nats.subjectPrefix>.events.<namespace>` (where `rooms.notifyNats` sends
    /// connection events). Needs `bus.nats`. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notify_nats: bool,
    /// At most one "document changed" notification per document per this window, sent this
    /// long after the first edit it covers (so one always follows the last edit). Shorter
    /// than `idleUnload`. Default 2s.
    #[serde(default = "default_notify_debounce", with = "crate::duration")]
    pub notify_debounce: Duration,
}

impl Default for Documents {
    fn default() -> Self {
        Self {
            max_update_bytes: default_max_update_bytes(),
            max_document_bytes: default_max_document_bytes(),
            compact_after_updates: default_compact_after(),
            idle_unload: default_doc_idle(),
            notify: None,
            notify_nats: false,
            notify_debounce: default_notify_debounce(),
        }
    }
}

fn default_max_update_bytes() -> u64 {
    256 * 1024
}
fn default_max_document_bytes() -> u64 {
    8 * 1024 * 1024
}
fn default_compact_after() -> u32 {
    500
}
fn default_doc_idle() -> Duration {
    Duration::from_secs(30)
}
fn default_notify_debounce() -> Duration {
    Duration::from_secs(2)
}

/// Wire protocol of a rooms route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RoomProtocol {
    /// The JSON rooms protocol (`switchboard.v1`): join, leave, publish, presence.
    #[default]
    Json,
    /// Raw relay: the path names one room and every message goes to its other members as is.
    Raw,
    /// A Yjs document per room (the path names it), held, persisted and replicated by the
    /// gateway for stock y-websocket clients.
    Yjs,
}

/// History retention per room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct History {
    /// Most messages kept per room. Default 100.
    #[serde(default = "default_history_messages")]
    pub max_messages: u32,
    /// Oldest message kept. Default 10m.
    #[serde(default = "default_history_age", with = "crate::duration")]
    pub max_age: Duration,
    /// Most bytes the namespace's history holds, all its rooms together; beyond it the
    /// namespace's oldest messages go first, whichever room holds them. The embedded bus
    /// counts what each message costs in memory, always bounded ([`DEFAULT_HISTORY_BYTES`]
    /// when unset); NATS gives it to the stream as `max_bytes` only when set (JetStream
    /// reserves a stream's `max_bytes` against the server's and account's storage). At least
    /// 64 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

fn default_history_messages() -> u32 {
    100
}
/// What the embedded bus holds of a namespace's history when [`History::max_bytes`] is unset.
pub const DEFAULT_HISTORY_BYTES: u64 = 64 * 1024 * 1024;
/// [`History::max_bytes`]'s least.
pub const MIN_HISTORY_BYTES: u64 = 64 * 1024;
fn default_history_age() -> Duration {
    Duration::from_secs(600)
}
fn default_max_queue_bytes() -> u64 {
    1024 * 1024
}

/// An HTTP callback to the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hook {
    /// `http://` URL (usually the app's Service).
    pub url: String,
    /// Time the app has to answer. Default 2s.
    #[serde(default = "default_hook_timeout", with = "crate::duration")]
    pub timeout: Duration,
}

fn default_hook_timeout() -> Duration {
    Duration::from_secs(2)
}

/// Which transports a rooms route serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Transports {
    /// Default true.
    #[serde(default = "yes")]
    pub websocket: bool,
    /// `GET` with `Accept: text/event-stream`. Default true.
    #[serde(default = "yes")]
    pub sse: bool,
    /// `GET ...?rooms=a,b&cursor=...` long-polling. Default true.
    #[serde(default = "yes")]
    pub long_polling: bool,
}

impl Default for Transports {
    fn default() -> Self {
        Self {
            websocket: true,
            sse: true,
            long_polling: true,
        }
    }
}

/// One listening socket, plain or TLS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listener {
    /// Unique name, used in metrics.
    pub name: String,
    /// `ip:port` to bind.
    pub address: SocketAddr,
    /// TLS termination with rustls. Unset: plain TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// How request paths are normalized before routing. Default: duplicate slashes merged,
    /// encoded slashes and backslashes refused with 400.
    #[serde(default, skip_serializing_if = "ListenerPaths::is_default")]
    pub paths: ListenerPaths,
}

/// Path normalization of one listener. Dot segments are always removed and encoded unreserved
/// characters always decoded (RFC 3986 §5.2.4, §6.2.2), before routing; the app receives the
/// normalized path. These settings cover what RFC 3986 leaves to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerPaths {
    /// Merge runs of `/` into one before routing (`//api///x` is `/api/x`). Default true.
    #[serde(default = "default_merge_slashes")]
    pub merge_slashes: bool,
    /// What to do with `%2F`, `%5C` and `\` in a path. Default `reject` (400).
    #[serde(default)]
    pub escaped_slashes: EscapedSlashes,
}

impl Default for ListenerPaths {
    fn default() -> Self {
        Self {
            merge_slashes: default_merge_slashes(),
            escaped_slashes: EscapedSlashes::default(),
        }
    }
}

impl ListenerPaths {
    /// True for the defaults (left out when a config is written back).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn default_merge_slashes() -> bool {
    true
}

/// The action for encoded slashes (`%2F`), encoded backslashes (`%5C`) and raw backslashes in a
/// request path (Envoy's `pathWithEscapedSlashesAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EscapedSlashes {
    /// Refuse the request with 400 `bad_request`: apps disagree on whether they separate
    /// segments.
    #[default]
    Reject,
    /// Keep them encoded (a raw backslash becomes `%5C`): part of a segment, never a separator,
    /// and forwarded that way.
    Keep,
    /// Decode them to `/` before dot segments are removed, and forward the result.
    UnescapeAndForward,
}

/// TLS certificates for a listener; chosen by SNI, reloaded when the files change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerTls {
    /// At least one. The first is served when SNI is missing or matches no `hostnames`.
    pub certificates: Vec<Certificate>,
}

/// A PEM certificate chain and its private key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Certificate {
    /// PEM file with the leaf certificate first, then intermediates.
    pub cert_file: String,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// SNI names this certificate serves (`*.example.com` allowed). Empty: default only.
    #[serde(default)]
    pub hostnames: Vec<String>,
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Admin {
    /// Default `127.0.0.1:9090`.
    #[serde(default = "default_admin_address")]
    pub address: SocketAddr,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            address: default_admin_address(),
        }
    }
}

fn default_admin_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

/// Pod-wide admission and handshake hardening.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalLimits {
    /// Concurrent client connections (all routes) before new upgrades get 503. Default 10000.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Time a client has to send complete request headers (slowloris guard). Default 10s.
    #[serde(default = "default_handshake_timeout", with = "crate::duration")]
    pub handshake_timeout: Duration,
    /// Most request headers accepted; more gets 431. Default 64.
    #[serde(default = "default_max_header_count")]
    pub max_header_count: usize,
    /// Most bytes of request line plus headers; more gets 431. Default 16384 (minimum 8192).
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Time to connect to a backend and get its handshake response. Default 10s.
    #[serde(default = "default_upstream_timeout", with = "crate::duration")]
    pub upstream_timeout: Duration,
    /// Time a backend has to start answering a plain HTTP request (long-polls included). Default 60s.
    #[serde(default = "default_http_response_timeout", with = "crate::duration")]
    pub http_response_timeout: Duration,
}

impl Default for GlobalLimits {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            handshake_timeout: default_handshake_timeout(),
            max_header_count: default_max_header_count(),
            max_header_bytes: default_max_header_bytes(),
            upstream_timeout: default_upstream_timeout(),
            http_response_timeout: default_http_response_timeout(),
        }
    }
}

fn default_max_connections() -> u32 {
    10_000
}
fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_header_count() -> usize {
    64
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}
fn default_upstream_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_http_response_timeout() -> Duration {
    Duration::from_secs(60)
}

/// What happens on SIGTERM before per-route drains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalDrain {
    /// After SIGTERM `/readyz` fails at once, but listeners keep accepting for this long so
    /// load balancers notice. Default 5s.
    #[serde(default = "default_propagation", with = "crate::duration")]
    pub propagation: Duration,
    /// Hard limit from SIGTERM to exit; connections still open then are cut. Default 60s.
    /// Set `terminationGracePeriodSeconds` to at least this plus 5s.
    #[serde(default = "default_deadline", with = "crate::duration")]
    pub deadline: Duration,
}

impl Default for GlobalDrain {
    fn default() -> Self {
        Self {
            propagation: default_propagation(),
            deadline: default_deadline(),
        }
    }
}

fn default_propagation() -> Duration {
    Duration::from_secs(5)
}
fn default_deadline() -> Duration {
    Duration::from_secs(60)
}

/// One realtime endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    /// Unique name (operator: `namespace/name`), used in metrics and logs.
    pub name: String,
    /// Host names this route serves (exact, case-insensitive, port ignored; `*.example.com`
    /// matches one or more labels). Empty: any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The path to match.
    pub path: PathMatch,
    /// What the gateway does with a matched connection. Default `proxy`.
    #[serde(default)]
    pub mode: Mode,
    /// Origin allow-list, checked before the upgrade.
    #[serde(default)]
    pub origins: Origins,
    /// JWT authentication. Unset: no authentication (anonymous connections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<Jwt>,
    /// Backends and pinning for `mode: proxy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Proxy>,
    /// Rooms settings for `mode: rooms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Rooms>,
    /// Transports for `mode: rooms`. Default: all.
    #[serde(default)]
    pub transports: Transports,
    /// Per-connection and admission limits.
    #[serde(default)]
    pub limits: RouteLimits,
    /// Keep-alive pings toward the client.
    #[serde(default)]
    pub keepalive: Keepalive,
    /// permessage-deflate (RFC 7692) toward the client. Default off.
    #[serde(default)]
    pub compression: Compression,
    /// How this route's connections are closed on shutdown.
    #[serde(default)]
    pub drain: RouteDrain,
    /// Where the route came from (operator: the RealtimeRoute's generation), reported back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_generation: Option<i64>,
}

/// Path matching: exact or prefix (segment-aware: `/ws` matches `/ws` and `/ws/x`, not `/wsx`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathMatch {
    /// `Exact` or `Prefix`. Default `Prefix`.
    #[serde(default, rename = "type")]
    pub kind: PathMatchKind,
    /// Must start with `/`.
    pub value: String,
}

/// How [`PathMatch::value`] is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PathMatchKind {
    /// The whole path equals the value.
    Exact,
    /// The path starts with the value at a segment boundary.
    #[default]
    Prefix,
}

/// What the gateway does with a connection on this route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// Pin to one backend pod and relay frames.
    #[default]
    Proxy,
    /// Serve the connection as a member of rooms.
    Rooms,
}

/// Origin allow-list.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Origins {
    /// Exact origins (`https://app.example.com`, `http://localhost:3000`) and one-label-or-more
    /// wildcards (`https://*.example.com`). Scheme and port must match exactly; host compare is
    /// case-insensitive. Empty: any origin is accepted (non-browser clients, or a public route).
    #[serde(default)]
    pub allowed: Vec<String>,
    /// Accept `Origin: null` (sandboxed iframes, file://). Default false.
    #[serde(default)]
    pub allow_null: bool,
    /// Accept requests without an `Origin` header (non-browser clients). Default: accepted
    /// unless the route takes browser credentials (a cookie token source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_missing: Option<bool>,
}

/// JWT verification for a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Jwt {
    /// Required `iss` (exact). Unset: `iss` not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Accepted audiences; when set, `aud` is required and must contain one of them.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Verification keys. At least one source.
    pub keys: Vec<KeySource>,
    /// Where the token is read from, tried in order. Default: `[{bearer: {}}]`.
    #[serde(default = "default_token_sources")]
    pub token_sources: Vec<TokenSource>,
    /// Clock-skew allowance for `exp`/`nbf`, at most 30s. Default 5s.
    #[serde(default = "default_leeway", with = "crate::duration")]
    pub leeway: Duration,
    /// Close live connections at the token's `exp` (code 4001). Default true.
    #[serde(default = "yes")]
    pub close_on_expiry: bool,
}

fn default_token_sources() -> Vec<TokenSource> {
    vec![TokenSource::Bearer {}]
}
fn default_leeway() -> Duration {
    Duration::from_secs(5)
}
fn yes() -> bool {
    true
}

/// Where to find a token in the handshake request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Bearer {},
    /// A `Sec-WebSocket-Protocol` entry `<prefix><token>` (the browser-friendly way). The entry is
    /// removed before the request reaches the app, so only real subprotocols are negotiated.
    Subprotocol {
        /// Default `bearer.`
        #[serde(default = "default_subprotocol_prefix")]
        prefix: String,
    },
    /// A query parameter; removed before forwarding and logging.
    Query {
        /// Parameter name, e.g. `access_token`.
        name: String,
    },
    /// A cookie (browser credentials: `Origin` becomes mandatory unless `allowMissing`).
    Cookie {
        /// Cookie name.
        name: String,
    },
}

fn default_subprotocol_prefix() -> String {
    "bearer.".into()
}

/// A JWT signature algorithm. `none` does not exist here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// HMAC with SHA-256.
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

impl Algorithm {
    /// Every algorithm the gateway verifies.
    pub const ALL: [Algorithm; 12] = [
        Self::HS256,
        Self::HS384,
        Self::HS512,
        Self::RS256,
        Self::RS384,
        Self::RS512,
        Self::PS256,
        Self::PS384,
        Self::PS512,
        Self::ES256,
        Self::ES384,
        Self::EdDSA,
    ];

    /// Symmetric (HMAC) algorithms need a shared secret, not a public key.
    pub fn is_hmac(self) -> bool {
        matches!(self, Self::HS256 | Self::HS384 | Self::HS512)
    }
}

/// Where verification keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// `rename_all` renames the variants only; the fields of struct variants (`minRefresh`) need
// `rename_all_fields` to be camelCase like the rest of the document.
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum KeySource {
    /// A key in the config: PEM (public key) or a raw secret for HS*.
    Inline {
        /// The algorithm this key verifies; tokens with any other `alg` are refused.
        algorithm: Algorithm,
        /// Matched against the token's `kid`; unset matches any `kid`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kid: Option<String>,
        /// PEM text for public keys, or the secret for HS* (UTF-8).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pem: Option<String>,
        /// HS* secret (UTF-8 text).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<String>,
        /// A single JWK (JSON text).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        jwk: Option<String>,
    },
    /// A key file (PEM public key, raw HS secret, or JWK/JWKS JSON), re-read when it changes.
    File {
        /// The algorithm the key is pinned to.
        algorithm: Algorithm,
        /// Matched against the token's `kid`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kid: Option<String>,
        /// The file to read.
        path: String,
    },
    /// A JWKS document fetched in the background, cached, refreshed on unknown `kid`.
    Jwks {
        /// `https://` (or `http://` for local development) URL.
        url: String,
        /// Algorithms accepted from this set when a JWK has no `alg`. Default: the key type's
        /// usual one (RSA: RS256, EC P-256: ES256, P-384: ES384, OKP: EdDSA).
        #[serde(default)]
        algorithms: Vec<Algorithm>,
        /// Regular refresh period. Default 5m.
        #[serde(default = "default_jwks_refresh", with = "crate::duration")]
        refresh: Duration,
        /// Least time between refreshes triggered by an unknown `kid`. Default 10s.
        #[serde(default = "default_jwks_min_refresh", with = "crate::duration")]
        min_refresh: Duration,
    },
}

fn default_jwks_refresh() -> Duration {
    Duration::from_secs(300)
}
fn default_jwks_min_refresh() -> Duration {
    Duration::from_secs(10)
}

/// Proxy-mode settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Proxy {
    /// Static backend pods (standalone and sidecar use). Empty with no `service`: every
    /// connection gets 503 "no ready backend".
    #[serde(default)]
    pub backends: Vec<Backend>,
    /// A Kubernetes Service whose ready EndpointSlice addresses become the backends (gateway
    /// watches them; terminating endpoints are marked draining). Exclusive with `backends`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceRef>,
    /// Where the consistent-hash key comes from. Default: the client IP.
    #[serde(default)]
    pub pinning: PinningKey,
    /// JWT claim -> request header for the app, e.g. `{sub: X-Switchboard-User}`. Client-sent
    /// copies of these headers are always removed.
    #[serde(default)]
    pub identity_headers: BTreeMap<String, String>,
    /// Sign the identity headers with HMAC-SHA256 so the app can check they came from us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

/// A Service whose endpoints are the backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceRef {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
    /// The Service port (number) whose target port is used on each endpoint.
    pub port: u16,
}

/// One backend address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backend {
    /// `ip:port`.
    pub address: SocketAddr,
    /// A draining backend keeps its open connections but gets no new ones; only its keys move.
    #[serde(default)]
    pub draining: bool,
}

/// Source of the pinning key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum PinningKey {
    /// The client IP (after trusted-proxy resolution).
    #[default]
    ClientIp,
    /// A JWT claim (string or number).
    Claim(String),
    /// A request header.
    Header(String),
    /// A query parameter.
    Query(String),
    /// A cookie.
    Cookie(String),
}

/// HMAC signature over the identity headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Signature {
    /// The shared secret, inline. One of `secret` / `secretFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// A file holding the shared secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    /// Header carrying `t=<unix seconds>,v1=<hex>`. Default `X-Switchboard-Signature`.
    #[serde(default = "default_signature_header")]
    pub header: String,
}

fn default_signature_header() -> String {
    "X-Switchboard-Signature".into()
}

/// permessage-deflate (RFC 7692) on the client side of a route's WebSockets. The gateway
/// always answers with `server_no_context_takeover` and `client_no_context_takeover`, so no
/// connection keeps a compression context between messages (compressors are per worker
/// thread), and a room message is compressed once for every member that negotiated it.
///
/// Off by default: compression costs CPU on every message sent and received, helps only
/// payloads that compress (text, JSON of 1 KiB and more), and a compressed stream can be
/// attacked (CRIME/BREACH-style) when it mixes secrets with attacker-chosen text. Turn it on
/// per route where messages are large and compressible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Compression {
    /// Negotiate permessage-deflate when the client offers it. Default `false`.
    #[serde(default)]
    pub enabled: bool,
    /// Messages shorter than this many bytes are sent uncompressed (RSV1 clear). Default 1024.
    #[serde(default = "default_compression_threshold")]
    pub threshold_bytes: u64,
    /// zlib compression level, 1 (fastest) to 9 (smallest). Default 6.
    #[serde(default = "default_compression_level")]
    pub level: u32,
    /// Largest LZ77 window the gateway compresses with, as a power of two: 9 to 15 (RFC 7692
    /// `server_max_window_bits`; below 15 it is announced in the handshake). Default 15.
    #[serde(default = "default_max_window_bits")]
    pub max_window_bits: u8,
}

impl Default for Compression {
    fn default() -> Self {
        Self {
            enabled: false,
            threshold_bytes: default_compression_threshold(),
            level: default_compression_level(),
            max_window_bits: default_max_window_bits(),
        }
    }
}

fn default_compression_threshold() -> u64 {
    1024
}
fn default_compression_level() -> u32 {
    6
}
fn default_max_window_bits() -> u8 {
    15
}

/// Per-route limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteLimits {
    /// Largest message (all fragments) a client sends, and in proxy mode also one the app
    /// sends; larger closes with 1009. Default 1 MiB.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u64,
    /// Sustained client messages per second per connection; faster closes with 1008. Default 100.
    #[serde(default = "default_messages_per_second")]
    pub messages_per_second: u32,
    /// Burst allowance for the above. Default 200.
    #[serde(default = "default_message_burst")]
    pub message_burst: u32,
    /// Concurrent connections per client IP on this route. Unset: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_per_ip: Option<u32>,
    /// Concurrent connections per user (`sub`) on this route. Unset: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_per_user: Option<u32>,
    /// New connections per second per client IP on this route. Unset: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_connections_per_ip_per_second: Option<u32>,
}

impl Default for RouteLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: default_max_message_bytes(),
            messages_per_second: default_messages_per_second(),
            message_burst: default_message_burst(),
            connections_per_ip: None,
            connections_per_user: None,
            new_connections_per_ip_per_second: None,
        }
    }
}

fn default_max_message_bytes() -> u64 {
    1024 * 1024
}
fn default_messages_per_second() -> u32 {
    100
}
fn default_message_burst() -> u32 {
    200
}

/// Keep-alive pings toward the client (and, in proxy mode, toward the app); a missing pong
/// closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Keepalive {
    /// Ping period. Default 30s. `0s` disables pings.
    #[serde(default = "default_ping_interval", with = "crate::duration")]
    pub interval: Duration,
    /// How long to wait for the pong. Default 20s.
    #[serde(default = "default_pong_timeout", with = "crate::duration")]
    pub timeout: Duration,
    /// Proxy mode: pings toward the app pod, so an app that stops answering (hung, stopped,
    /// partitioned) is noticed. Default on (15s / 10s).
    #[serde(default)]
    pub app: AppKeepalive,
}

impl Default for Keepalive {
    fn default() -> Self {
        Self {
            interval: default_ping_interval(),
            timeout: default_pong_timeout(),
            app: AppKeepalive::default(),
        }
    }
}

/// Keep-alive pings from the gateway toward the app pod of a proxied connection; an app that
/// misses the pong deadline gets the client closed with 1011 "backend not responding".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppKeepalive {
    /// Ping period. Default 15s. `0s` disables pings toward the app.
    #[serde(default = "default_app_ping_interval", with = "crate::duration")]
    pub interval: Duration,
    /// How long to wait for the app's pong. Default 10s.
    #[serde(default = "default_app_pong_timeout", with = "crate::duration")]
    pub timeout: Duration,
}

impl Default for AppKeepalive {
    fn default() -> Self {
        Self {
            interval: default_app_ping_interval(),
            timeout: default_app_pong_timeout(),
        }
    }
}

fn default_app_ping_interval() -> Duration {
    Duration::from_secs(15)
}
fn default_app_pong_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_ping_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_pong_timeout() -> Duration {
    Duration::from_secs(20)
}

/// How a route's connections are closed on shutdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDrain {
    /// Closes are spread uniformly at random across this window (after propagation). Default 10s.
    #[serde(default = "default_drain_window", with = "crate::duration")]
    pub window: Duration,
    /// Close code sent to both sides: 1001, 1012 or 4000-4999. Default 1001.
    #[serde(default = "default_drain_code")]
    pub close_code: u16,
    /// Close reason (at most 123 bytes). Default `server draining, reconnect`.
    #[serde(default = "default_drain_reason")]
    pub close_reason: String,
}

impl Default for RouteDrain {
    fn default() -> Self {
        Self {
            window: default_drain_window(),
            close_code: default_drain_code(),
            close_reason: default_drain_reason(),
        }
    }
}

fn default_drain_window() -> Duration {
    Duration::from_secs(10)
}
fn default_drain_code() -> u16 {
    1001
}
fn default_drain_reason() -> String {
    "server draining, reconnect".into()
}
