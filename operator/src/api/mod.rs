//! The `RealtimeRoute` custom resource (`switchboard.dev/v1alpha1`, namespaced, short name `rtr`).
//!
//! One `RealtimeRoute` is one realtime endpoint on the gateways: which hosts and path it serves,
//! whether connections are proxied to a Service's pods or served as rooms, who may connect
//! (Origin allow-list, JWT), the per-connection limits and how connections are closed on drain.
//! The operator compiles every accepted route into the gateways' `GatewayConfig` snapshot and
//! reports back through `status.conditions` (see [`crate::conditions`] for types and reasons).
//!
//! The schema carries the same rules the operator enforces (patterns, bounds, `maxItems`, CEL
//! rules with messages), so most mistakes are refused by `kubectl apply` itself; whatever slips
//! past is reported as `Accepted=False` with reason `Invalid`.

pub mod duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use duration::Duration;

/// API group of the custom resources.
pub const GROUP: &str = "switchboard.dev";
/// API version of the custom resources.
pub const VERSION: &str = "v1alpha1";

/// Host names: lowercase DNS names, optionally with one leading `*.` wildcard label
/// (Gateway API's `Hostname` pattern).
pub const HOSTNAME_PATTERN: &str =
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// Allowed origins: `scheme://host[:port]`, host optionally starting with `*.`, or a bracketed
/// IPv6 address; no path, query, user info or trailing slash.
pub const ORIGIN_PATTERN: &str = r"^[a-z][a-z0-9+.-]*://((\*\.)?[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$";
/// Request paths: start with `/`, no whitespace, query or fragment.
pub const PATH_PATTERN: &str = r"^/[^\s?#]*$";
/// Service names (DNS-1035 labels).
pub const SERVICE_NAME_PATTERN: &str = r"^[a-z]([-a-z0-9]*[a-z0-9])?$";
/// Secret names (DNS-1123 subdomains).
pub const SECRET_NAME_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// Keys inside a Secret's `data`.
pub const SECRET_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";
/// HTTP header names the gateway may set (letters, digits and `-`).
pub const HEADER_PATTERN: &str = r"^[A-Za-z0-9-]+$";
/// JWKS and hook URLs.
pub const URL_PATTERN: &str = r"^https?://[^\s]+$";
/// Provider names (DNS-1123 labels).
pub const PROVIDER_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// Room authorization patterns: room characters `A-Z a-z 0-9 : _ @ + = -`, `*` (one or more
/// characters; never two in a row) and `{claim}` placeholders (claim names `A-Z a-z 0-9 _`).
/// The same grammar the gateway parses; written so no two alternatives overlap, which keeps
/// backtracking engines linear.
pub const ROOM_PATTERN_PATTERN: &str =
    r"^\*?(([A-Za-z0-9:_@+=-]|\{[A-Za-z0-9_]+\})+\*)*([A-Za-z0-9:_@+=-]|\{[A-Za-z0-9_]+\})*$";
/// Raw-room paths: a request path with exactly one `{room}` and no other braces.
pub const PATH_ROOM_PATTERN: &str = r"^/[^\s?#{}]*\{room\}[^\s?#{}]*$";
/// Rooms namespaces (one NATS subject token).
pub const ROOMS_NAMESPACE_PATTERN: &str = r"^[A-Za-z0-9_-]+$";

