//! JWT verification keys: the one parser of key material (PEM public keys, JWKs, JWKS
//! documents, HMAC secrets) that the gateway verifies tokens with and the operator checks
//! Secrets with, so a key one accepts the other accepts too.
//!
//! No I/O: key files are read by the caller and their bytes handed to [`keys_from_file`].
//! Every check that would otherwise fail on the first token (a truncated PEM, a private key, a
//! 1024-bit RSA modulus, a JWK whose `kty` lies) fails here, when the key is loaded.
//!
//! ```
//! use switchboard_config::{Algorithm, keys};
//! let truncated = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA37T7hYwshTgezOPI6PgE\n";
//! let err = keys::inline_key(Algorithm::RS256, None, Some(&truncated.to_string()), None, None)
//!     .unwrap_err();
//! assert_eq!(err, "the PEM is not a public key usable with RS256");
//! ```

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{AlgorithmFamily, DecodingKey, DecodingKeyKind};
use serde_json::Value;

use crate::{Algorithm, Jwt, KeySource, Problem};

/// Shortest accepted HMAC secret (RFC 7518 §3.2: at least the hash size; 32 bytes for HS256).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;
/// RSA modulus sizes accepted, in bits. Smaller is forgeable in practice; larger is refused by
/// the RSA implementation at verify time, so it is refused here at config time instead.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

/// What kind of key material a [`VerifyKey`] holds; decides which algorithms can use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A shared secret (HS256/384/512).
    Hmac,
    /// An RSA public key (RS* and PS*).
    Rsa,
    /// An EC key on P-256 (ES256).
    EcP256,
    /// An EC key on P-384 (ES384).
    EcP384,
    /// An Ed25519 key (EdDSA).
    Ed25519,
}

impl KeyKind {
    /// Whether `alg` is an algorithm this kind of key can verify at all.
    pub fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            Self::Hmac => alg.is_hmac(),
            Self::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Self::EcP256 => alg == ES256,
            Self::EcP384 => alg == ES384,
            Self::Ed25519 => alg == EdDSA,
        }
    }

    /// The algorithm a JWKS key of this kind is used with when neither the JWK nor the source
    /// names one. HMAC keys have no such default.
    pub fn usual(self) -> Option<Algorithm> {
        match self {
            Self::Hmac => None,
            Self::Rsa => Some(Algorithm::RS256),
            Self::EcP256 => Some(Algorithm::ES256),
            Self::EcP384 => Some(Algorithm::ES384),
            Self::Ed25519 => Some(Algorithm::EdDSA),
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Hmac => "HMAC secret",
            Self::Rsa => "RSA key",
            Self::EcP256 => "EC P-256 key",
            Self::EcP384 => "EC P-384 key",
            Self::Ed25519 => "Ed25519 key",
        })
    }
}

/// One verification key with what it may verify.
#[derive(Debug, Clone)]
pub struct VerifyKey {
    /// Matched against the token's `kid`; `None` matches a `kid` no other key has.
    pub kid: Option<String>,
    /// What kind of material the key is.
    pub kind: KeyKind,
    /// The algorithm the key is pinned to (config `algorithm` or JWK `alg`). `None` only for JWKS
    /// keys without `alg`: the source's `algorithms` or [`KeyKind::usual`] decide.
    pub alg: Option<Algorithm>,
    /// The key, ready for `jsonwebtoken`.
    pub key: DecodingKey,
}

impl VerifyKey {
    /// Checks the key material and that a declared algorithm suits it.
    pub fn new(
        kid: Option<String>,
        alg: Option<Algorithm>,
        key: DecodingKey,
    ) -> Result<Self, String> {
        let kind = classify(&key)?;
        if let Some(alg) = alg
            && !kind.fits(alg)
        {
            return Err(format!("an {kind} cannot verify {alg:?}"));
        }
        Ok(Self {
            kid,
            kind,
            alg,
            key,
        })
    }

