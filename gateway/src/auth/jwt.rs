//! JWT verification for one route: signature with a key whose algorithm is pinned, then claims.
//!
//! A [`Verifier`] is built from a route's [`Jwt`] config. Inline keys and key files are read when it
//! is built (a bad key is a config error naming `keys[i]`); JWKS sources share a cache per URL from
//! the [`JwksRegistry`], so a config reload does not refetch them.
//!
//! Rules, in the order a token meets them:
//! 1. Shape: three base64url parts, a JSON header with a known `alg` (`none` is not one), no `crit`.
//! 2. Key selection: a token with a `kid` uses the keys with exactly that `kid`; only when no key has
//!    it, keys without a `kid` are tried. A token without `kid` tries every key.
//! 3. Algorithm pinning: a key only verifies its own algorithm (config `algorithm`, JWK `alg`, or
//!    for JWKS keys without `alg` the source's `algorithms` or the key type's usual one), so an RSA
//!    public key can never be used as an HMAC secret.
//! 4. Claims: `exp` required; `nbf` checked when present; `iss` required and exact when configured;
//!    `aud` required and must contain a configured audience when `audiences` is set. The route's
//!    `leeway` applies to `exp` and `nbf`.
//!
//! An unknown `kid` asks the route's JWKS caches for a refresh (rate-limited by `minRefresh`) and
//! waits for it at most [`JWKS_WAIT`]. Tokens never reach logs; [`TokenError::reason`] is safe to
//! show to the client and to use as a metrics label.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value};
use switchboard_config::{Algorithm, Jwt, KeySource};
use tracing::Instrument;

use super::jwks::{JwksCache, JwksRegistry};
use super::verified::VerifiedCache;

/// Longest token accepted (bytes). Longer input is refused as malformed before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Where `alg` is in [`Algorithm::ALL`], which lists the variants in declaration order
/// (`every_algorithm_finds_the_validation_pinned_to_it` checks it).
fn slot(alg: Algorithm) -> usize {
    alg as usize
}

/// How long a verification waits for an on-demand JWKS refresh before giving up.
pub const JWKS_WAIT: Duration = Duration::from_secs(3);
/// Key parsing is the config crate's (one parser for the gateway and the operator).
pub use super::keys::MIN_HMAC_SECRET_BYTES;
use super::keys::{VerifyKey, alg_from_name, inline_key, keys_from_file, to_jwt_alg};

/// The verified claims of a token.
#[derive(Debug, Clone)]
pub struct Claims {
    /// `sub`, when it is a string.
    pub sub: Option<String>,
    /// `exp` in Unix seconds (always present on a verified token).
    pub exp: Option<u64>,
    /// Every claim, as sent.
    pub raw: Map<String, Value>,
}

impl Claims {
    fn from_raw(raw: Map<String, Value>) -> Self {
        let sub = raw.get("sub").and_then(Value::as_str).map(str::to_owned);
        let exp = raw.get("exp").and_then(|v| {
            v.as_u64().or_else(|| {
                v.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .map(|f| f.round() as u64)
            })
        });
        Self { sub, exp, raw }
    }

