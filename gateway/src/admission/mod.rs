//! Admission before the upgrade: per-IP and per-user concurrent caps, per-IP new-connection
//! rate, the pod-wide cap, and who the client is behind trusted proxies.

pub mod client_ip;
pub mod counter;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pingora_limits::rate::Rate;
use switchboard_config::RouteLimits;

use crate::error::Refusal;
use counter::{ConcurrencyCounter, Slot};

/// Live admission state of one route. Kept across config reloads (keyed by route name) so
/// a reload never resets who holds how many connections.
pub struct RouteAdmission {
    per_ip: ConcurrencyCounter<IpAddr>,
    per_user: ConcurrencyCounter<String>,
    new_per_ip: Rate,
}

impl Default for RouteAdmission {
    fn default() -> Self {
        Self {
            per_ip: ConcurrencyCounter::default(),
            per_user: ConcurrencyCounter::default(),
            new_per_ip: Rate::new(Duration::from_secs(1)),
        }
    }
}

/// What an admitted connection holds; dropping it releases its slots.
pub struct Admitted {
    _ip: Slot<IpAddr>,
    _user: Option<Slot<String>>,
    _pod: Slot<()>,
}

/// What the pipeline's shared checks (Origin, token, admission) established about a request
/// before handing it to its route's mode.
pub struct Passed {
    /// The verified token's claims, on a route with `jwt`.
    pub claims: Option<crate::auth::jwt::Claims>,
    /// The admission slot of a long-lived connection (WebSocket, SSE stream, rooms long-poll);
    /// dropping it frees the slot.
    pub admitted: Option<Admitted>,
    /// The client, as seen through the trusted proxies.
    pub ip: IpAddr,
    /// A WebSocket upgrade request (its handshake already checked).
    pub websocket: bool,
}

impl RouteAdmission {
    /// Admit one connection from `ip` for `user`, or say why not. The new-connection rate is
    /// counted for every attempt (refused ones too), so hammering does not pay off.
    pub fn admit(
        &self,
        limits: &RouteLimits,
        ip: IpAddr,
        user: Option<&str>,
        pod: &PodAdmission,
    ) -> Result<Admitted, Refusal> {
        if let Some(rate) = limits.new_connections_per_ip_per_second {
            let seen = self.new_per_ip.observe(&ip, 1);
            if seen > rate as isize {
                return Err(Refusal::PerIpRate);
            }
        }
        let ip_slot = self
            .per_ip
            .try_acquire(ip, limits.connections_per_ip)
            .ok_or(Refusal::PerIpCap)?;
        let user_slot = match (user, limits.connections_per_user) {
            (Some(u), Some(cap)) => Some(
                self.per_user
                    .try_acquire(u.to_string(), Some(cap))
                    .ok_or(Refusal::PerUserCap)?,
            ),
            _ => None,
        };
        let pod_slot = pod.try_acquire().ok_or(Refusal::PodCap)?;
        Ok(Admitted {
            _ip: ip_slot,
            _user: user_slot,
            _pod: pod_slot,
        })
    }
}

/// The pod-wide connection cap (limits.maxConnections), shared by all routes.
pub struct PodAdmission {
    counter: ConcurrencyCounter<()>,
    max: std::sync::atomic::AtomicU32,
}

impl PodAdmission {
    pub fn new(max: u32) -> Self {
        Self {
            counter: ConcurrencyCounter::default(),
            max: max.into(),
        }
    }

    /// A reload may change the cap; connections over a lowered cap stay open.
    pub fn set_max(&self, max: u32) {
        self.max.store(max, std::sync::atomic::Ordering::Relaxed);
    }

    fn try_acquire(&self) -> Option<Slot<()>> {
        self.counter.try_acquire(
            (),
            Some(self.max.load(std::sync::atomic::Ordering::Relaxed)),
        )
    }

    /// Open connections counted against the cap.
    pub fn current(&self) -> u32 {
        self.counter.get(&())
    }
}

/// Admission state for every route name ever loaded.
#[derive(Default)]
pub struct AdmissionRegistry {
    routes: Mutex<HashMap<String, Arc<RouteAdmission>>>,
}

impl AdmissionRegistry {
    pub fn route(&self, name: &str) -> Arc<RouteAdmission> {
        let mut map = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name.to_string()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_ip: Option<u32>, per_user: Option<u32>, rate: Option<u32>) -> RouteLimits {
        RouteLimits {
            connections_per_ip: per_ip,
            connections_per_user: per_user,
            new_connections_per_ip_per_second: rate,
            ..RouteLimits::default()
        }
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn per_ip_cap_refuses_the_extra_connection_and_frees_on_drop() {
        let (route, pod) = (RouteAdmission::default(), PodAdmission::new(100));
        let l = limits(Some(2), None, None);
        let a = route.admit(&l, IP, None, &pod).unwrap();
        let _b = route.admit(&l, IP, None, &pod).unwrap();
        assert_eq!(
            route.admit(&l, IP, None, &pod).err(),
            Some(Refusal::PerIpCap)
        );
        assert!(
            route.admit(&l, OTHER, None, &pod).is_ok(),
            "other addresses are not affected"
        );
        drop(a);
        assert!(route.admit(&l, IP, None, &pod).is_ok());
    }

    #[test]
    fn per_user_cap_counts_across_addresses() {
        let (route, pod) = (RouteAdmission::default(), PodAdmission::new(100));
        let l = limits(None, Some(1), None);
        let _a = route.admit(&l, IP, Some("alice"), &pod).unwrap();
        assert_eq!(
            route.admit(&l, OTHER, Some("alice"), &pod).err(),
            Some(Refusal::PerUserCap)
        );
        assert!(route.admit(&l, OTHER, Some("bob"), &pod).is_ok());
    }

    #[test]
    fn pod_cap_refuses_with_pod_cap_and_releases_other_slots() {
        let (route, pod) = (RouteAdmission::default(), PodAdmission::new(1));
        let l = limits(Some(5), None, None);
        let _a = route.admit(&l, IP, None, &pod).unwrap();
        assert_eq!(route.admit(&l, IP, None, &pod).err(), Some(Refusal::PodCap));
        assert_eq!(pod.current(), 1);
    }

    #[test]
    fn new_connection_rate_refuses_past_the_limit_within_a_second() {
        let (route, pod) = (RouteAdmission::default(), PodAdmission::new(100));
        let l = limits(None, None, Some(3));
        let results: Vec<_> = (0..5)
            .map(|_| route.admit(&l, IP, None, &pod).err())
            .collect();
        assert_eq!(
            results,
            vec![
                None,
                None,
                None,
                Some(Refusal::PerIpRate),
                Some(Refusal::PerIpRate)
            ]
        );
    }
}
