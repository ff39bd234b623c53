//! Rooms mode: the gateway terminates the connection and serves it as a member of rooms
//! relayed between gateway pods by the [`bus`].

pub mod authz;
pub mod bus;
pub mod cors;
pub mod cursor;
pub mod entry;
pub mod hooks;
pub mod hub;
pub mod outbox;
pub mod presence;
#[cfg(test)]
mod proptests;
pub mod proto;
pub mod protocol;
pub mod publish_api;
pub mod route;
pub mod session;
pub mod stream_body;