    /// Whether a token signed with `alg` may be checked with this key. `allowed` is the JWKS
    /// source's `algorithms` (empty for inline and file keys, which are always pinned).
    pub fn permits(&self, alg: Algorithm, allowed: &[Algorithm]) -> bool {
        if !self.kind.fits(alg) {
            return false;
        }
        match self.alg {
            Some(own) => own == alg && (allowed.is_empty() || allowed.contains(&alg)),
            None if allowed.is_empty() => self.kind.usual() == Some(alg),
            None => allowed.contains(&alg),
        }
    }
}

/// Works out what the key material is and rejects keys that could never verify anything (or
/// would make verification panic: the EdDSA verifier slices the first 32 bytes).
fn classify(key: &DecodingKey) -> Result<KeyKind, String> {
    match key.family() {
        AlgorithmFamily::Hmac => {
            let len = key.try_get_as_bytes().map_err(|e| e.to_string())?.len();
            if len < MIN_HMAC_SECRET_BYTES {
                return Err(format!(
                    "HMAC secrets must be at least {MIN_HMAC_SECRET_BYTES} bytes (this one has {len})"
                ));
            }
            Ok(KeyKind::Hmac)
        }
        AlgorithmFamily::Rsa => {
            let (n, e) = match key.kind() {
                DecodingKeyKind::RsaModulusExponent { n, e } => (n.clone(), e.clone()),
                DecodingKeyKind::SecretOrDer(_) => {
                    // Parses the PKCS#1 DER, so a broken key fails here and not on every token.
                    let jwk = Jwk::from_decoding_key(key, None)
                        .map_err(|_| "not a valid RSA public key".to_owned())?;
                    let AlgorithmParameters::RSA(p) = jwk.algorithm else {
                        return Err("not a valid RSA public key".into());
                    };
                    let n = URL_SAFE_NO_PAD.decode(p.n).map_err(|e| e.to_string())?;
                    let e = URL_SAFE_NO_PAD.decode(p.e).map_err(|e| e.to_string())?;
                    (n, e)
                }
            };
            let bits = bit_len(&n);
            if !RSA_BITS.contains(&bits) {
                return Err(format!(
                    "RSA keys must have {}..={} bits (this one has {bits})",
                    RSA_BITS.start(),
                    RSA_BITS.end()
                ));
            }
            let e = be_u64(&e).ok_or("invalid RSA public exponent")?;
            if e < 3 || e % 2 == 0 || e > (1 << 33) - 1 {
                return Err("invalid RSA public exponent".into());
            }
            Ok(KeyKind::Rsa)
        }
        AlgorithmFamily::Ec => {
            let bytes = key.try_get_as_bytes().map_err(|e| e.to_string())?;
            let (kind, alg) = match (bytes.len(), bytes.first()) {
                (65, Some(4)) => (KeyKind::EcP256, jsonwebtoken::Algorithm::ES256),
                (97, Some(4)) => (KeyKind::EcP384, jsonwebtoken::Algorithm::ES384),
                _ => return Err("only uncompressed P-256 and P-384 EC keys are supported".into()),
            };
            probe(key, alg).map_err(|_| format!("not a valid {kind}"))?;
            Ok(kind)
        }
        AlgorithmFamily::Ed => {
            let bytes = key.try_get_as_bytes().map_err(|e| e.to_string())?;
            if bytes.len() != 32 {
                return Err("only Ed25519 keys are supported for EdDSA".into());
            }
            probe(key, jsonwebtoken::Algorithm::EdDSA)
                .map_err(|_| "not a valid Ed25519 key".to_owned())?;
            Ok(KeyKind::Ed25519)
        }
    }
}

/// Builds the verifier for `alg` over `key`, which parses EC points and Ed25519 keys.
fn probe(key: &DecodingKey, alg: jsonwebtoken::Algorithm) -> Result<(), ()> {
    match jsonwebtoken::crypto::verify("AA", b"", key, alg) {
        Ok(_) => Ok(()),
        Err(_) => Err(()),
    }
}

fn bit_len(be: &[u8]) -> usize {
    let be = match be.iter().position(|b| *b != 0) {
        Some(i) => &be[i..],
        None => return 0,
    };
    (be.len() - 1) * 8 + (8 - be[0].leading_zeros() as usize)
}

