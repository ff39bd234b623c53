//! One `RealtimeRoute` -> one `switchboard_config::Route`. Pure: the Services and Secrets the
//! route names are looked up in [`Refs`], a plain copy of what the watches have seen.
//!
//! Defaults are never restated here: wherever the CRD leaves a field unset, the value is built
//! by deserializing the config crate's own wire format, so the gateway's documented defaults
//! apply (one source of truth).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration as StdDuration;

use serde_json::json;
use switchboard_config::{
    Algorithm, GatewayConfig, History, Hook, Jwt, Keepalive, KeySource, Mode as ConfigMode,
    Origins, PathMatch as ConfigPathMatch, PathMatchKind, PinningKey, Proxy,
    RoomProtocol as ConfigRoomProtocol, Rooms as ConfigRooms, Route, RouteDrain, RouteLimits,
    ServiceRef, Signature, Transports,
};

use crate::api::{
    Duration, JwtAlgorithm, JwtProvider, Mode, PathMatchType, PinningSource, RealtimeRoute,
    RoomHook, RoomProtocol, SecretKeyRef, TokenSourceType, Transport,
};
use crate::conditions::reasons;

/// What the watches know about the objects routes refer to, keyed by `(namespace, name)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Refs {
    /// Services and their port numbers.
    pub services: BTreeMap<(String, String), Vec<i32>>,
    /// Secrets and their `data` (already base64-decoded).
    pub secrets: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>,
}

impl Refs {
    /// Record a Service with its ports.
    pub fn with_service(mut self, namespace: &str, name: &str, ports: &[i32]) -> Self {
        self.services
            .insert((namespace.into(), name.into()), ports.to_vec());
        self
    }

    /// Record a Secret with one key.
    pub fn with_secret(mut self, namespace: &str, name: &str, key: &str, value: &[u8]) -> Self {
        self.secrets
            .entry((namespace.into(), name.into()))
            .or_default()
            .insert(key.into(), value.to_vec());
        self
    }
}

/// A yes/no verdict for one condition: the reason and message to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the condition is True.
    pub ok: bool,
    /// One of [`crate::conditions::reasons`].
    pub reason: &'static str,
    /// What to tell the user.
    pub message: String,
}

impl Verdict {
    /// A True verdict.
    pub fn yes(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ok: true,
            reason,
            message: message.into(),
        }
    }

    /// A False verdict.
    pub fn no(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ok: false,
            reason,
            message: message.into(),
        }
    }
}

/// The outcome of looking up everything a route names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The `ResolvedRefs` condition.
    pub verdict: Verdict,
    /// Whether a Secret problem keeps the route out of the snapshot.
    pub blocks: bool,
    /// Secret values by `(secret name, key)`, as UTF-8 text.
    pub material: BTreeMap<(String, String), String>,
}

fn secret_refs(rt: &RealtimeRoute) -> Vec<(String, &SecretKeyRef)> {
    let mut out = Vec::new();
    if let Some(jwt) = rt.spec.auth.as_ref().and_then(|a| a.jwt.as_ref()) {
        for (i, p) in jwt.providers.iter().enumerate() {
            if let Some(r) = &p.secret_ref {
                out.push((format!("spec.auth.jwt.providers[{i}].secretRef"), r));
            }
        }
    }
    if let Some(sig) = rt
        .spec
        .backend
        .as_ref()
        .and_then(|b| b.identity_signature.as_ref())
    {
        out.push((
            "spec.backend.identitySignature.secretRef".into(),
            &sig.secret_ref,
        ));
    }
    out
}

/// Every `(namespace, name)` of a Secret this route reads (used to map Secret events to routes).
pub fn referenced_secrets(rt: &RealtimeRoute) -> BTreeSet<(String, String)> {
    let ns = rt.metadata.namespace.clone().unwrap_or_default();
    secret_refs(rt)
        .into_iter()
        .map(|(_, r)| (ns.clone(), r.name.clone()))
        .collect()
}

/// The `(namespace, name)` of the backend Service, if any.
pub fn referenced_service(rt: &RealtimeRoute) -> Option<(String, String)> {
    let ns = rt.metadata.namespace.clone().unwrap_or_default();
    rt.spec.backend.as_ref().map(|b| (ns, b.name.clone()))
}

/// Why the JWT key material `text` from the Secret at `at` would not load in a gateway, if it
/// would not: it is turned into key sources exactly as [`compile`] does, and each is parsed by
/// the config crate's key parser, the one the gateway builds its verifiers with (a truncated
/// PEM, a private key, a short HMAC secret, a JWK whose `kty` lies...). `None` for other refs.
fn key_problem(rt: &RealtimeRoute, at: &str, text: &str) -> Option<String> {
    let jwt = rt.spec.auth.as_ref()?.jwt.as_ref()?;
    let (i, provider) = jwt
        .providers
        .iter()
        .enumerate()
        .find(|(i, _)| at == format!("spec.auth.jwt.providers[{i}].secretRef"))?;
    let algorithms = provider.algorithms.clone().unwrap_or_default();
    // Problems of shape (no algorithms, JSON that does not parse) are `compile`'s to report.
    let mut shape = Problems::default();
    let sources = inline_keys(
        &format!("spec.auth.jwt.providers[{i}]"),
        text,
        &algorithms,
        &mut shape,
    );
    sources
        .iter()
        .find_map(|source| switchboard_config::keys::check_source(source).err())
}

/// Look up the backend Service (and its port) and every Secret key the route names.
pub fn resolve(rt: &RealtimeRoute, refs: &Refs) -> Resolution {
    let ns = rt.metadata.namespace.clone().unwrap_or_default();
    let mut secret_problems = Vec::new();
    let mut secret_reason = reasons::SECRET_NOT_FOUND;
    let mut material = BTreeMap::new();
    for (at, r) in secret_refs(rt) {
        match refs.secrets.get(&(ns.clone(), r.name.clone())) {
            None => secret_problems.push(format!("{at}: Secret {ns}/{} not found", r.name)),
            Some(data) => match data.get(&r.key) {
                None => secret_problems.push(format!(
                    "{at}: Secret {ns}/{} has no key `{}`",
                    r.name, r.key
                )),
                Some(bytes) => match String::from_utf8(bytes.clone()) {
                    Ok(text) => {
                        if let Some(why) = key_problem(rt, &at, &text) {
                            if secret_problems.is_empty() {
                                secret_reason = reasons::INVALID_SECRET;
                            }
                            secret_problems.push(format!(
                                "{at}: key `{}` of Secret {ns}/{}: {why}",
                                r.key, r.name
                            ));
                        }
                        material.insert((r.name.clone(), r.key.clone()), text);
                    }
                    Err(_) => {
                        if secret_problems.is_empty() {
                            secret_reason = reasons::INVALID_SECRET;
                        }
                        secret_problems.push(format!(
                            "{at}: key `{}` of Secret {ns}/{} is not UTF-8 text",
                            r.key, r.name
                        ));
                    }
                },
            },
        }
    }
    let backend_problem = rt.spec.backend.as_ref().and_then(|b| {
        match refs.services.get(&(ns.clone(), b.name.clone())) {
            None => Some(format!(
                "spec.backend: Service {ns}/{} not found (connections get 503 until it exists)",
                b.name
            )),
            Some(ports) if !ports.contains(&b.port) => Some(format!(
                "spec.backend.port: Service {ns}/{} has no port {} (it has {})",
                b.name,
                b.port,
                ports
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(_) => None,
        }
    });
    let blocks = !secret_problems.is_empty();
    let verdict = if blocks {
        let mut all = secret_problems;
        all.extend(backend_problem);
        Verdict::no(secret_reason, all.join("; "))
    } else if let Some(p) = backend_problem {
        Verdict::no(reasons::BACKEND_NOT_FOUND, p)
    } else {
        Verdict::yes(reasons::RESOLVED_REFS, "all referenced objects exist")
    };
    Resolution {
        verdict,
        blocks,
        material,
    }
}

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

/// Collects problems as `path: message` lines.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, path: impl AsRef<str>, message: impl AsRef<str>) {
        self.0
            .push(format!("{}: {}", path.as_ref(), message.as_ref()));
    }

    fn duration(&mut self, path: &str, d: &Option<Duration>) -> Option<StdDuration> {
        let d = d.as_ref()?;
        match d.parse() {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(path, e.to_string());
                None
            }
        }
    }

    fn positive_u32(&mut self, path: &str, v: Option<i32>) -> Option<u32> {
        let v = v?;
        match u32::try_from(v) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                self.push(path, format!("must be at least 1, got {v}"));
                None
            }
        }
    }
}

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::HS384 => Algorithm::HS384,
        JwtAlgorithm::HS512 => Algorithm::HS512,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

