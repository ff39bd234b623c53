//! Consistent-hash pinning (pingora's Ketama continuum) over the ready, non-draining backends.
//! Removing or draining a pod moves only the keys that pod owned.

use std::net::SocketAddr;

use pingora_ketama::{Bucket, Continuum};
use switchboard_config::Backend;

/// The ring for one route's backends.
pub struct BackendRing {
    continuum: Option<Continuum>,
    /// All known backends, draining included (for status and metrics).
    pub backends: Vec<Backend>,
}

impl BackendRing {
    pub fn new(backends: &[Backend]) -> Self {
        let buckets: Vec<Bucket> = backends
            .iter()
            .filter(|b| !b.draining)
            .map(|b| Bucket::new(b.address, 1))
            .collect();
        let continuum = (!buckets.is_empty()).then(|| Continuum::new(&buckets));
        Self {
            continuum,
            backends: backends.to_vec(),
        }
    }

    /// The pod for `key`, or `None` when no backend is ready.
    pub fn pick(&self, key: &[u8]) -> Option<SocketAddr> {
        self.continuum.as_ref()?.node(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(ports: &[u16]) -> Vec<Backend> {
        ports
            .iter()
            .map(|p| Backend {
                address: SocketAddr::from(([10, 0, 0, 1], *p)),
                draining: false,
            })
            .collect()
    }

    fn keys() -> Vec<String> {
        (0..2000).map(|i| format!("user-{i}")).collect()
    }

    #[test]
    fn the_same_key_always_lands_on_the_same_pod() {
        let a = BackendRing::new(&backends(&[1, 2, 3]));
        let b = BackendRing::new(&backends(&[3, 1, 2]));
        for k in keys() {
            assert_eq!(
                a.pick(k.as_bytes()),
                b.pick(k.as_bytes()),
                "order of backends must not matter"
            );
        }
    }

    #[test]
    fn removing_a_pod_moves_only_its_own_keys() {
        let before = BackendRing::new(&backends(&[1, 2, 3, 4]));
        let after = BackendRing::new(&backends(&[1, 2, 4]));
        let gone = SocketAddr::from(([10, 0, 0, 1], 3));
        let mut moved_from_others = 0;
        let mut owned = 0;
        for k in keys() {
            let (b, a) = (
                before.pick(k.as_bytes()).unwrap(),
                after.pick(k.as_bytes()).unwrap(),
            );
            if b == gone {
                owned += 1;
            } else if a != b {
                moved_from_others += 1;
            }
        }
        assert!(owned > 200, "the removed pod owned a fair share ({owned})");
        assert_eq!(moved_from_others, 0);
    }

    #[test]
    fn a_draining_pod_gets_no_new_keys_and_others_keep_theirs() {
        let mut bs = backends(&[1, 2, 3]);
        let before = BackendRing::new(&bs);
        bs[1].draining = true;
        let after = BackendRing::new(&bs);
        for k in keys() {
            let (b, a) = (
                before.pick(k.as_bytes()).unwrap(),
                after.pick(k.as_bytes()).unwrap(),
            );
            assert_ne!(a, bs[1].address);
            if b != bs[1].address {
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn keys_spread_across_pods() {
        let ring = BackendRing::new(&backends(&[1, 2, 3]));
        let mut counts = std::collections::HashMap::new();
        for k in keys() {
            *counts.entry(ring.pick(k.as_bytes()).unwrap()).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|c| *c > 400), "{counts:?}");
    }

    #[test]
    fn no_ready_backend_picks_nothing() {
        let mut bs = backends(&[1]);
        bs[0].draining = true;
        assert!(BackendRing::new(&bs).pick(b"k").is_none());
        assert!(BackendRing::new(&[]).pick(b"k").is_none());
    }
}