/// A realtime endpoint served by the Switchboard gateways.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "switchboard.dev",
    version = "v1alpha1",
    kind = "RealtimeRoute",
    plural = "realtimeroutes",
    singular = "realtimeroute",
    shortname = "rtr",
    category = "switchboard",
    namespaced,
    status = "RealtimeRouteStatus",
    derive = "PartialEq",
    doc = "A realtime (WebSocket, SSE, long-polling) endpoint on the Switchboard gateways: hosts and path, proxy or rooms mode, Origin and JWT checks before the upgrade, per-connection limits and drain behaviour.",
    // Raw JSON form: the structured `printcolumn(type_ = ...)` form trips clippy's
    // `duplicated_attributes` when repeated.
    printcolumn = r#"{"name": "Hosts", "type": "string", "jsonPath": ".spec.hostnames", "description": "Host names served (empty: any host)"}"#,
    printcolumn = r#"{"name": "Mode", "type": "string", "jsonPath": ".spec.mode", "description": "proxy or rooms"}"#,
    printcolumn = r#"{"name": "Accepted", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Accepted\")].status", "description": "Whether the route is valid, resolved and not conflicting"}"#,
    printcolumn = r#"{"name": "Programmed", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Programmed\")].status", "description": "Whether every ready gateway has loaded the route"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.mode != 'proxy' || has(self.backend)",
        "message": "mode proxy needs spec.backend (the Service whose pods get the connections)"
    },
    {
        "rule": "self.mode == 'proxy' || !has(self.backend)",
        "message": "spec.backend is only used in mode proxy"
    },
    {
        "rule": "self.mode == 'rooms' || !has(self.rooms)",
        "message": "spec.rooms is only used in mode rooms"
    },
    {
        "rule": "self.mode == 'rooms' || !has(self.transports) || self.transports.all(t, t == 'WebSocket')",
        "message": "SSE and LongPolling serve rooms; mode proxy carries WebSocket only"
    },
    {
        "rule": "self.mode == 'rooms' || !has(self.drain) || !has(self.drain.reconnectHint)",
        "message": "drain.reconnectHint is about rooms shutdown messages; mode proxy closes with drain.closeCode and drain.closeReason"
    },
    {
        "rule": "!has(self.rooms) || !has(self.rooms.protocol) || self.rooms.protocol == 'json' || !has(self.transports) || self.transports.all(t, t == 'WebSocket')",
        "message": "raw and yjs rooms are WebSocket only: remove SSE and LongPolling from spec.transports"
    },
    {
        "rule": "!has(self.rooms) || !has(self.rooms.pathRoom) || !has(self.path) || (has(self.path.type) && self.path.type == 'Exact') || self.rooms.pathRoom.startsWith(has(self.path.value) ? self.path.value : '/')",
        "message": "rooms.pathRoom must lie under spec.path.value, or no request reaches it"
    },
    {
        "rule": "self.mode == 'proxy' || !has(self.auth) || !has(self.auth.jwt) || self.auth.jwt.providers.all(p, !has(p.claimsToHeaders) || size(p.claimsToHeaders) == 0)",
        "message": "auth.jwt.providers[].claimsToHeaders is only used in mode proxy (rooms hooks get the user as X-Switchboard-User)"
    },
    {
        "rule": "!has(self.limits) || !has(self.limits.connectionsPerUser) || (has(self.auth) && has(self.auth.jwt))",
        "message": "limits.connectionsPerUser needs auth.jwt (the user is the token's sub claim)"
    },
    {
        "rule": "!has(self.backend) || !has(self.backend.pinning) || self.backend.pinning.source != 'Claim' || (has(self.auth) && has(self.auth.jwt))",
        "message": "backend.pinning with source Claim needs auth.jwt"
    },
    {
        "rule": "!has(self.auth) || !has(self.auth.jwt) || !self.auth.jwt.providers.exists(p, has(p.tokenSources) && p.tokenSources.exists(s, s.type == 'Cookie')) || (has(self.auth.allowedOrigins) && size(self.auth.allowedOrigins) > 0)",
        "message": "a route that reads its token from a cookie must list auth.allowedOrigins (cross-site WebSocket hijacking)"
    }
]))]
pub struct RealtimeRouteSpec {
    /// Host names this route serves, matched case-insensitively with the port ignored.
    /// `*.example.com` matches one or more labels in front of `example.com` (not the apex).
    /// Unset or empty: the route serves any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(regex(pattern = HOSTNAME_PATTERN), length(min = 1, max = 253)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub hostnames: Vec<String>,

    /// The request path this route serves. Unset: every path (`PathPrefix` `/`).
    /// Two routes with the same host and path conflict; the older one wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,

    /// What the gateway does with a matched connection: `proxy` pins it to one pod of
    /// `backend` and relays frames; `rooms` serves it as a member of rooms (see `rooms`;
    /// no `backend`). Default `proxy`.
    #[serde(default)]
    pub mode: Mode,

    /// The Service whose pods receive the connections (mode `proxy` only, required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendRef>,

    /// Transports clients may use. `SSE` (`Accept: text/event-stream`, resumable with
    /// `Last-Event-ID`) and `LongPolling` (`GET ?rooms=a,b&cursor=...`) serve JSON rooms; mode
    /// `proxy` and raw rooms carry `WebSocket` only. Unset: every transport for JSON rooms,
    /// `[WebSocket]` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 3))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub transports: Option<Vec<Transport>>,

