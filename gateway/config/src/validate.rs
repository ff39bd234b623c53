//! Whole-document validation. Every rule reports the path of the field it is about, so a
//! human (or the operator writing a status condition) can say exactly what to fix.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::origin::OriginPattern;
use crate::{
    API_VERSION, GatewayConfig, Jwt, KIND, KeySource, ListenerPaths, Mode, PathMatchKind, Route,
    TokenSource,
};

/// One broken rule: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the field, e.g. `routes[0].origins.allowed[2]`.
    pub path: String,
    /// What is wrong, in words a user can act on.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A problem under `prefix` from an error text of the form `field.path: message`: the path
    /// is `prefix.field.path` (or `prefix` when the text names no field). Its printed form is
    /// `prefix.text` either way, as the gateway printed these errors before they were typed.
    pub fn under(prefix: &str, text: impl fmt::Display) -> Self {
        let text = text.to_string();
        match text.split_once(": ") {
            Some((field, message)) if !field.is_empty() => {
                Self::new(format!("{prefix}.{field}"), message)
            }
            _ => Self::new(prefix, text),
        }
    }

    /// All problems, one per line.
    pub fn join(problems: &[Problem]) -> String {
        problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The most a drain close reason may hold (125-byte control payload minus the 2-byte code).
pub const MAX_CLOSE_REASON_BYTES: usize = 123;
/// The most clock skew a route may allow.
pub const MAX_LEEWAY: Duration = Duration::from_secs(30);
/// Shortest identity-signature secret: HMAC-SHA256 keys below the hash size are weak (RFC 2104).
pub const MIN_SIGNATURE_SECRET_BYTES: usize = 32;

/// Check the whole document; an empty list means valid.
pub fn validate(cfg: &GatewayConfig) -> Vec<Problem> {
    let mut p = Vec::new();
    if cfg.api_version != API_VERSION {
        p.push(Problem::new(
            "apiVersion",
            format!("must be `{API_VERSION}`, got `{}`", cfg.api_version),
        ));
    }
    if cfg.kind != KIND {
        p.push(Problem::new(
            "kind",
            format!("must be `{KIND}`, got `{}`", cfg.kind),
        ));
    }
    if cfg.listeners.is_empty() {
        p.push(Problem::new(
            "listeners",
            "at least one listener is required",
        ));
    }
    listener_problems(cfg, &mut p);
    global_limit_problems(cfg, &mut p);
    bus_problems(cfg, &mut p);
    all_route_problems(cfg, &mut p);
    p
}

/// `listeners`: names and addresses unique, TLS settings.
fn listener_problems(cfg: &GatewayConfig, p: &mut Vec<Problem>) {
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let at = format!("listeners[{i}]");
        if l.name.is_empty() {
            p.push(Problem::new(format!("{at}.name"), "must not be empty"));
        }
        if !names.insert(&l.name) {
            p.push(Problem::new(
                format!("{at}.name"),
                format!("duplicate listener name `{}`", l.name),
            ));
        }
        // Port 0 asks for a port the system picks, a different one for each listener.
        let fixed = l.address.port() != 0;
        if fixed && !addrs.insert(l.address) {
            p.push(Problem::new(
                format!("{at}.address"),
                format!("{} is used twice", l.address),
            ));
        } else if let Some(j) = cfg.listeners[..i]
            .iter()
            .position(|o| o.address != l.address && binds_overlap(o.address, l.address))
        {
            p.push(Problem::new(
                format!("{at}.address"),
                format!(
                    "port {} is already bound by listeners[{j}] ({}): a wildcard address takes the port on every address",
                    l.address.port(),
                    cfg.listeners[j].address
                ),
            ));
        }
        if fixed && l.address == cfg.admin.address {
            p.push(Problem::new(
                format!("{at}.address"),
                "is the same as admin.address",
            ));
        } else if binds_overlap(l.address, cfg.admin.address) {
            p.push(Problem::new(
                format!("{at}.address"),
                format!(
                    "port {} is also admin.address's ({}): a wildcard address takes the port on every address",
                    l.address.port(),
                    cfg.admin.address
                ),
            ));
        }
        if let Some(tls) = &l.tls {
            if tls.certificates.is_empty() {
                p.push(Problem::new(
                    format!("{at}.tls.certificates"),
                    "at least one certificate is required",
                ));
            }
            for (j, c) in tls.certificates.iter().enumerate() {
                if c.cert_file.is_empty() || c.key_file.is_empty() {
                    p.push(Problem::new(
                        format!("{at}.tls.certificates[{j}]"),
                        "certFile and keyFile are required",
                    ));
                }
            }
        }
    }
}

