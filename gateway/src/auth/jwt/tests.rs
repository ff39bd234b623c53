use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use switchboard_config::TokenSource;

use super::*;

pub(crate) const RSA: &str = include_str!("../../../tests/fixtures/keys/rsa.pem");
pub(crate) const RSA_PUB: &str = include_str!("../../../tests/fixtures/keys/rsa.pub.pem");
pub(crate) const RSA2: &str = include_str!("../../../tests/fixtures/keys/rsa2.pem");
pub(crate) const RSA2_PUB: &str = include_str!("../../../tests/fixtures/keys/rsa2.pub.pem");
pub(crate) const EC256: &str = include_str!("../../../tests/fixtures/keys/ec256.pem");
pub(crate) const EC256_PUB: &str = include_str!("../../../tests/fixtures/keys/ec256.pub.pem");
pub(crate) const EC384: &str = include_str!("../../../tests/fixtures/keys/ec384.pem");
pub(crate) const EC384_PUB: &str = include_str!("../../../tests/fixtures/keys/ec384.pub.pem");
pub(crate) const ED25519: &str = include_str!("../../../tests/fixtures/keys/ed25519.pem");
pub(crate) const ED25519_PUB: &str = include_str!("../../../tests/fixtures/keys/ed25519.pub.pem");
pub(crate) const SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";

pub(crate) fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("seconds fit i64")
}

/// Claims expiring `exp_in` seconds from now.
pub(crate) fn claims(exp_in: i64) -> Value {
    json!({ "sub": "user-1", "exp": now() + exp_in })
}

pub(crate) fn encoding_key(alg: Algorithm) -> EncodingKey {
    let key = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            return EncodingKey::from_secret(SECRET.as_bytes());
        }
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => EncodingKey::from_rsa_pem(RSA.as_bytes()),
        Algorithm::ES256 => EncodingKey::from_ec_pem(EC256.as_bytes()),
        Algorithm::ES384 => EncodingKey::from_ec_pem(EC384.as_bytes()),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(ED25519.as_bytes()),
    };
    key.expect("fixture private key parses")
}

pub(crate) fn sign_with(
    alg: Algorithm,
    key: &EncodingKey,
    kid: Option<&str>,
    claims: &Value,
) -> String {
    let mut header = Header::new(to_jwt_alg(alg));
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("signing works")
}

pub(crate) fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    sign_with(alg, &encoding_key(alg), kid, claims)
}

/// The public half of the fixture key `sign` uses for `alg`, as inline config.
pub(crate) fn inline(alg: Algorithm, kid: Option<&str>) -> KeySource {
    let pem = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            return KeySource::Inline {
                algorithm: alg,
                kid: kid.map(str::to_owned),
                pem: None,
                secret: Some(SECRET.into()),
                jwk: None,
            };
        }
        Algorithm::ES256 => EC256_PUB,
        Algorithm::ES384 => EC384_PUB,
        Algorithm::EdDSA => ED25519_PUB,
        _ => RSA_PUB,
    };
    KeySource::Inline {
        algorithm: alg,
        kid: kid.map(str::to_owned),
        pem: Some(pem.into()),
        secret: None,
        jwk: None,
    }
}

pub(crate) fn jwt_config(keys: Vec<KeySource>) -> Jwt {
    Jwt {
        issuer: None,
        audiences: Vec::new(),
        keys,
        token_sources: vec![TokenSource::Bearer {}],
        leeway: Duration::from_secs(5),
        close_on_expiry: true,
    }
}

fn verifier(keys: Vec<KeySource>) -> Verifier {
    Verifier::new(&jwt_config(keys), &JwksRegistry::new()).expect("valid keys")
}

fn verifier_with(cfg: &Jwt) -> Verifier {
    Verifier::new(cfg, &JwksRegistry::new()).expect("valid keys")
}

fn key_error(keys: Vec<KeySource>) -> String {
    match Verifier::new(&jwt_config(keys), &JwksRegistry::new()) {
        Ok(_) => panic!("expected a key error"),
        Err(e) => e.to_string(),
    }
}

const ALL: [Algorithm; 12] = Algorithm::ALL;

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
}

