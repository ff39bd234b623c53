//! Switchboard's data plane: a pingora-based realtime edge gateway.
//!
//! A request passes one pipeline before any 101: path and Host normalization, route lookup,
//! Origin allow-list, JWT, admission limits. In proxy mode the gateway then pins the connection
//! to one backend pod and owns the WebSocket tunnel (frame-aware relay with size/rate limits,
//! keep-alive, expiry and drain closes). Every refusal and close maps to one row of
//! [`error::table`].

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod abort;
pub mod admin;
pub mod admission;
pub mod auth;
pub mod boot;
pub mod config_watch;
pub mod documents;
pub mod drain;
pub mod engine;
pub mod error;
pub mod gateway;
pub mod http;
pub mod http_client;
pub mod kubernetes;
pub mod listener;
pub mod metrics;
pub mod normalize;
pub mod pipeline;
pub mod proxy;
pub mod rooms;
pub mod routes;
pub mod telemetry;
pub mod tls;
pub mod tunnel;

/// The property tests' configuration: a short fixed run (512 cases per property) so
/// `make test` stays fast; `SWITCHBOARD_PROPTEST_CASES=<n>` runs longer. A failure is reported
/// with its minimal input and nothing is written next to the source.
#[cfg(test)]
pub(crate) fn proptest_config() -> proptest::test_runner::Config {
    let cases = std::env::var("SWITCHBOARD_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}
