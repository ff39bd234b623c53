//! The gateway's one WebSocket engine, below rooms, documents and the proxy tunnel: the
//! streaming frame codec ([`frame`]), permessage-deflate ([`deflate`]) and the connection core
//! ([`conn`]) with the session loop ([`session`]: keep-alive, expiry, drain, close handshake,
//! slow consumers) that rooms and document sessions sit on.
//!
//! Nothing here knows rooms, documents or tunnels; they call down into it.

pub mod bucket;
pub mod conn;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod session;

/// The value out of its box, and the box freed now. A connection's task keeps what it waits
/// for until the upgrade in a box (so the task does not hold it a second time beside what is
/// built from it); `*boxed` inside the task's async block would move the value out but free
/// the emptied box only when the block's captured variable goes, at the end of the connection.
/// (Taking the box is the point: clippy's `boxed_local` does not apply.)
#[allow(clippy::boxed_local)]
pub fn unbox<T>(boxed: Box<T>) -> T {
    *boxed
}