#[tokio::test]
async fn every_algorithm_verifies_a_token_signed_with_its_own_key() {
    for alg in ALL {
        let v = verifier(vec![inline(alg, None)]);
        let claims = v
            .verify(&sign(alg, None, &claims(60)))
            .await
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(claims.sub.as_deref(), Some("user-1"), "{alg:?}");
        assert!(claims.exp.is_some());
    }
}

#[tokio::test]
async fn a_key_refuses_every_algorithm_but_its_own() {
    for key_alg in ALL {
        let v = verifier(vec![inline(key_alg, None)]);
        for token_alg in ALL.into_iter().filter(|a| *a != key_alg) {
            let token = sign(token_alg, None, &claims(60));
            assert_eq!(
                v.verify(&token).await.err(),
                Some(TokenError::AlgorithmNotAllowed),
                "key {key_alg:?}, token {token_alg:?}"
            );
        }
    }
}

#[tokio::test]
async fn token_signed_with_hs256_is_refused_by_an_rs256_key() {
    // The classic confusion attack: the attacker knows the public key and uses it as a secret.
    let v = verifier(vec![inline(Algorithm::RS256, None)]);
    let forged = sign_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA_PUB.as_bytes()),
        None,
        &claims(60),
    );
    assert_eq!(
        v.verify(&forged).await.err(),
        Some(TokenError::AlgorithmNotAllowed)
    );
}

#[tokio::test]
async fn rs256_public_key_pem_is_refused_as_an_hmac_key() {
    let inline_pem = key_error(vec![KeySource::Inline {
        algorithm: Algorithm::HS256,
        kid: None,
        pem: Some(RSA_PUB.into()),
        secret: None,
        jwk: None,
    }]);
    assert!(
        inline_pem.starts_with("keys[0]: HS256 needs a secret"),
        "{inline_pem}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pub.pem");
    std::fs::write(&path, RSA_PUB).expect("write");
    let file = key_error(vec![KeySource::File {
        algorithm: Algorithm::HS256,
        kid: None,
        path: path.display().to_string(),
    }]);
    assert!(
        file.contains("HS256 needs a secret, not a PEM key"),
        "{file}"
    );
}

#[tokio::test]
async fn token_with_alg_none_is_refused() {
    let v = verifier(vec![inline(Algorithm::HS256, None)]);
    let payload = b64(&claims(60));
    for alg in ["none", "None", "NONE", "", "HS257"] {
        let header = b64(&json!({ "alg": alg, "typ": "JWT" }));
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}.AAAA"),
        ] {
            assert_eq!(
                v.verify(&token).await.err(),
                Some(TokenError::AlgorithmNotAllowed),
                "{alg}"
            );
        }
    }
}

#[tokio::test]
async fn expired_token_is_refused() {
    let v = verifier(vec![inline(Algorithm::ES256, None)]);
    let token = sign(Algorithm::ES256, None, &claims(-60));
    assert_eq!(v.verify(&token).await.err(), Some(TokenError::Expired));
    assert_eq!(TokenError::Expired.reason(), "token expired");
}

#[tokio::test]
async fn token_without_exp_is_refused() {
    let v = verifier(vec![inline(Algorithm::HS256, None)]);
    let token = sign(Algorithm::HS256, None, &json!({ "sub": "u" }));
    assert_eq!(
        v.verify(&token).await.err(),
        Some(TokenError::MissingClaim("exp"))
    );
    let token = sign(
        Algorithm::HS256,
        None,
        &json!({ "sub": "u", "exp": "soon" }),
    );
    assert_eq!(
        v.verify(&token).await.err(),
        Some(TokenError::MissingClaim("exp"))
    );
}

#[tokio::test]
async fn token_whose_nbf_is_in_the_future_is_refused() {
    let v = verifier(vec![inline(Algorithm::EdDSA, None)]);
    let token = sign(
        Algorithm::EdDSA,
        None,
        &json!({ "exp": now() + 600, "nbf": now() + 60 }),
    );
    assert_eq!(v.verify(&token).await.err(), Some(TokenError::NotYetValid));
    let token = sign(
        Algorithm::EdDSA,
        None,
        &json!({ "exp": now() + 600, "nbf": now() - 1 }),
    );
    assert!(v.verify(&token).await.is_ok());
}

