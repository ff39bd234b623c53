//! The running gateway's shared state and the one place a config document becomes live:
//! compile everything first, then swap atomically. A document whose listeners do not load
//! changes nothing (the last good config keeps serving); a route that does not compile is
//! reported and skipped (or keeps its last good version) while every other route applies.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use switchboard_config::{GatewayConfig, KeySource, Problem};

use crate::admission::{AdmissionRegistry, PodAdmission};
use crate::auth::jwks::JwksRegistry;
use crate::drain::Drain;
use crate::metrics::metrics;
use crate::proxy::backends::BackendRegistry;
use crate::rooms::bus::{Bus, Retention};
use crate::rooms::hooks::Hooks;
use crate::rooms::hub::Hub;
use crate::routes::{CompileContext, RouteFailure, RouteTable};
use crate::tls::{CertSet, Resolver};

/// Everything the listeners, admin endpoints and background services share.
pub struct Gateway {
    pub config: ArcSwap<GatewayConfig>,
    pub routes: ArcSwap<RouteTable>,
    /// SNI resolvers per TLS listener name (listeners themselves are fixed at start).
    pub tls: HashMap<String, Arc<Resolver>>,
    pub pod: PodAdmission,
    pub admission: AdmissionRegistry,
    pub jwks: JwksRegistry,
    pub drain: Arc<Drain>,
    /// Plain-HTTP forwarding; the body is the client's, wrapped to tell its errors apart.
    pub http: crate::proxy::serve::HttpClient,
    /// Live backend sets of the Services routes name (filled by the EndpointSlice watch).
    pub backends: BackendRegistry,
    /// Rooms: this pod's hub over the configured bus.
    pub hub: Arc<Hub>,
    /// Rooms: publish hook and notification client.
    pub hooks: Hooks,
    /// Yjs documents (rooms `protocol: yjs`) this pod holds.
    pub documents: Arc<crate::documents::Documents>,
    /// Where proxied tunnels over plain TCP run once upgraded; set by `boot` (unset, as in
    /// tests that build a gateway without running it, they stay on the runtime they started on).
    pub tunnel_threads: std::sync::OnceLock<Arc<crate::tunnel::threads::TunnelThreads>>,
    loaded: AtomicBool,
    /// The pod has been ready once with every JWKS fetched ([`Self::ready`]).
    keys_came: AtomicBool,
}

/// Reads a file the config refers to.
pub fn read_file(path: &str) -> std::io::Result<Vec<u8>> {
    std::fs::read(path)
}

