//! The compiled route table: the `GatewayConfig` routes turned into ready-to-use policies
//! (origin matcher, JWT verifier, admission state, pinning ring), looked up by host + path.
//! A table is immutable; reloads build a new one and swap it atomically.
//!
//! One route that does not compile (a truncated PEM, an unreadable key file, a short signature
//! secret) never keeps the others out: every route that compiles is served, and each one that
//! does not is listed in [`RouteTable::failures`]. A failed route that compiled in an earlier
//! table keeps serving that last good version unchanged; one that never compiled answers
//! `503 route_not_programmed` on its host and path, so its requests never fall through to a
//! shorter route with other backends and other auth.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use switchboard_config::{GatewayConfig, PathMatchKind, Problem, Route, TokenSource};

use crate::admission::{AdmissionRegistry, RouteAdmission};
use crate::auth::jwks::JwksRegistry;
use crate::auth::jwt::{Claims, Verifier};
use crate::auth::origin::OriginPolicy;
use crate::proxy::backends::{BackendRegistry, RouteBackends, route_backends};
use crate::rooms::route::RoomsPolicy;

/// A route with everything the request pipeline needs.
pub struct CompiledRoute {
    pub cfg: Route,
    pub origin: OriginPolicy,
    pub verifier: Option<Arc<Verifier>>,
    pub admission: Arc<RouteAdmission>,
    /// Static, or a handle on a Service's live backend set (swapped by the endpoint watch).
    pub backends: RouteBackends,
    /// HMAC key for the identity signature header.
    pub signature_key: Option<Vec<u8>>,
    /// Rooms mode policy.
    pub rooms: Option<Arc<RoomsPolicy>>,
    /// The config generation this version of the route was compiled from.
    pub generation: u64,
}

impl CompiledRoute {
    /// When a live connection on this route must be closed with 4001: the token's `exp`,
    /// unless the route turns `closeOnExpiry` off. Shared by proxy tunnels and rooms
    /// connections. A signed token may carry any `u64` as `exp`: the wait is capped at a
    /// century, so no deadline arithmetic downstream (the connection's timers) can overflow.
    pub fn close_at_expiry(&self, claims: Option<&Claims>) -> Option<tokio::time::Instant> {
        const CENTURY: u64 = 100 * 365 * 86_400;
        match (&self.cfg.jwt, claims.and_then(|c| c.exp)) {
            (Some(jwt), Some(exp)) if jwt.close_on_expiry => {
                let left = exp.saturating_sub(crate::http::unix_now()).min(CENTURY);
                tokio::time::Instant::now().checked_add(Duration::from_secs(left))
            }
            _ => None,
        }
    }
}

/// What a failed route serves instead of its new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Serving {
    /// The version compiled from an earlier generation, unchanged (hosts, path, keys and all).
    LastGood { generation: u64 },
    /// Nothing: its host and path answer `503 route_not_programmed`.
    None,
}

impl Serving {
    /// Metrics label and log field.
    pub fn label(self) -> &'static str {
        match self {
            Self::LastGood { .. } => "last_good",
            Self::None => "none",
        }
    }
}

/// A route of the document that did not compile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteFailure {
    /// The route's `name`.
    pub route: String,
    /// Every problem, with the field path (`routes[1].jwt.keys[0]`); on `/status` each is its
    /// printed line (`routes[1].jwt.keys[0]: ...`).
    #[serde(serialize_with = "as_lines")]
    pub problems: Vec<Problem>,
    /// What serves its requests meanwhile.
    pub serving: Serving,
}

/// Problems as their printed lines (the `/status` contract the operator reads).
fn as_lines<S: serde::Serializer>(problems: &[Problem], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(problems.iter().map(ToString::to_string))
}

/// The host and path of a route that has no compiled version.
struct Unprogrammed {
    name: String,
    hosts: Vec<String>,
    kind: PathMatchKind,
    path: String,
}

/// What a request matched.
pub enum Matched {
    /// A compiled route.
    Route(Arc<CompiledRoute>),
    /// A route of the document that has never compiled (its name).
    NotProgrammed(String),
}

