//! The signature backend of JWT verification: `ring` (already in the graph through rustls)
//! behind jsonwebtoken's [`CryptoProvider`] interface.
//!
//! Verification is what a connect storm pays for: one ES256 verify costs ~290 µs with the
//! RustCrypto backend and ~65 µs with `ring` on this project's CI machine. Only the verifiers
//! are ring's; signing (used by tests and tools only) and the JWK key utilities come from
//! jsonwebtoken's own RustCrypto provider. No cryptography is implemented here: each verifier
//! hands the key bytes jsonwebtoken parsed to the matching `ring` algorithm.
//!
//! [`install`] must run before the first token is verified (the top of `main`); until then
//! jsonwebtoken uses its RustCrypto default, which verifies the same tokens, only slower.

use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier, KeyUtils, rust_crypto};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature::{self, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};
use ring::{hmac, signature as ring_sig};

/// jsonwebtoken with `ring` verifiers.
pub static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: rust_crypto::DEFAULT_PROVIDER.signer_factory,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: RC.rsa_pub_components_from_private_key,
        rsa_pub_components_from_public_key: RC.rsa_pub_components_from_public_key,
        ec_pub_components_from_private_key: RC.ec_pub_components_from_private_key,
        ed_pub_components_from_private_key: RC.ed_pub_components_from_private_key,
        compute_digest: RC.compute_digest,
    },
};

const RC: &KeyUtils = &rust_crypto::DEFAULT_PROVIDER.key_utils;

/// Make [`PROVIDER`] jsonwebtoken's process-wide backend. Idempotent: a second call (tests,
/// or another component that installed it first) changes nothing.
pub fn install() {
    let _ = PROVIDER.install_default();
}

