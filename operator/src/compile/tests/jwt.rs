//! JWT settings: key sources from Secrets, token carriers, claims to headers.

use super::*;

#[test]
fn the_default_token_source_is_the_bearer_header() {
    let r = compiled(
        "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: idp, jwksUri: 'https://idp/jwks'}]}}",
    );
    assert_eq!(r.jwt.unwrap().token_sources, [ConfigTokenSource::Bearer {}]);
}

#[test]
fn a_secret_pem_becomes_one_inline_key_per_algorithm() {
    let pem = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n";
    let r = with_secret(&SECRET_ROUTE.replace("ALGS", "RS256, PS256"), pem).unwrap();
    let keys = r.jwt.unwrap().keys;
    assert_eq!(keys.len(), 2);
    assert!(
        keys.iter()
            .all(|k| matches!(k, KeySource::Inline { pem: Some(p), .. } if p == pem))
    );
    assert!(matches!(
        keys[1],
        KeySource::Inline {
            algorithm: Algorithm::PS256,
            ..
        }
    ));
}

#[test]
fn a_secret_that_is_not_pem_or_json_is_an_hmac_secret() {
    let secret = "0123456789abcdef0123456789abcdef";
    let r = with_secret(&SECRET_ROUTE.replace("ALGS", "HS256"), secret).unwrap();
    assert!(matches!(
        &r.jwt.unwrap().keys[..],
        [KeySource::Inline { algorithm: Algorithm::HS256, secret: Some(s), pem: None, jwk: None, .. }] if s == secret
    ));
}

#[test]
fn a_secret_jwks_is_split_into_keys_that_keep_their_kid_and_pinned_alg() {
    let jwks =
        r#"{"keys": [{"kty": "EC", "kid": "a", "alg": "ES256"}, {"kty": "RSA", "kid": "b"}]}"#;
    let r = with_secret(&SECRET_ROUTE.replace("ALGS", "ES256, RS256"), jwks).unwrap();
    let keys = r.jwt.unwrap().keys;
    let summary: Vec<(Algorithm, Option<String>)> = keys
        .iter()
        .map(|k| match k {
            KeySource::Inline {
                algorithm,
                kid,
                jwk,
                ..
            } => {
                assert!(jwk.is_some());
                (*algorithm, kid.clone())
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            (Algorithm::ES256, Some("a".into())),
            (Algorithm::ES256, Some("b".into())),
            (Algorithm::RS256, Some("b".into())),
        ]
    );
}

#[test]
fn a_secret_that_looks_like_json_but_is_not_is_invalid() {
    let p = with_secret(&SECRET_ROUTE.replace("ALGS", "RS256"), "{not json").unwrap_err();
    assert!(
        p[0].starts_with("spec.auth.jwt.providers[0].secretRef:"),
        "{p:?}"
    );
}

#[test]
fn a_secret_ref_without_algorithms_is_invalid() {
    let p = problems(
        "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: idp, secretRef: {name: keys, key: k}}]}}",
    );
    assert!(
        p[0].starts_with("spec.auth.jwt.providers[0].algorithms:"),
        "{p:?}"
    );
}

#[test]
fn both_or_neither_key_source_is_invalid() {
    let p = problems("backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: idp}]}}");
    assert!(
        p[0].contains("exactly one of jwksUri and secretRef"),
        "{p:?}"
    );
}

#[test]
fn duplicate_claims_to_headers_are_invalid() {
    let p = problems(
        "backend: {name: chat, port: 80}\nauth: {jwt: {providers: [{name: i, jwksUri: 'https://i/j', claimsToHeaders: [{claim: sub, header: X-A}, {claim: sub, header: X-B}]}]}}",
    );
    assert!(p[0].contains("listed twice"), "{p:?}");
}