/// Build a config type from its wire format so the config crate's defaults apply.
fn from_wire<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    what: &str,
    p: &mut Problems,
) -> Option<T> {
    match serde_json::from_value(value) {
        Ok(v) => Some(v),
        Err(e) => {
            p.push(
                what,
                format!("cannot be expressed in the gateway config: {e}"),
            );
            None
        }
    }
}

/// Turn key material from a Secret into inline key sources, one per (key, algorithm).
/// PEM text -> `pem`; JSON -> `jwk` (a JWKS is split into its keys, each keeping its `kid`);
/// anything else -> an HMAC `secret`. Whether the algorithm fits the material is checked by the
/// config validator, whose message then names the field.
fn inline_keys(
    at: &str,
    text: &str,
    algorithms: &[JwtAlgorithm],
    p: &mut Problems,
) -> Vec<KeySource> {
    let inline = |alg: JwtAlgorithm,
                  kid: Option<String>,
                  pem: Option<String>,
                  secret: Option<String>,
                  jwk: Option<String>| {
        KeySource::Inline {
            algorithm: algorithm(alg),
            kid,
            pem,
            secret,
            jwk,
        }
    };
    let trimmed = text.trim_start();
    if trimmed.starts_with("-----BEGIN") {
        return algorithms
            .iter()
            .map(|a| inline(*a, None, Some(text.to_owned()), None, None))
            .collect();
    }
    if trimmed.starts_with('{') {
        let value: serde_json::Value = match serde_json::from_str(trimmed) {
            Ok(v) => v,
            Err(e) => {
                p.push(
                    at,
                    format!("the key looks like JSON (a JWK) but does not parse: {e}"),
                );
                return Vec::new();
            }
        };
        let jwks: Vec<serde_json::Value> = match value.get("keys").and_then(|k| k.as_array()) {
            Some(keys) => keys.clone(),
            None => vec![value],
        };
        if jwks.is_empty() {
            p.push(at, "the JWKS has no keys");
        }
        let mut out = Vec::new();
        for jwk in jwks {
            let kid = jwk.get("kid").and_then(|k| k.as_str()).map(str::to_owned);
            let pinned = jwk.get("alg").and_then(|a| a.as_str()).map(str::to_owned);
            let text = jwk.to_string();
            for a in algorithms {
                let name = serde_json::to_value(a)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned));
                if pinned.is_none() || pinned == name {
                    out.push(inline(*a, kid.clone(), None, None, Some(text.clone())));
                }
            }
        }
        if out.is_empty() {
            p.push(at, "no key in the JWK(S) matches the listed algorithms");
        }
        return out;
    }
    algorithms
        .iter()
        .map(|a| inline(*a, None, None, Some(text.to_owned()), None))
        .collect()
}

fn compile_jwt(
    provider: &JwtProvider,
    material: &BTreeMap<(String, String), String>,
    p: &mut Problems,
) -> Option<Jwt> {
    let at = "spec.auth.jwt.providers[0]";
    let algorithms: Vec<JwtAlgorithm> = provider.algorithms.clone().unwrap_or_default();
    let keys: Vec<KeySource> = match (&provider.jwks_uri, &provider.secret_ref) {
        (Some(url), None) => {
            let algs: Vec<Algorithm> = algorithms.iter().copied().map(algorithm).collect();
            from_wire::<KeySource>(
                json!({"jwks": {"url": url, "algorithms": algs}}),
                &format!("{at}.jwksUri"),
                p,
            )
            .into_iter()
            .collect()
        }
        (None, Some(r)) => {
            if algorithms.is_empty() {
                p.push(
                    format!("{at}.algorithms"),
                    "required with secretRef (the algorithm is pinned to the key)",
                );
                Vec::new()
            } else {
                match material.get(&(r.name.clone(), r.key.clone())) {
                    Some(text) => inline_keys(&format!("{at}.secretRef"), text, &algorithms, p),
                    // Unresolved Secrets are reported by `resolve`; nothing to compile.
                    None => Vec::new(),
                }
            }
        }
        _ => {
            p.push(at, "set exactly one of jwksUri and secretRef");
            Vec::new()
        }
    };
    let mut sources = Vec::new();
    for (i, s) in provider
        .token_sources
        .clone()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let sat = format!("{at}.tokenSources[{i}]");
        let needs_name = matches!(s.kind, TokenSourceType::Query | TokenSourceType::Cookie);
        if needs_name != s.name.is_some() {
            p.push(
                &sat,
                "name is required for types Query and Cookie, and not allowed for the others",
            );
        }
        if s.kind != TokenSourceType::Subprotocol && s.prefix.is_some() {
            p.push(&sat, "prefix is only used with type Subprotocol");
        }
        let name = s.name.clone().unwrap_or_default();
        sources.push(match s.kind {
            TokenSourceType::Bearer => json!({"bearer": {}}),
            TokenSourceType::Subprotocol => match &s.prefix {
                Some(prefix) => json!({"subprotocol": {"prefix": prefix}}),
                None => json!({"subprotocol": {}}),
            },
            TokenSourceType::Query => json!({"query": {"name": name}}),
            TokenSourceType::Cookie => json!({"cookie": {"name": name}}),
        });
    }
    let mut wire = json!({"keys": []});
    if !sources.is_empty() {
        wire["tokenSources"] = serde_json::Value::Array(sources);
    }
    let mut jwt: Jwt = from_wire(wire, at, p)?;
    jwt.keys = keys;
    jwt.issuer = provider.issuer.clone();
    jwt.audiences = provider.audiences.clone();
    if let Some(l) = p.duration(&format!("{at}.leeway"), &provider.leeway) {
        jwt.leeway = l;
    }
    if let Some(c) = provider.close_on_expiry {
        jwt.close_on_expiry = c;
    }
    Some(jwt)
}

/// Why `pattern` is not a room pattern, if it is not one: the schema's length bound, then the
/// gateway's own grammar ([`switchboard_config::room::Pattern`], the one parser the config
/// validator and the gateway's rooms authorization use), checked here so a bad pattern is
/// refused on its route instead of breaking the snapshot.
pub fn room_pattern_problem(pattern: &str) -> Option<String> {
    if pattern.len() > 256 {
        return Some("at most 256 characters".into());
    }
    switchboard_config::room::Pattern::parse(pattern).err()
}

/// Whether the request path `path` is served by the route's path match.
fn served_by(path: &str, m: &ConfigPathMatch) -> bool {
    match m.kind {
        PathMatchKind::Exact => path == m.value,
        PathMatchKind::Prefix => {
            m.value == "/"
                || path.strip_prefix(m.value.as_str()).is_some_and(|rest| {
                    rest.is_empty() || rest.starts_with('/') || m.value.ends_with('/')
                })
        }
    }
}

