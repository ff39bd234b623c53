//! The compiled route table: the `GatewayConfig` routes turned into ready-to-use policies
//! (origin matcher, JWT verifier, admission state, pinning ring), looked up by host + path.
//! A table is immutable; reloads build a new one and swap it atomically.

use std::sync::Arc;

use switchboard_config::{GatewayConfig, PathMatchKind, Route, TokenSource};

use crate::admission::{AdmissionRegistry, RouteAdmission};
use crate::auth::jwks::JwksRegistry;
use crate::auth::jwt::Verifier;
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
}

/// All routes of one config generation.
pub struct RouteTable {
    pub generation: u64,
    routes: Vec<Arc<CompiledRoute>>,
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
        }
    }

    /// Compile every route; problems name the route path like validation does.
    pub fn compile(cfg: &GatewayConfig, ctx: &CompileContext<'_>) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let mut routes = Vec::new();
        for (i, r) in cfg.routes.iter().enumerate() {
            match compile_route(r, ctx) {
                Ok(c) => routes.push(Arc::new(c)),
                Err(e) => problems.push(format!("routes[{i}].{e}")),
            }
        }
        if problems.is_empty() {
            Ok(Self {
                generation: cfg.generation,
                routes,
            })
        } else {
            Err(problems)
        }
    }

    /// The route for a request: hosts (exact beats wildcard beats any), then the longest path
    /// (exact beats prefix of the same length).
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Option<Arc<CompiledRoute>> {
        let host = host.map(normalize_host);
        self.routes
            .iter()
            .filter_map(|r| {
                let host_score = host_score(&r.cfg.hosts, host.as_deref())?;
                let path_score = path_score(&r.cfg.path.kind, &r.cfg.path.value, path)?;
                Some(((host_score, path_score), r))
            })
            .max_by_key(|(score, _)| *score)
            .map(|(_, r)| r.clone())
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

fn compile_route(r: &Route, ctx: &CompileContext<'_>) -> Result<CompiledRoute, String> {
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
        Some(cfg) => Some(Arc::new(RoomsPolicy::new(&r.name, cfg)?)),
        None => None,
    };
    Ok(CompiledRoute {
        rooms,
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
mod tests {
    use super::*;

    fn compile(
        yaml_routes: &str,
        read_file: &dyn Fn(&str) -> std::io::Result<Vec<u8>>,
    ) -> Result<RouteTable, Vec<String>> {
        let cfg = GatewayConfig::from_yaml(&format!(
            "apiVersion: switchboard.dev/v1alpha1\nkind: GatewayConfig\nlisteners: [{{name: p, address: '127.0.0.1:1'}}]\nroutes: {yaml_routes}"
        ))
        .unwrap();
        let jwks = JwksRegistry::new();
        let admission = AdmissionRegistry::default();
        let backends = BackendRegistry::default();
        RouteTable::compile(
            &cfg,
            &CompileContext {
                jwks: &jwks,
                admission: &admission,
                backends: &backends,
                read_file,
            },
        )
    }

    fn table(yaml_routes: &str) -> RouteTable {
        compile(yaml_routes, &|_| Err(std::io::ErrorKind::NotFound.into())).unwrap()
    }

    #[test]
    fn a_signature_secret_file_shorter_than_32_bytes_is_refused() {
        let route =
            "[{name: a, path: {value: /}, proxy: {backends: [], signature: {secretFile: /s}}}]";
        let problems = compile(route, &|_| Ok(b"short-secret\n".to_vec()))
            .err()
            .expect("a 12-byte key is refused");
        assert!(
            problems.iter().any(|p| p.contains("holds 12 bytes")),
            "{problems:?}"
        );
        assert!(compile(route, &|_| Ok(vec![b'k'; 32])).is_ok());
    }

    fn name(t: &RouteTable, host: Option<&str>, path: &str) -> Option<String> {
        t.lookup(host, path).map(|r| r.cfg.name.clone())
    }

    const ROUTES: &str = "[
      {name: any-root, path: {value: /}, proxy: {backends: []}},
      {name: any-ws, path: {value: /ws}, proxy: {backends: []}},
      {name: exact-ws, path: {type: Exact, value: /ws}, proxy: {backends: []}},
      {name: chat, hosts: [chat.example.com], path: {value: /ws}, proxy: {backends: []}},
      {name: wild, hosts: ['*.example.com'], path: {value: /ws}, proxy: {backends: []}}
    ]";

    #[test]
    fn longest_prefix_wins_at_segment_boundaries() {
        let t = table(ROUTES);
        assert_eq!(name(&t, None, "/ws/room/1").as_deref(), Some("any-ws"));
        assert_eq!(name(&t, None, "/wsx").as_deref(), Some("any-root"));
        assert_eq!(name(&t, None, "/other").as_deref(), Some("any-root"));
    }

    #[test]
    fn exact_beats_prefix_of_the_same_path() {
        assert_eq!(
            name(&table(ROUTES), None, "/ws").as_deref(),
            Some("exact-ws")
        );
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any_host() {
        let t = table(ROUTES);
        assert_eq!(
            name(&t, Some("Chat.Example.com:443"), "/ws/x").as_deref(),
            Some("chat")
        );
        assert_eq!(
            name(&t, Some("other.example.com"), "/ws/x").as_deref(),
            Some("wild")
        );
        assert_eq!(
            name(&t, Some("example.com"), "/ws/x").as_deref(),
            Some("any-ws")
        );
    }

    #[test]
    fn no_matching_route_is_none() {
        let t =
            table("[{name: a, hosts: [a.example.com], path: {value: /ws}, proxy: {backends: []}}]");
        assert!(t.lookup(Some("b.example.com"), "/ws").is_none());
        assert!(t.lookup(None, "/ws").is_none());
        assert!(t.lookup(Some("a.example.com"), "/").is_none());
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("Example.COM:8080"), "example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:80"), "::1");
    }
}
