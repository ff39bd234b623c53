//! The per-request Origin decision: allow-list match, `null`, and a missing header.

use http::HeaderMap;
use switchboard_config::origin::{Origin, OriginPattern};

use crate::error::Refusal;

/// A route's compiled Origin policy.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    patterns: Vec<OriginPattern>,
    allow_null: bool,
    allow_missing: bool,
}

impl OriginPolicy {
    /// `browser_credentials`: the route reads tokens from cookies, so a missing Origin is
    /// refused unless explicitly allowed (cross-site WebSocket hijacking).
    pub fn new(
        cfg: &switchboard_config::Origins,
        browser_credentials: bool,
    ) -> Result<Self, String> {
        let patterns = cfg
            .allowed
            .iter()
            .map(|p| OriginPattern::parse(p).map_err(|e| e.0))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            patterns,
            allow_null: cfg.allow_null,
            allow_missing: cfg.allow_missing.unwrap_or(!browser_credentials),
        })
    }

    /// Check the request's `Origin` header.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let mut values = headers.get_all(http::header::ORIGIN).iter();
        let value = match (values.next(), values.next()) {
            (None, _) => {
                return if self.allow_missing {
                    Ok(())
                } else {
                    Err(Refusal::OriginNotAllowed)
                };
            }
            (Some(_), Some(_)) => return Err(Refusal::OriginNotAllowed), // two Origins: ambiguous
            (Some(v), None) => v.to_str().map_err(|_| Refusal::OriginNotAllowed)?.trim(),
        };
        if value == "null" {
            return if self.allow_null {
                Ok(())
            } else {
                Err(Refusal::OriginNotAllowed)
            };
        }
        if self.patterns.is_empty() {
            return Ok(());
        }
        let origin = Origin::parse(value).map_err(|_| Refusal::OriginNotAllowed)?;
        if self.patterns.iter().any(|p| p.matches(&origin)) {
            Ok(())
        } else {
            Err(Refusal::OriginNotAllowed)
        }
    }
}

#[cfg(test)]
mod tests;