    /// Who may connect, checked before the upgrade. Unset: any Origin, no authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,

    /// Rooms settings (mode `rooms` only). Unset in mode `rooms`: JSON protocol, no join or
    /// publish patterns (default deny: each connection only receives its own `user:<sub>`
    /// room), no history, no presence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Rooms>,

    /// Per-connection and admission limits. Unset: the defaults listed on each field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,

    /// Keep-alive pings toward the client (a ping every 30s, 20s to answer) and, in proxy mode,
    /// toward the app pod (every 15s, 10s to answer). Unset: those defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<Keepalive>,

    /// permessage-deflate (RFC 7692) toward the client. Unset: off (compression costs CPU per
    /// message and only pays for large, compressible payloads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,

    /// How this route's connections are closed when a gateway pod shuts down.
    /// Unset: closes spread over 10s with code 1001 `server draining, reconnect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<Drain>,
}

/// How the request path is matched.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PathMatch {
    /// `Exact`: the whole path equals `value`. `PathPrefix`: the path starts with `value` at a
    /// segment boundary (`/ws` matches `/ws` and `/ws/a`, not `/wsx`). Default `PathPrefix`.
    #[serde(default, rename = "type")]
    pub kind: PathMatchType,
    /// The path, starting with `/`. Default `/`.
    #[serde(default = "default_path")]
    #[schemars(regex(pattern = PATH_PATTERN), length(min = 1, max = 1024))]
    pub value: String,
}

fn default_path() -> String {
    "/".into()
}

impl Default for PathMatch {
    fn default() -> Self {
        Self {
            kind: PathMatchType::default(),
            value: default_path(),
        }
    }
}

/// `Exact` or `PathPrefix`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum PathMatchType {
    Exact,
    #[default]
    PathPrefix,
}

/// `proxy` (pin to a backend pod) or `rooms` (the gateway serves rooms).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    #[default]
    Proxy,
    Rooms,
}

/// `WebSocket`, `SSE` or `LongPolling`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Transport {
    WebSocket,
    #[serde(rename = "SSE")]
    Sse,
    LongPolling,
}

/// A Service in the route's namespace whose ready endpoints are the backends.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    /// Name of the Service (same namespace as the route). A missing Service sets
    /// `ResolvedRefs=False` (reason `BackendNotFound`); the route stays accepted and its
    /// connections get 503 until the Service has ready endpoints.
    #[schemars(regex(pattern = SERVICE_NAME_PATTERN), length(min = 1, max = 63))]
    pub name: String,
    /// The Service port (its `port`, not the `targetPort`); the gateways connect to the
    /// matching target port of each ready endpoint.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Where the consistent-hash key that pins a client to one pod comes from.
    /// Unset: the client IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinning: Option<Pinning>,
    /// Sign the identity headers (`auth.jwt.providers[].claimsToHeaders`) with HMAC-SHA256 so
    /// the application can check they came from the gateway. Unset: not signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_signature: Option<IdentitySignature>,
}

/// The source of the pinning key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.source == 'ClientIP' ? !has(self.name) : has(self.name)",
        "message": "name is required for sources Claim, Header, Query and Cookie, and not allowed for ClientIP"
    }
]))]
pub struct Pinning {
    /// `ClientIP` (after trusted-proxy resolution), `Claim` (a JWT claim), `Header`, `Query`
    /// (a query parameter) or `Cookie`.
    pub source: PinningSource,
    /// The claim, header, parameter or cookie name. Required unless `source` is `ClientIP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub name: Option<String>,
}

/// `ClientIP`, `Claim`, `Header`, `Query` or `Cookie`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PinningSource {
    #[serde(rename = "ClientIP")]
    ClientIp,
    Claim,
    Header,
    Query,
    Cookie,
}

/// HMAC-SHA256 signature over the identity headers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentitySignature {
    /// The shared secret (at least 32 bytes), from a Secret in the route's namespace.
    pub secret_ref: SecretKeyRef,
    /// Header carrying `t=<unix seconds>,v1=<hex>`. Default `X-Switchboard-Signature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = HEADER_PATTERN), length(min = 1, max = 256))]
    pub header: Option<String>,
}

/// One key of a Secret in the route's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret. A missing Secret or key sets `ResolvedRefs=False` (reason
    /// `SecretNotFound`) and keeps the route out of the gateways (`Accepted=False`, reason
    /// `UnresolvedRefs`): the gateway never serves a route whose keys it does not have.
    #[schemars(regex(pattern = SECRET_NAME_PATTERN), length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret's `data`.
    #[schemars(regex(pattern = SECRET_KEY_PATTERN), length(min = 1, max = 253))]
    pub key: String,
}