    /// A claim as text: strings as they are, numbers and booleans in their JSON spelling; `None`
    /// for a missing claim, `null`, arrays and objects.
    pub fn get_str(&self, name: &str) -> Option<String> {
        match self.raw.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// Why a token was refused. The `Display` text equals [`TokenError::reason`]: short, stable, never
/// containing any part of the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS: wrong number of parts, bad base64url, header or payload not a JSON
    /// object, unsupported `crit` header, or longer than [`MAX_TOKEN_BYTES`].
    #[error("malformed token")]
    Malformed,
    /// The header's `alg` is `none`, unknown, or not the algorithm of any candidate key.
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    /// No configured or fetched key matches the token's `kid`.
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not verify with any candidate key.
    #[error("invalid signature")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` differs from the configured issuer.
    #[error("invalid issuer")]
    WrongIssuer,
    /// `aud` contains none of the configured audiences.
    #[error("invalid audience")]
    WrongAudience,
    /// A required claim (`exp`, `iss`, `aud`) is absent (or not of the right JSON type).
    #[error("{}", missing_reason(.0))]
    MissingClaim(&'static str),
    /// A time claim (`exp`, `nbf`) is present but not a number.
    #[error("{}", invalid_reason(.0))]
    InvalidClaim(&'static str),
}

impl TokenError {
    /// Short, stable text for a `WWW-Authenticate` `error_description`, logs and metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed token",
            Self::AlgorithmNotAllowed => "algorithm not allowed",
            Self::UnknownKey => "unknown signing key",
            Self::BadSignature => "invalid signature",
            Self::Expired => "token expired",
            Self::NotYetValid => "token not yet valid",
            Self::WrongIssuer => "invalid issuer",
            Self::WrongAudience => "invalid audience",
            Self::MissingClaim(c) => missing_reason(c),
            Self::InvalidClaim(c) => invalid_reason(c),
        }
    }
}

fn missing_reason(claim: &str) -> &'static str {
    match claim {
        "exp" => "missing exp claim",
        "iss" => "missing iss claim",
        "aud" => "missing aud claim",
        "nbf" => "missing nbf claim",
        "sub" => "missing sub claim",
        _ => "missing required claim",
    }
}

fn invalid_reason(claim: &str) -> &'static str {
    match claim {
        "exp" => "invalid exp claim",
        "nbf" => "invalid nbf claim",
        _ => "invalid claim",
    }
}

/// Maps a claim name from jsonwebtoken to a `'static` one (its errors carry owned strings).
fn static_claim(name: &str) -> &'static str {
    match name {
        "exp" => "exp",
        "nbf" => "nbf",
        "iss" => "iss",
        "aud" => "aud",
        "sub" => "sub",
        _ => "claim",
    }
}