#[tokio::test]
async fn leeway_accepts_small_clock_skew_and_nothing_more() {
    // Leeway 5s; margins of 2-3s keep the test independent of a second ticking over.
    let v = verifier(vec![inline(Algorithm::HS256, None)]);
    let just_expired = sign(Algorithm::HS256, None, &claims(-2));
    assert!(v.verify(&just_expired).await.is_ok());
    let long_expired = sign(Algorithm::HS256, None, &claims(-8));
    assert_eq!(
        v.verify(&long_expired).await.err(),
        Some(TokenError::Expired)
    );

    let nbf_soon = sign(
        Algorithm::HS256,
        None,
        &json!({ "exp": now() + 60, "nbf": now() + 2 }),
    );
    assert!(v.verify(&nbf_soon).await.is_ok());
    let nbf_later = sign(
        Algorithm::HS256,
        None,
        &json!({ "exp": now() + 60, "nbf": now() + 8 }),
    );
    assert_eq!(
        v.verify(&nbf_later).await.err(),
        Some(TokenError::NotYetValid)
    );

    let mut strict = jwt_config(vec![inline(Algorithm::HS256, None)]);
    strict.leeway = Duration::ZERO;
    let strict = verifier_with(&strict);
    assert_eq!(
        strict.verify(&long_expired).await.err(),
        Some(TokenError::Expired)
    );
    let expired_3s = sign(Algorithm::HS256, None, &claims(-3));
    assert_eq!(
        strict.verify(&expired_3s).await.err(),
        Some(TokenError::Expired)
    );
}

#[tokio::test]
async fn issuer_is_required_and_exact_when_configured() {
    let mut cfg = jwt_config(vec![inline(Algorithm::RS256, None)]);
    cfg.issuer = Some("https://issuer.example".into());
    let v = verifier_with(&cfg);
    let good = json!({ "exp": now() + 60, "iss": "https://issuer.example" });
    assert!(v.verify(&sign(Algorithm::RS256, None, &good)).await.is_ok());
    let other = json!({ "exp": now() + 60, "iss": "https://evil.example" });
    assert_eq!(
        v.verify(&sign(Algorithm::RS256, None, &other)).await.err(),
        Some(TokenError::WrongIssuer)
    );
    let missing = json!({ "exp": now() + 60 });
    assert_eq!(
        v.verify(&sign(Algorithm::RS256, None, &missing))
            .await
            .err(),
        Some(TokenError::MissingClaim("iss"))
    );
    // `iss` is one StringOrURI (RFC 7519 §4.1.1): an array holding the issuer is not it.
    for iss in [
        json!(["https://evil.example", "https://issuer.example"]),
        json!(["https://issuer.example"]),
    ] {
        let listed = json!({ "exp": now() + 60, "iss": iss });
        assert_eq!(
            v.verify(&sign(Algorithm::RS256, None, &listed)).await.err(),
            Some(TokenError::WrongIssuer),
            "{iss}"
        );
    }
}

#[tokio::test]
async fn audience_is_required_and_must_match_one_configured_audience() {
    let mut cfg = jwt_config(vec![inline(Algorithm::PS256, None)]);
    cfg.audiences = vec!["chat".into(), "feed".into()];
    let v = verifier_with(&cfg);
    let cases = [
        (json!({ "exp": now() + 60, "aud": "feed" }), None),
        (json!({ "exp": now() + 60, "aud": ["other", "chat"] }), None),
        (
            json!({ "exp": now() + 60, "aud": "other" }),
            Some(TokenError::WrongAudience),
        ),
        (
            json!({ "exp": now() + 60, "aud": [] }),
            Some(TokenError::WrongAudience),
        ),
        (
            json!({ "exp": now() + 60 }),
            Some(TokenError::MissingClaim("aud")),
        ),
    ];
    for (claims, want) in cases {
        let got = v.verify(&sign(Algorithm::PS256, None, &claims)).await.err();
        assert_eq!(got, want, "{claims}");
    }
}

#[tokio::test]
async fn audience_is_not_checked_when_none_is_configured() {
    let v = verifier(vec![inline(Algorithm::HS384, None)]);
    let token = sign(
        Algorithm::HS384,
        None,
        &json!({ "exp": now() + 60, "aud": "anything" }),
    );
    assert!(v.verify(&token).await.is_ok());
}

