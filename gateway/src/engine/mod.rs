//! The gateway's one WebSocket engine, below rooms, documents and the proxy tunnel: the
//! streaming frame codec ([`frame`]), permessage-deflate ([`deflate`]) and the connection core
//! ([`conn`]) with the session loop ([`session`]: keep-alive, expiry, drain, close handshake,
//! slow consumers) that rooms and document sessions sit on.
//!
//! Nothing here knows rooms, documents or tunnels; they call down into it.

pub mod conn;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod session;
