//! All routes at once -> one `GatewayConfig` and a verdict per route. Pure.
//!
//! Order of judgement for each route: being deleted (skipped) -> `Unsupported` -> Secrets
//! resolved (`UnresolvedRefs`) -> compiles and passes the gateway's own validator alone
//! (`Invalid`) -> no older route serves the same host and path (`Conflicted`) -> no older route
//! shares its rooms namespace with different history, batching or protocol (`Invalid`).
//! Survivors are validated again as one document, exactly as the gateways will validate the
//! snapshot.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration as StdDuration;

use switchboard_config::{GatewayConfig, Rooms, Route, match_keys, namespace_clashes, validate};

use crate::api::RealtimeRoute;
use crate::api::duration::format as fmt_duration;
use crate::compile::{self, Refs, Verdict};
use crate::conditions::reasons;

/// The verdicts for one route.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutePlan {
    /// The `Accepted` condition.
    pub accepted: Verdict,
    /// The `ResolvedRefs` condition.
    pub resolved_refs: Verdict,
    /// The `DrainFits` condition (only when the gateways' grace period is known and the
    /// route's drain settings parse).
    pub drain_fits: Option<Verdict>,
    /// The compiled route, when accepted.
    pub compiled: Option<Route>,
}

/// The result of planning: the desired snapshot (generation 0; the snapshot writer numbers it)
/// and a verdict for every route that is not being deleted, keyed by `namespace/name`.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Base config plus accepted routes, sorted by name.
    pub config: GatewayConfig,
    /// Per-route verdicts.
    pub routes: BTreeMap<String, RoutePlan>,
    /// Problems outside any route (a bad base config); should never happen because the base
    /// config is validated at start-up, but reported rather than ignored.
    pub base_problems: Vec<String>,
}

/// Inputs that are not Kubernetes objects.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The gateway pods' `terminationGracePeriodSeconds`, when known.
    pub grace_period: Option<StdDuration>,
}

/// Route order for conflicts: oldest `creationTimestamp` first, then `namespace/name`.
fn age_key(rt: &RealtimeRoute) -> (i128, String) {
    let created = rt
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_nanosecond())
        // No timestamp (only in tests or stand-ins): treat as newest.
        .unwrap_or(i128::MAX);
    (created, rt.key())
}

/// `(host, match type, path)` pairs, as the gateway validator keys them.
fn validate_alone(base: &GatewayConfig, route: &Route, rt: &RealtimeRoute) -> Vec<String> {
    let mut cfg = base.clone();
    cfg.routes = vec![route.clone()];
    validate(&cfg)
        .into_iter()
        .filter_map(|p| {
            p.path
                .strip_prefix("routes[0].")
                .map(|rest| format!("{}: {}", compile::crd_path(rt, rest), p.message))
                .or_else(|| (p.path == "routes[0]").then(|| format!("spec: {}", p.message)))
        })
        .collect()
}

/// A verdict per route, and the routes that made it into the snapshot (see the module doc for
/// the order of judgement).
pub fn plan(base: &GatewayConfig, routes: &[RealtimeRoute], refs: &Refs, limits: Limits) -> Plan {
    let mut out: BTreeMap<String, RoutePlan> = BTreeMap::new();
    let mut candidates: Vec<(&RealtimeRoute, Route)> = Vec::new();
    for rt in routes {
        if rt.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let (entry, compiled) = judge_alone(base, rt, refs, limits);
        candidates.extend(compiled.map(|route| (rt, route)));
        out.insert(rt.key(), entry);
    }
    let winners = settle_conflicts(candidates, &mut out);
    validate_together(base, winners, out)
}

/// One route on its own: the verdicts, and the compiled route when it is `Unsupported`-free,
/// resolved, and valid alone (a candidate for the snapshot).
fn judge_alone(
    base: &GatewayConfig,
    rt: &RealtimeRoute,
    refs: &Refs,
    limits: Limits,
) -> (RoutePlan, Option<Route>) {
    let resolution = compile::resolve(rt, refs);
    let accepted_message = match compile::rooms_namespace(rt) {
        Some(ns) => format!(
            "in the gateway snapshot; rooms namespace `{ns}` (for the publish API and NATS subjects)"
        ),
        None => "in the gateway snapshot".to_owned(),
    };
    let mut entry = RoutePlan {
        accepted: Verdict::yes(reasons::ACCEPTED, accepted_message),
        resolved_refs: resolution.verdict.clone(),
        drain_fits: limits
            .grace_period
            .and_then(|grace| drain_fits(base, rt, grace)),
        compiled: None,
    };
    let mut candidate = None;
    if let Some(message) = compile::unsupported(rt, base) {
        entry.accepted = Verdict::no(reasons::UNSUPPORTED, message);
    } else if resolution.blocks {
        entry.accepted = Verdict::no(
            reasons::UNRESOLVED_REFS,
            format!(
                "not served until its Secrets resolve: {}",
                resolution.verdict.message
            ),
        );
    } else {
        match compile::compile(rt, &resolution.material) {
            Err(problems) => entry.accepted = Verdict::no(reasons::INVALID, problems.join("; ")),
            Ok(route) => {
                let problems = validate_alone(base, &route, rt);
                if problems.is_empty() {
                    candidate = Some(route);
                } else {
                    entry.accepted = Verdict::no(reasons::INVALID, problems.join("; "));
                }
            }
        }
    }
    (entry, candidate)
}