/// Origin and token checks, all done before the upgrade.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// Browser origins allowed to connect: exact (`https://app.example.com`,
    /// `http://localhost:3000`) or a wildcard for one or more labels (`https://*.example.com`,
    /// never the apex). Scheme and port must match exactly. Other origins get 403 before the
    /// upgrade. Unset or empty: any Origin is accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(regex(pattern = ORIGIN_PATTERN), length(min = 1, max = 512)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub allowed_origins: Vec<String>,
    /// Accept `Origin: null` (sandboxed iframes, `file://`). Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_null_origin: Option<bool>,
    /// Accept requests that carry no `Origin` header (non-browser clients). Unset: accepted
    /// unless a token source is a cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_missing_origin: Option<bool>,
    /// JWT authentication. Unset: connections are anonymous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtAuth>,
}

/// JWT verification.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtAuth {
    /// Token issuers this route trusts. This release verifies one provider per route; a route
    /// listing more gets `Accepted=False` with reason `Unsupported`.
    #[schemars(length(min = 1, max = 4))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub providers: Vec<JwtProvider>,
}

/// One token issuer and how to verify its tokens.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.jwksUri) != has(self.secretRef)",
        "message": "set exactly one of jwksUri and secretRef"
    },
    {
        "rule": "!has(self.secretRef) || (has(self.algorithms) && size(self.algorithms) > 0)",
        "message": "a secretRef key needs algorithms (the algorithm is pinned to the key)"
    }
]))]
pub struct JwtProvider {
    /// A name for this provider, unique in the route (used in messages).
    #[schemars(regex(pattern = PROVIDER_NAME_PATTERN), length(min = 1, max = 63))]
    pub name: String,
    /// Required `iss` claim (exact match). Unset: `iss` is not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub issuer: Option<String>,
    /// Accepted audiences: when set, `aud` is required and must contain one of them.
    /// Unset or empty: `aud` is not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 1024)))]
    pub audiences: Vec<String>,
    /// A JWKS document (`https://`, or `http://` for development) fetched by the gateways,
    /// refreshed every 5 minutes and when a token names an unknown `kid`.
    /// Exactly one of `jwksUri` and `secretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = URL_PATTERN), length(max = 2048))]
    pub jwks_uri: Option<String>,
    /// A verification key in a Secret: a PEM public key, a single JWK or a JWKS (JSON), or the
    /// shared secret for HS* (at least 32 bytes). The operator copies it into the gateways'
    /// snapshot and follows its rotation. Exactly one of `jwksUri` and `secretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// Accepted signature algorithms. With `secretRef`: required; the key verifies exactly
    /// these. With `jwksUri`: used for keys whose JWK has no `alg`; unset means the key type's
    /// usual algorithm (RSA: RS256, P-256: ES256, P-384: ES384, Ed25519: EdDSA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 12))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub algorithms: Option<Vec<JwtAlgorithm>>,
    /// Where the token is read from, tried in order. Unset: `Authorization: Bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4))]
    pub token_sources: Option<Vec<TokenSource>>,
    /// Claims copied into request headers for the application, e.g.
    /// `{claim: sub, header: X-User}`. Client-sent copies of these headers are always removed.
    /// Unset: no identity headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub claims_to_headers: Vec<ClaimToHeader>,
    /// Clock-skew allowance for `exp` and `nbf`, at most 30s. Default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leeway: Option<Duration>,
    /// Close a live connection when its token expires (close code 4001). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_on_expiry: Option<bool>,
}

/// A JWT signature algorithm (`none` does not exist here).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// Where a token is read from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "(self.type == 'Query' || self.type == 'Cookie') == has(self.name)",
        "message": "name is required for types Query and Cookie, and not allowed for the others"
    },
    {
        "rule": "self.type == 'Subprotocol' || !has(self.prefix)",
        "message": "prefix is only used with type Subprotocol"
    }
]))]
pub struct TokenSource {
    /// `Bearer` (`Authorization: Bearer <token>`), `Subprotocol` (a `Sec-WebSocket-Protocol`
    /// entry `<prefix><token>`, the browser-friendly way; removed before the app sees it),
    /// `Query` (a query parameter, removed before forwarding and logging) or `Cookie`
    /// (browser credentials: `auth.allowedOrigins` becomes mandatory).
    #[serde(rename = "type")]
    pub kind: TokenSourceType,
    /// The query parameter or cookie name (types `Query` and `Cookie` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub name: Option<String>,
    /// The subprotocol prefix (type `Subprotocol` only). Default `bearer.`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub prefix: Option<String>,
}