/// Whether two sockets cannot both listen: the same fixed port, and the same address or a
/// wildcard one that covers the other (`0.0.0.0` every IPv4 address; `::` every address: the
/// gateway binds IPv6 sockets dual-stack).
fn binds_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    // `::ffff:127.0.0.1` is 127.0.0.1 to a dual-stack socket.
    let (ia, ib) = (a.ip().to_canonical(), b.ip().to_canonical());
    let covers = |w: IpAddr, o: IpAddr| w.is_unspecified() && (w.is_ipv6() || o.is_ipv4());
    a.port() != 0 && a.port() == b.port() && (ia == ib || covers(ia, ib) || covers(ib, ia))
}

/// The document-wide `limits` and `drain`.
fn global_limit_problems(cfg: &GatewayConfig, p: &mut Vec<Problem>) {
    let lim = &cfg.limits;
    if lim.max_connections == 0 {
        p.push(Problem::new("limits.maxConnections", "must be at least 1"));
    }
    if lim.handshake_timeout.is_zero() {
        p.push(Problem::new(
            "limits.handshakeTimeout",
            "must be more than 0s",
        ));
    }
    if lim.upstream_timeout.is_zero() {
        p.push(Problem::new(
            "limits.upstreamTimeout",
            "must be more than 0s",
        ));
    }
    if lim.max_header_count == 0 {
        p.push(Problem::new("limits.maxHeaderCount", "must be at least 1"));
    }
    if lim.max_header_bytes < 8192 {
        p.push(Problem::new(
            "limits.maxHeaderBytes",
            "must be at least 8192",
        ));
    }
    if cfg.drain.deadline <= cfg.drain.propagation {
        p.push(Problem::new(
            "drain.deadline",
            "must be longer than drain.propagation",
        ));
    }
}

/// `bus.nats` and `publishApi`.
fn bus_problems(cfg: &GatewayConfig, p: &mut Vec<Problem>) {
    if let Some(n) = &cfg.bus.nats {
        if n.urls.is_empty() {
            p.push(Problem::new(
                "bus.nats.urls",
                "at least one URL is required",
            ));
        }
        for (i, u) in n.urls.iter().enumerate() {
            if !["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|s| u.starts_with(s))
            {
                p.push(Problem::new(
                    format!("bus.nats.urls[{i}]"),
                    "must start with nats://, tls://, ws:// or wss://",
                ));
            }
        }
        if n.subject_prefix.is_empty()
            || !n
                .subject_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
        {
            p.push(Problem::new(
                "bus.nats.subjectPrefix",
                "use A-Z a-z 0-9 _ - (one subject token)",
            ));
        }
        if n.presence_ttl < Duration::from_secs(1) {
            p.push(Problem::new("bus.nats.presenceTtl", "must be at least 1s"));
        }
        if !(1..=5).contains(&n.replicas) {
            p.push(Problem::new(
                "bus.nats.replicas",
                "must be 1 to 5 (JetStream's limit; 3 on a three-server cluster)",
            ));
        }
    }
    if let Some(api) = &cfg.publish_api {
        if api.token.is_some() == api.token_file.is_some() {
            p.push(Problem::new(
                "publishApi",
                "give exactly one of token, tokenFile",
            ));
        }
        if api.token.as_ref().is_some_and(|t| t.len() < 16) {
            p.push(Problem::new(
                "publishApi.token",
                "must be at least 16 characters",
            ));
        }
        if !(1..=100_000).contains(&api.max_rooms_per_call) {
            p.push(Problem::new(
                "publishApi.maxRoomsPerCall",
                "must be 1 to 100000",
            ));
        }
    }
}

/// Every route, then what routes must not share (names, host + path, rooms namespaces).
fn all_route_problems(cfg: &GatewayConfig, p: &mut Vec<Problem>) {
    let mut namespaces: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (i, r) in cfg.routes.iter().enumerate() {
        if let Some(rooms) = &r.rooms {
            let ns = rooms.namespace.clone().unwrap_or_else(|| r.name.clone());
            if let Some(first) = namespaces.get(&ns) {
                let Some(first_rooms) = cfg.routes[*first].rooms.as_ref() else {
                    continue;
                };
                for (field, what) in namespace_clashes(first_rooms, rooms) {
                    p.push(Problem::new(
                        format!("routes[{i}].rooms.{field}"),
                        format!("namespace `{ns}` is shared with routes[{first}], which {what}"),
                    ));
                }
            } else {
                namespaces.insert(ns, i);
            }
        }
    }
    let mut route_names = HashSet::new();
    let mut matches = BTreeSet::new();
    for (i, r) in cfg.routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        if r.name.is_empty() {
            p.push(Problem::new(format!("{at}.name"), "must not be empty"));
        }
        if !route_names.insert(&r.name) {
            p.push(Problem::new(
                format!("{at}.name"),
                format!("duplicate route name `{}`", r.name),
            ));
        }
        for key in match_keys(r) {
            if !matches.insert(key.clone()) {
                p.push(Problem::new(
                    format!("{at}.path"),
                    format!(
                        "host `{}` path `{}` is already served by an earlier route",
                        key.0, r.path.value
                    ),
                ));
            }
        }
        route_problems(cfg, r, &at, p);
    }
}

