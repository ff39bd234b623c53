//! JWTs for the authenticated gateway routes: an ES256 (P-256) key pair made fresh for each run
//! (the public half goes into the gateway config as an inline PEM key), and tokens signed with
//! it, one user (`sub`) each. Key generation is `p256`'s, signing is `jsonwebtoken`'s.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

/// The `Origin` browsers would send; the authenticated routes allow only this one.
pub const ORIGIN: &str = "https://app.bench.test";
/// `iss` of every token and the route's required issuer.
pub const ISSUER: &str = "sbbench";

/// A signing key and its public PEM.
pub struct Signer {
    key: EncodingKey,
    pub public_pem: String,
}

impl Signer {
    /// A new random P-256 key pair.
    pub fn generate() -> Result<Self> {
        let secret = p256::SecretKey::random(&mut rand_core::OsRng);
        let private_pem = secret
            .to_pkcs8_pem(LineEnding::LF)
            .context("encoding the private key")?;
        let public_pem = secret
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .context("encoding the public key")?;
        let key = EncodingKey::from_ec_pem(private_pem.as_bytes())?;
        Ok(Self { key, public_pem })
    }

    /// A token for user `sub`, valid for an hour.
    pub fn token(&self, sub: &str) -> Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = serde_json::json!({"sub": sub, "iss": ISSUER, "iat": now, "exp": now + 3600});
        Ok(encode(&Header::new(Algorithm::ES256), &claims, &self.key)?)
    }

    /// Tokens for users `u0 .. u{n-1}`.
    pub fn tokens(&self, n: usize) -> Result<Vec<String>> {
        self.tokens_from(0, n)
    }

    /// Tokens for `n` users from `u{first}` on.
    pub fn tokens_from(&self, first: usize, n: usize) -> Result<Vec<String>> {
        (first..first + n).map(|i| self.token(&user(i))).collect()
    }
}

/// The user name of connection `i`.
pub fn user(i: usize) -> String {
    format!("u{i}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_with_the_public_key_and_names_its_user() {
        let s = Signer::generate().unwrap();
        let t = s.token("u7").unwrap();
        let key = jsonwebtoken::DecodingKey::from_ec_pem(s.public_pem.as_bytes()).unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::ES256);
        v.set_issuer(&[ISSUER]);
        let data = jsonwebtoken::decode::<serde_json::Value>(&t, &key, &v).unwrap();
        assert_eq!(data.claims["sub"], "u7");
    }
}
