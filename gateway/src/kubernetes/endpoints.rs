//! EndpointSlices -> backends, and one watch per Service port the live routes name.
//!
//! **Which endpoints.** Every EndpointSlice labelled `kubernetes.io/service-name=<name>` in the
//! Service's namespace, address types `IPv4` and `IPv6` (`FQDN` slices are skipped). Per
//! endpoint (its first address, as the EndpointSlice API allows consumers to do):
//! - `terminating: true` -> a backend with `draining: true`: it keeps its open connections but
//!   leaves the ring, so only the keys pinned to it move;
//! - otherwise `ready` (unset counts as ready, as the API says) -> a backend;
//! - otherwise (not ready, not terminating) -> left out.
//!
//! An address listed by several slices (a pod moving between slices) counts once, as ready if
//! any copy is ready.
//!
//! **Which port.** The snapshot names the Service port by number (`proxy.service.port`), and
//! slices carry the *target* ports (`name`, `port`), not the Service ports. Without reading the
//! Service object (which would need more RBAC) the rule is:
//! 1. a slice with exactly one port: that port (a single-port Service, whatever its
//!    `targetPort`, e.g. `port: 80, targetPort: 8080`);
//! 2. otherwise the TCP port whose number equals the Service port (multi-port Services whose
//!    `targetPort` equals `port`);
//! 3. otherwise the slice is skipped and a warning names the Service. A multi-port Service
//!    whose target port differs from its port is therefore not resolved; give it
//!    `targetPort == port`, or a single-port Service for the realtime traffic.
//!
//! **Consistency.** The watch keeps the last known backends while the API server is
//! unreachable (the pods are most likely still there) and retries with back-off; a re-list
//! replaces the whole set at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::{EndpointPort, EndpointSlice};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use switchboard_config::{Backend, GatewayConfig};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::metrics::metrics;
use crate::proxy::backends::{BackendRegistry, ServiceBackends, ServiceKey, service_key};

/// The label the EndpointSlice controller puts on every slice of a Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The slice's port for Service port `service_port` (see the module docs for the rule).
pub fn target_port(ports: &[EndpointPort], service_port: u16) -> Option<u16> {
    let tcp = |p: &&EndpointPort| p.protocol.as_deref().unwrap_or("TCP") == "TCP";
    let number = |p: &EndpointPort| p.port.and_then(|n| u16::try_from(n).ok());
    if let [only] = ports {
        return tcp(&only).then(|| number(only)).flatten();
    }
    ports
        .iter()
        .filter(tcp)
        .filter_map(number)
        .find(|n| *n == service_port)
}

/// The backends in `slices` for Service port `service_port`, sorted by address. Slices whose
/// port cannot be resolved are returned by name in the second element.
pub fn backends_from_slices<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    service_port: u16,
) -> (Vec<Backend>, Vec<String>) {
    let mut by_address: BTreeMap<SocketAddr, bool> = BTreeMap::new();
    let mut unresolved = Vec::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let Some(port) = target_port(slice.ports.as_deref().unwrap_or_default(), service_port)
        else {
            unresolved.push(slice.metadata.name.clone().unwrap_or_default());
            continue;
        };
        for ep in slice.endpoints.iter().flatten() {
            let conditions = ep.conditions.clone().unwrap_or_default();
            let terminating = conditions.terminating.unwrap_or(false);
            let ready = conditions.ready.unwrap_or(true);
            if !terminating && !ready {
                continue;
            }
            let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
                continue;
            };
            let draining = terminating;
            by_address
                .entry(SocketAddr::new(ip, port))
                .and_modify(|d| *d = *d && draining)
                .or_insert(draining);
        }
    }
    let backends = by_address
        .into_iter()
        .map(|(address, draining)| Backend { address, draining })
        .collect();
    (backends, unresolved)
}

/// The slices of one Service as the watch has seen them: a re-list replaces them all at once.
#[derive(Default)]
pub struct SliceSet {
    slices: BTreeMap<String, EndpointSlice>,
    relisting: Option<BTreeMap<String, EndpointSlice>>,
}

