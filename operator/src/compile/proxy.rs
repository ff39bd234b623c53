//! `spec.backend` -> the gateway's `proxy` section: the backend Service and port, connection
//! pinning, the claims forwarded as headers and the identity signature.

use std::collections::BTreeMap;

use serde_json::json;
use switchboard_config::{PinningKey, Proxy, ServiceRef, Signature};

use crate::api::{BackendRef, JwtProvider, Mode, PinningSource, RealtimeRoute};

use super::problems::{Problems, from_wire};

/// The gateway's `proxy` section: `None` without `spec.backend` (required in mode proxy).
pub(super) fn compile_proxy(
    rt: &RealtimeRoute,
    provider: Option<&JwtProvider>,
    material: &BTreeMap<(String, String), String>,
    p: &mut Problems,
) -> Option<Proxy> {
    let Some(b) = &rt.spec.backend else {
        if rt.spec.mode == Mode::Proxy {
            p.push("spec.backend", "required in mode proxy");
        }
        return None;
    };
    let port = match u16::try_from(b.port) {
        Ok(port) if port > 0 => port,
        _ => {
            p.push(
                "spec.backend.port",
                format!("must be 1-65535, got {}", b.port),
            );
            0
        }
    };
    let pinning = pinning(b, p);
    let identity_headers = identity_headers(provider, p);
    let signature = match &b.identity_signature {
        None => None,
        Some(sig) => {
            let key = (sig.secret_ref.name.clone(), sig.secret_ref.key.clone());
            let mut wire = json!({"secret": material.get(&key).cloned().unwrap_or_default()});
            if let Some(h) = &sig.header {
                wire["header"] = json!(h);
            }
            from_wire::<Signature>(wire, "spec.backend.identitySignature", p)
        }
    };
    Some(Proxy {
        backends: Vec::new(),
        service: Some(ServiceRef {
            namespace: rt.metadata.namespace.clone().unwrap_or_default(),
            name: b.name.clone(),
            port,
        }),
        pinning,
        identity_headers,
        signature,
    })
}

/// `spec.backend.pinning` (unset: by client IP).
fn pinning(b: &BackendRef, p: &mut Problems) -> PinningKey {
    let Some(pin) = &b.pinning else {
        return PinningKey::ClientIp;
    };
    match (pin.source, pin.name.clone()) {
        (PinningSource::ClientIp, None) => PinningKey::ClientIp,
        (PinningSource::Claim, Some(n)) => PinningKey::Claim(n),
        (PinningSource::Header, Some(n)) => PinningKey::Header(n),
        (PinningSource::Query, Some(n)) => PinningKey::Query(n),
        (PinningSource::Cookie, Some(n)) => PinningKey::Cookie(n),
        _ => {
            p.push(
                "spec.backend.pinning",
                "name is required for sources Claim, Header, Query and Cookie, and not allowed for ClientIP",
            );
            PinningKey::ClientIp
        }
    }
}

/// The first provider's `claimsToHeaders` as claim -> header; a claim listed twice is a problem.
fn identity_headers(provider: Option<&JwtProvider>, p: &mut Problems) -> BTreeMap<String, String> {
    let mut headers = BTreeMap::new();
    for c in provider
        .map(|pr| pr.claims_to_headers.as_slice())
        .unwrap_or_default()
    {
        if headers.insert(c.claim.clone(), c.header.clone()).is_some() {
            p.push(
                "spec.auth.jwt.providers[0].claimsToHeaders",
                format!("claim `{}` is listed twice", c.claim),
            );
        }
    }
    headers
}
