//! What a route names and whether it exists: the Services and Secrets the watches have seen
//! ([`Refs`]), the lookups a route needs ([`resolve`]) and the `ResolvedRefs` verdict.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::{RealtimeRoute, SecretKeyRef};
use crate::conditions::reasons;

use super::jwt::inline_keys;
use super::problems::Problems;

/// What the watches know about the objects routes refer to, keyed by `(namespace, name)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Refs {
    /// Services and their port numbers.
    pub services: BTreeMap<(String, String), Vec<i32>>,
    /// Secrets and their `data` (already base64-decoded).
    pub secrets: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>,
}

impl Refs {
    /// Record a Service with its ports.
    pub fn with_service(mut self, namespace: &str, name: &str, ports: &[i32]) -> Self {
        self.services
            .insert((namespace.into(), name.into()), ports.to_vec());
        self
    }

    /// Record a Secret with one key.
    pub fn with_secret(mut self, namespace: &str, name: &str, key: &str, value: &[u8]) -> Self {
        self.secrets
            .entry((namespace.into(), name.into()))
            .or_default()
            .insert(key.into(), value.to_vec());
        self
    }
}

/// A yes/no verdict for one condition: the reason and message to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the condition is True.
    pub ok: bool,
    /// One of [`crate::conditions::reasons`].
    pub reason: &'static str,
    /// What to tell the user.
    pub message: String,
}

impl Verdict {
    /// A True verdict.
    pub fn yes(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ok: true,
            reason,
            message: message.into(),
        }
    }

    /// A False verdict.
    pub fn no(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ok: false,
            reason,
            message: message.into(),
        }
    }
}

/// The outcome of looking up everything a route names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The `ResolvedRefs` condition.
    pub verdict: Verdict,
    /// Whether a Secret problem keeps the route out of the snapshot.
    pub blocks: bool,
    /// Secret values by `(secret name, key)`, as UTF-8 text.
    pub material: BTreeMap<(String, String), String>,
}

fn secret_refs(rt: &RealtimeRoute) -> Vec<(String, &SecretKeyRef)> {
    let mut out = Vec::new();
    if let Some(jwt) = rt.spec.auth.as_ref().and_then(|a| a.jwt.as_ref()) {
        for (i, p) in jwt.providers.iter().enumerate() {
            if let Some(r) = &p.secret_ref {
                out.push((format!("spec.auth.jwt.providers[{i}].secretRef"), r));
            }
        }
    }
    if let Some(sig) = rt
        .spec
        .backend
        .as_ref()
        .and_then(|b| b.identity_signature.as_ref())
    {
        out.push((
            "spec.backend.identitySignature.secretRef".into(),
            &sig.secret_ref,
        ));
    }
    out
}

/// Every `(namespace, name)` of a Secret this route reads (used to map Secret events to routes).
pub fn referenced_secrets(rt: &RealtimeRoute) -> BTreeSet<(String, String)> {
    let ns = rt.metadata.namespace.clone().unwrap_or_default();
    secret_refs(rt)
        .into_iter()
        .map(|(_, r)| (ns.clone(), r.name.clone()))
        .collect()
}

/// The `(namespace, name)` of the backend Service, if any.
pub fn referenced_service(rt: &RealtimeRoute) -> Option<(String, String)> {
    let ns = rt.metadata.namespace.clone().unwrap_or_default();
    rt.spec.backend.as_ref().map(|b| (ns, b.name.clone()))
}

/// Why the JWT key material `text` from the Secret at `at` would not load in a gateway, if it
/// would not: it is turned into key sources exactly as [`compile`](super::compile()) does, and
/// each is parsed by the config crate's key parser, the one the gateway builds its verifiers
/// with (a truncated PEM, a private key, a short HMAC secret, a JWK whose `kty` lies...).
/// `None` for other refs.
fn key_problem(rt: &RealtimeRoute, at: &str, text: &str) -> Option<String> {
    let jwt = rt.spec.auth.as_ref()?.jwt.as_ref()?;
    let (i, provider) = jwt
        .providers
        .iter()
        .enumerate()
        .find(|(i, _)| at == format!("spec.auth.jwt.providers[{i}].secretRef"))?;
    let algorithms = provider.algorithms.clone().unwrap_or_default();
    // Problems of shape (no algorithms, JSON that does not parse) are `compile`'s to report.
    let mut shape = Problems::default();
    let sources = inline_keys(
        &format!("spec.auth.jwt.providers[{i}]"),
        text,
        &algorithms,
        &mut shape,
    );
    sources
        .iter()
        .find_map(|source| switchboard_config::keys::check_source(source).err())
}

/// Look up the backend Service (and its port) and every Secret key the route names.
pub fn resolve(rt: &RealtimeRoute, refs: &Refs) -> Resolution {
    let ns = rt.metadata.namespace.clone().unwrap_or_default();
    let mut secret_problems = Vec::new();
    let mut secret_reason = reasons::SECRET_NOT_FOUND;
    let mut material = BTreeMap::new();
    for (at, r) in secret_refs(rt) {
        match refs.secrets.get(&(ns.clone(), r.name.clone())) {
            None => secret_problems.push(format!("{at}: Secret {ns}/{} not found", r.name)),
            Some(data) => match data.get(&r.key) {
                None => secret_problems.push(format!(
                    "{at}: Secret {ns}/{} has no key `{}`",
                    r.name, r.key
                )),
                Some(bytes) => match String::from_utf8(bytes.clone()) {
                    Ok(text) => {
                        if let Some(why) = key_problem(rt, &at, &text) {
                            if secret_problems.is_empty() {
                                secret_reason = reasons::INVALID_SECRET;
                            }
                            secret_problems.push(format!(
                                "{at}: key `{}` of Secret {ns}/{}: {why}",
                                r.key, r.name
                            ));
                        }
                        material.insert((r.name.clone(), r.key.clone()), text);
                    }
                    Err(_) => {
                        if secret_problems.is_empty() {
                            secret_reason = reasons::INVALID_SECRET;
                        }
                        secret_problems.push(format!(
                            "{at}: key `{}` of Secret {ns}/{} is not UTF-8 text",
                            r.key, r.name
                        ));
                    }
                },
            },
        }
    }
    let backend_problem = rt.spec.backend.as_ref().and_then(|b| {
        match refs.services.get(&(ns.clone(), b.name.clone())) {
            None => Some(format!(
                "spec.backend: Service {ns}/{} not found (connections get 503 until it exists)",
                b.name
            )),
            Some(ports) if !ports.contains(&b.port) => Some(format!(
                "spec.backend.port: Service {ns}/{} has no port {} (it has {})",
                b.name,
                b.port,
                ports
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(_) => None,
        }
    });
    let blocks = !secret_problems.is_empty();
    let verdict = if blocks {
        let mut all = secret_problems;
        all.extend(backend_problem);
        Verdict::no(secret_reason, all.join("; "))
    } else if let Some(p) = backend_problem {
        Verdict::no(reasons::BACKEND_NOT_FOUND, p)
    } else {
        Verdict::yes(reasons::RESOLVED_REFS, "all referenced objects exist")
    };
    Resolution {
        verdict,
        blocks,
        material,
    }
}