/// Why `path_room` is not a usable raw-room path for a route matching `m`, if it is not.
fn path_room_problem(path_room: &str, m: &ConfigPathMatch) -> Option<String> {
    if !path_room.starts_with('/') {
        return Some("must start with `/`".into());
    }
    if path_room.matches("{room}").count() != 1 {
        return Some("must contain `{room}` exactly once, e.g. `/collab/{room}`".into());
    }
    let (before, after) = path_room.split_once("{room}").unwrap_or_default();
    if format!("{before}{after}").contains(['{', '}', '?', '#'])
        || path_room.contains(char::is_whitespace)
    {
        return Some(
            "a path with one `{room}`: no other braces, whitespace, query or fragment".into(),
        );
    }
    // A sample request path for this pattern must reach the route.
    let reachable = match m.kind {
        PathMatchKind::Exact => {
            m.value.len() > before.len() + after.len()
                && m.value.starts_with(before)
                && m.value.ends_with(after)
        }
        PathMatchKind::Prefix => served_by(&format!("{before}room{after}"), m),
    };
    (!reachable).then(|| {
        format!(
            "must lie under spec.path.value `{}`, or no request reaches it",
            m.value
        )
    })
}

/// The rooms namespace the gateways see for a route in mode `rooms`:
/// `<metadata.namespace>_<spec.rooms.namespace>`, by default `<metadata.namespace>_<name>`
/// with dots as `_`. Prefixing the Kubernetes namespace keeps tenants' rooms apart whatever
/// they name their namespaces; `_` cannot occur in a Kubernetes namespace, so the prefix is
/// unambiguous.
pub fn rooms_namespace(rt: &RealtimeRoute) -> Option<String> {
    if rt.spec.mode != Mode::Rooms {
        return None;
    }
    let ns = rt.metadata.namespace.as_deref().unwrap_or_default();
    let own = match rt.spec.rooms.as_ref().and_then(|r| r.namespace.as_ref()) {
        Some(n) => n.clone(),
        None => rt
            .metadata
            .name
            .as_deref()
            .unwrap_or_default()
            .replace('.', "_"),
    };
    Some(format!("{ns}_{own}"))
}

fn compile_hook(at: &str, hook: &RoomHook, p: &mut Problems) -> Option<Hook> {
    let mut out: Hook = from_wire(json!({"url": hook.url}), at, p)?;
    if let Some(t) = p.duration(&format!("{at}.timeout"), &hook.timeout) {
        if t.is_zero() {
            p.push(format!("{at}.timeout"), "must be more than 0s");
        } else {
            out.timeout = t;
        }
    }
    Some(out)
}

/// The gateway's `rooms` section for a route in mode `rooms` (unset `spec.rooms`: all the
/// gateway's defaults, i.e. JSON protocol and default deny).
fn compile_rooms(
    rt: &RealtimeRoute,
    path: &ConfigPathMatch,
    p: &mut Problems,
) -> Option<ConfigRooms> {
    let at = "spec.rooms";
    let r = rt.spec.rooms.clone().unwrap_or_default();
    let protocol = r.protocol;
    let raw = protocol == RoomProtocol::Raw;
    let by_path = protocol != RoomProtocol::Json;
    for (what, list) in [("join", &r.join), ("publish", &r.publish)] {
        if list.len() > 32 {
            p.push(format!("{at}.{what}"), "at most 32 patterns");
        }
        for (i, pattern) in list.iter().enumerate() {
            if let Some(why) = room_pattern_problem(pattern) {
                p.push(format!("{at}.{what}[{i}]"), why);
            }
        }
    }
    if let Some(ns) = &r.namespace
        && (ns.is_empty()
            || ns.len() > 63
            || !ns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b)))
    {
        p.push(format!("{at}.namespace"), "1-63 of A-Z a-z 0-9 _ -");
    }
    match &r.path_room {
        None if by_path => p.push(
            format!("{at}.pathRoom"),
            "protocols raw and yjs need pathRoom, a path with one {room} segment such as /collab/{room}",
        ),
        Some(_) if !by_path => p.push(
            format!("{at}.pathRoom"),
            "only used with protocols raw and yjs (JSON rooms name their rooms in join messages)",
        ),
        Some(pr) => {
            if let Some(why) = path_room_problem(pr, path) {
                p.push(format!("{at}.pathRoom"), why);
            }
        }
        None => {}
    }
    if r.echo.is_some() && !raw {
        p.push(format!("{at}.echo"), "only used with protocol raw");
    }
    if r.publish_hook.is_some() && by_path {
        p.push(
            format!("{at}.publishHook"),
            "not called for raw or yjs rooms (their messages are relayed unchanged); remove it or use protocol json",
        );
    }

    let mut rooms: ConfigRooms = from_wire(json!({}), at, p)?;
    rooms.protocol = match protocol {
        RoomProtocol::Json => ConfigRoomProtocol::Json,
        RoomProtocol::Raw => ConfigRoomProtocol::Raw,
        RoomProtocol::Yjs => ConfigRoomProtocol::Yjs,
    };
    rooms.path_room = r.path_room.clone();
    rooms.echo = r.echo.unwrap_or(false);
    rooms.namespace = rooms_namespace(rt);
    rooms.join = r.join.clone();
    rooms.publish = r.publish.clone();
    if let Some(h) = &r.history {
        let hat = format!("{at}.history");
        let mut history: History = from_wire(json!({}), &hat, p)?;
        if let Some(m) = h.max_messages {
            match u32::try_from(m) {
                Ok(n) if (1..=100_000).contains(&n) => history.max_messages = n,
                _ => p.push(
                    format!("{hat}.maxMessages"),
                    format!("must be 1-100000, got {m}"),
                ),
            }
        }
        if let Some(age) = p.duration(&format!("{hat}.maxAge"), &h.max_age) {
            if age.is_zero() {
                p.push(format!("{hat}.maxAge"), "must be more than 0s");
            } else {
                history.max_age = age;
            }
        }
        rooms.history = Some(history);
    }
    rooms.presence = r.presence.unwrap_or(false);
    if let Some(q) = r.max_queue_bytes {
        match u64::try_from(q) {
            Ok(n) if (4096..=1 << 30).contains(&n) => rooms.max_queue_bytes = n,
            _ => p.push(
                format!("{at}.maxQueueBytes"),
                format!("must be 4096-1073741824, got {q}"),
            ),
        }
    }
    rooms.publish_hook = r
        .publish_hook
        .as_ref()
        .and_then(|h| compile_hook(&format!("{at}.publishHook"), h, p));
    rooms.notify = r
        .notify
        .as_ref()
        .and_then(|h| compile_hook(&format!("{at}.notify"), h, p));
    rooms.notify_nats = r.notify_nats.unwrap_or(false);
    Some(rooms)
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
    let namespace = rt.metadata.namespace.clone().unwrap_or_default();

    let path = spec.path.clone().unwrap_or_default();
    let path = ConfigPathMatch {
        kind: match path.kind {
            PathMatchType::Exact => PathMatchKind::Exact,
            PathMatchType::PathPrefix => PathMatchKind::Prefix,
        },
        value: path.value,
    };

    if let Some(t) = &spec.transports
        && spec.mode == Mode::Proxy
        && t.iter().any(|t| *t != Transport::WebSocket)
    {
        p.push(
            "spec.transports",
            "SSE and LongPolling serve rooms; mode proxy carries WebSocket only",
        );
    }
    if spec.mode == Mode::Proxy && spec.rooms.is_some() {
        p.push("spec.rooms", "only used in mode rooms");
    }
    if spec.mode == Mode::Proxy
        && spec
            .drain
            .as_ref()
            .is_some_and(|d| d.reconnect_hint.is_some())
    {
        p.push(
            "spec.drain.reconnectHint",
            "only used in mode rooms; mode proxy closes with drain.closeCode and drain.closeReason",
        );
    }

    let auth = spec.auth.clone().unwrap_or_default();
    let origins = Origins {
        allowed: auth.allowed_origins.clone(),
        allow_null: auth.allow_null_origin.unwrap_or(false),
        allow_missing: auth.allow_missing_origin,
    };
    let provider = auth.jwt.as_ref().and_then(|j| j.providers.first());
    let jwt = provider.and_then(|pr| compile_jwt(pr, material, &mut p));

    let proxy = match (spec.mode, &spec.backend) {
        (Mode::Proxy, None) => {
            p.push("spec.backend", "required in mode proxy");
            None
        }
        (_, None) => None,
        (_, Some(b)) => {
            let port = match u16::try_from(b.port) {
                Ok(port) if port > 0 => port,
                _ => {
                    p.push(
                        "spec.backend.port",
                        format!("must be 1-65535, got {}", b.port),
                    );
                    0
                }
            };
            let pinning = match &b.pinning {
                None => PinningKey::ClientIp,
                Some(pin) => match (pin.source, pin.name.clone()) {
                    (PinningSource::ClientIp, None) => PinningKey::ClientIp,
                    (PinningSource::Claim, Some(n)) => PinningKey::Claim(n),
                    (PinningSource::Header, Some(n)) => PinningKey::Header(n),
                    (PinningSource::Query, Some(n)) => PinningKey::Query(n),
                    (PinningSource::Cookie, Some(n)) => PinningKey::Cookie(n),
                    _ => {
                        p.push(
                            "spec.backend.pinning",
                            "name is required for sources Claim, Header, Query and Cookie, and not allowed for ClientIP",
                        );
                        PinningKey::ClientIp
                    }
                },
            };
            let mut identity_headers = BTreeMap::new();
            for c in provider
                .map(|pr| pr.claims_to_headers.as_slice())
                .unwrap_or_default()
            {
                if identity_headers
                    .insert(c.claim.clone(), c.header.clone())
                    .is_some()
                {
                    p.push(
                        "spec.auth.jwt.providers[0].claimsToHeaders",
                        format!("claim `{}` is listed twice", c.claim),
                    );
                }
            }
            let signature = match &b.identity_signature {
                None => None,
                Some(sig) => {
                    let key = (sig.secret_ref.name.clone(), sig.secret_ref.key.clone());
                    let mut wire =
                        json!({"secret": material.get(&key).cloned().unwrap_or_default()});
                    if let Some(h) = &sig.header {
                        wire["header"] = json!(h);
                    }
                    from_wire::<Signature>(wire, "spec.backend.identitySignature", &mut p)
                }
            };
            Some(Proxy {
                backends: Vec::new(),
                service: Some(ServiceRef {
                    namespace: namespace.clone(),
                    name: b.name.clone(),
                    port,
                }),
                pinning,
                identity_headers,
                signature,
            })
        }
    };

    let mut limits = RouteLimits::default();
    if let Some(l) = &spec.limits {
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
    }

    let mut keepalive = Keepalive::default();
    if let Some(k) = &spec.keepalive {
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
    }

    let mut drain = RouteDrain::default();
    if let Some(d) = &spec.drain {
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
    }

    let raw = spec
        .rooms
        .as_ref()
        .is_some_and(|r| r.protocol != RoomProtocol::Json);
    let transports = match &spec.transports {
        // JSON rooms: the gateway's default (every transport). Proxy, raw and yjs rooms: WebSocket.
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
    };
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
            compile_rooms(rt, &path, &mut p)
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
        drain,
        source_generation: rt.metadata.generation,
    })
}