/// What two routes serving the same requests share: (host, match type, path), one per host
/// (`*` for none). A prefix matches the same requests with or without its trailing `/`, so
/// its key has none.
pub fn match_keys(r: &Route) -> Vec<(String, u8, String)> {
    let value = match r.path.kind {
        PathMatchKind::Prefix => r.path.value.trim_end_matches('/'),
        PathMatchKind::Exact => r.path.value.as_str(),
    };
    let key = |h: String| (h, r.path.kind as u8, value.to_string());
    if r.hosts.is_empty() {
        vec![key("*".into())]
    } else {
        r.hosts
            .iter()
            .map(|h| key(h.to_ascii_lowercase()))
            .collect()
    }
}

/// Why `other` cannot share a rooms namespace with `first`, as (field of `other`, what
/// `first` does instead); empty when it can. Routes sharing a namespace share its rooms: one
/// history, one batching for every member of a pod, and either documents or room messages
/// (documents live in their own store: a publish into a documents namespace would be
/// acknowledged and never reach an editor).
pub fn namespace_clashes(
    first: &crate::Rooms,
    other: &crate::Rooms,
) -> Vec<(&'static str, &'static str)> {
    let mut clashes = Vec::new();
    if first.history != other.history {
        clashes.push(("history", "keeps different history"));
    }
    if first.batch != other.batch {
        clashes.push(("batch", "batches differently"));
    }
    let yjs = |r: &crate::Rooms| r.protocol == crate::RoomProtocol::Yjs;
    if yjs(first) != yjs(other) {
        clashes.push((
            "protocol",
            if yjs(first) {
                "serves Yjs documents: documents and room messages need namespaces of their own"
            } else {
                "serves room messages: documents and room messages need namespaces of their own"
            },
        ));
    }
    clashes
}

/// Whether some request path both matches the route's `path` and fits `path_room`
/// (`before{room}after`, the room not empty). A Prefix matches at a segment boundary.
fn path_room_fits(path: &crate::PathMatch, path_room: &str) -> bool {
    let Some((before, after)) = path_room.split_once("{room}") else {
        return true; // refused above
    };
    let v = path.value.as_str();
    match path.kind {
        crate::PathMatchKind::Exact => {
            v.len() > before.len() + after.len() && v.starts_with(before) && v.ends_with(after)
        }
        // Either the pattern's fixed start lies under the prefix (at a segment boundary),
        // or the prefix ends inside the room's text.
        crate::PathMatchKind::Prefix => {
            (before.starts_with(v)
                && (before.len() == v.len()
                    || v.ends_with('/')
                    || before.as_bytes().get(v.len()) == Some(&b'/')))
                || (v.starts_with(before) && v.len() > before.len())
        }
    }
}

