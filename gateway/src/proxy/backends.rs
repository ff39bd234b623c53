//! Where a proxied route's backends come from, and the live backend sets of Kubernetes
//! Services.
//!
//! A route either lists its backends (`proxy.backends`: fixed until the next config reload) or
//! names a Service (`proxy.service`). Service backends live in the [`BackendRegistry`], one
//! [`ServiceBackends`] per `(namespace, name, port)`, each an `ArcSwap<BackendRing>` that the
//! EndpointSlice watch replaces whenever the ready pods change. A compiled route holds the
//! handle, not the ring, so a backend change is one atomic pointer swap: no config reload, no
//! route recompilation, and open tunnels (which hold their own upstream socket) are untouched.
//! The handle survives config reloads for as long as some route names the Service, so a reload
//! never empties a backend set.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use switchboard_config::{Backend, ServiceRef};
use tokio::sync::watch;

use crate::proxy::pinning::BackendRing;

/// A Service port as the registry knows it: `(namespace, name, port)`.
pub type ServiceKey = (String, String, u16);

/// The registry key of a Service reference.
pub fn service_key(svc: &ServiceRef) -> ServiceKey {
    (svc.namespace.clone(), svc.name.clone(), svc.port)
}

/// A compiled route's backends.
pub enum RouteBackends {
    /// Listed in the config document.
    Static(BackendRing),
    /// The endpoints of a Service, kept current by the EndpointSlice watch.
    Service(Arc<ServiceBackends>),
}

impl RouteBackends {
    /// The pod for `key`, or `None` when no backend is ready (the request gets 503
    /// `no_backend`).
    pub fn pick(&self, key: &[u8]) -> Option<SocketAddr> {
        match self {
            Self::Static(ring) => ring.pick(key),
            Self::Service(set) => set.ring().pick(key),
        }
    }

    /// Every known backend, draining ones included.
    pub fn backends(&self) -> Vec<Backend> {
        match self {
            Self::Static(ring) => ring.backends.clone(),
            Self::Service(set) => set.ring().backends.clone(),
        }
    }
}

/// The live backend set of one Service port.
pub struct ServiceBackends {
    key: ServiceKey,
    ring: ArcSwap<BackendRing>,
    /// True once the endpoint watch has listed the Service's EndpointSlices at least once.
    synced: watch::Sender<bool>,
}

impl ServiceBackends {
    fn new(key: ServiceKey) -> Self {
        Self {
            key,
            ring: ArcSwap::from_pointee(BackendRing::new(&[])),
            synced: watch::Sender::new(false),
        }
    }

    /// `(namespace, name, port)`.
    pub fn key(&self) -> &ServiceKey {
        &self.key
    }

    /// The current ring (cheap: one atomic load).
    pub fn ring(&self) -> Arc<BackendRing> {
        self.ring.load_full()
    }

    /// Replace the backends when they differ from the current ones. Returns whether the ring
    /// changed. Order does not matter (the ring hashes addresses).
    pub fn store(&self, backends: &[Backend]) -> bool {
        let mut sorted = backends.to_vec();
        sorted.sort_by_key(|b| b.address);
        if self.ring.load().backends == sorted {
            return false;
        }
        self.ring.store(Arc::new(BackendRing::new(&sorted)));
        true
    }

    /// Record that the endpoints have been listed once (what [`Self::wait_synced`] waits for).
    pub fn mark_synced(&self) {
        self.synced.send_replace(true);
    }

    /// Whether the endpoints have been listed once.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Wait until the endpoints have been listed once.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        // Only fails when the sender is gone, and `self` owns it.
        let _ = rx.wait_for(|synced| *synced).await;
    }
}

/// Every Service backend set the live (or about-to-be-live) routes use.
#[derive(Default)]
pub struct BackendRegistry {
    sets: Mutex<HashMap<ServiceKey, Arc<ServiceBackends>>>,
}

impl BackendRegistry {
    fn lock(&self) -> MutexGuard<'_, HashMap<ServiceKey, Arc<ServiceBackends>>> {
        // The map holds plain handles; a panic elsewhere cannot leave it half-updated.
        self.sets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The handle for a Service port, created empty (no backend: 503) when new.
    pub fn handle(&self, svc: &ServiceRef) -> Arc<ServiceBackends> {
        let key = service_key(svc);
        self.lock()
            .entry(key.clone())
            .or_insert_with(|| Arc::new(ServiceBackends::new(key)))
            .clone()
    }

