//! Start-up: load and validate the config (nothing is bound before it is valid), compile it,
//! bind, then hand the edge listeners' accept loops, the admin endpoint and background services
//! to pingora and run until the drain controller says stop.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{BackgroundService, background_service};
use pingora::services::listening::Service;
use switchboard_config::{GatewayConfig, Problem};

use crate::admin::AdminApp;
use crate::config_watch::ConfigWatch;
use crate::drain::DrainingSignal;
use crate::gateway::Gateway;
use crate::listener::EdgeApp;
use crate::rooms::bus::Bus;
use crate::rooms::bus::memory::MemoryBus;

/// The embedded default: what `--config` falls back to when no file is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../examples/quickstart.yaml");

/// Why start-up stopped before binding anything.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The config breaks rules: every problem with its field path, one per printed line.
    #[error("{}", Problem::join(.0))]
    Invalid(Vec<Problem>),
    #[error(transparent)]
    Bind(#[from] crate::listener::BindError),
    #[error("cannot start the edge runtime or the tunnel threads ({threads} threads): {source}")]
    Runtime {
        threads: usize,
        #[source]
        source: std::io::Error,
    },
}

impl From<switchboard_config::Error> for BootError {
    fn from(e: switchboard_config::Error) -> Self {
        Self::Invalid(e.into_problems())
    }
}

/// Parse, validate and compile a config file (or the embedded default) — keys, certificates
/// and routes included; binds nothing and connects to nothing. With `routes_must_compile`
/// (`--check`) a route that does not compile is an error; otherwise the gateway starts
/// without it and reports it ([`crate::routes::RouteTable::failures`]).
pub fn load(path: Option<&Path>, routes_must_compile: bool) -> Result<GatewayConfig, BootError> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p).map_err(|source| BootError::Read {
            path: p.display().to_string(),
            source,
        })?,
        None => EMBEDDED_DEFAULT.to_string(),
    };
    let cfg = GatewayConfig::from_yaml(&text).map_err(BootError::from)?;
    let gw = Gateway::new(cfg.clone(), Arc::new(MemoryBus::new())).map_err(BootError::Invalid)?;
    let routes = gw.routes.load();
    if routes_must_compile && !routes.failures().is_empty() {
        let problems = routes
            .failures()
            .iter()
            .flat_map(|f| f.problems.iter().cloned())
            .collect();
        return Err(BootError::Invalid(problems));
    }
    Ok(cfg)
}

/// Sockets and global settings when `--kube-snapshot` is given without `--config`.
pub const BOOTSTRAP: &str = "apiVersion: switchboard.dev/v1alpha1
kind: GatewayConfig
listeners:
  - name: public
    address: 0.0.0.0:8080
admin:
  address: 0.0.0.0:9090
";

/// The bootstrap config: `path` (which must have no routes) or [`BOOTSTRAP`].
pub fn bootstrap(path: Option<&Path>) -> Result<GatewayConfig, BootError> {
    let cfg = match path {
        Some(p) => load(Some(p), true)?,
        None => GatewayConfig::from_yaml(BOOTSTRAP).map_err(BootError::from)?,
    };
    if !cfg.routes.is_empty() {
        return Err(BootError::Invalid(vec![Problem::new(
            "routes",
            "must be empty with --kube-snapshot; routes come from the snapshot",
        )]));
    }
    Ok(cfg)
}

/// How long the exit waits for the bus to take what it was handed (docs/helm.md counts it in
/// `exitMarginSeconds`).
const EXIT_FLUSH: Duration = Duration::from_millis(500);

/// The edge runtime: every client connection (the edge listeners' accept loops, HTTP, rooms
/// sessions, TLS clients' tunnels; a tunnel over plain TCP moves to a tunnel thread once
/// upgraded, `tunnel/threads.rs`) and the room bus's NATS client run on it, `threads` workers. pingora
/// gives each service a runtime of its own; had the bus kept one too, every message crossing
/// pods would be handed from one thread pool to the other and back (a thread wake-up each
/// way, which costs most when the cores are busy). Admin and background services stay on
/// pingora's runtimes.
fn edge_runtime(threads: usize) -> Result<tokio::runtime::Runtime, BootError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("switchboard-edge")
        .enable_all()
        .build()
        .map_err(|source| BootError::Runtime { threads, source })
}

/// The room bus the config asks for; a NATS client is connected on `rt`, where its tasks run.
fn make_bus(cfg: &GatewayConfig, rt: &tokio::runtime::Runtime) -> Result<Arc<dyn Bus>, BootError> {
    match &cfg.bus.nats {
        None => Ok(Arc::new(MemoryBus::new())),
        Some(nats) => crate::rooms::bus::connect_nats(nats, rt)
            .map_err(|e| BootError::Invalid(vec![Problem::new("bus.nats", e.to_string())])),
    }
}

struct JwksRefresh(Arc<Gateway>);

#[async_trait]
impl BackgroundService for JwksRefresh {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.jwks.run(shutdown).await;
    }
}

struct PresenceRefresh(Arc<Gateway>);

#[async_trait]
impl BackgroundService for PresenceRefresh {
    async fn start(&self, shutdown: ShutdownWatch) {
        let ttl = self
            .0
            .config
            .load()
            .bus
            .nats
            .as_ref()
            .map_or(Duration::from_secs(15), |n| n.presence_ttl);
        self.0.hub.run_presence(ttl / 3, shutdown).await;
    }
}

struct BusMaintenance(Arc<Gateway>);