impl SliceSet {
    /// Apply one watch event. Returns true when the set changed in a way readers may see
    /// (never in the middle of a re-list).
    pub fn apply(&mut self, event: watcher::Event<EndpointSlice>) -> bool {
        let name = |s: &EndpointSlice| s.metadata.name.clone().unwrap_or_default();
        match event {
            watcher::Event::Init => {
                self.relisting = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(s) => {
                self.relisting
                    .get_or_insert_with(BTreeMap::new)
                    .insert(name(&s), s);
                false
            }
            watcher::Event::InitDone => {
                self.slices = self.relisting.take().unwrap_or_default();
                true
            }
            watcher::Event::Apply(s) => {
                self.slices.insert(name(&s), s);
                true
            }
            watcher::Event::Delete(s) => {
                self.slices.remove(&name(&s));
                true
            }
        }
    }

    /// The slices currently known.
    pub fn slices(&self) -> impl Iterator<Item = &EndpointSlice> {
        self.slices.values()
    }
}

fn publish(set: &ServiceBackends, slices: &SliceSet, warned: &mut HashSet<String>) {
    let (ns, name, port) = set.key();
    let (backends, unresolved) = backends_from_slices(slices.slices(), *port);
    for slice in unresolved {
        if warned.insert(slice.clone()) {
            tracing::warn!(
                service = %format!("{ns}/{name}"), port, slice = %slice,
                "EndpointSlice has several ports and none numbered like the Service port; its endpoints are not used (see the port rule in docs/operator.md)"
            );
        }
    }
    let ready = backends.iter().filter(|b| !b.draining).count();
    let draining = backends.len() - ready;
    let label = format!("{ns}/{name}:{port}");
    metrics()
        .backends
        .with_label_values(&[&label, "ready"])
        .set(ready as i64);
    metrics()
        .backends
        .with_label_values(&[&label, "draining"])
        .set(draining as i64);
    if set.store(&backends) {
        tracing::info!(service = %label, ready, draining, "service backends changed");
    }
}

/// Watch the EndpointSlices of one Service and keep `set` current. Runs until aborted.
async fn watch_service(client: Client, set: Arc<ServiceBackends>) {
    let (ns, name, _) = set.key().clone();
    let api: Api<EndpointSlice> = Api::namespaced(client, &ns);
    let config = watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={name}"));
    let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
    let mut slices = SliceSet::default();
    let mut warned = HashSet::new();
    let mut failing = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                let listed = matches!(event, watcher::Event::InitDone);
                if failing {
                    tracing::info!("EndpointSlice watch recovered");
                    failing = false;
                }
                if slices.apply(event) {
                    publish(&set, &slices, &mut warned);
                }
                if listed {
                    set.mark_synced();
                }
            }
            Err(e) => {
                metrics()
                    .kube_watch_errors
                    .with_label_values(&["endpointslices"])
                    .inc();
                if !failing {
                    tracing::warn!(error = %e, "EndpointSlice watch failed; keeping the last known backends and retrying with back-off");
                    failing = true;
                } else {
                    tracing::debug!(error = %e, "EndpointSlice watch still failing");
                }
            }
        }
    }
}

/// The Service ports a config's routes name.
pub fn referenced_services(cfg: &GatewayConfig) -> HashSet<ServiceKey> {
    cfg.routes
        .iter()
        .filter_map(|r| r.proxy.as_ref()?.service.as_ref())
        .map(service_key)
        .collect()
}

/// One EndpointSlice watch per Service port in use.
pub struct EndpointWatches {
    client: Client,
    tasks: HashMap<ServiceKey, JoinHandle<()>>,
}

impl EndpointWatches {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            tasks: HashMap::new(),
        }
    }

    /// Start watching every Service port of `cfg` not watched yet (creating its backend set
    /// in `registry`, so the routes compiled next find it). Returns the sets of `cfg`.
    pub fn ensure(
        &mut self,
        registry: &BackendRegistry,
        cfg: &GatewayConfig,
    ) -> Vec<Arc<ServiceBackends>> {
        let mut sets = Vec::new();
        for svc in cfg
            .routes
            .iter()
            .filter_map(|r| r.proxy.as_ref()?.service.as_ref())
        {
            let set = registry.handle(svc);
            let key = service_key(svc);
            let running = self.tasks.get(&key).is_some_and(|t| !t.is_finished());
            if !running {
                let span = tracing::info_span!(
                    "endpoints",
                    service = %format!("{}/{}", svc.namespace, svc.name),
                    port = svc.port
                );
                let task =
                    tokio::spawn(watch_service(self.client.clone(), set.clone()).instrument(span));
                self.tasks.insert(key, task);
            }
            sets.push(set);
        }
        sets
    }

    /// Stop the watches (and forget the backend sets) of Service ports not in `keep`.
    pub fn retain(&mut self, registry: &BackendRegistry, keep: &HashSet<ServiceKey>) {
        self.tasks.retain(|key, task| {
            let keep = keep.contains(key);
            if !keep {
                task.abort();
                let (ns, name, port) = key;
                let label = format!("{ns}/{name}:{port}");
                let _ = metrics().backends.remove_label_values(&[&label, "ready"]);
                let _ = metrics()
                    .backends
                    .remove_label_values(&[&label, "draining"]);
            }
            keep
        });
        registry.retain(keep);
    }

    /// Stop every watch.
    pub fn stop(&mut self) {
        for (_, task) in self.tasks.drain() {
            task.abort();
        }
    }
}

impl Drop for EndpointWatches {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests;
