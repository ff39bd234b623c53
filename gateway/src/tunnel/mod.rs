//! The gateway-owned WebSocket tunnel for proxy mode: frame scanning, rate limiting and the
//! two-way relay with gateway-initiated closes.

pub mod bucket;
pub mod frame;
pub mod relay;