#[async_trait]
impl BackgroundService for BusMaintenance {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Bounded work per tick (the embedded bus frees expired history here).
        let ticks = async {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.0.hub.bus().maintain().await;
            }
        };
        tokio::select! {
            () = ticks => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Run options from the command line.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config_path: Option<PathBuf>,
    pub reload_interval: Duration,
    pub threads: usize,
    /// Take the config from the Kubernetes snapshot Secret (not ready until it loads).
    pub kube: Option<crate::kubernetes::KubeSettings>,
}

/// Build the gateway for `cfg` and run until drained.
pub fn run(cfg: GatewayConfig, opts: RunOptions) -> Result<(), BootError> {
    let mut bound = crate::listener::bind_all(
        cfg.listeners
            .iter()
            .map(|l| ("edge", l.name.as_str(), &l.address))
            .chain([("admin", "admin", &cfg.admin.address)]),
    )?;
    let listening: Vec<(&'static str, String, std::net::SocketAddr)> = bound
        .iter()
        .map(|b| (b.role, b.name.clone(), b.addr))
        .collect();
    // Infallible: the admin address is chained last, and bind_all binds every address or fails.
    #[allow(clippy::expect_used)]
    let admin_bound = bound.pop().expect("the admin address is bound last");
    let threads = opts.threads.max(1);
    let edge = edge_runtime(threads)?;
    let bus = make_bus(&cfg, &edge)?;
    let gw = Gateway::new(cfg.clone(), bus).map_err(BootError::Invalid)?;
    let tunnels = Arc::new(
        crate::tunnel::threads::TunnelThreads::start(threads)
            .map_err(|source| BootError::Runtime { threads, source })?,
    );
    // Only boot sets it, once, on the gateway it has just made.
    let _ = gw.tunnel_threads.set(tunnels.clone());
    crate::gateway::report_failures(gw.routes.load().failures());
    gw.check_message_limits();
    edge.block_on(crate::gateway::configure_bus(&gw.hub, gw.namespaces()));
    let conf = ServerConf {
        threads,
        // Our drain runs before pingora is told to stop, so pingora must not add its own sleep.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        // pingora's own timeouts of a second or more (its 60 s around each accepted
        // connection's handshake) on tokio's timer: its "fast" ones start a clock thread that
        // wakes every 10 ms for the life of the process.
        fast_timeout_to_tokio_threshold_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    for (l, bound) in cfg.listeners.iter().zip(bound) {
        let tls = gw
            .tls
            .get(&l.name)
            .map(|r| tokio_rustls::TlsAcceptor::from(crate::tls::server_config(r.clone())));
        let app = EdgeApp {
            gateway: gw.clone(),
            tls,
            listener: l.name.clone(),
        };
        // The gateway accepts on the edge listeners itself (listener.rs says why), on the edge
        // runtime; pingora runs each as a service, which is how its stop signal reaches it.
        server.add_service(bound.edge_listener(app, edge.handle().clone()));
    }
    let admin = Service::new(
        "admin".to_string(),
        AdminApp {
            gateway: gw.clone(),
            listening,
        },
    );
    server.add_service(admin_bound.serve(admin, None, |admin, addr| admin.add_tcp(&addr)));
    server.add_service(background_service("jwks refresh", JwksRefresh(gw.clone())));
    server.add_service(background_service(
        "presence refresh",
        PresenceRefresh(gw.clone()),
    ));
    server.add_service(background_service(
        "bus maintenance",
        BusMaintenance(gw.clone()),
    ));
    if let Some(settings) = opts.kube {
        gw.set_loaded(false);
        server.add_service(background_service(
            "kubernetes config",
            crate::kubernetes::KubeSource {
                gateway: gw.clone(),
                settings,
            },
        ));
    } else if let Some(path) = opts.config_path {
        server.add_service(background_service(
            "config watch",
            ConfigWatch {
                gateway: gw.clone(),
                path,
                interval: opts.reload_interval,
            },
        ));
    }
    tracing::info!(
        generation = cfg.generation,
        routes = cfg.routes.len(),
        listeners = ?cfg.listeners.iter().map(|l| l.address).collect::<Vec<_>>(),
        admin = %cfg.admin.address,
        "switchboard gateway starting"
    );
    let signal = DrainingSignal {
        drain: gw.drain.clone(),
        settings: {
            let gw = gw.clone();
            Box::new(move || {
                let cfg = gw.config.load();
                (cfg.drain.propagation, cfg.drain.deadline)
            })
        },
    };
    server.run(RunArgs {
        shutdown_signal: Box::new(signal),
    });
    // The drain has ended every connection it could. What the last sessions handed the bus
    // (presence leaves, disconnect notifications) reaches NATS first, bounded; then whatever is
    // left ends with the runtime, at once.
    edge.block_on(async {
        let _ = tokio::time::timeout(EXIT_FLUSH, gw.hub.bus().flush()).await;
    });
    edge.shutdown_background();
    tunnels.stop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_bootstrap_is_valid_and_routeless() {
        let cfg = bootstrap(None).unwrap();
        assert!(cfg.routes.is_empty());
        assert_eq!(cfg.listeners.len(), 1);
    }

    #[test]
    fn a_bootstrap_file_with_routes_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("base.yaml");
        std::fs::write(
            &path,
            format!(
                "{BOOTSTRAP}routes: [{{name: a, path: {{value: /}}, proxy: {{backends: []}}}}]\n"
            ),
        )
        .unwrap();
        let e = bootstrap(Some(&path)).unwrap_err().to_string();
        assert!(e.contains("routes: must be empty"), "{e}");
    }
}
