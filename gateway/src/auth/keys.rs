//! Signing keys as the verifiers use them. Parsing is the config crate's
//! ([`switchboard_config::keys`], one parser for the gateway and the operator); this module is
//! the one door the gateway's JWT verifier and JWKS caches both use, so neither has to reach
//! into the other for key types.

pub use switchboard_config::keys::MIN_HMAC_SECRET_BYTES;
pub(crate) use switchboard_config::keys::{
    VerifyKey, alg_from_name, inline_key, keys_from_file, parse_jwk, to_jwt_alg,
};