/// `Bearer`, `Subprotocol`, `Query` or `Cookie`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TokenSourceType {
    Bearer,
    Subprotocol,
    Query,
    Cookie,
}

/// One claim copied into one request header.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimToHeader {
    /// The claim name (string or number claims).
    #[schemars(length(min = 1, max = 256))]
    pub claim: String,
    /// The header the application receives. Hop-by-hop headers, `Host`, `Authorization`,
    /// `Cookie` and `Origin` are refused.
    #[schemars(regex(pattern = HEADER_PATTERN), length(min = 1, max = 256))]
    pub header: String,
}

/// Rooms settings: how the gateway serves a route in mode `rooms`. Mirrors the gateway's
/// `rooms` section; the operator only scopes `namespace` to the route's Kubernetes namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.pathRoom) || !has(self.protocol) || self.protocol == 'json'",
        "message": "protocols raw and yjs need pathRoom, a path with one {room} segment such as /collab/{room}"
    },
    {
        "rule": "!has(self.pathRoom) || (has(self.protocol) && self.protocol != 'json')",
        "message": "pathRoom is only used with protocols raw and yjs (JSON rooms name their rooms in join messages)"
    },
    {
        "rule": "!has(self.echo) || (has(self.protocol) && self.protocol == 'raw')",
        "message": "echo is only used with protocol raw"
    },
    {
        "rule": "!has(self.publishHook) || !has(self.protocol) || self.protocol == 'json'",
        "message": "publishHook is not called for raw or yjs rooms (their messages are relayed unchanged); remove it or use protocol json"
    },
    {
        "rule": "!has(self.documents) || (has(self.protocol) && self.protocol == 'yjs')",
        "message": "documents is only used with protocol yjs"
    }
]))]
pub struct Rooms {
    /// `json`: the Switchboard room protocol (JSON text frames: join, leave, publish,
    /// presence, ping; ordered messages with resume). `raw`: an opaque relay for existing
    /// client protocols (y-websocket and the like): the room comes from the request path
    /// (`pathRoom`) and every text or binary message a member sends goes unchanged to the
    /// other members, WebSocket only. `yjs`: a Yjs document per room (`pathRoom`), held,
    /// stored (JetStream, with a NATS bus) and replicated by the gateways for stock
    /// `y-websocket` clients; `join` may read, `publish` may edit (docs/documents.md), WebSocket
    /// only. Default `json`.
    #[serde(default)]
    pub protocol: RoomProtocol,
    /// Protocols `raw` and `yjs` only, required there: a path with exactly one `{room}` segment, e.g.
    /// `/collab/{room}`; `/collab/doc-1` then joins room `doc-1` (which must match `join`).
    /// Must lie under `spec.path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = PATH_ROOM_PATTERN), length(min = 7, max = 1024))]
    pub path_room: Option<String>,
    /// Protocol `raw` only: also send each message back to its sender. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    /// Routes in the same Kubernetes namespace with the same `namespace` share their rooms
    /// (and must keep the same `history`). The gateways see it as
    /// `<metadata.namespace>_<namespace>`, the name the publish API and NATS subjects use;
    /// routes in other Kubernetes namespaces never share rooms. Default: the route's name
    /// (dots become `_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = ROOMS_NAMESPACE_PATTERN), length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// Room patterns a connection may join. `*` matches one or more characters; `{claim}` is
    /// replaced by that JWT claim's value, e.g. `user:{sub}`, `org:{org}:*`, `chat:*` (a
    /// missing claim, or one that is not a room-safe string, matches nothing). Patterns use
    /// `A-Z a-z 0-9 : _ @ + = -`, `*` (never `**`) and `{claim}`; room names use the same
    /// characters without `*` and braces, at most 128. Unset or empty: no room (default
    /// deny); a JSON-rooms connection with a token is still a member of its own
    /// `user:<sub>` room.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(regex(pattern = ROOM_PATTERN_PATTERN), length(min = 1, max = 256)))]
    pub join: Vec<String>,
    /// Room patterns a connection may publish to (same syntax as `join`). Unset or empty: no
    /// room (default deny; clients only receive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(regex(pattern = ROOM_PATTERN_PATTERN), length(min = 1, max = 256)))]
    pub publish: Vec<String>,
    /// Messages kept per room, for resume (a client rejoining with its last position gets
    /// exactly the gap). Unset: none; a resume then says `recovered: false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<RoomHistory>,
    /// Track who is in each room, cluster-wide; JSON rooms also get join/leave events and
    /// member lists. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<bool>,
    /// Outbound bytes queued for one connection before it is closed as a slow consumer
    /// (close code 4008); other members are not slowed. Default 1048576 (1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 4096, max = 1073741824))]
    pub max_queue_bytes: Option<i64>,
    /// Protocol `json` only: POST each client publish to the app first (with
    /// `X-Switchboard-User` and `X-Switchboard-Route`); 2xx accepts (a JSON body replaces the
    /// data), anything else refuses it with the app's reason. Unset: publishes are accepted as
    /// they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_hook: Option<RoomHook>,
    /// POST connect and disconnect notifications to the app. Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<RoomHook>,
    /// Also publish each connect and disconnect notification (the JSON `notify` POSTs) on the
    /// core NATS subject `<subjectPrefix>.events.<rooms namespace>`, for app pods that
    /// subscribe there. Fire-and-forget: nothing is stored or retried. Needs the gateways'
    /// NATS bus (`bus.nats` in their base config); without it the route is not accepted.
    /// Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_nats: Option<bool>,
    /// Protocol `json` only: read receipts and unread counts in the rooms matching
    /// `receipts.rooms` (a `read` client message, `receipt` events, `read`/`unread` in
    /// `joined`, the publish API's `GET /v1/reads`). Unset: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipts: Option<RoomReceipts>,
    /// Protocol `json` only: deliver the messages of the rooms matching `batch.rooms` in
    /// batches (one `batch` event per window or per `maxMessages`). Routes sharing a rooms
    /// namespace must batch alike. Unset: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<RoomBatch>,
    /// Protocol `json` only: offline hand-off for publishes into user rooms (the publish API
    /// says per user whether it is online; an `offline` notification per stored message to a
    /// user with no live connection). Unset: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline: Option<RoomOffline>,
    /// Protocol `yjs` only: document limits and compaction (docs/documents.md). Unset: the
    /// gateway's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<RoomDocuments>,
}