fn rooms_problems(r: &Route, rooms: &crate::Rooms, at: &str, p: &mut Vec<Problem>) {
    let rat = format!("{at}.rooms");
    for (what, list) in [("join", &rooms.join), ("publish", &rooms.publish)] {
        for (j, pat) in list.iter().enumerate() {
            // The grammar the gateway's rooms authorization parses with (one owner).
            if let Err(why) = crate::room::Pattern::parse(pat) {
                p.push(Problem::new(format!("{rat}.{what}[{j}]"), why));
            }
        }
    }
    match (rooms.protocol, &rooms.path_room) {
        (crate::RoomProtocol::Raw | crate::RoomProtocol::Yjs, None) => p.push(Problem::new(
            format!("{rat}.pathRoom"),
            "raw and yjs rooms need a path pattern like `/collab/{room}`",
        )),
        (crate::RoomProtocol::Raw | crate::RoomProtocol::Yjs, Some(pr))
            if pr.matches("{room}").count() != 1 || !pr.starts_with('/') =>
        {
            p.push(Problem::new(
                format!("{rat}.pathRoom"),
                "must start with `/` and contain `{room}` once",
            ))
        }
        (crate::RoomProtocol::Json, Some(_)) => p.push(Problem::new(
            format!("{rat}.pathRoom"),
            "only raw and yjs rooms take their room from the path",
        )),
        (_, Some(pr)) if !path_room_fits(&r.path, pr) => p.push(Problem::new(
            format!("{rat}.pathRoom"),
            format!(
                "no path of this route (path {} `{}`) fits `{pr}`: every request would be 404",
                match r.path.kind {
                    crate::PathMatchKind::Exact => "Exact",
                    crate::PathMatchKind::Prefix => "Prefix",
                },
                r.path.value
            ),
        )),
        _ => {}
    }
    if let Some(d) = &rooms.documents {
        if rooms.protocol != crate::RoomProtocol::Yjs {
            p.push(Problem::new(
                format!("{rat}.documents"),
                "only used with protocol yjs",
            ));
        }
        if d.max_update_bytes == 0 || d.max_document_bytes < d.max_update_bytes {
            p.push(Problem::new(
                format!("{rat}.documents"),
                "maxUpdateBytes must be more than 0 and at most maxDocumentBytes",
            ));
        }
        if d.compact_after_updates == 0 {
            p.push(Problem::new(
                format!("{rat}.documents.compactAfterUpdates"),
                "must be more than 0",
            ));
        }
        if (d.notify.is_some() || d.notify_nats)
            && (d.notify_debounce.is_zero() || d.notify_debounce >= d.idle_unload)
        {
            p.push(Problem::new(
                format!("{rat}.documents.notifyDebounce"),
                "must be more than 0 and shorter than idleUnload (the pending notification goes with the document)",
            ));
        }
        if let Some(h) = &d.notify
            && !(h.url.starts_with("http://") || h.url.starts_with("https://"))
        {
            p.push(Problem::new(
                format!("{rat}.documents.notify.url"),
                "must be an http:// or https:// URL",
            ));
        }
    }
    if let Some(ns) = &rooms.namespace
        && (ns.is_empty()
            || !ns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b)))
    {
        p.push(Problem::new(
            format!("{rat}.namespace"),
            "use A-Z a-z 0-9 _ -",
        ));
    }
    if r.name
        .bytes()
        .any(|b| !(b.is_ascii_alphanumeric() || b"_-".contains(&b)))
        && rooms.namespace.is_none()
    {
        p.push(Problem::new(
            format!("{rat}.namespace"),
            "the route name has characters a namespace cannot use; set rooms.namespace",
        ));
    }
    if let Some(h) = &rooms.history
        && (h.max_messages == 0 || h.max_age.is_zero())
    {
        p.push(Problem::new(
            format!("{rat}.history"),
            "maxMessages and maxAge must be more than 0",
        ));
    }
    if let Some(max_bytes) = rooms.history.as_ref().and_then(|h| h.max_bytes)
        && max_bytes < crate::MIN_HISTORY_BYTES
    {
        p.push(Problem::new(
            format!("{rat}.history.maxBytes"),
            format!(
                "must be at least {} (64 KiB), got {}",
                crate::MIN_HISTORY_BYTES,
                max_bytes
            ),
        ));
    }
    if rooms.max_queue_bytes < 4096 {
        p.push(Problem::new(
            format!("{rat}.maxQueueBytes"),
            "must be at least 4096",
        ));
    }
    chat_problems(rooms, &rat, p);
    for (name, hook) in [
        ("publishHook", &rooms.publish_hook),
        ("notify", &rooms.notify),
        (
            "offline.notify",
            &rooms.offline.as_ref().and_then(|o| o.notify.clone()),
        ),
    ] {
        if let Some(h) = hook
            && !(h.url.starts_with("http://") || h.url.starts_with("https://"))
        {
            p.push(Problem::new(
                format!("{rat}.{name}.url"),
                "must be an http:// or https:// URL",
            ));
        }
    }
    if r.proxy.is_some() {
        p.push(Problem::new(
            format!("{at}.proxy"),
            "a rooms route has no backends; remove proxy",
        ));
    }
}