/// The `DrainFits` verdict against the gateway pods' grace period (`None` when the route's
/// drain durations do not parse: the route is invalid anyway).
fn drain_fits(base: &GatewayConfig, rt: &RealtimeRoute, grace: StdDuration) -> Option<Verdict> {
    let needed = compile::drain_needed(rt, base)?;
    Some(if needed <= grace {
        Verdict::yes(
            reasons::FITS,
            format!(
                "drain needs {} of the gateway pods' {} termination grace period",
                fmt_duration(needed),
                fmt_duration(grace)
            ),
        )
    } else {
        Verdict::no(
            reasons::EXCEEDS_GRACE_PERIOD,
            format!(
                "drain needs {} (propagation + window) but the gateway pods get {} (terminationGracePeriodSeconds); connections still open then are cut",
                fmt_duration(needed),
                fmt_duration(grace)
            ),
        )
    })
}

/// Oldest first, each candidate takes its hosts and paths unless an older one has them
/// (`Conflicted`), and its rooms namespace unless an older one uses it differently (history,
/// batching, documents or messages: `Invalid`). Returns the winners; losers get their verdict in `out`.
fn settle_conflicts<'a>(
    mut candidates: Vec<(&'a RealtimeRoute, Route)>,
    out: &mut BTreeMap<String, RoutePlan>,
) -> Vec<(&'a RealtimeRoute, Route)> {
    candidates.sort_by_key(|(rt, _)| age_key(rt));
    let mut owners: HashMap<(String, u8, String), String> = HashMap::new();
    let mut rooms_owners: HashMap<String, (String, Rooms)> = HashMap::new();
    let mut winners: Vec<(&RealtimeRoute, Route)> = Vec::new();
    for (rt, route) in candidates {
        let keys = match_keys(&route);
        let clash = keys.iter().find_map(|k| owners.get(k).map(|w| (k, w)));
        if let Some(((host, _, path), winner)) = clash {
            let message = format!(
                "host `{host}` path `{path}` is already served by {winner}, which is older (oldest wins; ties go to namespace/name order)"
            );
            if let Some(e) = out.get_mut(&rt.key()) {
                e.accepted = Verdict::no(reasons::CONFLICTED, message);
            }
            continue;
        }
        // Routes sharing a rooms namespace share its rooms, so they must agree on history,
        // batching and what the rooms hold (documents or messages); the older route's
        // settings win, like a host/path conflict.
        if let Some(rooms) = &route.rooms
            && let Some(ns) = &rooms.namespace
        {
            if let Some((owner, first)) = rooms_owners.get(ns) {
                let clashes = namespace_clashes(first, rooms);
                if !clashes.is_empty() {
                    let message = clashes
                        .iter()
                        .map(|(field, what)| {
                            format!(
                                "spec.rooms.{field}: rooms namespace `{ns}` is shared with {owner}, which is older and {what}"
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ");
                    if let Some(e) = out.get_mut(&rt.key()) {
                        e.accepted = Verdict::no(reasons::INVALID, message);
                    }
                    continue;
                }
            }
            rooms_owners
                .entry(ns.clone())
                .or_insert_with(|| (rt.key(), rooms.clone()));
        }
        for k in keys {
            owners.insert(k, rt.key());
        }
        winners.push((rt, route));
    }
    winners
}

/// Whole-document validation: the gateway's own rules over the final set. Anything found here
/// marks that route Invalid and the document is checked again without it.
fn validate_together(
    base: &GatewayConfig,
    mut winners: Vec<(&RealtimeRoute, Route)>,
    mut out: BTreeMap<String, RoutePlan>,
) -> Plan {
    loop {
        let mut cfg = base.clone();
        cfg.routes = winners.iter().map(|(_, r)| r.clone()).collect();
        cfg.routes.sort_by(|a, b| a.name.cmp(&b.name));
        let (bad, base_problems) = problems_by_route(&cfg);
        if bad.is_empty() {
            for (rt, route) in &winners {
                if let Some(e) = out.get_mut(&rt.key()) {
                    e.compiled = Some(route.clone());
                }
            }
            return Plan {
                config: cfg,
                routes: out,
                base_problems,
            };
        }
        winners.retain(|(rt, _)| {
            let Some(problems) = bad.get(&rt.key()) else {
                return true;
            };
            let message = problems
                .iter()
                .map(|(path, message)| match path.as_str() {
                    "" => format!("spec: {message}"),
                    path => format!("{}: {message}", compile::crd_path(rt, path)),
                })
                .collect::<Vec<_>>()
                .join("; ");
            if let Some(e) = out.get_mut(&rt.key()) {
                e.accepted = Verdict::no(reasons::INVALID, message);
            }
            false
        });
    }
}

/// Problems inside routes, by route name, each as `(path inside the route, message)`.
type ByRoute = BTreeMap<String, Vec<(String, String)>>;

/// Validate `cfg`: the problems inside routes, and those outside any route.
fn problems_by_route(cfg: &GatewayConfig) -> (ByRoute, Vec<String>) {
    let mut bad = ByRoute::new();
    let mut base_problems = Vec::new();
    for p in validate(cfg) {
        let index = p
            .path
            .strip_prefix("routes[")
            .and_then(|rest| rest.split_once(']'))
            .and_then(|(i, rest)| i.parse::<usize>().ok().map(|i| (i, rest)));
        match index.and_then(|(i, rest)| cfg.routes.get(i).map(|r| (r.name.clone(), rest))) {
            Some((name, rest)) => bad
                .entry(name)
                .or_default()
                .push((rest.trim_start_matches('.').to_owned(), p.message)),
            None => base_problems.push(p.to_string()),
        }
    }
    (bad, base_problems)
}

#[cfg(test)]
mod tests;