/// Read receipts of a rooms route.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomReceipts {
    /// Room patterns (as in `join`) with read receipts.
    #[schemars(length(min = 1, max = 32), inner(regex(pattern = ROOM_PATTERN_PATTERN), length(min = 1, max = 256)))]
    pub rooms: Vec<String>,
    /// At most one `receipt` per user per room per interval reaches each member, more than 0s
    /// and at most 1h. Default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
}

/// Batched delivery of a rooms route.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomBatch {
    /// Room patterns (as in `join`; `{claim}` is the member's, e.g. `user:{sub}`).
    #[schemars(length(min = 1, max = 32), inner(regex(pattern = ROOM_PATTERN_PATTERN), length(min = 1, max = 256)))]
    pub rooms: Vec<String>,
    /// A batch is sent this long after its first message, more than 0s and at most 1m.
    /// Default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
    /// A batch is sent as soon as it holds this many messages. Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_messages: Option<i32>,
    /// Group a batch's messages by this top-level field of their JSON payload (e.g. `type`).
    /// Unset: one group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub group_by: Option<String>,
}

/// Offline hand-off of a rooms route.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomOffline {
    /// User rooms besides `user:{sub}`: patterns with one `{sub}` and no `*` (e.g.
    /// `inbox:{sub}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(regex(pattern = ROOM_PATTERN_PATTERN), length(min = 1, max = 256)))]
    pub rooms: Vec<String>,
    /// POST an `offline` notification per stored message into the room of a user with no
    /// live connection (retried 3 times in all). Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<RoomHook>,
    /// Also publish it on the core NATS subject `<subjectPrefix>.offline.<rooms namespace>`.
    /// Needs the gateways' NATS bus. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_nats: Option<bool>,
}