/// `rooms.receipts`, `rooms.batch`, `rooms.offline`: patterns parse, bounds hold.
fn chat_problems(rooms: &crate::Rooms, rat: &str, p: &mut Vec<Problem>) {
    let patterns = |list: &[String], at: &str, p: &mut Vec<Problem>| {
        for (j, pat) in list.iter().enumerate() {
            if let Err(e) = crate::room::Pattern::parse(pat) {
                p.push(Problem::new(format!("{rat}.{at}[{j}]"), e));
            }
        }
    };
    let json_only = |at: &str, p: &mut Vec<Problem>| {
        if rooms.protocol != crate::RoomProtocol::Json {
            p.push(Problem::new(
                format!("{rat}.{at}"),
                "only used with protocol json",
            ));
        }
    };
    if let Some(r) = &rooms.receipts {
        json_only("receipts", p);
        patterns(&r.rooms, "receipts.rooms", p);
        if r.interval.is_zero() || r.interval > std::time::Duration::from_secs(3600) {
            p.push(Problem::new(
                format!("{rat}.receipts.interval"),
                "must be more than 0 and at most 1h",
            ));
        }
    }
    if let Some(b) = &rooms.batch {
        json_only("batch", p);
        patterns(&b.rooms, "batch.rooms", p);
        if b.window.is_zero() || b.window > std::time::Duration::from_secs(60) {
            p.push(Problem::new(
                format!("{rat}.batch.window"),
                "must be more than 0 and at most 1m",
            ));
        }
        if !(1..=1000).contains(&b.max_messages) {
            p.push(Problem::new(
                format!("{rat}.batch.maxMessages"),
                "must be 1 to 1000",
            ));
        }
        if b.group_by.as_deref().is_some_and(str::is_empty) {
            p.push(Problem::new(
                format!("{rat}.batch.groupBy"),
                "must name a payload field",
            ));
        }
    }
    if let Some(o) = &rooms.offline {
        json_only("offline", p);
        for (j, pat) in o.rooms.iter().enumerate() {
            match crate::room::Pattern::parse(pat) {
                Err(e) => p.push(Problem::new(format!("{rat}.offline.rooms[{j}]"), e)),
                Ok(parsed) if parsed.user_affixes().is_none() => p.push(Problem::new(
                    format!("{rat}.offline.rooms[{j}]"),
                    format!("`{pat}`: a user room pattern has exactly one `{{sub}}` and no `*` or other claim"),
                )),
                Ok(_) => {}
            }
        }
    }
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "authorization",
    "cookie",
    "origin",
];

fn route_problems(cfg: &GatewayConfig, r: &Route, at: &str, p: &mut Vec<Problem>) {
    for (j, h) in r.hosts.iter().enumerate() {
        let bare = h.strip_prefix("*.").unwrap_or(h);
        if bare.is_empty()
            || bare.contains(['*', '/', ':', ' '])
            || !bare
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            p.push(Problem::new(
                format!("{at}.hosts[{j}]"),
                format!("`{h}` is not a host name (no scheme, port or path)"),
            ));
        }
    }
    if !r.path.value.starts_with('/') {
        p.push(Problem::new(
            format!("{at}.path.value"),
            "must start with `/`",
        ));
    } else if let Some(problem) = path_never_requested(cfg, &r.path.value) {
        p.push(Problem::new(format!("{at}.path.value"), problem));
    }
    for (j, o) in r.origins.allowed.iter().enumerate() {
        if let Err(e) = OriginPattern::parse(o) {
            p.push(Problem::new(format!("{at}.origins.allowed[{j}]"), e.0));
        }
    }
    if let Some(jwt) = &r.jwt {
        jwt_problems(jwt, at, p);
    }
    let cookie_auth = r.jwt.as_ref().is_some_and(|j| {
        j.token_sources
            .iter()
            .any(|s| matches!(s, TokenSource::Cookie { .. }))
    });
    if cookie_auth && r.origins.allowed.is_empty() {
        p.push(Problem::new(
            format!("{at}.origins.allowed"),
            "a route that reads its token from a cookie must list allowed origins (cross-site WebSocket hijacking)",
        ));
    }
    if r.mode == Mode::Proxy && r.rooms.is_some() {
        p.push(Problem::new(
            format!("{at}.rooms"),
            "rooms settings need `mode: rooms`",
        ));
    }
    mode_problems(cfg, r, at, p);
    limits_problems(r, at, p);
    drain_problems(cfg, r, at, p);
}

