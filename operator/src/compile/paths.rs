//! Paths in both senses: request paths (`spec.path`, whether a raw room's `pathRoom` is
//! reachable under it) and field paths (a config validator path -> the CRD field a user edits).

use switchboard_config::{PathMatch as ConfigPathMatch, PathMatchKind};

use crate::api::{PathMatch, PathMatchType, RealtimeRoute};

/// `spec.path` as the gateway's path match (unset: prefix `/`, the CRD's default).
pub(super) fn path_match(path: Option<&PathMatch>) -> ConfigPathMatch {
    let path = path.cloned().unwrap_or_default();
    ConfigPathMatch {
        kind: match path.kind {
            PathMatchType::Exact => PathMatchKind::Exact,
            PathMatchType::PathPrefix => PathMatchKind::Prefix,
        },
        value: path.value,
    }
}

/// Whether the request path `path` is served by the route's path match.
fn served_by(path: &str, m: &ConfigPathMatch) -> bool {
    match m.kind {
        PathMatchKind::Exact => path == m.value,
        PathMatchKind::Prefix => {
            m.value == "/"
                || path.strip_prefix(m.value.as_str()).is_some_and(|rest| {
                    rest.is_empty() || rest.starts_with('/') || m.value.ends_with('/')
                })
        }
    }
}

/// Why `path_room` is not a usable raw-room path for a route matching `m`, if it is not.
pub(super) fn path_room_problem(path_room: &str, m: &ConfigPathMatch) -> Option<String> {
    if !path_room.starts_with('/') {
        return Some("must start with `/`".into());
    }
    if path_room.matches("{room}").count() != 1 {
        return Some("must contain `{room}` exactly once, e.g. `/collab/{room}`".into());
    }
    let (before, after) = path_room.split_once("{room}").unwrap_or_default();
    if format!("{before}{after}").contains(['{', '}', '?', '#'])
        || path_room.contains(char::is_whitespace)
    {
        return Some(
            "a path with one `{room}`: no other braces, whitespace, query or fragment".into(),
        );
    }
    // A sample request path for this pattern must reach the route.
    let reachable = match m.kind {
        PathMatchKind::Exact => {
            m.value.len() > before.len() + after.len()
                && m.value.starts_with(before)
                && m.value.ends_with(after)
        }
        PathMatchKind::Prefix => served_by(&format!("{before}room{after}"), m),
    };
    (!reachable).then(|| {
        format!(
            "must lie under spec.path.value `{}`, or no request reaches it",
            m.value
        )
    })
}

/// Map a config validator path inside one route (`routes[3].origins.allowed[1]`, given as the
/// part after `routes[3].`) to the CRD field a user edits (`spec.auth.allowedOrigins[1]`).
pub fn crd_path(rt: &RealtimeRoute, config_path: &str) -> String {
    let provider = rt
        .spec
        .auth
        .as_ref()
        .and_then(|a| a.jwt.as_ref())
        .and_then(|j| j.providers.first());
    if config_path.starts_with("jwt.keys") {
        let field = match provider {
            Some(pr) if pr.jwks_uri.is_some() => "jwksUri",
            _ => "secretRef",
        };
        return format!("spec.auth.jwt.providers[0].{field}");
    }
    const TABLE: &[(&str, &str)] = &[
        ("name", "metadata.name"),
        ("hosts", "spec.hostnames"),
        ("path", "spec.path"),
        ("mode", "spec.mode"),
        ("origins.allowed", "spec.auth.allowedOrigins"),
        ("origins.allowNull", "spec.auth.allowNullOrigin"),
        ("origins.allowMissing", "spec.auth.allowMissingOrigin"),
        ("jwt", "spec.auth.jwt.providers[0]"),
        (
            "proxy.identityHeaders",
            "spec.auth.jwt.providers[0].claimsToHeaders",
        ),
        ("proxy.pinning", "spec.backend.pinning"),
        ("proxy.signature", "spec.backend.identitySignature"),
        ("proxy", "spec.backend"),
        ("rooms", "spec.rooms"),
        ("transports", "spec.transports"),
        ("limits", "spec.limits"),
        ("keepalive", "spec.keepalive"),
        ("drain", "spec.drain"),
    ];
    let best = TABLE
        .iter()
        .filter(|(from, _)| {
            config_path == *from
                || config_path
                    .strip_prefix(from)
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
        .max_by_key(|(from, _)| from.len());
    match best {
        Some((from, to)) => {
            let rest = &config_path[from.len()..];
            if from.starts_with("proxy.identityHeaders") || from == &"proxy.signature" {
                // The rest names config-side keys (a claim, `secret`), not CRD fields.
                (*to).to_owned()
            } else {
                format!("{to}{rest}")
            }
        }
        None => format!("spec ({config_path})"),
    }
}
