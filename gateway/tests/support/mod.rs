//! Integration-test harness: real sockets, a real WebSocket echo upstream and the real gateway
//! binary. Test files use it with `mod support;` and import from here; this file only declares
//! the parts and re-exports them.
//!
//! - [`process`]: [`Gateway`], `switchboard-gateway --config <tempfile>` as a child process,
//!   output captured to a file (its tail is printed when a test panics), its listeners' bound
//!   addresses read from its `listening` log lines, ready once `/readyz` answers 200 and the
//!   first listener accepts, SIGTERM-able, killed on drop; [`check_config`].
//! - [`config`]: [`ConfigBuilder`] and [`route`], the gateway config a test starts with.
//! - [`echo`]: [`EchoServer`], a WebSocket + plain-HTTP echo backend on `127.0.0.1:0` that
//!   records what it sees.
//! - [`http_client`]: [`http_get`] for admin endpoints and plain routes, raw HTTP/1.1 exchanges and
//!   upgrades, `/metrics` helpers.
//! - [`ws`]: WebSocket clients with the harness limits and assertions on what they receive.
//! - [`jwt`]: tokens signed with the fixture keys, and a [`JwksServer`].
//! - [`deflate_client`]: a frame-by-frame client for permessage-deflate tests.
//! - [`util`]: waiting ([`eventually`], [`PROMPTLY`]), fixtures, atomic file writes.
//! - Rooms clients ([`room_client`], [`rooms`]), a NATS server ([`nats`]), a held app
//!   ([`held_app`]) and the Autobahn runner ([`autobahn`]).
//! - [`tunnel`]: limits, counters and frames for a tunnel relayed in-process (the tests that
//!   count its heap).
//!
//! Everything here panics with a message instead of returning errors: it is test code.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

pub mod autobahn;
pub mod config;
pub mod deflate_client;
pub mod echo;
pub mod held_app;
pub mod http_client;
pub mod jwt;
pub mod nats;
pub mod process;
pub mod room_client;
pub mod rooms;
pub mod tunnel;
pub mod util;
pub mod ws;

// Each test binary uses a different part of what is re-exported.
#[allow(unused_imports)]
pub use config::{ConfigBuilder, RouteBuilder, jwt_hs256, jwt_rsa_file, proxy_config, route};
#[allow(unused_imports)]
pub use echo::*;
#[allow(unused_imports)]
pub use http_client::*;
#[allow(unused_imports)]
pub use jwt::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use util::*;
#[allow(unused_imports)]
pub use ws::*;