/// Why no request can have `value` as its path once a listener has normalized it (routing
/// sees only normalized paths, so such a route would never be served), or `None`. A path a
/// listener's settings keep (`//` without `mergeSlashes`, `%2F` with `escapedSlashes: keep`)
/// is fine if any listener keeps it.
fn path_never_requested(cfg: &GatewayConfig, value: &str) -> Option<String> {
    if value.contains(['?', '#']) {
        return Some(
            "a path has no query or fragment (`?`, `#`): routes match the path alone".into(),
        );
    }
    let defaults = [ListenerPaths::default()];
    let options: Vec<ListenerPaths> = if cfg.listeners.is_empty() {
        defaults.to_vec()
    } else {
        cfg.listeners.iter().map(|l| l.paths).collect()
    };
    let mut first = None;
    for opts in options {
        match crate::path::path(value, opts) {
            Ok(n) if n == value => return None,
            Ok(n) => {
                first.get_or_insert_with(|| {
                    format!("requests never have this path after normalization: write `{n}`")
                });
            }
            Err(e) => {
                first.get_or_insert_with(|| {
                    format!(
                        "a request with this path is refused ({e}), so the route is never served"
                    )
                });
            }
        }
    }
    first
}

/// `routes[i].jwt`: keys, token sources, claims.
fn jwt_problems(jwt: &Jwt, at: &str, p: &mut Vec<Problem>) {
    let jat = format!("{at}.jwt");
    if jwt.keys.is_empty() {
        p.push(Problem::new(
            format!("{jat}.keys"),
            "at least one key source is required",
        ));
    }
    if jwt.token_sources.is_empty() {
        p.push(Problem::new(
            format!("{jat}.tokenSources"),
            "at least one token source is required",
        ));
    }
    if jwt.leeway > MAX_LEEWAY {
        p.push(Problem::new(format!("{jat}.leeway"), "must be at most 30s"));
    }
    for (k, s) in jwt.token_sources.iter().enumerate() {
        let empty = match s {
            TokenSource::Query { name } | TokenSource::Cookie { name } => name.is_empty(),
            TokenSource::Subprotocol { prefix } => prefix.is_empty(),
            TokenSource::Bearer {} => false,
        };
        if empty {
            p.push(Problem::new(
                format!("{jat}.tokenSources[{k}]"),
                "name/prefix must not be empty",
            ));
        }
    }
    for (k, key) in jwt.keys.iter().enumerate() {
        let kat = format!("{jat}.keys[{k}]");
        match key {
            KeySource::Inline {
                algorithm,
                pem,
                secret,
                jwk,
                ..
            } => {
                let given = [pem.is_some(), secret.is_some(), jwk.is_some()]
                    .iter()
                    .filter(|x| **x)
                    .count();
                if given != 1 {
                    p.push(Problem::new(
                        kat.clone(),
                        "give exactly one of pem, secret, jwk",
                    ));
                } else if algorithm.is_hmac() && pem.is_some() {
                    p.push(Problem::new(
                        format!("{kat}.pem"),
                        format!("{algorithm:?} needs a secret, not a PEM key"),
                    ));
                } else if !algorithm.is_hmac() && secret.is_some() {
                    p.push(Problem::new(
                        format!("{kat}.secret"),
                        format!("{algorithm:?} needs a public key (pem or jwk), not a secret"),
                    ));
                }
                if let Some(s) = secret
                    && s.len() < 32
                {
                    p.push(Problem::new(
                        format!("{kat}.secret"),
                        "HMAC secrets must be at least 32 bytes",
                    ));
                }
            }
            KeySource::File { path, .. } => {
                if path.is_empty() {
                    p.push(Problem::new(format!("{kat}.path"), "must not be empty"));
                }
            }
            KeySource::Jwks {
                url,
                refresh,
                min_refresh,
                ..
            } => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    p.push(Problem::new(
                        format!("{kat}.url"),
                        "must be an http:// or https:// URL",
                    ));
                }
                if refresh.is_zero() || min_refresh.is_zero() {
                    p.push(Problem::new(
                        kat.clone(),
                        "refresh and minRefresh must be more than 0s",
                    ));
                }
            }
        }
    }
}

