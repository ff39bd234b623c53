//! End-to-end suites for Switchboard: real processes, real sockets.
//!
//! - [`apiserver`]: a Kubernetes API-server stand-in (list/watch/get/create/replace/merge-patch/
//!   delete over plain HTTP, with resourceVersions and watch streams); its module docs say
//!   plainly what it does not emulate.
//! - [`harness`]: child processes for the built binaries, a WebSocket echo backend, clients.
//!
//! `tests/operator_gateway.rs` runs the `switchboard-operator` and `switchboard-gateway`
//! binaries against the stand-in. `cargo nextest run --workspace` builds the binaries and runs
//! it; `cargo run -p switchboard-e2e --bin apiserver-standin` serves the stand-in on its own.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod apiserver;
pub mod harness;