/// How a key's signature is checked.
#[derive(Clone, Copy)]
enum Check {
    Hmac(hmac::Algorithm),
    /// ECDSA and EdDSA: the key is the raw public key jsonwebtoken extracted.
    Point(&'static ring_sig::EdDSAParameters),
    Ecdsa(&'static ring_sig::EcdsaVerificationAlgorithm),
    Rsa(&'static ring_sig::RsaParameters),
}

struct RingVerifier {
    alg: Algorithm,
    check: Check,
    key: DecodingKey,
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let (family, check) = match alg {
        Algorithm::HS256 => (AlgorithmFamily::Hmac, Check::Hmac(hmac::HMAC_SHA256)),
        Algorithm::HS384 => (AlgorithmFamily::Hmac, Check::Hmac(hmac::HMAC_SHA384)),
        Algorithm::HS512 => (AlgorithmFamily::Hmac, Check::Hmac(hmac::HMAC_SHA512)),
        Algorithm::ES256 => (
            AlgorithmFamily::Ec,
            Check::Ecdsa(&ring_sig::ECDSA_P256_SHA256_FIXED),
        ),
        Algorithm::ES384 => (
            AlgorithmFamily::Ec,
            Check::Ecdsa(&ring_sig::ECDSA_P384_SHA384_FIXED),
        ),
        Algorithm::RS256 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&ring_sig::RSA_PKCS1_2048_8192_SHA256),
        ),
        Algorithm::RS384 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&ring_sig::RSA_PKCS1_2048_8192_SHA384),
        ),
        Algorithm::RS512 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&ring_sig::RSA_PKCS1_2048_8192_SHA512),
        ),
        Algorithm::PS256 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&ring_sig::RSA_PSS_2048_8192_SHA256),
        ),
        Algorithm::PS384 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&ring_sig::RSA_PSS_2048_8192_SHA384),
        ),
        Algorithm::PS512 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&ring_sig::RSA_PSS_2048_8192_SHA512),
        ),
        Algorithm::EdDSA => (AlgorithmFamily::Ed, Check::Point(&ring_sig::ED25519)),
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    if key.family() != family {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingVerifier {
        alg: *alg,
        check,
        key: key.clone(),
    }))
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        let raw = || {
            self.key
                .try_get_as_bytes()
                .map_err(signature::Error::from_source)
        };
        let ok = match self.check {
            Check::Hmac(alg) => hmac::verify(&hmac::Key::new(alg, raw()?), msg, sig).is_ok(),
            Check::Point(alg) => ring_sig::UnparsedPublicKey::new(alg, raw()?)
                .verify(msg, sig)
                .is_ok(),
            Check::Ecdsa(alg) => ring_sig::UnparsedPublicKey::new(alg, raw()?)
                .verify(msg, sig)
                .is_ok(),
            Check::Rsa(alg) => match self.key.kind() {
                DecodingKeyKind::SecretOrDer(der) => ring_sig::UnparsedPublicKey::new(alg, der)
                    .verify(msg, sig)
                    .is_ok(),
                DecodingKeyKind::RsaModulusExponent { n, e } => {
                    ring_sig::RsaPublicKeyComponents { n, e }
                        .verify(alg, msg, sig)
                        .is_ok()
                }
            },
        };
        if ok {
            Ok(())
        } else {
            Err(signature::Error::new())
        }
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::crypto::{sign, verify};
    use jsonwebtoken::{EncodingKey, Header, Validation};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture key")
    }

    /// Every algorithm family the gateway accepts, with a key pair from the test fixtures.
    fn pairs() -> Vec<(Algorithm, EncodingKey, DecodingKey)> {
        let secret = b"0123456789abcdef0123456789abcdef";
        let rsa = || {
            (
                EncodingKey::from_rsa_pem(&read("rsa.pem")).expect("rsa"),
                DecodingKey::from_rsa_pem(&read("rsa.pub.pem")).expect("rsa pub"),
            )
        };
        let mut out = vec![(
            Algorithm::HS256,
            EncodingKey::from_secret(secret),
            DecodingKey::from_secret(secret),
        )];
        for alg in [Algorithm::RS256, Algorithm::PS384, Algorithm::RS512] {
            let (e, d) = rsa();
            out.push((alg, e, d));
        }
        out.push((
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&read("ec256.pem")).expect("ec"),
            DecodingKey::from_ec_pem(&read("ec256.pub.pem")).expect("ec pub"),
        ));
        out.push((
            Algorithm::ES384,
            EncodingKey::from_ec_pem(&read("ec384.pem")).expect("ec"),
            DecodingKey::from_ec_pem(&read("ec384.pub.pem")).expect("ec pub"),
        ));
        out.push((
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&read("ed25519.pem")).expect("ed"),
            DecodingKey::from_ed_pem(&read("ed25519.pub.pem")).expect("ed pub"),
        ));
        out
    }

    fn ring_verify(sig: &str, msg: &[u8], key: &DecodingKey, alg: Algorithm) -> bool {
        let v = new_verifier(&alg, key).expect("verifier");
        let raw = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig)
            .expect("b64");
        v.verify(msg, &raw).is_ok()
    }

    #[test]
    fn ring_verifies_what_rustcrypto_signs_and_refuses_a_changed_message() {
        for (alg, enc, dec) in pairs() {
            let sig = sign(b"header.payload", &enc, alg).expect("sign");
            assert!(ring_verify(&sig, b"header.payload", &dec, alg), "{alg:?}");
            assert!(!ring_verify(&sig, b"header.payloaD", &dec, alg), "{alg:?}");
            // And the RustCrypto backend agrees (the reference).
            assert!(verify(&sig, b"header.payload", &dec, alg).expect("verify"));
        }
    }

    #[test]
    fn a_key_of_another_family_is_refused_before_any_check() {
        let secret = DecodingKey::from_secret(b"0123456789abcdef0123456789abcdef");
        assert!(new_verifier(&Algorithm::ES256, &secret).is_err());
        assert!(new_verifier(&Algorithm::RS256, &secret).is_err());
    }

    #[test]
    fn a_whole_token_decodes_through_the_installed_provider() {
        install();
        let enc = EncodingKey::from_ec_pem(&read("ec256.pem")).expect("ec");
        let dec = DecodingKey::from_ec_pem(&read("ec256.pub.pem")).expect("ec pub");
        let exp = jsonwebtoken::get_current_timestamp() + 60;
        let claims = serde_json::json!({"sub": "a", "exp": exp});
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &enc).expect("encode");
        let mut v = Validation::new(Algorithm::ES256);
        v.validate_aud = false;
        let got = jsonwebtoken::decode::<serde_json::Value>(&token, &dec, &v).expect("decode");
        assert_eq!(got.claims["sub"], "a");
        let mut forged = token.clone();
        forged.replace_range(forged.len() - 4.., "AAAA");
        assert!(jsonwebtoken::decode::<serde_json::Value>(&forged, &dec, &v).is_err());
    }
}