/// The route's mode and the settings it needs (`proxy` or `rooms`).
fn mode_problems(cfg: &GatewayConfig, r: &Route, at: &str, p: &mut Vec<Problem>) {
    match r.mode {
        Mode::Proxy => match &r.proxy {
            None => p.push(Problem::new(
                format!("{at}.proxy"),
                "mode `proxy` needs a proxy section with backends",
            )),
            Some(proxy) => {
                if proxy.service.is_some() && !proxy.backends.is_empty() {
                    p.push(Problem::new(
                        format!("{at}.proxy"),
                        "give backends or service, not both",
                    ));
                }
                let mut seen = HashSet::new();
                for (j, b) in proxy.backends.iter().enumerate() {
                    if !seen.insert(b.address) {
                        p.push(Problem::new(
                            format!("{at}.proxy.backends[{j}]"),
                            format!("{} is listed twice", b.address),
                        ));
                    }
                }
                for (claim, header) in &proxy.identity_headers {
                    if !valid_header_name(header)
                        || HOP_BY_HOP.contains(&header.to_ascii_lowercase().as_str())
                    {
                        p.push(Problem::new(
                            format!("{at}.proxy.identityHeaders.{claim}"),
                            format!("`{header}` cannot be used as an identity header"),
                        ));
                    }
                }
                if !proxy.identity_headers.is_empty() && r.jwt.is_none() {
                    p.push(Problem::new(
                        format!("{at}.proxy.identityHeaders"),
                        "needs `jwt` (claims come from the token)",
                    ));
                }
                if let crate::PinningKey::Claim(_) = proxy.pinning
                    && r.jwt.is_none()
                {
                    p.push(Problem::new(
                        format!("{at}.proxy.pinning"),
                        "pinning on a claim needs `jwt`",
                    ));
                }
                if let Some(sig) = &proxy.signature {
                    if sig.secret.is_some() == sig.secret_file.is_some() {
                        p.push(Problem::new(
                            format!("{at}.proxy.signature"),
                            "give exactly one of secret, secretFile",
                        ));
                    }
                    if let Some(secret) = &sig.secret
                        && secret.len() < MIN_SIGNATURE_SECRET_BYTES
                    {
                        p.push(Problem::new(
                            format!("{at}.proxy.signature.secret"),
                            format!(
                                "is {} bytes; an HMAC-SHA256 key needs at least {MIN_SIGNATURE_SECRET_BYTES}",
                                secret.len()
                            ),
                        ));
                    }
                    if !valid_header_name(&sig.header) {
                        p.push(Problem::new(
                            format!("{at}.proxy.signature.header"),
                            "is not a valid header name",
                        ));
                    }
                }
            }
        },
        Mode::Rooms => match &r.rooms {
            None => p.push(Problem::new(
                format!("{at}.rooms"),
                "mode `rooms` needs a rooms section",
            )),
            Some(rooms) => {
                rooms_problems(r, rooms, at, p);
                // The pattern's own text must be a path requests can have (`/r/../x/{room}`
                // never is: normalization removes the `..`).
                if let Some(pr) = rooms.path_room.as_deref().filter(|pr| pr.starts_with('/'))
                    && let Some(problem) = path_never_requested(cfg, &pr.replace("{room}", "r"))
                {
                    p.push(Problem::new(
                        format!("{at}.rooms.pathRoom"),
                        format!("with a room `r` in it: {problem}"),
                    ));
                }
                if rooms.offline.as_ref().is_some_and(|o| o.notify_nats) && cfg.bus.nats.is_none() {
                    p.push(Problem::new(
                        format!("{at}.rooms.offline.notifyNats"),
                        "needs bus.nats (notifications are published on a NATS subject)",
                    ));
                }
                if rooms.notify_nats && cfg.bus.nats.is_none() {
                    p.push(Problem::new(
                        format!("{at}.rooms.notifyNats"),
                        "needs bus.nats (notifications are published on a NATS subject)",
                    ));
                }
                if rooms.documents.as_ref().is_some_and(|d| d.notify_nats) && cfg.bus.nats.is_none()
                {
                    p.push(Problem::new(
                        format!("{at}.rooms.documents.notifyNats"),
                        "needs bus.nats (notifications are published on a NATS subject)",
                    ));
                }
            }
        },
    }
}

