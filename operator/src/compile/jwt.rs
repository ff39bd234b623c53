//! `spec.auth.jwt` -> the gateway's `jwt` section: key sources from a JWKS URL or from Secret
//! material (PEM, JWK(S) or an HMAC secret), token sources, issuer, audiences and leeway.

use std::collections::BTreeMap;

use serde_json::json;
use switchboard_config::{Algorithm, Jwt, KeySource};

use crate::api::{JwtAlgorithm, JwtProvider, TokenSourceType};

use super::problems::{Problems, from_wire};

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::HS384 => Algorithm::HS384,
        JwtAlgorithm::HS512 => Algorithm::HS512,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

/// Turn key material from a Secret into inline key sources, one per (key, algorithm).
/// PEM text -> `pem`; JSON -> `jwk` (a JWKS is split into its keys, each keeping its `kid`);
/// anything else -> an HMAC `secret`. Whether the algorithm fits the material is checked by the
/// config validator, whose message then names the field.
pub(super) fn inline_keys(
    at: &str,
    text: &str,
    algorithms: &[JwtAlgorithm],
    p: &mut Problems,
) -> Vec<KeySource> {
    let inline = |alg: JwtAlgorithm,
                  kid: Option<String>,
                  pem: Option<String>,
                  secret: Option<String>,
                  jwk: Option<String>| {
        KeySource::Inline {
            algorithm: algorithm(alg),
            kid,
            pem,
            secret,
            jwk,
        }
    };
    let trimmed = text.trim_start();
    if trimmed.starts_with("-----BEGIN") {
        return algorithms
            .iter()
            .map(|a| inline(*a, None, Some(text.to_owned()), None, None))
            .collect();
    }
    if trimmed.starts_with('{') {
        let value: serde_json::Value = match serde_json::from_str(trimmed) {
            Ok(v) => v,
            Err(e) => {
                p.push(
                    at,
                    format!("the key looks like JSON (a JWK) but does not parse: {e}"),
                );
                return Vec::new();
            }
        };
        let jwks: Vec<serde_json::Value> = match value.get("keys").and_then(|k| k.as_array()) {
            Some(keys) => keys.clone(),
            None => vec![value],
        };
        if jwks.is_empty() {
            p.push(at, "the JWKS has no keys");
        }
        let mut out = Vec::new();
        for jwk in jwks {
            let kid = jwk.get("kid").and_then(|k| k.as_str()).map(str::to_owned);
            let pinned = jwk.get("alg").and_then(|a| a.as_str()).map(str::to_owned);
            let text = jwk.to_string();
            for a in algorithms {
                let name = serde_json::to_value(a)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned));
                if pinned.is_none() || pinned == name {
                    out.push(inline(*a, kid.clone(), None, None, Some(text.clone())));
                }
            }
        }
        if out.is_empty() {
            p.push(at, "no key in the JWK(S) matches the listed algorithms");
        }
        return out;
    }
    algorithms
        .iter()
        .map(|a| inline(*a, None, None, Some(text.to_owned()), None))
        .collect()
}

pub(super) fn compile_jwt(
    provider: &JwtProvider,
    material: &BTreeMap<(String, String), String>,
    p: &mut Problems,
) -> Option<Jwt> {
    let at = "spec.auth.jwt.providers[0]";
    let algorithms: Vec<JwtAlgorithm> = provider.algorithms.clone().unwrap_or_default();
    let keys: Vec<KeySource> = match (&provider.jwks_uri, &provider.secret_ref) {
        (Some(url), None) => {
            let algs: Vec<Algorithm> = algorithms.iter().copied().map(algorithm).collect();
            from_wire::<KeySource>(
                json!({"jwks": {"url": url, "algorithms": algs}}),
                &format!("{at}.jwksUri"),
                p,
            )
            .into_iter()
            .collect()
        }
        (None, Some(r)) => {
            if algorithms.is_empty() {
                p.push(
                    format!("{at}.algorithms"),
                    "required with secretRef (the algorithm is pinned to the key)",
                );
                Vec::new()
            } else {
                match material.get(&(r.name.clone(), r.key.clone())) {
                    Some(text) => inline_keys(&format!("{at}.secretRef"), text, &algorithms, p),
                    // Unresolved Secrets are reported by `resolve`; nothing to compile.
                    None => Vec::new(),
                }
            }
        }
        _ => {
            p.push(at, "set exactly one of jwksUri and secretRef");
            Vec::new()
        }
    };
    let mut sources = Vec::new();
    for (i, s) in provider
        .token_sources
        .clone()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let sat = format!("{at}.tokenSources[{i}]");
        let needs_name = matches!(s.kind, TokenSourceType::Query | TokenSourceType::Cookie);
        if needs_name != s.name.is_some() {
            p.push(
                &sat,
                "name is required for types Query and Cookie, and not allowed for the others",
            );
        }
        if s.kind != TokenSourceType::Subprotocol && s.prefix.is_some() {
            p.push(&sat, "prefix is only used with type Subprotocol");
        }
        let name = s.name.clone().unwrap_or_default();
        sources.push(match s.kind {
            TokenSourceType::Bearer => json!({"bearer": {}}),
            TokenSourceType::Subprotocol => match &s.prefix {
                Some(prefix) => json!({"subprotocol": {"prefix": prefix}}),
                None => json!({"subprotocol": {}}),
            },
            TokenSourceType::Query => json!({"query": {"name": name}}),
            TokenSourceType::Cookie => json!({"cookie": {"name": name}}),
        });
    }
    let mut wire = json!({"keys": []});
    if !sources.is_empty() {
        wire["tokenSources"] = serde_json::Value::Array(sources);
    }
    let mut jwt: Jwt = from_wire(wire, at, p)?;
    jwt.keys = keys;
    jwt.issuer = provider.issuer.clone();
    jwt.audiences = provider.audiences.clone();
    if let Some(l) = p.duration(&format!("{at}.leeway"), &provider.leeway) {
        jwt.leeway = l;
    }
    if let Some(c) = provider.close_on_expiry {
        jwt.close_on_expiry = c;
    }
    Some(jwt)
}