/// Map a config validator path inside one route (`routes[3].origins.allowed[1]`, given as the
/// part after `routes[3].`) to the CRD field a user edits (`spec.auth.allowedOrigins[1]`).
pub fn crd_path(rt: &RealtimeRoute, config_path: &str) -> String {
    let provider = rt
        .spec
        .auth
        .as_ref()
        .and_then(|a| a.jwt.as_ref())
        .and_then(|j| j.providers.first());
    if config_path.starts_with("jwt.keys") {
        let field = match provider {
            Some(pr) if pr.jwks_uri.is_some() => "jwksUri",
            _ => "secretRef",
        };
        return format!("spec.auth.jwt.providers[0].{field}");
    }
    const TABLE: &[(&str, &str)] = &[
        ("name", "metadata.name"),
        ("hosts", "spec.hostnames"),
        ("path", "spec.path"),
        ("mode", "spec.mode"),
        ("origins.allowed", "spec.auth.allowedOrigins"),
        ("origins.allowNull", "spec.auth.allowNullOrigin"),
        ("origins.allowMissing", "spec.auth.allowMissingOrigin"),
        ("jwt", "spec.auth.jwt.providers[0]"),
        (
            "proxy.identityHeaders",
            "spec.auth.jwt.providers[0].claimsToHeaders",
        ),
        ("proxy.pinning", "spec.backend.pinning"),
        ("proxy.signature", "spec.backend.identitySignature"),
        ("proxy", "spec.backend"),
        ("rooms", "spec.rooms"),
        ("transports", "spec.transports"),
        ("limits", "spec.limits"),
        ("keepalive", "spec.keepalive"),
        ("drain", "spec.drain"),
    ];
    let best = TABLE
        .iter()
        .filter(|(from, _)| {
            config_path == *from
                || config_path
                    .strip_prefix(from)
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
        .max_by_key(|(from, _)| from.len());
    match best {
        Some((from, to)) => {
            let rest = &config_path[from.len()..];
            if from.starts_with("proxy.identityHeaders") || from == &"proxy.signature" {
                // The rest names config-side keys (a claim, `secret`), not CRD fields.
                (*to).to_owned()
            } else {
                format!("{to}{rest}")
            }
        }
        None => format!("spec ({config_path})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{base_config, route};
    use switchboard_config::TokenSource as ConfigTokenSource;

    fn compiled(yaml: &str) -> Route {
        compile(&route("default", "chat", yaml), &BTreeMap::new()).unwrap()
    }

    fn problems(yaml: &str) -> Vec<String> {
        compile(&route("default", "chat", yaml), &BTreeMap::new()).unwrap_err()
    }

    #[test]
    fn a_minimal_proxy_route_compiles_with_the_gateway_defaults() {
        let r = compiled("backend: {name: chat, port: 8080}");
        assert_eq!(r.name, "default/chat");
        assert!(r.hosts.is_empty());
        assert_eq!(r.path.kind, PathMatchKind::Prefix);
        assert_eq!(r.path.value, "/");
        assert_eq!(r.mode, ConfigMode::Proxy);
        assert_eq!(r.limits, RouteLimits::default());
        assert_eq!(r.keepalive, Keepalive::default());
        assert_eq!(r.drain, RouteDrain::default());
        assert!(r.jwt.is_none());
        let proxy = r.proxy.unwrap();
        assert_eq!(
            proxy.service,
            Some(ServiceRef {
                namespace: "default".into(),
                name: "chat".into(),
                port: 8080
            })
        );
        assert_eq!(proxy.pinning, PinningKey::ClientIp);
        assert!(proxy.backends.is_empty());
        assert_eq!(r.source_generation, Some(1));
    }

    #[test]
    fn every_field_reaches_the_compiled_route() {
        let r = compiled(
            r#"
hostnames: [chat.example.com, "*.chat.example.com"]
path: {type: Exact, value: /ws}
backend:
  name: chat
  port: 80
  pinning: {source: Claim, name: sub}
auth:
  allowedOrigins: ["https://app.example.com"]
  allowNullOrigin: true
  allowMissingOrigin: false
  jwt:
    providers:
    - name: idp
      issuer: https://idp.example.com
      audiences: [chat]
      jwksUri: https://idp.example.com/jwks
      algorithms: [RS256, ES256]
      tokenSources: [{type: Subprotocol}, {type: Query, name: access_token}, {type: Bearer}]
      claimsToHeaders: [{claim: sub, header: X-User}]
      leeway: 10s
      closeOnExpiry: false
limits: {maxMessageBytes: 4096, messagesPerSecond: 5, messageBurst: 10, connectionsPerIp: 3, connectionsPerUser: 2, newConnectionsPerIpPerSecond: 1}
keepalive: {interval: 15s, timeout: 5s, app: {interval: 7s, timeout: 3s}}
drain: {window: 20s, closeCode: 4001, closeReason: bye}
"#,
        );
        assert_eq!(r.hosts, ["chat.example.com", "*.chat.example.com"]);
        assert_eq!(r.path.kind, PathMatchKind::Exact);
        assert_eq!(r.path.value, "/ws");
        assert_eq!(r.origins.allowed, ["https://app.example.com"]);
        assert!(r.origins.allow_null);
        assert_eq!(r.origins.allow_missing, Some(false));
        let jwt = r.jwt.unwrap();
        assert_eq!(jwt.issuer.as_deref(), Some("https://idp.example.com"));
        assert_eq!(jwt.audiences, ["chat"]);
        assert_eq!(jwt.leeway, StdDuration::from_secs(10));
        assert!(!jwt.close_on_expiry);
        assert!(matches!(
            &jwt.keys[..],
            [KeySource::Jwks { url, algorithms, refresh, .. }]
                if url == "https://idp.example.com/jwks"
                && algorithms == &[Algorithm::RS256, Algorithm::ES256]
                && *refresh == StdDuration::from_secs(300)
        ));
        assert_eq!(
            jwt.token_sources,
            [
                ConfigTokenSource::Subprotocol {
                    prefix: "bearer.".into()
                },
                ConfigTokenSource::Query {
                    name: "access_token".into()
                },
                ConfigTokenSource::Bearer {},
            ]
        );
        let proxy = r.proxy.unwrap();
        assert_eq!(proxy.pinning, PinningKey::Claim("sub".into()));
        assert_eq!(
            proxy.identity_headers.get("sub").map(String::as_str),
            Some("X-User")
        );
        assert_eq!(r.limits.max_message_bytes, 4096);
        assert_eq!(r.limits.messages_per_second, 5);
        assert_eq!(r.limits.message_burst, 10);
        assert_eq!(r.limits.connections_per_ip, Some(3));
        assert_eq!(r.limits.connections_per_user, Some(2));
        assert_eq!(r.limits.new_connections_per_ip_per_second, Some(1));
        assert_eq!(r.keepalive.interval, StdDuration::from_secs(15));
        assert_eq!(r.keepalive.timeout, StdDuration::from_secs(5));
        assert_eq!(r.keepalive.app.interval, StdDuration::from_secs(7));
        assert_eq!(r.keepalive.app.timeout, StdDuration::from_secs(3));
        assert_eq!(r.drain.window, StdDuration::from_secs(20));
        assert_eq!(r.drain.close_code, 4001);
        assert_eq!(r.drain.close_reason, "bye");
    }

    #[test]
    fn the_default_token_source_is_the_bearer_header() {
        let r = compiled(
            "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: idp, jwksUri: 'https://idp/jwks'}]}}",
        );
        assert_eq!(r.jwt.unwrap().token_sources, [ConfigTokenSource::Bearer {}]);
    }

    fn with_secret(yaml: &str, material: &str) -> Result<Route, Vec<String>> {
        let mut m = BTreeMap::new();
        m.insert(("keys".to_string(), "k".to_string()), material.to_string());
        compile(&route("default", "chat", yaml), &m)
    }

    const SECRET_ROUTE: &str = "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: idp, secretRef: {name: keys, key: k}, algorithms: [ALGS]}]}}";

    #[test]
    fn a_secret_pem_becomes_one_inline_key_per_algorithm() {
        let pem = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n";
        let r = with_secret(&SECRET_ROUTE.replace("ALGS", "RS256, PS256"), pem).unwrap();
        let keys = r.jwt.unwrap().keys;
        assert_eq!(keys.len(), 2);
        assert!(
            keys.iter()
                .all(|k| matches!(k, KeySource::Inline { pem: Some(p), .. } if p == pem))
        );
        assert!(matches!(
            keys[1],
            KeySource::Inline {
                algorithm: Algorithm::PS256,
                ..
            }
        ));
    }

    #[test]
    fn a_secret_that_is_not_pem_or_json_is_an_hmac_secret() {
        let secret = "0123456789abcdef0123456789abcdef";
        let r = with_secret(&SECRET_ROUTE.replace("ALGS", "HS256"), secret).unwrap();
        assert!(matches!(
            &r.jwt.unwrap().keys[..],
            [KeySource::Inline { algorithm: Algorithm::HS256, secret: Some(s), pem: None, jwk: None, .. }] if s == secret
        ));
    }

    #[test]
    fn a_secret_jwks_is_split_into_keys_that_keep_their_kid_and_pinned_alg() {
        let jwks =
            r#"{"keys": [{"kty": "EC", "kid": "a", "alg": "ES256"}, {"kty": "RSA", "kid": "b"}]}"#;
        let r = with_secret(&SECRET_ROUTE.replace("ALGS", "ES256, RS256"), jwks).unwrap();
        let keys = r.jwt.unwrap().keys;
        let summary: Vec<(Algorithm, Option<String>)> = keys
            .iter()
            .map(|k| match k {
                KeySource::Inline {
                    algorithm,
                    kid,
                    jwk,
                    ..
                } => {
                    assert!(jwk.is_some());
                    (*algorithm, kid.clone())
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            summary,
            [
                (Algorithm::ES256, Some("a".into())),
                (Algorithm::ES256, Some("b".into())),
                (Algorithm::RS256, Some("b".into())),
            ]
        );
    }

    #[test]
    fn a_secret_that_looks_like_json_but_is_not_is_invalid() {
        let p = with_secret(&SECRET_ROUTE.replace("ALGS", "RS256"), "{not json").unwrap_err();
        assert!(
            p[0].starts_with("spec.auth.jwt.providers[0].secretRef:"),
            "{p:?}"
        );
    }

    #[test]
    fn a_secret_ref_without_algorithms_is_invalid() {
        let p = problems(
            "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: idp, secretRef: {name: keys, key: k}}]}}",
        );
        assert!(
            p[0].starts_with("spec.auth.jwt.providers[0].algorithms:"),
            "{p:?}"
        );
    }

    #[test]
    fn both_or_neither_key_source_is_invalid() {
        let p =
            problems("backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: idp}]}}");
        assert!(
            p[0].contains("exactly one of jwksUri and secretRef"),
            "{p:?}"
        );
    }

    #[test]
    fn rules_the_schema_checks_with_cel_are_checked_again() {
        let cases = [
            ("mode: proxy", "spec.backend: required in mode proxy"),
            (
                "backend: {name: chat, port: 80}\ntransports: [WebSocket, SSE]",
                "spec.transports:",
            ),
            (
                "backend: {name: chat, port: 80}\nrooms: {presence: true}",
                "spec.rooms:",
            ),
            (
                "backend: {name: chat, port: 80}\ndrain: {reconnectHint: 2s}",
                "spec.drain.reconnectHint:",
            ),
            (
                "backend: {name: chat, port: 80, pinning: {source: Header}}",
                "spec.backend.pinning:",
            ),
            (
                "backend: {name: chat, port: 80, pinning: {source: ClientIP, name: x}}",
                "spec.backend.pinning:",
            ),
            (
                "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: i, jwksUri: 'https://i/j', tokenSources: [{type: Query}]}]}}",
                "spec.auth.jwt.providers[0].tokenSources[0]:",
            ),
            (
                "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: i, jwksUri: 'https://i/j', tokenSources: [{type: Bearer, prefix: x}]}]}}",
                "spec.auth.jwt.providers[0].tokenSources[0]: prefix",
            ),
        ];
        for (yaml, expected) in cases {
            let p = problems(yaml);
            assert!(p.iter().any(|x| x.starts_with(expected)), "{yaml}: {p:?}");
        }
    }

    #[test]
    fn bounds_the_schema_checks_are_checked_again() {
        let cases = [
            ("backend: {name: chat, port: 70000}", "spec.backend.port:"),
            ("backend: {name: chat, port: 0}", "spec.backend.port:"),
            (
                "backend: {name: chat, port: 80}\nlimits: {messagesPerSecond: 0}",
                "spec.limits.messagesPerSecond:",
            ),
            (
                "backend: {name: chat, port: 80}\nlimits: {maxMessageBytes: -1}",
                "spec.limits.maxMessageBytes:",
            ),
            (
                "backend: {name: chat, port: 80}\nlimits: {connectionsPerIp: -3}",
                "spec.limits.connectionsPerIp:",
            ),
            (
                "backend: {name: chat, port: 80}\ndrain: {window: soon}",
                "spec.drain.window:",
            ),
            (
                "backend: {name: chat, port: 80}\nkeepalive: {interval: 1d}",
                "spec.keepalive.interval:",
            ),
            (
                "backend: {name: chat, port: 80}\ndrain: {closeCode: 70000}",
                "spec.drain.closeCode:",
            ),
        ];
        for (yaml, expected) in cases {
            let p = problems(yaml);
            assert!(p.iter().any(|x| x.starts_with(expected)), "{yaml}: {p:?}");
        }
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let p = problems(
            "backend: {name: chat, port: 0}\nlimits: {messageBurst: 0}\ndrain: {window: x}",
        );
        assert_eq!(p.len(), 3, "{p:?}");
    }

    #[test]
    fn duplicate_claims_to_headers_are_invalid() {
        let p = problems(
            "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: i, jwksUri: 'https://i/j', claimsToHeaders: [{claim: sub, header: X-A}, {claim: sub, header: X-B}]}]}}",
        );
        assert!(p[0].contains("listed twice"), "{p:?}");
    }

    #[test]
    fn an_identity_signature_takes_its_secret_from_the_secret_material() {
        let yaml = "backend: {name: chat, port: 80, identitySignature: {secretRef: {name: keys, key: k}, header: X-Sig}}";
        let r = with_secret(yaml, "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t").unwrap();
        let sig = r.proxy.unwrap().signature.unwrap();
        assert_eq!(
            sig.secret.as_deref(),
            Some("s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t")
        );
        assert_eq!(sig.header, "X-Sig");
        assert!(sig.secret_file.is_none());
    }

    #[test]
    fn a_rooms_reconnect_hint_several_providers_and_long_propagation_are_unsupported() {
        let base = base_config();
        assert_eq!(
            unsupported(&route("default", "r", "mode: rooms"), &base),
            None
        );
        let hint = route("default", "r", "mode: rooms\ndrain: {reconnectHint: 3s}");
        assert!(
            unsupported(&hint, &base)
                .unwrap()
                .starts_with("spec.drain.reconnectHint:")
        );
        let two = route(
            "default",
            "r",
            "backend: {name: c, port: 1}\nauth: {jwt: {providers: [{name: a, jwksUri: 'https://a/j'}, {name: b, jwksUri: 'https://b/j'}]}}",
        );
        assert!(
            unsupported(&two, &base)
                .unwrap()
                .contains("one JWT provider")
        );
        let long = route(
            "default",
            "r",
            "backend: {name: c, port: 1}\ndrain: {propagation: 1m}",
        );
        assert!(
            unsupported(&long, &base)
                .unwrap()
                .starts_with("spec.drain.propagation:")
        );
        let short = route(
            "default",
            "r",
            "backend: {name: c, port: 1}\ndrain: {propagation: 1s}",
        );
        assert_eq!(unsupported(&short, &base), None);
    }

    #[test]
    fn drain_needed_is_the_longer_propagation_plus_the_window() {
        let base = base_config();
        let plain = route("default", "r", "backend: {name: c, port: 1}");
        assert_eq!(
            drain_needed(&plain, &base),
            Some(base.drain.propagation + StdDuration::from_secs(10))
        );
        let custom = route(
            "default",
            "r",
            "backend: {name: c, port: 1}\ndrain: {propagation: 1s, window: 30s}",
        );
        assert_eq!(
            drain_needed(&custom, &base),
            Some(base.drain.propagation + StdDuration::from_secs(30))
        );
        let bad = route(
            "default",
            "r",
            "backend: {name: c, port: 1}\ndrain: {window: x}",
        );
        assert_eq!(drain_needed(&bad, &base), None);
    }

    #[test]
    fn resolve_reports_a_missing_service_without_blocking_the_route() {
        let rt = route("default", "chat", "backend: {name: chat, port: 80}");
        let r = resolve(&rt, &Refs::default());
        assert!(!r.verdict.ok);
        assert!(!r.blocks);
        assert_eq!(r.verdict.reason, reasons::BACKEND_NOT_FOUND);
        assert!(
            r.verdict.message.contains("Service default/chat not found"),
            "{}",
            r.verdict.message
        );
    }

    #[test]
    fn resolve_reports_a_missing_service_port() {
        let rt = route("default", "chat", "backend: {name: chat, port: 80}");
        let r = resolve(
            &rt,
            &Refs::default().with_service("default", "chat", &[8080, 9090]),
        );
        assert_eq!(r.verdict.reason, reasons::BACKEND_NOT_FOUND);
        assert!(
            r.verdict
                .message
                .contains("has no port 80 (it has 8080, 9090)"),
            "{}",
            r.verdict.message
        );
    }

    #[test]
    fn resolve_blocks_the_route_on_a_missing_secret_or_key() {
        let rt = route(
            "default",
            "chat",
            "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: i, secretRef: {name: keys, key: k}, algorithms: [HS256]}]}}",
        );
        let refs = Refs::default().with_service("default", "chat", &[80]);
        let r = resolve(&rt, &refs);
        assert!(r.blocks);
        assert_eq!(r.verdict.reason, reasons::SECRET_NOT_FOUND);
        assert!(
            r.verdict.message.contains("Secret default/keys not found"),
            "{}",
            r.verdict.message
        );
        let r = resolve(
            &rt,
            &refs.clone().with_secret("default", "keys", "other", b"x"),
        );
        assert!(r.blocks);
        assert!(
            r.verdict.message.contains("has no key `k`"),
            "{}",
            r.verdict.message
        );
        let r = resolve(
            &rt,
            &refs
                .clone()
                .with_secret("default", "keys", "k", &[0xff, 0xfe]),
        );
        assert_eq!(r.verdict.reason, reasons::INVALID_SECRET);
        let secret = "0123456789abcdef0123456789abcdef";
        let r = resolve(
            &rt,
            &refs.with_secret("default", "keys", "k", secret.as_bytes()),
        );
        assert!(r.verdict.ok);
        assert_eq!(
            r.material
                .get(&("keys".into(), "k".into()))
                .map(String::as_str),
            Some(secret)
        );
    }

    #[test]
    fn secrets_in_another_namespace_do_not_resolve() {
        let rt = route(
            "team-a",
            "chat",
            "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: i, secretRef: {name: keys, key: k}, algorithms: [HS256]}]}}",
        );
        let refs = Refs::default()
            .with_service("team-a", "chat", &[80])
            .with_secret("team-b", "keys", "k", b"x");
        assert!(resolve(&rt, &refs).blocks);
    }

    #[test]
    fn referenced_objects_are_listed_for_event_mapping() {
        let rt = route(
            "ns",
            "chat",
            "backend: {name: svc, port: 80, identitySignature: {secretRef: {name: sig, key: k}}}\nauth: {jwt: {providers: [{name: i, secretRef: {name: keys, key: k}, algorithms: [HS256]}]}}",
        );
        let secrets: Vec<_> = referenced_secrets(&rt).into_iter().collect();
        assert_eq!(
            secrets,
            [
                ("ns".to_string(), "keys".to_string()),
                ("ns".into(), "sig".into())
            ]
        );
        assert_eq!(referenced_service(&rt), Some(("ns".into(), "svc".into())));
    }

    #[test]
    fn config_paths_map_to_the_fields_a_user_edits() {
        let rt = route(
            "ns",
            "chat",
            "backend: {name: svc, port: 80}\nauth: {jwt: {providers: [{name: i, jwksUri: 'https://i/j'}]}}",
        );
        for (from, to) in [
            ("origins.allowed[2]", "spec.auth.allowedOrigins[2]"),
            ("hosts[0]", "spec.hostnames[0]"),
            ("path.value", "spec.path.value"),
            ("jwt.leeway", "spec.auth.jwt.providers[0].leeway"),
            ("jwt.keys[0].url", "spec.auth.jwt.providers[0].jwksUri"),
            (
                "proxy.identityHeaders.sub",
                "spec.auth.jwt.providers[0].claimsToHeaders",
            ),
            ("proxy.signature.header", "spec.backend.identitySignature"),
            ("proxy.pinning", "spec.backend.pinning"),
            ("proxy", "spec.backend"),
            (
                "limits.connectionsPerUser",
                "spec.limits.connectionsPerUser",
            ),
            ("drain.window", "spec.drain.window"),
            ("pathological", "spec (pathological)"),
        ] {
            assert_eq!(crd_path(&rt, from), to, "{from}");
        }
        let with_secret = route(
            "ns",
            "chat",
            "backend: {name: svc, port: 80}\nauth: {jwt: {providers: [{name: i, secretRef: {name: s, key: k}, algorithms: [HS256]}]}}",
        );
        assert_eq!(
            crd_path(&with_secret, "jwt.keys[0].secret"),
            "spec.auth.jwt.providers[0].secretRef"
        );
    }

    #[test]
    fn compiled_routes_pass_the_gateway_validator_with_a_base_config() {
        let mut cfg = base_config();
        cfg.routes.push(compiled(
            "hostnames: [a.example.com]\nbackend: {name: chat, port: 80}",
        ));
        cfg.routes.push(
            compile(
                &route("default", "json", ROOMS_EVERYTHING),
                &BTreeMap::new(),
            )
            .unwrap(),
        );
        cfg.routes
            .push(compile(&route("default", "raw", RAW_RELAY), &BTreeMap::new()).unwrap());
        cfg.routes.push(
            compile(
                &route("default", "bare", "mode: rooms\npath: {value: /bare}"),
                &BTreeMap::new(),
            )
            .unwrap(),
        );
        assert_eq!(switchboard_config::validate(&cfg), vec![]);
    }

    #[test]
    fn a_minimal_rooms_route_compiles_to_the_gateway_defaults_with_default_deny() {
        let r = compiled("mode: rooms");
        assert_eq!(r.mode, ConfigMode::Rooms);
        assert!(r.proxy.is_none());
        assert_eq!(r.transports, Transports::default());
        let rooms = r.rooms.unwrap();
        let defaults: ConfigRooms = serde_json::from_value(json!({})).unwrap();
        assert_eq!(
            rooms,
            ConfigRooms {
                namespace: Some("default_chat".into()),
                ..defaults
            }
        );
        assert!(rooms.join.is_empty() && rooms.publish.is_empty());
        assert_eq!(rooms.protocol, ConfigRoomProtocol::Json);
    }

    const ROOMS_EVERYTHING: &str = r#"
mode: rooms
path: {value: /rooms}
transports: [WebSocket, SSE]
auth:
  jwt:
    providers:
    - name: idp
      jwksUri: https://idp.example.com/jwks
rooms:
  namespace: collab
  join: ["doc:{org}:*", "user:{sub}", "lobby"]
  publish: ["doc:{org}:*"]
  history: {maxMessages: 500, maxAge: 1h}
  presence: true
  maxQueueBytes: 65536
  publishHook: {url: "http://api.collab.svc:8080/hooks/publish", timeout: 500ms}
  notify: {url: "https://api.example.com/hooks/notify"}
"#;

    const RAW_RELAY: &str = r#"
mode: rooms
path: {value: /collab}
rooms:
  protocol: raw
  pathRoom: /collab/{room}
  echo: true
  join: ["*"]
  publish: ["*"]
"#;

    #[test]
    fn every_rooms_field_reaches_the_compiled_route() {
        let r = compiled(ROOMS_EVERYTHING);
        assert_eq!(
            r.transports,
            Transports {
                websocket: true,
                sse: true,
                long_polling: false
            }
        );
        let rooms = r.rooms.unwrap();
        assert_eq!(rooms.protocol, ConfigRoomProtocol::Json);
        assert_eq!(rooms.namespace.as_deref(), Some("default_collab"));
        assert_eq!(rooms.join, ["doc:{org}:*", "user:{sub}", "lobby"]);
        assert_eq!(rooms.publish, ["doc:{org}:*"]);
        assert_eq!(
            rooms.history,
            Some(History {
                max_messages: 500,
                max_age: StdDuration::from_secs(3600)
            })
        );
        assert!(rooms.presence);
        assert_eq!(rooms.max_queue_bytes, 65536);
        assert_eq!(
            rooms.publish_hook,
            Some(Hook {
                url: "http://api.collab.svc:8080/hooks/publish".into(),
                timeout: StdDuration::from_millis(500)
            })
        );
        let notify = rooms.notify.unwrap();
        assert_eq!(notify.url, "https://api.example.com/hooks/notify");
        assert_eq!(
            notify.timeout,
            StdDuration::from_secs(2),
            "the gateway default"
        );
        assert!(rooms.path_room.is_none());
        assert!(!rooms.echo);
    }

    #[test]
    fn nats_notifications_compile_to_the_gateway_flag_and_are_off_when_unset() {
        let notify_nats = |yaml: &str| compiled(yaml).rooms.unwrap().notify_nats;
        assert!(!notify_nats("mode: rooms"), "default false");
        assert!(notify_nats("mode: rooms\nrooms: {notifyNats: true}"));
        assert!(!notify_nats("mode: rooms\nrooms: {notifyNats: false}"));
        let both = compiled(
            "mode: rooms\nrooms: {notifyNats: true, notify: {url: 'http://app.chat.svc/n'}}",
        )
        .rooms
        .unwrap();
        assert!(
            both.notify_nats && both.notify.is_some(),
            "HTTP and NATS together"
        );
    }

    #[test]
    fn history_fields_left_unset_take_the_gateway_defaults() {
        let r = compiled("mode: rooms\nrooms: {history: {maxMessages: 7}}");
        let h = r.rooms.unwrap().history.unwrap();
        assert_eq!(h.max_messages, 7);
        let defaults: History = serde_json::from_value(json!({})).unwrap();
        assert_eq!(h.max_age, defaults.max_age);
    }

    #[test]
    fn a_raw_relay_route_compiles_websocket_only_with_its_path_room() {
        let r = compiled(RAW_RELAY);
        assert_eq!(
            r.transports,
            Transports {
                websocket: true,
                sse: false,
                long_polling: false
            }
        );
        let rooms = r.rooms.unwrap();
        assert_eq!(rooms.protocol, ConfigRoomProtocol::Raw);
        assert_eq!(rooms.path_room.as_deref(), Some("/collab/{room}"));
        assert!(rooms.echo);
    }

    #[test]
    fn a_proxy_route_is_websocket_only_and_has_no_rooms() {
        let r = compiled("backend: {name: chat, port: 80}");
        assert!(r.rooms.is_none());
        assert!(r.transports.websocket && !r.transports.sse && !r.transports.long_polling);
    }

    #[test]
    fn rooms_namespaces_are_scoped_to_the_kubernetes_namespace() {
        let ns = |k8s_ns: &str, name: &str, yaml: &str| rooms_namespace(&route(k8s_ns, name, yaml));
        assert_eq!(
            ns("team-a", "chat", "mode: rooms").as_deref(),
            Some("team-a_chat")
        );
        assert_eq!(
            ns("team-a", "chat.v2", "mode: rooms").as_deref(),
            Some("team-a_chat_v2")
        );
        assert_eq!(
            ns("team-b", "x", "mode: rooms\nrooms: {namespace: chat}").as_deref(),
            Some("team-b_chat")
        );
        assert_eq!(ns("team-a", "p", "backend: {name: c, port: 1}"), None);
    }

    #[test]
    fn the_room_pattern_grammar_is_the_gateways() {
        for good in [
            "*",
            "chat:*",
            "user:{sub}",
            "org:{org}:*",
            "a*b*c",
            "*{sub}*",
            "x@y+z=w-v_u",
            "{a}{b}",
        ] {
            assert_eq!(room_pattern_problem(good), None, "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("chat:**", "`**`"),
            ("user:{}", "must name a claim"),
            ("user:{su b}", "must name a claim"),
            ("user:{sub", "without its"),
            ("a.b", "`.` cannot appear"),
            ("a/b", "`/` cannot appear"),
            ("caf\u{e9}", "`\u{e9}` cannot appear"),
            ("a}b", "`}` cannot appear"),
        ] {
            let problem = room_pattern_problem(bad).unwrap_or_default();
            assert!(problem.contains(why), "{bad:?}: {problem:?}");
        }
    }

    #[test]
    fn rooms_rules_the_schema_checks_are_checked_again() {
        let cases = [
            (
                "mode: rooms\nrooms: {protocol: raw}",
                "spec.rooms.pathRoom: protocols raw and yjs need pathRoom",
            ),
            (
                "mode: rooms\nrooms: {pathRoom: '/r/{room}'}",
                "spec.rooms.pathRoom: only used with protocols raw and yjs",
            ),
            ("mode: rooms\nrooms: {echo: false}", "spec.rooms.echo:"),
            (
                "mode: rooms\nrooms: {protocol: raw, pathRoom: '/r/{room}', publishHook: {url: 'http://h/p'}}",
                "spec.rooms.publishHook: not called for raw or yjs rooms",
            ),
            (
                "mode: rooms\ntransports: [WebSocket, SSE]\nrooms: {protocol: raw, pathRoom: '/r/{room}'}",
                "spec.transports: raw and yjs rooms are WebSocket only",
            ),
            (
                "mode: rooms\npath: {value: /collab}\nrooms: {protocol: raw, pathRoom: '/docs/{room}'}",
                "spec.rooms.pathRoom: must lie under spec.path.value `/collab`",
            ),
            (
                "mode: rooms\npath: {value: /collab}\nrooms: {protocol: raw, pathRoom: '/collabx/{room}'}",
                "spec.rooms.pathRoom: must lie under",
            ),
            (
                "mode: rooms\nrooms: {protocol: raw, pathRoom: '/r/{room}/{room}'}",
                "spec.rooms.pathRoom: must contain `{room}` exactly once",
            ),
            (
                "mode: rooms\nrooms: {protocol: raw, pathRoom: 'r/{room}'}",
                "spec.rooms.pathRoom: must start with `/`",
            ),
            (
                "mode: rooms\nrooms: {protocol: raw, pathRoom: '/r/{room}?x'}",
                "spec.rooms.pathRoom: a path with one `{room}`",
            ),
            (
                "mode: rooms\nrooms: {join: ['chat:**']}",
                "spec.rooms.join[0]:",
            ),
            (
                "mode: rooms\nrooms: {publish: [ok, 'a.b']}",
                "spec.rooms.publish[1]:",
            ),
            (
                "mode: rooms\nrooms: {namespace: 'a.b'}",
                "spec.rooms.namespace:",
            ),
            (
                "mode: rooms\nrooms: {maxQueueBytes: 100}",
                "spec.rooms.maxQueueBytes:",
            ),
            (
                "mode: rooms\nrooms: {history: {maxMessages: 0}}",
                "spec.rooms.history.maxMessages:",
            ),
            (
                "mode: rooms\nrooms: {history: {maxAge: 0s}}",
                "spec.rooms.history.maxAge: must be more than 0s",
            ),
            (
                "mode: rooms\nrooms: {history: {maxAge: forever}}",
                "spec.rooms.history.maxAge:",
            ),
            (
                "mode: rooms\nrooms: {notify: {url: 'http://h/n', timeout: 0s}}",
                "spec.rooms.notify.timeout:",
            ),
            (
                "mode: rooms\ntransports: []",
                "spec.transports: list at least one",
            ),
            (
                "mode: rooms\nauth: {jwt: {providers: [{name: i, jwksUri: 'https://i/j', claimsToHeaders: [{claim: sub, header: X-User}]}]}}",
                "spec.auth.jwt.providers[0].claimsToHeaders: only used in mode proxy",
            ),
        ];
        for (yaml, expected) in cases {
            let p = problems(yaml);
            assert!(p.iter().any(|x| x.starts_with(expected)), "{yaml}: {p:?}");
        }
    }

    #[test]
    fn raw_path_rooms_fit_exact_and_prefix_paths() {
        for yaml in [
            "mode: rooms\nrooms: {protocol: raw, pathRoom: '/r/{room}'}",
            "mode: rooms\npath: {value: /collab/}\nrooms: {protocol: raw, pathRoom: '/collab/{room}'}",
            "mode: rooms\npath: {value: /collab}\nrooms: {protocol: raw, pathRoom: '/collab/{room}/ws'}",
            "mode: rooms\npath: {type: Exact, value: /collab/doc-1}\nrooms: {protocol: raw, pathRoom: '/collab/{room}'}",
        ] {
            assert!(
                compile(&route("default", "r", yaml), &BTreeMap::new()).is_ok(),
                "{yaml}"
            );
        }
        let p = problems(
            "mode: rooms\npath: {type: Exact, value: /collab/}\nrooms: {protocol: raw, pathRoom: '/collab/{room}'}",
        );
        assert!(
            p[0].starts_with("spec.rooms.pathRoom: must lie under"),
            "{p:?}"
        );
    }

    #[test]
    fn rooms_config_paths_map_to_crd_fields() {
        let rt = route("ns", "r", "mode: rooms");
        for (from, to) in [
            ("rooms.join[1]", "spec.rooms.join[1]"),
            ("rooms.publishHook.url", "spec.rooms.publishHook.url"),
            ("rooms.history", "spec.rooms.history"),
            ("transports", "spec.transports"),
        ] {
            assert_eq!(crd_path(&rt, from), to, "{from}");
        }
    }
}