#[tokio::test]
async fn token_with_an_unknown_kid_is_refused_when_every_key_has_a_kid() {
    let v = verifier(vec![inline(Algorithm::HS256, Some("a"))]);
    let token = sign(Algorithm::HS256, Some("b"), &claims(60));
    assert_eq!(v.verify(&token).await.err(), Some(TokenError::UnknownKey));
    let token = sign(Algorithm::HS256, Some("a"), &claims(60));
    assert!(v.verify(&token).await.is_ok());
}

#[tokio::test]
async fn a_key_without_kid_matches_any_kid_unless_another_key_has_that_exact_kid() {
    let v = verifier(vec![
        inline(Algorithm::ES256, Some("ec")),
        inline(Algorithm::RS256, None),
    ]);
    // `kid: rsa` is nobody's: the kid-less RSA key takes it.
    let token = sign(Algorithm::RS256, Some("rsa"), &claims(60));
    assert!(v.verify(&token).await.is_ok());
    // `kid: ec` names the EC key, so the kid-less RSA key is not consulted at all.
    let token = sign(Algorithm::RS256, Some("ec"), &claims(60));
    assert_eq!(
        v.verify(&token).await.err(),
        Some(TokenError::AlgorithmNotAllowed)
    );
}

#[tokio::test]
async fn token_without_kid_is_tried_against_every_key_of_its_algorithm() {
    let v = verifier(vec![
        KeySource::Inline {
            algorithm: Algorithm::RS256,
            kid: Some("old".into()),
            pem: Some(RSA2_PUB.into()),
            secret: None,
            jwk: None,
        },
        inline(Algorithm::RS256, Some("new")),
    ]);
    let token = sign(Algorithm::RS256, None, &claims(60));
    assert!(v.verify(&token).await.is_ok());
    let other = sign_with(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(RSA2.as_bytes()).expect("rsa2"),
        None,
        &claims(60),
    );
    assert!(v.verify(&other).await.is_ok());
    // Named with the wrong kid, the same token fails on the signature.
    let wrong = sign(Algorithm::RS256, Some("old"), &claims(60));
    assert_eq!(v.verify(&wrong).await.err(), Some(TokenError::BadSignature));
}

#[tokio::test]
async fn tampered_payload_or_signature_is_refused() {
    for alg in [
        Algorithm::HS256,
        Algorithm::RS256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        let v = verifier(vec![inline(alg, None)]);
        let token = sign(alg, None, &claims(60));
        let (head, sig) = token.rsplit_once('.').expect("three parts");
        let (header, _) = head.split_once('.').expect("three parts");

        let forged_payload = b64(&json!({ "sub": "admin", "exp": now() + 60 }));
        let tampered = format!("{header}.{forged_payload}.{sig}");
        assert_eq!(
            v.verify(&tampered).await.err(),
            Some(TokenError::BadSignature),
            "{alg:?}"
        );

        let mut sig_bytes = URL_SAFE_NO_PAD.decode(sig).expect("b64");
        sig_bytes[0] ^= 1;
        let tampered = format!("{head}.{}", URL_SAFE_NO_PAD.encode(&sig_bytes));
        assert_eq!(
            v.verify(&tampered).await.err(),
            Some(TokenError::BadSignature),
            "{alg:?}"
        );
    }
}

