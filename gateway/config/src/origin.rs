//! Origin patterns: `scheme://host[:port]` with an optional leading `*.` label wildcard.
//!
//! Matching is exact on scheme and port (default ports made explicit), case-insensitive on host.
//! `https://*.example.com` matches `https://a.example.com` and `https://a.b.example.com` but never
//! `https://example.com`, `https://evilexample.com` or `https://example.com.evil.com`.

use std::fmt;

/// A parsed allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    scheme: String,
    /// Lowercase host; for wildcards, the suffix without the leading `*.`.
    host: String,
    wildcard: bool,
    port: u16,
}

/// Why an origin (pattern or header value) could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OriginError(pub String);

/// A concrete origin from a request (`scheme://host[:port]`), normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Split `scheme://authority` into (scheme, host, port), rejecting paths, userinfo and junk.
fn split(text: &str) -> Result<(String, String, u16), OriginError> {
    let (scheme, rest) = text
        .split_once("://")
        .ok_or_else(|| OriginError(format!("`{text}` is not `scheme://host[:port]`")))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return Err(OriginError(format!("`{text}` has an invalid scheme")));
    }
    if rest.is_empty() {
        return Err(OriginError(format!("`{text}` has no host")));
    }
    if rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(OriginError(format!(
            "`{text}` must be only scheme://host[:port] (no path, query, user or spaces)"
        )));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| OriginError(format!("`{text}` has an unterminated IPv6 address")))?;
        (
            format!("[{}]", addr.to_ascii_lowercase()),
            after.strip_prefix(':'),
        )
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
            None => (rest.to_ascii_lowercase(), None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| OriginError(format!("`{text}` has an invalid port `{p}`")))?,
        None => default_port(&scheme).ok_or_else(|| {
            OriginError(format!(
                "`{text}`: scheme `{scheme}` needs an explicit port"
            ))
        })?,
    };
    if host.is_empty() || host.ends_with('.') || host.starts_with('.') || host.contains("..") {
        return Err(OriginError(format!("`{text}` has an invalid host")));
    }
    Ok((scheme, host, port))
}

impl OriginPattern {
    /// Parse an allow-list entry.
    pub fn parse(text: &str) -> Result<Self, OriginError> {
        let (scheme, host, port) = split(text.trim())?;
        let (host, wildcard) = match host.strip_prefix("*.") {
            Some(suffix) => (suffix.to_string(), true),
            None => (host, false),
        };
        if host.contains('*') {
            return Err(OriginError(format!(
                "`{text}`: `*` is only allowed as the whole first label (`https://*.example.com`)"
            )));
        }
        if wildcard && !host.contains('.') {
            return Err(OriginError(format!(
                "`{text}`: a wildcard needs at least two labels after `*.` (no `*.com`)"
            )));
        }
        if !host.starts_with('[')
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(OriginError(format!(
                "`{text}` has characters not allowed in a host"
            )));
        }
        Ok(Self {
            scheme,
            host,
            wildcard,
            port,
        })
    }

    /// Whether a request's origin is allowed by this pattern.
    pub fn matches(&self, origin: &Origin) -> bool {
        if self.scheme != origin.scheme || self.port != origin.port {
            return false;
        }
        if self.wildcard {
            // One or more whole labels in front of the suffix: the byte before it must be a dot.
            origin.host.len() > self.host.len() + 1
                && origin.host.ends_with(&self.host)
                && origin.host.as_bytes()[origin.host.len() - self.host.len() - 1] == b'.'
        } else {
            self.host == origin.host
        }
    }
}

impl Origin {
    /// Parse a request's `Origin` header value (not `null`: handle that before calling).
    pub fn parse(text: &str) -> Result<Self, OriginError> {
        let (scheme, host, port) = split(text)?;
        if host.contains('*') {
            return Err(OriginError(format!("`{text}` is not a concrete origin")));
        }
        Ok(Self { scheme, host, port })
    }
}

impl fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let star = if self.wildcard { "*." } else { "" };
        write!(f, "{}://{star}{}:{}", self.scheme, self.host, self.port)
    }
}

#[cfg(test)]
mod tests;