/// `routes[i].limits` and `routes[i].keepalive`.
fn limits_problems(r: &Route, at: &str, p: &mut Vec<Problem>) {
    let lim = &r.limits;
    if lim.max_message_bytes == 0 {
        p.push(Problem::new(
            format!("{at}.limits.maxMessageBytes"),
            "must be at least 1",
        ));
    }
    if lim.messages_per_second == 0 || lim.message_burst == 0 {
        p.push(Problem::new(
            format!("{at}.limits"),
            "messagesPerSecond and messageBurst must be at least 1",
        ));
    }
    for (name, v) in [
        ("connectionsPerIp", lim.connections_per_ip),
        ("connectionsPerUser", lim.connections_per_user),
        (
            "newConnectionsPerIpPerSecond",
            lim.new_connections_per_ip_per_second,
        ),
    ] {
        if v == Some(0) {
            p.push(Problem::new(
                format!("{at}.limits.{name}"),
                "must be at least 1 (omit it for no limit)",
            ));
        }
    }
    if lim.connections_per_user.is_some() && r.jwt.is_none() {
        p.push(Problem::new(
            format!("{at}.limits.connectionsPerUser"),
            "needs `jwt` (the user is the token's `sub`)",
        ));
    }
    if !r.keepalive.interval.is_zero() && r.keepalive.timeout.is_zero() {
        p.push(Problem::new(
            format!("{at}.keepalive.timeout"),
            "must be more than 0s when pings are on",
        ));
    }
    if !r.keepalive.app.interval.is_zero() && r.keepalive.app.timeout.is_zero() {
        p.push(Problem::new(
            format!("{at}.keepalive.app.timeout"),
            "must be more than 0s when pings toward the app are on",
        ));
    }
    compression_problems(r, at, p);
}

/// `routes[i].compression`.
fn compression_problems(r: &Route, at: &str, p: &mut Vec<Problem>) {
    let c = &r.compression;
    if !(1..=9).contains(&c.level) {
        p.push(Problem::new(
            format!("{at}.compression.level"),
            "must be 1 to 9",
        ));
    }
    // zlib cannot compress raw deflate with a 256-byte window (8 bits).
    if !(9..=15).contains(&c.max_window_bits) {
        p.push(Problem::new(
            format!("{at}.compression.maxWindowBits"),
            "must be 9 to 15",
        ));
    }
}

/// `routes[i].drain`, against the document's drain timing.
fn drain_problems(cfg: &GatewayConfig, r: &Route, at: &str, p: &mut Vec<Problem>) {
    let d = &r.drain;
    if !(matches!(d.close_code, 1000 | 1001 | 1012 | 1013) || (4000..=4999).contains(&d.close_code))
    {
        p.push(Problem::new(
            format!("{at}.drain.closeCode"),
            "must be 1000, 1001, 1012, 1013 or 4000-4999",
        ));
    }
    if d.close_reason.len() > MAX_CLOSE_REASON_BYTES {
        p.push(Problem::new(
            format!("{at}.drain.closeReason"),
            "must be at most 123 bytes",
        ));
    }
    if cfg.drain.propagation + d.window >= cfg.drain.deadline {
        p.push(Problem::new(
            format!("{at}.drain.window"),
            format!(
                "drain.propagation ({:?}) + this window ({:?}) must end before drain.deadline ({:?})",
                cfg.drain.propagation, d.window, cfg.drain.deadline
            ),
        ));
    }
}

#[cfg(test)]
mod tests;
