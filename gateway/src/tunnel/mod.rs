//! The gateway-owned WebSocket tunnel for proxy mode: rate limiting and the two-way relay with
//! gateway-initiated closes (frames are scanned by [`crate::engine::frame`]).

pub mod bucket;
pub mod relay;
