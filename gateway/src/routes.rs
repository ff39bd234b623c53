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

use serde::Serialize;
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
    /// The config generation this version of the route was compiled from.
    pub generation: u64,
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
    /// Every problem, with the field path (`routes[1].jwt.keys[0]: ...`).
    pub problems: Vec<String>,
    /// What serves its requests meanwhile.
    pub serving: Serving,
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
                        problems: vec![format!("routes[{i}].{e}")],
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
        Some(cfg) => Some(Arc::new(RoomsPolicy::new(&r.name, cfg)?)),
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
mod tests {
    use super::*;

    fn compile_after(
        yaml_routes: &str,
        read_file: &dyn Fn(&str) -> std::io::Result<Vec<u8>>,
        previous: Option<&RouteTable>,
    ) -> RouteTable {
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
            previous,
        )
    }

    fn compile(
        yaml_routes: &str,
        read_file: &dyn Fn(&str) -> std::io::Result<Vec<u8>>,
    ) -> RouteTable {
        compile_after(yaml_routes, read_file, None)
    }

    fn no_files(_: &str) -> std::io::Result<Vec<u8>> {
        Err(std::io::ErrorKind::NotFound.into())
    }

    fn table(yaml_routes: &str) -> RouteTable {
        let t = compile(yaml_routes, &no_files);
        assert_eq!(t.failures(), &[]);
        t
    }

    #[test]
    fn a_signature_secret_file_shorter_than_32_bytes_is_refused() {
        let route =
            "[{name: a, path: {value: /}, proxy: {backends: [], signature: {secretFile: /s}}}]";
        let t = compile(route, &|_| Ok(b"short-secret\n".to_vec()));
        let problems = &t.failures()[0].problems;
        assert!(
            problems.iter().any(|p| p.contains("holds 12 bytes")),
            "{problems:?}"
        );
        assert!(
            compile(route, &|_| Ok(vec![b'k'; 32]))
                .failures()
                .is_empty()
        );
    }

    /// The fixture RSA public key with its second half cut off (a bad copy into a Secret).
    const TRUNCATED_PEM: &str = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA37T7hYwshTgezOPI6PgE\nzcmTM99VIqndFArXLD3i923ydsFsrXF3k4rcvLD9ZGHM5u2nFPvW5egZPqa22b1R\n";

    fn broken_and_good(broken_pem: &str) -> String {
        format!(
            "[{{name: broken, path: {{value: /broken}}, jwt: {{keys: [{{inline: {{algorithm: RS256, pem: {broken_pem:?}}}}}]}}, proxy: {{backends: []}}}},
              {{name: good, path: {{value: /good}}, proxy: {{backends: []}}}}]"
        )
    }

    #[test]
    fn a_route_that_fails_to_compile_does_not_keep_the_others_out() {
        let t = compile(&broken_and_good(TRUNCATED_PEM), &no_files);
        assert_eq!(name(&t, None, "/good/x").as_deref(), Some("good"));
        assert_eq!(
            t.failures(),
            &[RouteFailure {
                route: "broken".into(),
                problems: vec![
                    "routes[0].jwt.keys[0]: the PEM is not a public key usable with RS256".into()
                ],
                serving: Serving::None,
            }]
        );
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_route_that_never_compiled_answers_not_programmed_instead_of_a_shorter_route() {
        let routes = format!(
            "[{{name: root, path: {{value: /}}, proxy: {{backends: []}}}}, {}]",
            broken_and_good(TRUNCATED_PEM)
                .trim_start_matches('[')
                .trim_end_matches(']')
        );
        let t = compile(&routes, &no_files);
        assert!(matches!(
            t.lookup(None, "/broken/x"),
            Some(Matched::NotProgrammed(n)) if n == "broken"
        ));
        assert_eq!(name(&t, None, "/elsewhere").as_deref(), Some("root"));
    }

    #[test]
    fn a_route_that_breaks_on_reload_keeps_its_last_good_version_and_the_others_update() {
        let good_pem = include_str!("../tests/fixtures/keys/rsa.pub.pem");
        let first = compile(&broken_and_good(good_pem), &no_files);
        assert!(first.failures().is_empty());
        let before = match first.lookup(None, "/broken") {
            Some(Matched::Route(r)) => r,
            _ => panic!("the route compiled"),
        };

        // Generation 2: the key breaks, and the good route moves to a new path.
        let edited = broken_and_good(TRUNCATED_PEM).replace("/good", "/good-v2");
        let second = compile_after(&edited, &no_files, Some(&first));
        assert!(
            matches!(second.lookup(None, "/broken"), Some(Matched::Route(r)) if Arc::ptr_eq(&r, &before)),
            "the last good version serves"
        );
        assert_eq!(name(&second, None, "/good-v2").as_deref(), Some("good"));
        assert!(name(&second, None, "/good").is_none(), "the edit applied");
        assert_eq!(second.failures().len(), 1);
        assert_eq!(
            second.failures()[0].serving,
            Serving::LastGood { generation: 0 }
        );

        // Still broken a reload later: still the same last good version.
        let third = compile_after(&edited, &no_files, Some(&second));
        assert!(
            matches!(third.lookup(None, "/broken"), Some(Matched::Route(r)) if Arc::ptr_eq(&r, &before))
        );

        // Fixed: the new version replaces it and the failure is gone.
        let fixed = compile_after(&broken_and_good(good_pem), &no_files, Some(&third));
        assert!(fixed.failures().is_empty());
        assert!(
            matches!(fixed.lookup(None, "/broken"), Some(Matched::Route(r)) if !Arc::ptr_eq(&r, &before))
        );
    }

    #[test]
    fn a_route_kept_at_its_last_good_version_also_holds_the_new_path_it_failed_to_take() {
        let good_pem = include_str!("../tests/fixtures/keys/rsa.pub.pem");
        let with_root = |routes: String| {
            format!(
                "[{{name: root, path: {{value: /}}, proxy: {{backends: []}}}}, {}]",
                routes.trim_start_matches('[').trim_end_matches(']')
            )
        };
        let first = compile(&with_root(broken_and_good(good_pem)), &no_files);
        // The broken route's new version moves it to /moved and fails: /moved must not fall
        // through to `root` (other auth), and the old path keeps its last good version.
        let edited = with_root(broken_and_good(TRUNCATED_PEM).replace("/broken", "/moved"));
        let second = compile_after(&edited, &no_files, Some(&first));
        assert!(
            matches!(second.lookup(None, "/moved/x"), Some(Matched::NotProgrammed(n)) if n == "broken"),
            "the new path is held for the route, not served by a shorter one"
        );
        assert_eq!(name(&second, None, "/broken").as_deref(), Some("broken"));
    }

    #[test]
    fn a_kept_last_good_route_loses_a_tie_to_a_route_of_the_new_generation() {
        let good_pem = include_str!("../tests/fixtures/keys/rsa.pub.pem");
        let first = compile(&broken_and_good(good_pem), &no_files);
        // The broken route moves to /elsewhere; a new route takes over /broken.
        let routes = format!(
            "[{}, {{name: heir, path: {{value: /broken}}, proxy: {{backends: []}}}}]",
            broken_and_good(TRUNCATED_PEM)
                .replace("value: /broken", "value: /elsewhere")
                .trim_start_matches('[')
                .trim_end_matches(']')
        );
        let second = compile_after(&routes, &no_files, Some(&first));
        assert_eq!(name(&second, None, "/broken").as_deref(), Some("heir"));
    }

    fn name(t: &RouteTable, host: Option<&str>, path: &str) -> Option<String> {
        match t.lookup(host, path)? {
            Matched::Route(r) => Some(r.cfg.name.clone()),
            Matched::NotProgrammed(n) => panic!("{n} is not programmed"),
        }
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
