//! `switchboard-operator`: the control plane. It watches `RealtimeRoute` custom resources (and
//! the Services and Secrets they name), compiles every accepted route into ONE versioned
//! `GatewayConfig` snapshot stored in a Secret that the gateways watch, and reports back on each
//! route with Gateway-API-style conditions (`Accepted`, `ResolvedRefs`, `Programmed`,
//! `DrainFits`).
//!
//! Layout:
//! - [`api`]: the CRD types (the schema is generated from them by the `crdgen` binary).
//! - [`compile`], [`plan`], [`conditions`]: pure logic (spec -> route, all routes -> snapshot
//!   and verdicts, condition merging), exhaustively unit-tested.
//! - [`snapshot`], [`fleet`], [`leader`]: the snapshot Secret, gateway `/status` polling, the
//!   leader Lease.
//! - [`controller`]: the reconcile pass and the run loop (watches, triggers, back-off).
//! - [`admin`], [`metrics`]: `/metrics`, `/healthz`, `/readyz`.
//!
//! Run it with `switchboard-operator --base-config base.yaml` against any API server the
//! kubeconfig (`KUBECONFIG`) or the in-cluster service account points at; see
//! `docs/operator.md`.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
// A library other crates (e2e, tests) build on: every public item says what it is.
#![deny(missing_docs)]

pub mod admin;
// The CRD enums' variants are documented on their enum: a doc comment on a variant would turn
// the generated schema's plain `enum` list into a `oneOf` of described constants.
#[allow(missing_docs)]
pub mod api;
pub mod compile;
pub mod conditions;
pub mod controller;
pub mod fleet;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod settings;
pub mod snapshot;

#[cfg(test)]
pub mod fixtures;

/// The field manager name on every write.
pub const FIELD_MANAGER: &str = "switchboard-operator";

/// Everything that can go wrong in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    /// The snapshot would not fit in a Secret.
    #[error(
        "the gateway snapshot is {bytes} bytes, over the {limit}-byte Secret limit; split routes across gateway fleets or shrink inline keys"
    )]
    SnapshotTooLarge {
        /// Size of the document.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// Encoding an annotation or patch failed.
    #[error("encoding: {0}")]
    Encode(#[source] serde_json::Error),
    /// The base config file is missing or invalid.
    #[error("base config {path}: {message}")]
    BaseConfig {
        /// The file.
        path: String,
        /// What is wrong (every problem, one per line).
        message: String,
    },
    /// A flag or environment value is unusable.
    #[error("{0}")]
    Settings(String),
    /// Registering metrics failed.
    #[error("metrics: {0}")]
    Metrics(#[source] prometheus::Error),
    /// The admin listener could not be bound.
    #[error("admin listener {address}: {source}")]
    Bind {
        /// The address.
        address: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A short, stable label for the `reason` of the error metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(s)) if s.code == 403 => "forbidden",
            Error::Kube(kube::Error::Api(_)) => "api_error",
            Error::Kube(_) => "api_unreachable",
            Error::SnapshotTooLarge { .. } => "snapshot_too_large",
            Error::Encode(_) => "encode",
            Error::BaseConfig { .. } => "base_config",
            Error::Settings(_) => "settings",
            Error::Metrics(_) => "metrics",
            Error::Bind { .. } => "bind",
        }
    }
}

/// The operator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
