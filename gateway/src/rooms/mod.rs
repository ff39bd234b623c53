//! Rooms mode: the gateway terminates the connection and serves it as a member of rooms
//! relayed between gateway pods by the [`bus`].

pub mod authz;
pub mod batch;
pub mod bus;
pub mod chat;
pub mod conn;
pub mod cors;
pub mod cursor;
pub mod entry;
pub mod hooks;
pub mod hub;
pub mod longpoll;
pub mod offline;
pub mod outbox;
pub mod presence;
#[cfg(test)]
mod proptests;
pub mod proto;
pub mod protocol;
pub mod publish_api;
pub mod receipts;
pub mod route;
pub mod session;
pub mod sse;
pub mod stream_body;
pub mod ws;