/// Yjs document settings of a `yjs` rooms route; unset fields take the gateway's defaults.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.maxUpdateBytes) || !has(self.maxDocumentBytes) || self.maxUpdateBytes <= self.maxDocumentBytes",
        "message": "maxUpdateBytes must be at most maxDocumentBytes"
    }
]))]
pub struct RoomDocuments {
    /// Largest single document update an editor may send; larger closes with 1009. Default
    /// 262144 (256 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 67108864))]
    pub max_update_bytes: Option<i64>,
    /// Largest document (its encoded state); an update that would grow it past this is
    /// refused and the editor closed with 4010. Default 8388608 (8 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1073741824))]
    pub max_document_bytes: Option<i64>,
    /// With the gateways' NATS bus: merge a document's stored updates into one snapshot once
    /// this many follow the last one. Default 500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub compact_after_updates: Option<i32>,
    /// A document with no editors on a gateway pod is dropped from its memory after this
    /// long (without NATS this forgets it). Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_unload: Option<Duration>,
    /// POST a "document changed" notification (JSON: the document, its state vector and size,
    /// and the documents API path of its state) to the app, at most one per document per
    /// `notifyDebounce`; retried twice. Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<RoomHook>,
    /// Also publish each "document changed" notification on the core NATS subject
    /// `<subjectPrefix>.events.<rooms namespace>`. Needs the gateways' NATS bus. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_nats: Option<bool>,
    /// At most one "document changed" notification per document per this window, sent this
    /// long after the first edit it covers; more than 0s and shorter than `idleUnload`.
    /// Default 2s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_debounce: Option<Duration>,
}

/// `json`, `raw` or `yjs`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RoomProtocol {
    #[default]
    Json,
    Raw,
    Yjs,
}

/// Per-room history bounds; the first bound reached evicts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomHistory {
    /// Most messages kept per room. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_messages: Option<i32>,
    /// Oldest message kept; more than 0s. Default 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    /// Most bytes the namespace's history holds, all its rooms together (the oldest messages
    /// go first, whichever room holds them). At least 65536 (64 KiB). Unset: 64 MiB on the
    /// embedded bus, unbounded on NATS (JetStream reserves a stream's max_bytes against its
    /// storage limits, so it is given to the stream only when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 65536))]
    pub max_bytes: Option<i64>,
}

/// An HTTP callback to the application.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomHook {
    /// `http://` (usually the app's Service, e.g. `http://chat.chat.svc:8080/hooks`) or
    /// `https://` URL that receives the POSTs.
    #[schemars(regex(pattern = URL_PATTERN), length(max = 2048))]
    pub url: String,
    /// How long the app has to answer, more than 0s; a publish hook that times out refuses
    /// the message. Default 2s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// Per-connection and admission limits for this route.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Largest message (all fragments) a client sends, and in proxy mode also one the app
    /// sends; larger closes the connection with 1009 (rooms mode does not check what it
    /// delivers). Default 1048576 (1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 67108864))]
    pub max_message_bytes: Option<i64>,
    /// Sustained client messages per second per connection; faster closes with 1008.
    /// Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub messages_per_second: Option<i32>,
    /// Burst allowance on top of `messagesPerSecond`. Default 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub message_burst: Option<i32>,
    /// Concurrent connections per client IP; more get 429. Unset: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub connections_per_ip: Option<i32>,
    /// Concurrent connections per user (the token's `sub`); more get 429. Needs `auth.jwt`.
    /// Unset: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub connections_per_user: Option<i32>,
    /// New connections per second per client IP; more get 429 with `Retry-After`.
    /// Unset: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub new_connections_per_ip_per_second: Option<i32>,
}

/// Keep-alive pings toward the client (and toward the app pod in proxy mode).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Keepalive {
    /// Ping period; `0s` turns pings off. Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// How long to wait for the pong before closing. Default 20s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Proxy mode: pings from the gateway toward the app pod, so an app that stops answering
    /// is noticed; the client is then closed with 1011 "backend not responding". Unset: on,
    /// every 15s with a 10s pong timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<AppKeepalive>,
}

/// permessage-deflate (RFC 7692) on the client side of the route's WebSockets. The gateway
/// answers with `server_no_context_takeover` and `client_no_context_takeover`, so no
/// connection keeps a compression context between messages, and compresses each room message
/// once for all members.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Compression {
    /// Negotiate permessage-deflate when the client offers it. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Messages shorter than this are sent uncompressed. Default 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1073741824))]
    pub threshold_bytes: Option<i64>,
    /// zlib level, 1 (fastest) to 9 (smallest). Default 6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 9))]
    pub level: Option<i32>,
    /// Largest LZ77 window the gateway compresses with (power of two), 9 to 15. Default 15.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 9, max = 15))]
    pub max_window_bits: Option<i32>,
}