    /// The handle for a key, if registered.
    pub fn get(&self, key: &ServiceKey) -> Option<Arc<ServiceBackends>> {
        self.lock().get(key).cloned()
    }

    /// Forget every Service port not in `keep`. Routes compiled earlier keep their handles
    /// (they simply stop being updated); a route that names the Service again later starts
    /// from a fresh, empty set.
    pub fn retain(&self, keep: &HashSet<ServiceKey>) {
        self.lock().retain(|k, _| keep.contains(k));
    }

    /// Every registered key.
    pub fn keys(&self) -> Vec<ServiceKey> {
        let mut keys: Vec<ServiceKey> = self.lock().keys().cloned().collect();
        keys.sort();
        keys
    }
}

/// Compile a route's backends: a Service handle from `registry`, or the static list.
pub fn route_backends(
    registry: &BackendRegistry,
    service: Option<&ServiceRef>,
    backends: &[Backend],
) -> RouteBackends {
    match service {
        Some(svc) => RouteBackends::Service(registry.handle(svc)),
        None => RouteBackends::Static(BackendRing::new(backends)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, port: u16) -> ServiceRef {
        ServiceRef {
            namespace: "apps".into(),
            name: name.into(),
            port,
        }
    }

    fn backend(last: u8, draining: bool) -> Backend {
        Backend {
            address: SocketAddr::from(([10, 0, 0, last], 8080)),
            draining,
        }
    }

    #[test]
    fn a_new_service_has_no_backend_until_its_endpoints_arrive() {
        let registry = BackendRegistry::default();
        let route = route_backends(&registry, Some(&svc("chat", 80)), &[]);
        assert_eq!(route.pick(b"user-1"), None);
        registry
            .handle(&svc("chat", 80))
            .store(&[backend(1, false)]);
        assert_eq!(route.pick(b"user-1"), Some(backend(1, false).address));
    }

    #[test]
    fn routes_naming_the_same_service_port_share_one_set() {
        let registry = BackendRegistry::default();
        let a = route_backends(&registry, Some(&svc("chat", 80)), &[]);
        let b = route_backends(&registry, Some(&svc("chat", 80)), &[]);
        let other_port = route_backends(&registry, Some(&svc("chat", 81)), &[]);
        registry
            .handle(&svc("chat", 80))
            .store(&[backend(1, false)]);
        assert!(a.pick(b"k").is_some());
        assert!(b.pick(b"k").is_some());
        assert!(other_port.pick(b"k").is_none());
    }

    #[test]
    fn storing_the_same_backends_in_another_order_changes_nothing() {
        let set = ServiceBackends::new(("a".into(), "b".into(), 1));
        assert!(set.store(&[backend(1, false), backend(2, false)]));
        let before = set.ring();
        assert!(!set.store(&[backend(2, false), backend(1, false)]));
        assert!(
            Arc::ptr_eq(&before, &set.ring()),
            "no swap without a change"
        );
        assert!(set.store(&[backend(2, false), backend(1, true)]));
    }

    #[test]
    fn a_draining_backend_is_known_but_never_picked() {
        let set = ServiceBackends::new(("a".into(), "b".into(), 1));
        set.store(&[backend(1, true)]);
        assert_eq!(set.ring().backends.len(), 1);
        assert_eq!(set.ring().pick(b"k"), None);
    }

    #[test]
    fn static_backends_are_used_as_listed() {
        let registry = BackendRegistry::default();
        let route = route_backends(&registry, None, &[backend(7, false)]);
        assert_eq!(route.pick(b"k"), Some(backend(7, false).address));
        assert!(registry.keys().is_empty());
    }

    #[test]
    fn retain_forgets_unused_services_and_a_later_use_starts_empty() {
        let registry = BackendRegistry::default();
        let old = registry.handle(&svc("chat", 80));
        old.store(&[backend(1, false)]);
        registry.handle(&svc("feed", 80));
        registry.retain(&HashSet::from([service_key(&svc("feed", 80))]));
        assert_eq!(registry.keys(), vec![service_key(&svc("feed", 80))]);
        let again = registry.handle(&svc("chat", 80));
        assert!(!Arc::ptr_eq(&old, &again));
        assert!(again.ring().pick(b"k").is_none());
    }

    #[tokio::test]
    async fn wait_synced_returns_once_marked() {
        let set = Arc::new(ServiceBackends::new(("a".into(), "b".into(), 1)));
        assert!(!set.is_synced());
        let waiter = tokio::spawn({
            let set = set.clone();
            async move { set.wait_synced().await }
        });
        set.mark_synced();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
        assert!(set.is_synced());
    }
}
