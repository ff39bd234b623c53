//! Leader election with a `coordination.k8s.io/v1` Lease, so two operator replicas are safe:
//! only the holder writes the snapshot, statuses and Events; the others keep their caches warm
//! and take over when the Lease expires.
//!
//! Every write of the Lease is a replace at the `resourceVersion` just read (or a create), so
//! two candidates can never both believe they won: the loser gets 409 and stays a follower.
//! A leader that cannot renew for two thirds of the lease duration steps down on its own,
//! before anyone else can take over. On shutdown the leader releases the Lease so a standby
//! takes over at once instead of after the lease duration.

use std::time::Duration as StdDuration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{Error, Result};

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub duration: StdDuration,
}

impl LeaseSettings {
    /// How often the holder renews: a third of the duration.
    pub fn renew_every(&self) -> StdDuration {
        self.duration / 3
    }
}

/// What to do with the Lease as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// No Lease exists: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Someone else held it but it expired (or was released): take it over.
    TakeOver,
    /// Someone else holds a live lease.
    Follow {
        /// The current holder.
        holder: String,
    },
}

/// Decide from the Lease as read, at time `now`.
pub fn decide(lease: Option<&Lease>, identity: &str, now: Timestamp) -> Action {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return if lease.is_some() {
            Action::TakeOver
        } else {
            Action::Create
        };
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == identity {
        return Action::Renew;
    }
    if holder.is_empty() {
        return Action::TakeOver;
    }
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    match renewed {
        Some(t) if t + duration > now => Action::Follow { holder },
        _ => Action::TakeOver,
    }
}

/// The Lease to write for an action (`None` for [`Action::Follow`]).
pub fn desired(
    current: Option<&Lease>,
    action: &Action,
    s: &LeaseSettings,
    now: Timestamp,
) -> Option<Lease> {
    let now_t = MicroTime(now);
    let old = current.and_then(|l| l.spec.clone()).unwrap_or_default();
    let duration = i32::try_from(s.duration.as_secs()).unwrap_or(i32::MAX);
    let spec = match action {
        Action::Follow { .. } => return None,
        Action::Renew => LeaseSpec {
            renew_time: Some(now_t),
            lease_duration_seconds: Some(duration),
            ..old
        },
        Action::Create | Action::TakeOver => LeaseSpec {
            holder_identity: Some(s.identity.clone()),
            acquire_time: Some(now_t.clone()),
            renew_time: Some(now_t),
            lease_duration_seconds: Some(duration),
            lease_transitions: Some(
                old.lease_transitions.unwrap_or(0) + i32::from(*action == Action::TakeOver),
            ),
            ..old
        },
    };
    Some(Lease {
        metadata: ObjectMeta {
            name: Some(s.name.clone()),
            namespace: Some(s.namespace.clone()),
            resource_version: current.and_then(|l| l.metadata.resource_version.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
    })
}

/// One election round: read, decide, write. Returns whether we hold the Lease afterwards.
pub async fn round(api: &Api<Lease>, s: &LeaseSettings) -> Result<bool> {
    let current = api.get_opt(&s.name).await.map_err(Error::Kube)?;
    let now = Timestamp::now();
    let action = decide(current.as_ref(), &s.identity, now);
    let Some(lease) = desired(current.as_ref(), &action, s, now) else {
        return Ok(false);
    };
    let pp = PostParams {
        field_manager: Some(crate::FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    let written = if current.is_some() {
        api.replace(&s.name, &pp, &lease).await
    } else {
        api.create(&pp, &lease).await
    };
    match written {
        Ok(_) => {
            if action != Action::Renew {
                info!(lease = %s.name, identity = %s.identity, ?action, "acquired leadership");
            }
            Ok(true)
        }
        // Someone else wrote first: they won this round.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// Give the Lease up (on shutdown), if we hold it.
pub async fn release(api: &Api<Lease>, s: &LeaseSettings) -> Result<()> {
    let Some(current) = api.get_opt(&s.name).await.map_err(Error::Kube)? else {
        return Ok(());
    };
    let held = current
        .spec
        .as_ref()
        .and_then(|sp| sp.holder_identity.as_deref())
        == Some(s.identity.as_str());
    if !held {
        return Ok(());
    }
    let mut lease = current;
    if let Some(spec) = lease.spec.as_mut() {
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
    }
    api.replace(&s.name, &PostParams::default(), &lease)
        .await
        .map_err(Error::Kube)?;
    info!(lease = %s.name, "released leadership");
    Ok(())
}

/// Run elections until `shutdown` fires, publishing leadership on `leader`. Steps down when
/// renewals keep failing for two thirds of the lease duration.
pub async fn run(
    api: Api<Lease>,
    s: LeaseSettings,
    leader: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_success = tokio::time::Instant::now();
    loop {
        match round(&api, &s).await {
            Ok(is_leader) => {
                last_success = tokio::time::Instant::now();
                if *leader.borrow() && !is_leader {
                    warn!(lease = %s.name, "lost leadership");
                }
                // Only real changes wake the reconcile loop (a renewal is not one).
                leader.send_if_modified(|l| std::mem::replace(l, is_leader) != is_leader);
            }
            Err(e) => {
                warn!(error = %e, lease = %s.name, "leader election round failed");
                if *leader.borrow() && last_success.elapsed() > s.duration * 2 / 3 {
                    warn!(lease = %s.name, "could not renew in time; stepping down");
                    leader.send_if_modified(|l| std::mem::replace(l, false));
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(s.renew_every()) => {}
            _ = shutdown.changed() => break,
        }
    }
    if *leader.borrow() {
        leader.send_replace(false);
        if let Err(e) = release(&api, &s).await {
            warn!(error = %e, "could not release the lease");
        }
    }
}

#[cfg(test)]
mod tests;