#[tokio::test]
async fn malformed_tokens_are_errors_not_panics() {
    let v = verifier(vec![
        inline(Algorithm::EdDSA, None),
        inline(Algorithm::HS256, None),
    ]);
    let good = sign(Algorithm::EdDSA, None, &claims(60));
    let (header, rest) = good.split_once('.').expect("parts");
    let (payload, sig) = rest.split_once('.').expect("parts");
    let hs_header = b64(&json!({ "alg": "HS256" }));
    let cases = vec![
        String::new(),
        "garbage".into(),
        "a.b".into(),
        format!("{header}.{payload}"),
        format!("{header}.{payload}.{sig}.extra"),
        format!("{header}..{sig}"),
        format!(".{payload}.{sig}"),
        format!("{header}.{payload}."),
        format!("!!!.{payload}.{sig}"),
        format!("{header}.{payload}.!!!"),
        format!("{header}.@@@.{sig}"),
        format!("{header}=.{payload}.{sig}"),
        format!("{}.{payload}.{sig}", URL_SAFE_NO_PAD.encode("not json")),
        format!("{}.{payload}.{sig}", b64(&json!(["alg", "EdDSA"]))),
        format!("{}.{payload}.{sig}", b64(&json!({ "alg": 5 }))),
        format!("{}.{payload}.{sig}", b64(&json!({ "typ": "JWT" }))),
        format!(
            "{}.{payload}.{sig}",
            b64(&json!({ "alg": "EdDSA", "kid": 7 }))
        ),
        format!(
            "{}.{payload}.{sig}",
            b64(&json!({ "alg": "EdDSA", "crit": ["exp"] }))
        ),
        format!("{header}.{payload}.{}", "A".repeat(MAX_TOKEN_BYTES)),
        // Short EdDSA signature (the verifier must not slice out of bounds).
        format!("{header}.{payload}.AAAA"),
    ];
    for token in cases {
        let err = v.verify(&token).await.expect_err("refused");
        assert!(
            matches!(err, TokenError::Malformed | TokenError::BadSignature),
            "{err:?} for {token:.60}"
        );
    }
    // A correctly signed token whose payload is not a JSON object.
    for payload in [b"[1,2]".as_slice(), b"not json", b"\"str\""] {
        let message = format!("{hs_header}.{}", URL_SAFE_NO_PAD.encode(payload));
        let sig = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            jsonwebtoken::Algorithm::HS256,
        )
        .expect("sign");
        let err = v
            .verify(&format!("{message}.{sig}"))
            .await
            .expect_err("refused");
        assert!(
            matches!(err, TokenError::Malformed | TokenError::MissingClaim(_)),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn reasons_are_short_and_never_contain_the_token() {
    let v = verifier(vec![inline(Algorithm::HS256, None)]);
    let token = sign(Algorithm::HS256, None, &claims(-600));
    let err = v.verify(&token).await.expect_err("expired");
    assert_eq!(err.to_string(), err.reason());
    assert!(!err.reason().contains(&token[..20]));
    for e in [
        TokenError::Malformed,
        TokenError::AlgorithmNotAllowed,
        TokenError::UnknownKey,
        TokenError::BadSignature,
        TokenError::Expired,
        TokenError::NotYetValid,
        TokenError::WrongIssuer,
        TokenError::WrongAudience,
        TokenError::MissingClaim("aud"),
        TokenError::InvalidClaim("nbf"),
    ] {
        assert_eq!(e.to_string(), e.reason());
        assert!(e.reason().len() < 40 && !e.reason().is_empty());
    }
}

#[tokio::test]
async fn claims_get_str_spells_strings_numbers_and_bools() {
    let v = verifier(vec![inline(Algorithm::HS512, None)]);
    let token = sign(
        Algorithm::HS512,
        None,
        &json!({
            "exp": now() + 60, "sub": "u1", "tenant": 42, "admin": true,
            "ratio": 1.5, "groups": ["a"], "nothing": null
        }),
    );
    let c = v.verify(&token).await.expect("valid");
    assert_eq!(c.get_str("sub").as_deref(), Some("u1"));
    assert_eq!(c.get_str("tenant").as_deref(), Some("42"));
    assert_eq!(c.get_str("admin").as_deref(), Some("true"));
    assert_eq!(c.get_str("ratio").as_deref(), Some("1.5"));
    assert_eq!(c.get_str("groups"), None);
    assert_eq!(c.get_str("nothing"), None);
    assert_eq!(c.get_str("absent"), None);
    assert!(c.exp.is_some_and(|e| e > 0));
}

#[tokio::test]
async fn a_token_served_from_the_cache_has_every_claim_of_its_first_verification() {
    let v = verifier(vec![inline(Algorithm::ES256, None)]);
    let token = sign(
        Algorithm::ES256,
        None,
        &json!({
            "exp": now() + 60, "sub": "u1", "iss": "https://issuer.example", "aud": ["a", "b"],
            "tenant": 42, "big": u64::MAX, "neg": -7, "ratio": 1.25e-7, "admin": true,
            // Shortest-form floats that a fast (not round-trip exact) parser reads one ulp off.
            "tiny": -1.0729132283643165e-38, "huge": 1.7976931348623157e308, "third": 0.1 + 0.2,
            "profile": {"name": "Zoë \"z\"", "tags": [1, null, "x"]}, "nothing": null
        }),
    );
    let first = v.verify(&token).await.expect("valid");
    assert_eq!(v.cached_tokens(), 1);
    let cached = v.verify(&token).await.expect("valid from the cache");
    assert_eq!(cached.raw, first.raw);
    assert_eq!(cached.sub, first.sub);
    assert_eq!(cached.exp, first.exp);
    assert_eq!(
        cached.get_str("big").as_deref(),
        Some("18446744073709551615")
    );
    for claim in ["ratio", "tiny", "huge", "third"] {
        assert_eq!(cached.get_str(claim), first.get_str(claim), "{claim}");
    }
    assert_eq!(
        first.get_str("tiny").as_deref(),
        Some("-1.0729132283643165e-38"),
        "the first verification reads the token's float exactly"
    );
}

#[tokio::test]
async fn key_errors_name_the_key_index() {
    let msg = key_error(vec![
        inline(Algorithm::HS256, None),
        KeySource::Inline {
            algorithm: Algorithm::RS256,
            kid: None,
            pem: Some("not a pem".into()),
            secret: None,
            jwk: None,
        },
    ]);
    assert!(msg.starts_with("keys[1]: "), "{msg}");

    let msg = key_error(vec![KeySource::File {
        algorithm: Algorithm::RS256,
        kid: None,
        path: "/nonexistent/switchboard/key.pem".into(),
    }]);
    assert!(
        msg.starts_with("keys[0]: cannot read /nonexistent/switchboard/key.pem"),
        "{msg}"
    );
    assert_eq!(
        key_error(vec![]),
        "keys: at least one key source is required"
    );
}

#[tokio::test]
async fn unusable_keys_are_config_errors() {
    let pem = |alg, pem: &str| KeySource::Inline {
        algorithm: alg,
        kid: None,
        pem: Some(pem.into()),
        secret: None,
        jwk: None,
    };
    let cases = [
        (pem(Algorithm::RS256, RSA), "private key"),
        (
            pem(Algorithm::ES256, EC384_PUB),
            "an EC P-384 key cannot verify ES256",
        ),
        (
            pem(Algorithm::ES384, EC256_PUB),
            "an EC P-256 key cannot verify ES384",
        ),
        (
            pem(Algorithm::EdDSA, RSA_PUB),
            "not a public key usable with EdDSA",
        ),
        (
            pem(Algorithm::RS256, EC256_PUB),
            "not a public key usable with RS256",
        ),
        (
            KeySource::Inline {
                algorithm: Algorithm::HS256,
                kid: None,
                pem: None,
                secret: Some("short".into()),
                jwk: None,
            },
            "at least 32 bytes",
        ),
        (
            KeySource::Inline {
                algorithm: Algorithm::RS256,
                kid: None,
                pem: None,
                secret: Some(SECRET.into()),
                jwk: None,
            },
            "needs a public key",
        ),
        (
            KeySource::Jwks {
                url: "http://127.0.0.1:9/jwks".into(),
                algorithms: vec![Algorithm::HS256],
                refresh: Duration::from_secs(300),
                min_refresh: Duration::from_secs(10),
            },
            "cannot come from a JWKS",
        ),
    ];
    for (source, want) in cases {
        let msg = key_error(vec![source]);
        assert!(msg.starts_with("keys[0]: ") && msg.contains(want), "{msg}");
    }
}

fn jwk_json(pem: &str, alg: Algorithm, kid: Option<&str>) -> Value {
    let key = match alg {
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem.as_bytes()),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem.as_bytes()),
        _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .expect("fixture public key");
    let mut jwk = Jwk::from_decoding_key(&key, Some(to_jwt_alg(alg))).expect("jwk");
    jwk.common.key_id = kid.map(str::to_owned);
    serde_json::to_value(jwk).expect("json")
}

#[tokio::test]
async fn inline_jwk_keys_verify_and_are_pinned_to_the_configured_algorithm() {
    for (alg, pem) in [
        (Algorithm::RS256, RSA_PUB),
        (Algorithm::ES256, EC256_PUB),
        (Algorithm::ES384, EC384_PUB),
        (Algorithm::EdDSA, ED25519_PUB),
    ] {
        let source = KeySource::Inline {
            algorithm: alg,
            kid: None,
            pem: None,
            secret: None,
            jwk: Some(jwk_json(pem, alg, Some("j1")).to_string()),
        };
        let v = verifier(vec![source]);
        assert!(
            v.verify(&sign(alg, Some("j1"), &claims(60))).await.is_ok(),
            "{alg:?}"
        );
        // The JWK's own kid is used when the config gives none.
        assert_eq!(
            v.verify(&sign(alg, Some("j2"), &claims(60))).await.err(),
            Some(TokenError::UnknownKey)
        );
    }
    let msg = key_error(vec![KeySource::Inline {
        algorithm: Algorithm::PS256,
        kid: None,
        pem: None,
        secret: None,
        jwk: Some(jwk_json(RSA_PUB, Algorithm::RS256, None).to_string()),
    }]);
    assert!(msg.contains("the JWK is for RS256, not PS256"), "{msg}");
}

#[tokio::test]
async fn key_files_hold_a_pem_a_secret_a_jwk_or_a_jwks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, body: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).expect("write");
        path.display().to_string()
    };
    let file = |alg, kid: Option<&str>, path: &str| KeySource::File {
        algorithm: alg,
        kid: kid.map(str::to_owned),
        path: path.to_owned(),
    };

    let pem = write("ec.pem", EC256_PUB.as_bytes());
    let v = verifier(vec![file(Algorithm::ES256, None, &pem)]);
    assert!(
        v.verify(&sign(Algorithm::ES256, None, &claims(60)))
            .await
            .is_ok()
    );

    // The trailing newline an editor adds is not part of the secret.
    let secret = write("hs.key", format!("{SECRET}\n").as_bytes());
    let v = verifier(vec![file(Algorithm::HS256, None, &secret)]);
    assert!(
        v.verify(&sign(Algorithm::HS256, None, &claims(60)))
            .await
            .is_ok()
    );

    let jwk = write(
        "ed.jwk",
        jwk_json(ED25519_PUB, Algorithm::EdDSA, None)
            .to_string()
            .as_bytes(),
    );
    let v = verifier(vec![file(Algorithm::EdDSA, Some("ed"), &jwk)]);
    assert!(
        v.verify(&sign(Algorithm::EdDSA, Some("ed"), &claims(60)))
            .await
            .is_ok()
    );

    let set = json!({ "keys": [
        jwk_json(RSA2_PUB, Algorithm::RS256, Some("old")),
        jwk_json(RSA_PUB, Algorithm::RS256, Some("new")),
        jwk_json(EC256_PUB, Algorithm::ES256, Some("ec")),
    ]});
    let jwks = write("set.json", set.to_string().as_bytes());
    // Picked by the configured kid.
    let v = verifier(vec![file(Algorithm::RS256, Some("new"), &jwks)]);
    assert!(
        v.verify(&sign(Algorithm::RS256, Some("new"), &claims(60)))
            .await
            .is_ok()
    );
    assert_eq!(
        v.verify(&sign(Algorithm::RS256, Some("old"), &claims(60)))
            .await
            .err(),
        Some(TokenError::UnknownKey)
    );
    // Without a configured kid: every key usable with the algorithm, with its own kid.
    let v = verifier(vec![file(Algorithm::RS256, None, &jwks)]);
    assert!(
        v.verify(&sign(Algorithm::RS256, Some("new"), &claims(60)))
            .await
            .is_ok()
    );
    assert_eq!(
        v.verify(&sign(Algorithm::RS256, Some("old"), &claims(60)))
            .await
            .err(),
        Some(TokenError::BadSignature)
    );
    assert_eq!(
        v.verify(&sign(Algorithm::RS256, Some("ec"), &claims(60)))
            .await
            .err(),
        Some(TokenError::UnknownKey)
    );

    let msg = key_error(vec![file(Algorithm::RS256, Some("missing"), &jwks)]);
    assert!(msg.contains("no key with kid `missing`"), "{msg}");
    let junk = write("junk.txt", b"hello");
    let msg = key_error(vec![file(Algorithm::RS256, None, &junk)]);
    assert!(
        msg.starts_with("keys[0]: ") && msg.contains("needs a PEM public key"),
        "{msg}"
    );
}

#[test]
fn every_algorithm_finds_the_validation_pinned_to_it() {
    for (i, alg) in Algorithm::ALL.iter().enumerate() {
        assert_eq!(super::slot(*alg), i, "{alg:?}");
    }
}
