//! Proxy mode: pick a pinned backend pod, prepare the request it sees (identity in, client
//! copies out), open the upstream WebSocket or forward the plain HTTP request.

pub mod backends;
pub mod identity;
pub mod pinning;
pub mod serve;
pub mod upstream;
