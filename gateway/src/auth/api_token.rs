//! The admin listener's APIs (publish, reads, documents) let a caller in with one bearer
//! token, `publishApi.token` or the contents of `publishApi.tokenFile` (read on every call, so
//! a rotated file needs no reload).

use http::StatusCode;
use sha2::{Digest, Sha256};
use switchboard_config::GatewayConfig;

use super::token::bearer_credentials;

fn token_matches(given: &str, expected: &str) -> bool {
    // Compare digests so the comparison time says nothing about the token.
    Sha256::digest(given.as_bytes()) == Sha256::digest(expected.as_bytes())
}

/// The configured token, read now (so a rotated token file takes effect without a restart),
/// and the per-call room cap.
fn expected_token(cfg: &GatewayConfig) -> Option<(String, u32)> {
    let api = cfg.publish_api.clone()?;
    let token = match (api.token, api.token_file) {
        (Some(t), _) => Some(t),
        (None, Some(f)) => std::fs::read_to_string(f)
            .ok()
            .map(|t| t.trim().to_string()),
        _ => None,
    }?;
    Some((token, api.max_rooms_per_call))
}

/// Why an admin API call (publish, reads, documents) is not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiRefusal {
    /// No `publishApi` in the config.
    Disabled,
    /// Two `Authorization` headers: which one was meant?
    Ambiguous,
    /// No bearer token, or not the configured one.
    Unauthorized,
}

impl ApiRefusal {
    /// The status and the words of the answer.
    pub fn answer(self) -> (StatusCode, &'static str) {
        match self {
            Self::Disabled => (
                StatusCode::NOT_FOUND,
                "publish API is not enabled (publishApi)",
            ),
            Self::Ambiguous => (StatusCode::BAD_REQUEST, "repeated Authorization"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "missing or wrong bearer token"),
        }
    }
}

/// The bearer token of a request: the `Authorization` credentials of the `Bearer` scheme,
/// matched case-insensitively (RFC 9110 §11.1); `Ok(None)` without one; an error for two
/// `Authorization` headers.
fn bearer(headers: &http::HeaderMap) -> Result<Option<&str>, ApiRefusal> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return if headers.contains_key(http::header::AUTHORIZATION) {
            Err(ApiRefusal::Ambiguous)
        } else {
            Ok(None)
        };
    };
    Ok(value.to_str().ok().and_then(bearer_credentials))
}

/// The bearer check every admin API endpoint makes (publish, reads, documents):
/// `Ok(maxRoomsPerCall)` or why not.
pub fn authorize_api(config: &GatewayConfig, headers: &http::HeaderMap) -> Result<u32, ApiRefusal> {
    let Some((expected, max_rooms)) = expected_token(config) else {
        return Err(ApiRefusal::Disabled);
    };
    match bearer(headers)? {
        Some(given) if token_matches(given, &expected) => Ok(max_rooms),
        _ => Err(ApiRefusal::Unauthorized),
    }
}

#[cfg(test)]
mod tests;