/// A key problem found while building a [`Verifier`]; the message names `keys[i]`.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The route lists no key source.
    #[error("keys: at least one key source is required")]
    NoKeys,
    /// The key (or its file) is unusable.
    #[error("keys[{index}]: {message}")]
    Invalid { index: usize, message: String },
    /// The key file could not be read.
    #[error("keys[{index}]: cannot read {path}: {source}")]
    Read {
        index: usize,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A JWKS source as one route sees it: the shared cache and the route's algorithm list.
struct JwksSource {
    cache: Arc<JwksCache>,
    algorithms: Vec<Algorithm>,
}

struct Inner {
    /// Inline and file keys, each pinned to its configured algorithm.
    keys: Vec<VerifyKey>,
    jwks: Vec<JwksSource>,
    /// Claim rules, one copy per algorithm with `algorithms` pinned to it: built once here, not
    /// cloned (with its sets of strings) for every token.
    /// Indexed by [`slot`].
    validations: [Validation; Algorithm::ALL.len()],
    /// The route's `leeway`, in seconds.
    leeway: u64,
    /// Tokens this route verified, while fresh and their keys in service.
    verified: VerifiedCache<CachedClaims>,
    /// `switchboard_jwt_verify_cache_total{result="hit"}` and `{result="miss"}`, looked up once
    /// here rather than by label on every verification.
    cache_hits: prometheus::IntCounter,
    cache_misses: prometheus::IntCounter,
}

/// What the verified-token cache keeps of a token: its claims as compact JSON text, parsed
/// again on a hit. The parsed map costs about a kilobyte per token (a B-tree node and a string
/// per claim name and value) and the cache holds up to [`super::verified::MAX_ENTRIES`] of
/// them, one per connected user; the text is the size of the token's payload, and parsing it
/// costs a small fraction of the signature check a hit saves.
#[derive(Clone)]
struct CachedClaims(Box<str>);

impl CachedClaims {
    fn new(claims: &Claims) -> Option<Self> {
        serde_json::to_string(&claims.raw)
            .ok()
            .map(|s| Self(s.into_boxed_str()))
    }

    fn claims(&self) -> Option<Claims> {
        serde_json::from_str(&self.0).ok().map(Claims::from_raw)
    }
}

/// Verifies the tokens of one route. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key material stays out of Debug output.
        f.debug_struct("Verifier")
            .field("static_keys", &self.inner.keys.len())
            .field(
                "jwks",
                &self
                    .inner
                    .jwks
                    .iter()
                    .map(|s| s.cache.url())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The parts of the JOSE header that select the key.
struct TokenHeader {
    alg: Algorithm,
    kid: Option<String>,
}

/// Outcome of one pass over the keys. `refresh` says whether fresher JWKS keys could change it.
struct Attempt {
    result: Result<Claims, TokenError>,
    refresh: bool,
}

/// How one key's attempt ended.
enum Step {
    /// Signature did not verify with this key: try the next one.
    NextKey,
    /// The signature verified (or the token is broken): this is the answer.
    Final(TokenError),
}

impl Verifier {
    /// Builds from config: reads inline keys and key files now (errors name the key index:
    /// `keys[1]: ...`), and gets or creates shared JWKS caches from the registry.
    pub fn new(cfg: &Jwt, jwks: &JwksRegistry) -> Result<Self, KeyError> {
        if cfg.keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        let mut keys = Vec::new();
        let mut sources = Vec::new();
        for (index, source) in cfg.keys.iter().enumerate() {
            let invalid = |message: String| KeyError::Invalid { index, message };
            match source {
                KeySource::Inline {
                    algorithm,
                    kid,
                    pem,
                    secret,
                    jwk,
                } => keys.push(
                    inline_key(
                        *algorithm,
                        kid.as_ref(),
                        pem.as_ref(),
                        secret.as_ref(),
                        jwk.as_ref(),
                    )
                    .map_err(invalid)?,
                ),
                KeySource::File {
                    algorithm,
                    kid,
                    path,
                } => {
                    let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
                        index,
                        path: path.clone(),
                        source,
                    })?;
                    let found = keys_from_file(&bytes, *algorithm, kid.as_deref())
                        .map_err(|m| invalid(format!("{path}: {m}")))?;
                    keys.extend(found);
                }
                KeySource::Jwks {
                    url,
                    algorithms,
                    refresh,
                    min_refresh,
                } => {
                    if let Some(alg) = algorithms.iter().find(|a| a.is_hmac()) {
                        return Err(invalid(format!(
                            "{alg:?} cannot come from a JWKS (fetched key sets hold public keys only)"
                        )));
                    }
                    let cache = jwks.cache(url, algorithms, *refresh, *min_refresh);
                    sources.push(JwksSource {
                        cache,
                        algorithms: algorithms.clone(),
                    });
                }
            }
        }

        let mut validation = Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.leeway = cfg.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(issuer) = &cfg.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if cfg.audiences.is_empty() {
            // jsonwebtoken otherwise refuses every token that carries an `aud`.
            validation.validate_aud = false;
        } else {
            validation.set_audience(&cfg.audiences);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        let validations = Algorithm::ALL.map(|alg| {
            let mut pinned = validation.clone();
            // Pinned: jsonwebtoken checks the header's alg against this list and the key's
            // family.
            pinned.algorithms = vec![to_jwt_alg(alg)];
            pinned
        });

        Ok(Self {
            inner: Arc::new(Inner {
                keys,
                jwks: sources,
                validations,
                leeway: validation.leeway,
                verified: VerifiedCache::default(),
                cache_hits: crate::metrics::metrics()
                    .jwt_cache
                    .with_label_values(&["hit"]),
                cache_misses: crate::metrics::metrics()
                    .jwt_cache
                    .with_label_values(&["miss"]),
            }),
        })
    }

    /// Verifies signature and claims. An unknown `kid` may trigger a rate-limited JWKS refresh that
    /// this call awaits for at most [`JWKS_WAIT`] before giving up with [`TokenError::UnknownKey`].
    ///
    /// Traced as the `auth` span: the header's `alg` and `kid` and the result, never a claim.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let span = tracing::info_span!(
            target: crate::telemetry::TARGET,
            "auth",
            alg = tracing::field::Empty,
            kid = tracing::field::Empty,
            result = tracing::field::Empty,
        );
        let result = self
            .verify_traced(token, &span)
            .instrument(span.clone())
            .await;
        span.record(
            "result",
            match &result {
                Ok(_) => "ok",
                Err(e) => e.reason(),
            },
        );
        result
    }

    async fn verify_traced(&self, token: &str, span: &tracing::Span) -> Result<Claims, TokenError> {
        let header = parse_header(token)?;
        span.record("alg", tracing::field::debug(header.alg));
        if let Some(kid) = header.kid.as_ref().filter(|_| !span.is_disabled()) {
            // The client chose it: bounded, so a huge `kid` cannot bloat a span.
            let end = (0..=kid.len().min(64))
                .rev()
                .find(|&i| kid.is_char_boundary(i))
                .unwrap_or(0);
            span.record("kid", &kid[..end]);
        }
        // Read before the keys are: see `JwksCache::generation`.
        let keys = self.keys_generation();
        let now = jsonwebtoken::get_current_timestamp();
        // One digest of the token serves the lookup and, on a miss, the insert.
        let digest = VerifiedCache::<CachedClaims>::key(token);
        if let Some(claims) = self
            .inner
            .verified
            .get(&digest, now, keys)
            .and_then(|c| c.claims())
        {
            self.inner.cache_hits.inc();
            return Ok(claims);
        }
        self.inner.cache_misses.inc();
        let result = self.verify_uncached(token, &header).await;
        if let Some((claims, cached)) = result
            .as_ref()
            .ok()
            .and_then(|c| CachedClaims::new(c).map(|k| (c, k)))
        {
            self.inner.verified.put(
                digest,
                token.len(),
                &cached,
                claims.exp,
                self.inner.leeway,
                keys,
            );
        }
        result
    }

    /// Tokens held in this route's verified-token cache.
    pub fn cached_tokens(&self) -> usize {
        self.inner.verified.len()
    }

    /// The generation of every key set this route verifies with: the inline and file keys
    /// never change under a `Verifier`; the JWKS sources do.
    fn keys_generation(&self) -> u64 {
        self.inner
            .jwks
            .iter()
            .fold(0u64, |acc, s| acc.wrapping_add(s.cache.generation()))
    }

    async fn verify_uncached(
        &self,
        token: &str,
        header: &TokenHeader,
    ) -> Result<Claims, TokenError> {
        let first = self.attempt(token, header);
        if first.result.is_ok() || !first.refresh || self.inner.jwks.is_empty() {
            return first.result;
        }
        let refreshes = self
            .inner
            .jwks
            .iter()
            .map(|s| s.cache.refresh_for_unknown_key());
        // The fetches run in their own tasks: timing out here only stops waiting for them.
        let _ = tokio::time::timeout(JWKS_WAIT, futures_util::future::join_all(refreshes)).await;
        self.attempt(token, header).result
    }

    fn attempt(&self, token: &str, header: &TokenHeader) -> Attempt {
        let snapshots: Vec<_> = self
            .inner
            .jwks
            .iter()
            .map(|s| (s.cache.keys(), s.algorithms.as_slice()))
            .collect();
        let all: Vec<(&VerifyKey, &[Algorithm])> = self
            .inner
            .keys
            .iter()
            .map(|k| (k, &[][..]))
            .chain(
                snapshots
                    .iter()
                    .flat_map(|(set, allowed)| set.iter().map(move |k| (k, *allowed))),
            )
            .collect();

        let kid_known = header
            .kid
            .as_deref()
            .is_some_and(|kid| all.iter().any(|(k, _)| k.kid.as_deref() == Some(kid)));
        let pool: Vec<_> = match header.kid.as_deref() {
            Some(kid) if kid_known => all
                .into_iter()
                .filter(|(k, _)| k.kid.as_deref() == Some(kid))
                .collect(),
            Some(_) => all.into_iter().filter(|(k, _)| k.kid.is_none()).collect(),
            None => all,
        };
        let refresh = pool.is_empty() || (header.kid.is_some() && !kid_known);

        let mut tried = false;
        for (key, _) in pool
            .iter()
            .filter(|(k, allowed)| k.permits(header.alg, allowed))
        {
            tried = true;
            match self.decode_with(token, header.alg, &key.key) {
                Ok(claims) => {
                    return Attempt {
                        result: Ok(claims),
                        refresh: false,
                    };
                }
                Err(Step::NextKey) => {}
                Err(Step::Final(e)) => {
                    return Attempt {
                        result: Err(e),
                        refresh: false,
                    };
                }
            }
        }
        let error = if tried {
            TokenError::BadSignature
        } else if pool.is_empty() {
            TokenError::UnknownKey
        } else {
            TokenError::AlgorithmNotAllowed
        };
        Attempt {
            result: Err(error),
            refresh,
        }
    }

    fn decode_with(&self, token: &str, alg: Algorithm, key: &DecodingKey) -> Result<Claims, Step> {
        let validation = &self.inner.validations[slot(alg)];
        match jsonwebtoken::decode::<Map<String, Value>>(token, key, validation) {
            // jsonwebtoken lets an array `iss` holding the issuer through; RFC 7519 §4.1.1
            // makes it one string, compared exactly.
            Ok(data)
                if validation.iss.is_some()
                    && !data.claims.get("iss").is_some_and(Value::is_string) =>
            {
                Err(Step::Final(TokenError::WrongIssuer))
            }
            Ok(data) => Ok(Claims::from_raw(data.claims)),
            Err(e) => Err(match e.into_kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidEddsaKey
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::InvalidKeyFormat
                | ErrorKind::Signing(_)
                | ErrorKind::Provider(_) => Step::NextKey,
                ErrorKind::ExpiredSignature => Step::Final(TokenError::Expired),
                ErrorKind::ImmatureSignature => Step::Final(TokenError::NotYetValid),
                ErrorKind::InvalidIssuer => Step::Final(TokenError::WrongIssuer),
                ErrorKind::InvalidAudience => Step::Final(TokenError::WrongAudience),
                ErrorKind::MissingRequiredClaim(c) => {
                    Step::Final(TokenError::MissingClaim(static_claim(&c)))
                }
                ErrorKind::InvalidClaimFormat(c) => {
                    Step::Final(TokenError::InvalidClaim(static_claim(&c)))
                }
                ErrorKind::InvalidAlgorithm
                | ErrorKind::MissingAlgorithm
                | ErrorKind::UnsupportedAlgorithm
                | ErrorKind::InvalidAlgorithmName => Step::Final(TokenError::AlgorithmNotAllowed),
                _ => Step::Final(TokenError::Malformed),
            }),
        }
    }
}

/// Reads the JOSE header without trusting it: only `alg` and `kid` are used, to pick keys.
fn parse_header(token: &str) -> Result<TokenHeader, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    if header.is_empty() || payload.is_empty() {
        return Err(TokenError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    let fields: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    let alg = match fields.get("alg") {
        Some(Value::String(name)) => alg_from_name(name).ok_or(TokenError::AlgorithmNotAllowed)?,
        _ => return Err(TokenError::Malformed),
    };
    let kid = match fields.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(TokenError::Malformed),
    };
    // RFC 7515 §4.1.11: extensions listed in `crit` must be understood; we understand none.
    if fields.contains_key("crit") {
        return Err(TokenError::Malformed);
    }
    // After the `alg` check, so an unsigned `alg: none` token reports the algorithm.
    if signature.is_empty() {
        return Err(TokenError::Malformed);
    }
    Ok(TokenHeader { alg, kid })
}

#[cfg(test)]
pub(crate) mod tests;