impl Gateway {
    /// Compile `cfg` (keys, certificates, routes). Certificate problems are errors; routes
    /// that do not compile are left out and reported ([`RouteTable::failures`]).
    pub fn new(cfg: GatewayConfig, bus: Arc<dyn Bus>) -> Result<Arc<Self>, Vec<Problem>> {
        let jwks = JwksRegistry::new();
        let admission = AdmissionRegistry::default();
        let backends = BackendRegistry::default();
        let routes = RouteTable::compile(
            &cfg,
            &CompileContext {
                jwks: &jwks,
                admission: &admission,
                backends: &backends,
                read_file: &read_file,
            },
            None,
        );
        let mut tls = HashMap::new();
        let mut problems = Vec::new();
        for (i, l) in cfg.listeners.iter().enumerate() {
            if let Some(t) = &l.tls {
                match CertSet::load(t, &read_file) {
                    Ok(certs) => {
                        tls.insert(
                            l.name.clone(),
                            Arc::new(Resolver {
                                certs: ArcSwap::from_pointee(certs),
                            }),
                        );
                    }
                    Err(e) => problems.push(Problem::under(&format!("listeners[{i}].tls"), e)),
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(cfg.limits.upstream_timeout));
        metrics().config_generation.set(cfg.generation as i64);
        Ok(Arc::new(Self {
            pod: PodAdmission::new(cfg.limits.max_connections),
            config: ArcSwap::from_pointee(cfg),
            routes: ArcSwap::from_pointee(routes),
            tls,
            admission,
            jwks,
            drain: Arc::new(Drain::default()),
            http: Client::builder(TokioExecutor::new()).build(connector),
            backends,
            documents: crate::documents::Documents::new(&bus),
            hub: Hub::new(bus),
            hooks: Hooks::default(),
            tunnel_threads: std::sync::OnceLock::new(),
            loaded: AtomicBool::new(true),
            keys_came: AtomicBool::new(false),
        }))
    }

    /// Apply a reloaded document: compile first, then swap. Refused (nothing changes) only
    /// when a TLS certificate does not load; routes that do not compile are skipped or keep
    /// their last good version, and are returned (also logged and counted).
    /// Listener and admin changes need a restart (sockets are bound once); they are reported.
    pub fn apply(&self, cfg: GatewayConfig) -> Result<Vec<RouteFailure>, Vec<Problem>> {
        let previous = self.routes.load();
        let routes = RouteTable::compile(
            &cfg,
            &CompileContext {
                jwks: &self.jwks,
                admission: &self.admission,
                backends: &self.backends,
                read_file: &read_file,
            },
            Some(&previous),
        );
        let mut certs = Vec::new();
        let mut problems = Vec::new();
        for (i, l) in cfg.listeners.iter().enumerate() {
            if let (Some(t), Some(resolver)) = (&l.tls, self.tls.get(&l.name)) {
                match CertSet::load(t, &read_file) {
                    Ok(c) => certs.push((resolver.clone(), c)),
                    Err(e) => problems.push(Problem::under(&format!("listeners[{i}].tls"), e)),
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let old = self.config.load();
        // `paths` is read per new connection, so it is not a socket change.
        let sockets = |c: &GatewayConfig| {
            c.listeners
                .iter()
                .map(|l| (l.name.clone(), l.address, l.tls.clone()))
                .collect::<Vec<_>>()
        };
        if sockets(&old) != sockets(&cfg) || old.admin != cfg.admin {
            tracing::warn!(
                "listener or admin changes take effect after a restart; routes, limits and drain apply now"
            );
        }
        for (resolver, c) in certs {
            resolver.certs.store(Arc::new(c));
        }
        self.pod.set_max(cfg.limits.max_connections);
        metrics().config_generation.set(cfg.generation as i64);
        report_failures(routes.failures());
        let failures = routes.failures().to_vec();
        self.routes.store(Arc::new(routes));
        self.config.store(Arc::new(cfg));
        self.check_message_limits();
        if tokio::runtime::Handle::try_current().is_ok() {
            let hub = self.hub.clone();
            let namespaces = self.namespaces();
            tokio::spawn(async move { configure_bus(&hub, namespaces).await });
        }
        Ok(failures)
    }

    /// Have the bus warn about rooms routes whose largest messages it cannot carry.
    pub fn check_message_limits(&self) {
        let limits = crate::rooms::route::message_limits(&self.config.load());
        self.hub.bus().check_message_limits(limits);
    }

    /// Every rooms namespace and its retention, from the live routes.
    pub fn namespaces(&self) -> Vec<(String, Option<Retention>)> {
        crate::rooms::route::namespaces(&self.config.load())
    }

    /// Whether a config is loaded. The Kubernetes source starts unloaded (not ready) and sets
    /// this after the first snapshot.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// See [`Self::loaded`].
    pub fn set_loaded(&self, loaded: bool) {
        self.loaded.store(loaded, Ordering::Release);
    }

    /// Loaded, not draining, the bus healthy, and, at start-up, every JWKS fetched once (a
    /// pod is not sent traffic whose tokens it cannot check yet). Only at start-up: a JWKS
    /// URL that a reload adds and that cannot be fetched (a typo, an identity provider down)
    /// leaves its route answering 401 `unknown signing key` until its keys come, and the pod
    /// ready (every replica gets the same config: all of them would leave the load balancer,
    /// with every other route).
    pub fn ready(&self) -> bool {
        // The keys last: they latch only once everything else holds, so a pod that was never
        // ready (a Kubernetes snapshot not yet loaded: no routes, no JWKS) still waits for
        // its keys.
        self.loaded.load(Ordering::Acquire)
            && !self.drain.is_draining()
            && self.hub.bus().healthy()
            && self.keys_came()
    }

    /// Every JWKS fetched once, latched the first time it holds while the pod is otherwise
    /// ready (so from then on a JWKS a reload adds cannot make the pod unready).
    fn keys_came(&self) -> bool {
        if self.keys_came.load(Ordering::Acquire) {
            return true;
        }
        let came = self.jwks.all_loaded();
        if came {
            self.keys_came.store(true, Ordering::Release);
        }
        came
    }
}

/// Logs each route that did not compile (one ERROR line per problem, once per applied
/// document) and sets `switchboard_route_compile_failures{route,serving}` to exactly these.
pub fn report_failures(failures: &[RouteFailure]) {
    let gauge = &metrics().route_compile_failures;
    gauge.reset();
    for f in failures {
        gauge
            .with_label_values(&[&f.route, f.serving.label()])
            .set(1);
        for problem in &f.problems {
            match f.serving {
                crate::routes::Serving::LastGood { generation } => tracing::error!(
                    route = %f.route,
                    %problem,
                    last_good_generation = generation,
                    "route not compiled; its last good version keeps serving, the other routes apply"
                ),
                crate::routes::Serving::None => tracing::error!(
                    route = %f.route,
                    %problem,
                    "route not compiled; it answers 503 route_not_programmed, the other routes apply"
                ),
            }
        }
    }
}

/// Declare each namespace's retention on the bus (idempotent; logged on failure).
pub async fn configure_bus(hub: &Hub, namespaces: Vec<(String, Option<Retention>)>) {
    for (ns, retention) in namespaces {
        if let Err(e) = hub.bus().configure(&ns, retention).await {
            tracing::error!(namespace = %ns, error = %e, "cannot configure room history on the bus");
        }
    }
}

/// Every file a document refers to (keys, secrets, certificates): the reload loop watches
/// them as well as the document itself.
pub fn referenced_files(cfg: &GatewayConfig) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    for l in &cfg.listeners {
        for c in l.tls.iter().flat_map(|t| &t.certificates) {
            files.insert(c.cert_file.clone());
            files.insert(c.key_file.clone());
        }
    }
    for r in &cfg.routes {
        for k in r.jwt.iter().flat_map(|j| &j.keys) {
            if let KeySource::File { path, .. } = k {
                files.insert(path.clone());
            }
        }
        if let Some(f) = r
            .proxy
            .as_ref()
            .and_then(|p| p.signature.as_ref())
            .and_then(|s| s.secret_file.clone())
        {
            files.insert(f);
        }
    }
    files
}

#[cfg(test)]
mod tests;
