//! Authentication before the upgrade: the Origin allow-list, finding the token, JWT
//! verification and the JWKS key caches it uses; and the admin APIs' bearer token.

pub mod api_token;
pub mod crypto;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod origin;
pub mod token;
pub mod verified;