fn be_u64(be: &[u8]) -> Option<u64> {
    let start = be.iter().position(|b| *b != 0)?;
    let be = &be[start..];
    if be.len() > 8 {
        return None;
    }
    Some(be.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// The `jsonwebtoken` algorithm of a config [`Algorithm`].
pub fn to_jwt_alg(alg: Algorithm) -> jsonwebtoken::Algorithm {
    use jsonwebtoken::Algorithm as J;
    match alg {
        Algorithm::HS256 => J::HS256,
        Algorithm::HS384 => J::HS384,
        Algorithm::HS512 => J::HS512,
        Algorithm::RS256 => J::RS256,
        Algorithm::RS384 => J::RS384,
        Algorithm::RS512 => J::RS512,
        Algorithm::PS256 => J::PS256,
        Algorithm::PS384 => J::PS384,
        Algorithm::PS512 => J::PS512,
        Algorithm::ES256 => J::ES256,
        Algorithm::ES384 => J::ES384,
        Algorithm::EdDSA => J::EdDSA,
    }
}

/// The algorithm named `name` in a JOSE header or JWK `alg`; `None` for `none` and anything unknown.
pub fn alg_from_name(name: &str) -> Option<Algorithm> {
    Some(match name {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// A PEM public key for a pinned asymmetric algorithm.
pub fn key_from_pem(pem: &str, alg: Algorithm) -> Result<DecodingKey, String> {
    let parse = match to_jwt_alg(alg).family() {
        AlgorithmFamily::Hmac => {
            return Err(format!(
                "{alg:?} needs a secret, not a PEM key (a public key must never be an HMAC secret)"
            ));
        }
        AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem,
        AlgorithmFamily::Ec => DecodingKey::from_ec_pem,
        AlgorithmFamily::Ed => DecodingKey::from_ed_pem,
    };
    match pem_label(pem) {
        Some("PUBLIC KEY" | "RSA PUBLIC KEY") => {}
        Some(label) if label.contains("PRIVATE KEY") => {
            return Err(
                "the PEM holds a private key; give the public key (`openssl pkey -pubout`)".into(),
            );
        }
        Some("CERTIFICATE") => {
            return Err("certificates are not supported; give the public key \
                 (`openssl x509 -pubkey -noout`)"
                .into());
        }
        Some(label) => return Err(format!("unsupported PEM block `{label}`")),
        None => return Err("not PEM text (no `-----BEGIN ...-----` line)".into()),
    }
    parse(pem.as_bytes()).map_err(|_| format!("the PEM is not a public key usable with {alg:?}"))
}

fn pem_label(pem: &str) -> Option<&str> {
    let start = pem.find("-----BEGIN ")? + "-----BEGIN ".len();
    let rest = &pem[start..];
    let end = rest.find("-----")?;
    Some(rest[..end].trim())
}

/// A JWK (from config or a file), pinned to the configured algorithm.
pub fn pinned_jwk(value: &Value, alg: Algorithm, kid: Option<&str>) -> Result<VerifyKey, String> {
    let mut key = parse_jwk(value, true)?
        .ok_or("the JWK is not a signature verification key (`use`, `key_ops` or `alg`)")?;
    if let Some(own) = key.alg
        && own != alg
    {
        return Err(format!("the JWK is for {own:?}, not {alg:?}"));
    }
    if !key.kind.fits(alg) {
        return Err(format!("an {} cannot verify {alg:?}", key.kind));
    }
    key.alg = Some(alg);
    if let Some(kid) = kid {
        key.kid = Some(kid.to_owned());
    }
    Ok(key)
}

/// A JWK or a JWKS (JSON) for a pinned algorithm. From a JWKS, the key with the configured `kid`,
/// or without one every key usable with `alg` (each keeping its own `kid`).
pub fn keys_from_json(
    doc: &Value,
    alg: Algorithm,
    kid: Option<&str>,
) -> Result<Vec<VerifyKey>, String> {
    let Some(list) = doc.get("keys") else {
        return Ok(vec![pinned_jwk(doc, alg, kid)?]);
    };
    let list = list.as_array().ok_or("`keys` is not an array")?;
    if let Some(kid) = kid {
        let jwk = list
            .iter()
            .find(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
            .ok_or_else(|| format!("the JWKS has no key with kid `{kid}`"))?;
        return Ok(vec![pinned_jwk(jwk, alg, Some(kid))?]);
    }
    let keys: Vec<_> = list
        .iter()
        .filter_map(|k| pinned_jwk(k, alg, None).ok())
        .collect();
    if keys.is_empty() {
        return Err(format!("the JWKS has no key usable with {alg:?}"));
    }
    Ok(keys)
}

/// A key file: PEM public key, JWK, JWKS, or (HS*) the raw secret with its trailing newline trimmed.
pub fn keys_from_file(
    bytes: &[u8],
    alg: Algorithm,
    kid: Option<&str>,
) -> Result<Vec<VerifyKey>, String> {
    let text = std::str::from_utf8(bytes).ok();
    if let Some(text) = text
        && text.trim_start().starts_with('{')
    {
        match serde_json::from_str::<Value>(text) {
            Ok(doc) => return keys_from_json(&doc, alg, kid),
            // A raw HMAC secret may happen to start with `{`.
            Err(_) if alg.is_hmac() => {}
            Err(e) => return Err(format!("the file is not valid JWK/JWKS JSON: {e}")),
        }
    }
    let kid = kid.map(str::to_owned);
    if let Some(text) = text
        && text.contains("-----BEGIN ")
    {
        let key = key_from_pem(text, alg)?;
        return Ok(vec![VerifyKey::new(kid, Some(alg), key)?]);
    }
    if !alg.is_hmac() {
        return Err(format!(
            "{alg:?} needs a PEM public key, a JWK or a JWKS; the file holds none of these"
        ));
    }
    let secret = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .unwrap_or(bytes);
    Ok(vec![VerifyKey::new(
        kid,
        Some(alg),
        DecodingKey::from_secret(secret),
    )?])
}

/// The key of an inline `keys[]` entry (`pem`, `secret` or `jwk`), pinned to `alg`.
pub fn inline_key(
    alg: Algorithm,
    kid: Option<&String>,
    pem: Option<&String>,
    secret: Option<&String>,
    jwk: Option<&String>,
) -> Result<VerifyKey, String> {
    match (pem, secret, jwk) {
        (Some(pem), None, None) => VerifyKey::new(kid.cloned(), Some(alg), key_from_pem(pem, alg)?),
        (None, Some(secret), None) => {
            if !alg.is_hmac() {
                return Err(format!(
                    "{alg:?} needs a public key (pem or jwk), not a secret"
                ));
            }
            VerifyKey::new(
                kid.cloned(),
                Some(alg),
                DecodingKey::from_secret(secret.as_bytes()),
            )
        }
        (None, None, Some(jwk)) => {
            let doc: Value =
                serde_json::from_str(jwk).map_err(|e| format!("jwk is not valid JSON: {e}"))?;
            pinned_jwk(&doc, alg, kid.map(String::as_str))
        }
        _ => Err("give exactly one of pem, secret, jwk".into()),
    }
}

/// One JWK as a verification key, with its own `kid` and `alg` (if any). `Ok(None)` for keys that
/// are not meant for verifying signatures, and for symmetric keys unless `allow_symmetric`.
pub fn parse_jwk(value: &Value, allow_symmetric: bool) -> Result<Option<VerifyKey>, String> {
    // `alg` is read from the JSON: jsonwebtoken maps unknown names to a catch-all.
    let alg = match value.get("alg") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => match alg_from_name(name) {
            Some(alg) => Some(alg),
            // An encryption algorithm (`RSA-OAEP`...) or one we do not verify.
            None => return Ok(None),
        },
        Some(_) => return Err("`alg` is not a string".into()),
    };
    let jwk: Jwk = serde_json::from_value(value.clone()).map_err(|e| format!("not a JWK: {e}"))?;
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return Ok(None);
    }
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return Ok(None);
    }
    let expected = match &jwk.algorithm {
        AlgorithmParameters::OctetKey(_) if !allow_symmetric => return Ok(None),
        AlgorithmParameters::OctetKey(_) => KeyKind::Hmac,
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => KeyKind::EcP256,
            EllipticCurve::P384 => KeyKind::EcP384,
            ref other => return Err(format!("unsupported EC curve {other:?}")),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => KeyKind::Ed25519,
            ref other => return Err(format!("unsupported OKP curve {other:?}")),
        },
        _ => return Err("unsupported key type".into()),
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("invalid key material: {e}"))?;
    let key = VerifyKey::new(jwk.common.key_id.clone(), alg, key)?;
    if key.kind != expected {
        return Err(format!(
            "the key material is an {}, not what `kty`/`crv` say",
            key.kind
        ));
    }
    Ok(Some(key))
}

impl VerifyKey {
    /// Whether some token algorithm could be verified with this key under `allowed`.
    pub fn usable_with_any(&self, allowed: &[Algorithm]) -> bool {
        Algorithm::ALL.iter().any(|alg| self.permits(*alg, allowed))
    }
}

/// Parses one key source that carries its material in the document (`inline`); `Ok` for
/// `file` (read by the gateway when it loads the route) and `jwks` (fetched) sources.
pub fn check_source(source: &KeySource) -> Result<(), String> {
    match source {
        KeySource::Inline {
            algorithm,
            kid,
            pem,
            secret,
            jwk,
        } => inline_key(
            *algorithm,
            kid.as_ref(),
            pem.as_ref(),
            secret.as_ref(),
            jwk.as_ref(),
        )
        .map(|_| ()),
        KeySource::File { .. } | KeySource::Jwks { .. } => Ok(()),
    }
}

/// Every inline key of `jwt` that does not parse, as problems at `keys[i]` (relative to the
/// route's `jwt`): what the gateway would refuse when it compiles the route.
pub fn inline_key_problems(jwt: &Jwt) -> Vec<Problem> {
    jwt.keys
        .iter()
        .enumerate()
        .filter_map(|(i, source)| {
            check_source(source)
                .err()
                .map(|message| Problem::new(format!("keys[{i}]"), message))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_PUB: &str = include_str!("../../tests/fixtures/keys/rsa.pub.pem");
    const RSA_PRIVATE: &str = include_str!("../../tests/fixtures/keys/rsa.pem");

    fn pem(alg: Algorithm, pem: &str) -> KeySource {
        KeySource::Inline {
            algorithm: alg,
            kid: None,
            pem: Some(pem.into()),
            secret: None,
            jwk: None,
        }
    }

    fn truncated() -> String {
        RSA_PUB.lines().take(3).map(|l| format!("{l}\n")).collect()
    }

    #[test]
    fn a_whole_public_key_parses_and_a_truncated_one_is_refused() {
        assert_eq!(check_source(&pem(Algorithm::RS256, RSA_PUB)), Ok(()));
        assert_eq!(
            check_source(&pem(Algorithm::RS256, &truncated())),
            Err("the PEM is not a public key usable with RS256".into())
        );
    }

    #[test]
    fn a_private_key_or_a_short_secret_is_refused_with_what_to_do() {
        let private = check_source(&pem(Algorithm::RS256, RSA_PRIVATE)).unwrap_err();
        assert!(private.contains("openssl pkey -pubout"), "{private}");
        let short = KeySource::Inline {
            algorithm: Algorithm::HS256,
            kid: None,
            pem: None,
            secret: Some("too-short".into()),
            jwk: None,
        };
        let short = check_source(&short).unwrap_err();
        assert!(short.contains("at least 32 bytes"), "{short}");
    }

    #[test]
    fn inline_key_problems_name_each_bad_key_by_index_and_skip_files() {
        let jwt: Jwt = serde_json::from_value(serde_json::json!({
            "keys": [
                {"inline": {"algorithm": "RS256", "pem": RSA_PUB}},
                {"file": {"algorithm": "RS256", "path": "/does/not/matter"}},
                {"inline": {"algorithm": "RS256", "pem": truncated()}},
            ]
        }))
        .unwrap();
        assert_eq!(
            inline_key_problems(&jwt),
            vec![Problem::new(
                "keys[2]",
                "the PEM is not a public key usable with RS256"
            )]
        );
    }
}
