//! `status.conditions` of a `RealtimeRoute`: the condition types, their documented reasons
//! (PascalCase, Gateway API style) and the merge rule that keeps `lastTransitionTime` stable.
//!
//! | type | True reason | False reasons |
//! | --- | --- | --- |
//! | `Accepted` | `Accepted` | `Invalid`, `Conflicted`, `Unsupported`, `UnresolvedRefs` |
//! | `ResolvedRefs` | `ResolvedRefs` | `BackendNotFound`, `SecretNotFound`, `InvalidSecret` |
//! | `Programmed` | `Programmed` | `Pending`, `NotAccepted`, `CompileFailed` |
//! | `DrainFits` | `Fits` | `ExceedsGracePeriod` |

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types.
pub mod types {
    /// The route is valid, its Secrets resolved, and no older route serves the same host+path:
    /// it is in the gateways' snapshot.
    pub const ACCEPTED: &str = "Accepted";
    /// Every Service and Secret the route names exists (and the Secret keys are usable).
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    /// Every ready gateway pod has loaded a snapshot that carries this route as it is now.
    pub const PROGRAMMED: &str = "Programmed";
    /// The route's drain (propagation + window) fits in the gateway pods'
    /// `terminationGracePeriodSeconds`. Only set when the operator knows that period
    /// (`--gateway-termination-grace-period`).
    pub const DRAIN_FITS: &str = "DrainFits";

    /// The types this operator owns, in the order it writes them.
    pub const ALL: [&str; 4] = [ACCEPTED, RESOLVED_REFS, PROGRAMMED, DRAIN_FITS];
}

/// Condition reasons.
pub mod reasons {
    /// `Accepted=True`: in the snapshot.
    pub const ACCEPTED: &str = "Accepted";
    /// `Accepted=False`: the spec breaks a rule (message says which field and why).
    pub const INVALID: &str = "Invalid";
    /// `Accepted=False`: an older route (named in the message) serves the same host and path.
    pub const CONFLICTED: &str = "Conflicted";
    /// `Accepted=False`: the spec asks for something the gateways cannot do yet (several JWT
    /// providers, a per-route propagation longer than the pod-wide one, a rooms
    /// `drain.reconnectHint`).
    pub const UNSUPPORTED: &str = "Unsupported";
    /// `Accepted=False`: a Secret the route needs (JWT key, signature secret) is missing or
    /// unusable (see `ResolvedRefs` for which and why), so the route is kept out of the
    /// gateways rather than served without it.
    pub const UNRESOLVED_REFS: &str = "UnresolvedRefs";

    /// `ResolvedRefs=True`.
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    /// `ResolvedRefs=False`: the backend Service (or its port) does not exist. The route stays
    /// accepted; its connections get 503 until the Service has ready endpoints.
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    /// `ResolvedRefs=False`: a referenced Secret or key does not exist.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// `ResolvedRefs=False`: the Secret key exists but is not usable: not UTF-8 text, or JWT
    /// key material the gateways would refuse (a truncated or private PEM, a JWK that does not
    /// parse, an RSA key outside 2048-4096 bits, an HMAC secret under 32 bytes). Checked with
    /// the gateways' own key parser (`switchboard_config::keys`); the message names the Secret,
    /// the key and the problem. The route is kept out (`Accepted=False`, `UnresolvedRefs`);
    /// every other route is still programmed.
    pub const INVALID_SECRET: &str = "InvalidSecret";

    /// `Programmed=True`: every ready gateway reports a snapshot generation that has the route.
    pub const PROGRAMMED: &str = "Programmed";
    /// `Programmed=False`: waiting for gateways (none found, not answering, or behind).
    pub const PENDING: &str = "Pending";
    /// `Programmed=False`: the route is not accepted, so it is not in the snapshot.
    pub const NOT_ACCEPTED: &str = "NotAccepted";
    /// `Programmed=False`: a gateway serving a snapshot with the route reports (`/status`
    /// `routeFailures`) that it could not compile it; the message names the gateway and the
    /// problem. The other routes are served. The operator checks keys and patterns with the
    /// gateway's own code, so this means the gateway runs another version, or a file it reads
    /// changed under it.
    pub const COMPILE_FAILED: &str = "CompileFailed";

    /// `DrainFits=True`.
    pub const FITS: &str = "Fits";
    /// `DrainFits=False`: propagation + drain window is longer than the gateway pods'
    /// termination grace period; connections still open when the kubelet kills the pod are cut.
    pub const EXCEEDS_GRACE_PERIOD: &str = "ExceedsGracePeriod";
}

/// What the operator wants one condition to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// One of [`types`].
    pub type_: &'static str,
    /// True or False (this operator never writes Unknown).
    pub status: bool,
    /// One of [`reasons`].
    pub reason: &'static str,
    /// What a human should know, e.g. which route won a conflict.
    pub message: String,
}

impl Desired {
    /// A condition with the given status.
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

fn status_text(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// The first condition of this type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of this type is `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Merge desired conditions into the existing list.
///
/// - `lastTransitionTime` changes only when the status flips (or the type is new);
///   reason, message and `observedGeneration` are updated in place.
/// - Types this operator owns but no longer wants are removed (e.g. `DrainFits` when the
///   grace period is unknown); types written by someone else are kept, after ours.
/// - The result is in a fixed order, so an unchanged status compares equal and is not written.
pub fn merge(
    existing: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = Vec::with_capacity(desired.len());
    for type_ in types::ALL {
        let Some(d) = desired.iter().find(|d| d.type_ == type_) else {
            continue;
        };
        let status = status_text(d.status);
        let last_transition_time = match find(existing, type_) {
            Some(old) if old.status == status => old.last_transition_time.clone(),
            _ => now.clone(),
        };
        out.push(Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: d.reason.to_owned(),
            message: d.message.clone(),
            observed_generation: generation,
            last_transition_time,
        });
    }
    out.extend(
        existing
            .iter()
            .filter(|c| !types::ALL.contains(&c.type_.as_str()))
            .cloned(),
    );
    out
}

/// A change worth an Event: a condition that is new or whose status or reason changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The condition type.
    pub type_: String,
    /// The new status.
    pub status: bool,
    /// The new reason.
    pub reason: String,
    /// The new message.
    pub message: String,
}

/// Conditions in `new` that are absent from `old` or differ in status or reason.
pub fn transitions(old: &[Condition], new: &[Condition]) -> Vec<Transition> {
    new.iter()
        .filter(|c| {
            find(old, &c.type_).is_none_or(|o| o.status != c.status || o.reason != c.reason)
        })
        .map(|c| Transition {
            type_: c.type_.clone(),
            status: c.status == "True",
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests;