/// All routes of one config generation.
pub struct RouteTable {
    pub generation: u64,
    /// Compiled from this generation.
    routes: Vec<Arc<CompiledRoute>>,
    /// Last good versions of routes whose new version did not compile. They lose a tie with
    /// a route of this generation (which may have taken over their host and path).
    kept: Vec<Arc<CompiledRoute>>,
    unprogrammed: Vec<Unprogrammed>,
    failures: Vec<RouteFailure>,
}

/// Shared, reload-surviving state a compile needs.
pub struct CompileContext<'a> {
    pub jwks: &'a JwksRegistry,
    pub admission: &'a AdmissionRegistry,
    /// Service backend sets (shared with the EndpointSlice watch).
    pub backends: &'a BackendRegistry,
    /// Reads a referenced file (key, secret). Injected so compile stays testable.
    pub read_file: &'a dyn Fn(&str) -> std::io::Result<Vec<u8>>,
}

impl RouteTable {
    /// An empty table (before the first config load).
    pub fn empty() -> Self {
        Self {
            generation: 0,
            routes: Vec::new(),
            kept: Vec::new(),
            unprogrammed: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Compile every route on its own. A route that fails is reported in
    /// [`Self::failures`] (problems name the route path like validation does) and, when
    /// `previous` has a compiled version of a route with that name, that version is kept.
    pub fn compile(
        cfg: &GatewayConfig,
        ctx: &CompileContext<'_>,
        previous: Option<&RouteTable>,
    ) -> Self {
        let mut table = Self {
            generation: cfg.generation,
            ..Self::empty()
        };
        for (i, r) in cfg.routes.iter().enumerate() {
            match compile_route(r, ctx, cfg.generation) {
                Ok(c) => table.routes.push(Arc::new(c)),
                Err(e) => {
                    let last_good = previous.and_then(|t| t.compiled(&r.name));
                    let serving = match &last_good {
                        Some(c) => Serving::LastGood {
                            generation: c.generation,
                        },
                        None => Serving::None,
                    };
                    // The failing version's hosts and path are held for the route (answered
                    // `route_not_programmed`) so they never fall through to a shorter route
                    // with other auth; a kept last good version keeps serving its own.
                    let moved = last_good.as_ref().is_none_or(|c| {
                        c.cfg.hosts != r.hosts
                            || c.cfg.path.kind != r.path.kind
                            || c.cfg.path.value != r.path.value
                    });
                    if moved {
                        table.unprogrammed.push(Unprogrammed {
                            name: r.name.clone(),
                            hosts: r.hosts.clone(),
                            kind: r.path.kind,
                            path: r.path.value.clone(),
                        });
                    }
                    if let Some(c) = last_good {
                        table.kept.push(c);
                    }
                    table.failures.push(RouteFailure {
                        route: r.name.clone(),
                        problems: vec![Problem::under(&format!("routes[{i}]"), e)],
                        serving,
                    });
                }
            }
        }
        table
    }

    /// The compiled version of the route named `name` this table serves, if any.
    fn compiled(&self, name: &str) -> Option<Arc<CompiledRoute>> {
        self.routes
            .iter()
            .chain(&self.kept)
            .find(|r| r.cfg.name == name)
            .cloned()
    }

    /// The routes of the document that did not compile, in document order.
    pub fn failures(&self) -> &[RouteFailure] {
        &self.failures
    }

    /// What serves a request: hosts (exact beats wildcard beats any), then the longest path
    /// (exact beats prefix of the same length), then a route of this generation over a kept
    /// last good version.
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Option<Matched> {
        let host = host.map(normalize_host);
        let host = host.as_deref();
        let score = |hosts: &[String], kind: &PathMatchKind, value: &str, fresh: u8| {
            Some((
                host_score(hosts, host)?,
                path_score(kind, value, path)?,
                fresh,
            ))
        };
        let compiled = self
            .routes
            .iter()
            .map(|r| (r, 1))
            .chain(self.kept.iter().map(|r| (r, 0)))
            .filter_map(|(r, fresh)| {
                let s = score(&r.cfg.hosts, &r.cfg.path.kind, &r.cfg.path.value, fresh)?;
                Some((s, Matched::Route(r.clone())))
            });
        let unprogrammed = self.unprogrammed.iter().filter_map(|u| {
            let s = score(&u.hosts, &u.kind, &u.path, 1)?;
            Some((s, Matched::NotProgrammed(u.name.clone())))
        });
        compiled
            .chain(unprogrammed)
            .max_by_key(|(s, _)| *s)
            .map(|(_, m)| m)
    }

    /// Routes with a compiled version being served (this generation's and kept ones).
    pub fn len(&self) -> usize {
        self.routes.len() + self.kept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn compile_route(
    r: &Route,
    ctx: &CompileContext<'_>,
    generation: u64,
) -> Result<CompiledRoute, String> {
    let cookie = r.jwt.as_ref().is_some_and(|j| {
        j.token_sources
            .iter()
            .any(|s| matches!(s, TokenSource::Cookie { .. }))
    });
    let origin = OriginPolicy::new(&r.origins, cookie).map_err(|e| format!("origins: {e}"))?;
    let verifier = match &r.jwt {
        Some(j) => Some(Arc::new(
            Verifier::new(j, ctx.jwks).map_err(|e| format!("jwt.{e}"))?,
        )),
        None => None,
    };
    let (backends, signature_key) = match &r.proxy {
        Some(p) => {
            let key = match &p.signature {
                Some(s) => Some(match (&s.secret, &s.secret_file) {
                    (Some(secret), _) => secret.as_bytes().to_vec(),
                    (None, Some(file)) => {
                        let mut bytes = (ctx.read_file)(file).map_err(|e| {
                            format!("proxy.signature.secretFile: cannot read `{file}`: {e}")
                        })?;
                        while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
                            bytes.pop();
                        }
                        if bytes.len() < switchboard_config::MIN_SIGNATURE_SECRET_BYTES {
                            return Err(format!(
                                "proxy.signature.secretFile: `{file}` holds {} bytes; an HMAC-SHA256 key needs at least {}",
                                bytes.len(),
                                switchboard_config::MIN_SIGNATURE_SECRET_BYTES
                            ));
                        }
                        bytes
                    }
                    (None, None) => return Err("proxy.signature: no secret".into()),
                }),
                None => None,
            };
            (
                route_backends(ctx.backends, p.service.as_ref(), &p.backends),
                key,
            )
        }
        None => (route_backends(ctx.backends, None, &[]), None),
    };
    let rooms = match &r.rooms {
        Some(cfg) => Some(Arc::new(RoomsPolicy::new(&r.name, cfg)?.with_route(r))),
        None => None,
    };
    Ok(CompiledRoute {
        rooms,
        generation,
        cfg: r.clone(),
        origin,
        verifier,
        admission: ctx.admission.route(&r.name),
        backends,
        signature_key,
    })
}

/// Lowercase, without port, without a trailing dot.
pub fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let bare = if host.starts_with('[') {
        host.split_once(']')
            .map_or(host, |(h, _)| h)
            .trim_start_matches('[')
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    bare.trim_end_matches('.').to_ascii_lowercase()
}

fn host_score(hosts: &[String], host: Option<&str>) -> Option<u8> {
    if hosts.is_empty() {
        return Some(0);
    }
    let host = host?;
    let mut best = None;
    for h in hosts {
        let h = h.to_ascii_lowercase();
        if h == host {
            return Some(2);
        }
        if let Some(suffix) = h.strip_prefix("*.")
            && host.len() > suffix.len() + 1
            && host.ends_with(suffix)
            && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        {
            best = Some(1);
        }
    }
    best
}

fn path_score(kind: &PathMatchKind, value: &str, path: &str) -> Option<(usize, u8)> {
    match kind {
        PathMatchKind::Exact => (path == value).then_some((value.len(), 1)),
        PathMatchKind::Prefix => {
            let v = value.trim_end_matches('/');
            let ok = v.is_empty()
                || path == v
                || (path.starts_with(v) && path.as_bytes().get(v.len()) == Some(&b'/'));
            ok.then_some((v.len(), 0))
        }
    }
}

#[cfg(test)]
mod tests;
