//! The gateway-owned WebSocket tunnel for proxy mode: rate limiting and the two-way relay with
//! gateway-initiated closes (frames are scanned by [`crate::engine::frame`]), and
//! permessage-deflate terminated at the edge ([`compress`]), and the threads tunnels run on
//! ([`threads`]) with their event loop ([`event_loop`]).

pub mod compress;
pub mod event_loop;
pub mod relay;
pub mod threads;