/// Keep-alive pings toward the app pod of a proxied connection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppKeepalive {
    /// Ping period; `0s` turns pings toward the app off. Default 15s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// How long to wait for the app's pong before closing the client. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// How this route's connections are closed when a gateway pod shuts down. The whole drain
/// (propagation + window) must fit in the gateway pods' `terminationGracePeriodSeconds`; the
/// `DrainFits` condition says whether it does.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.closeCode) || self.closeCode == 1000 || self.closeCode == 1001 || self.closeCode == 1012 || self.closeCode == 1013 || (self.closeCode >= 4000 && self.closeCode <= 4999)",
        "message": "closeCode must be 1000, 1001, 1012, 1013 or 4000-4999"
    }
]))]
pub struct Drain {
    /// How long after SIGTERM new connections are still accepted while load balancers notice
    /// the pod is going away. The gateways apply one pod-wide window (the base config's
    /// `drain.propagation`); a route asking for a longer one gets `Accepted=False` with reason
    /// `Unsupported`. Unset: the pod-wide window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<Duration>,
    /// Closes are spread uniformly at random over this window after propagation, so clients
    /// do not reconnect all at once. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
    /// WebSocket close code sent to both sides: 1000, 1001, 1012, 1013 or 4000-4999.
    /// Default 1001.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1000, max = 4999))]
    pub close_code: Option<i32>,
    /// Close reason text (at most 123 bytes). Default `server draining, reconnect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 123))]
    pub close_reason: Option<String>,
    /// Suggested delay before clients reconnect (mode `rooms` only). Not served yet: the
    /// gateways send every JSON-rooms and SSE client a random 0.5-5s hint in the `shutdown`
    /// message (and SSE `retry:`), so a route that sets this gets `Accepted=False` with
    /// reason `Unsupported`. Unset: that random hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect_hint: Option<Duration>,
}

/// What the operator last observed and did with the route.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RealtimeRouteStatus {
    /// `Accepted`, `ResolvedRefs`, `Programmed` and `DrainFits`; each carries the
    /// `observedGeneration` it was computed for. See docs/operator.md for every reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The first gateway snapshot generation that carries this route as it is now; gateways
    /// that report this generation or later on `/status` serve it. Unset while not accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_generation: Option<i64>,
}

impl RealtimeRoute {
    /// `namespace/name`, the route's name in the snapshot, in messages and in metrics.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.metadata.namespace.as_deref().unwrap_or_default(),
            self.metadata.name.as_deref().unwrap_or_default()
        )
    }
}

/// The CustomResourceDefinition as the YAML committed in `crds/realtimeroutes.yaml`
/// (a generated-file header, then the object).
pub fn crd_yaml() -> Result<String, serde_yaml_ng::Error> {
    use kube::CustomResourceExt;
    let body = serde_yaml_ng::to_string(&RealtimeRoute::crd())?;
    Ok(format!(
        "# Generated by `cargo run -p switchboard-operator --bin crdgen -- crds/realtimeroutes.yaml`.\n# Do not edit: change operator/src/api/ and regenerate.\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use switchboard_config::room::Pattern;

    use super::ROOM_PATTERN_PATTERN;

    /// The schema's regex is a restatement the API server can run; the grammar itself is the
    /// config crate's. They must agree, or a route passes `kubectl apply` and is then refused
    /// (or the reverse).
    #[test]
    fn the_schema_room_pattern_regex_agrees_with_the_gateways_grammar() {
        let schema = regex::Regex::new(ROOM_PATTERN_PATTERN).unwrap();
        for sample in [
            "*",
            "**",
            "chat:*",
            "chat:**",
            "*chat*",
            "**x",
            "x*",
            "a*b*c",
            "user:{sub}",
            "user:{sub",
            "user:{}",
            "user:{su b}",
            "{a}{b}",
            "{a}*{b}",
            "*{sub}*",
            "{",
            "}",
            "a}b",
            "a.b",
            "a/b",
            "a b",
            "caf\u{e9}",
            "x@y+z=w-v_u",
            "{org}:{sub}:*",
        ] {
            assert_eq!(
                schema.is_match(sample),
                Pattern::parse(sample).is_ok(),
                "{sample:?}"
            );
        }
    }
}
