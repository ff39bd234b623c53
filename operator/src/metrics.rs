//! Prometheus metrics of the operator, served on `/metrics` by the admin server (`admin.rs`,
//! which imports this module; this one imports nothing of the crate).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The release version of this build (the workspace version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit this binary was built from (`build/build_info.rs`; `unknown`
/// outside a git checkout).
pub const COMMIT: &str = env!("SWITCHBOARD_GIT_COMMIT");
/// What `--version` prints after the binary's name.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SWITCHBOARD_GIT_COMMIT"),
    ")"
);

/// Every metric the operator exports (one registry, no globals).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `switchboard_operator_reconciles_total`: reconcile passes run (leader only).
    pub reconciles: IntCounter,
    /// `switchboard_operator_reconcile_errors_total{reason}`: failed passes by error kind.
    pub reconcile_errors: IntCounterVec,
    /// `switchboard_operator_reconcile_duration_seconds`: time per pass.
    pub reconcile_duration: Histogram,
    /// `switchboard_operator_snapshot_bytes`: size of `config.yaml` in the snapshot.
    pub snapshot_bytes: IntGauge,
    /// `switchboard_operator_snapshot_generation`: the snapshot's current generation.
    pub snapshot_generation: IntGauge,
    /// `switchboard_operator_snapshot_writes_total`: snapshot creates and replaces.
    pub snapshot_writes: IntCounter,
    /// `switchboard_operator_status_updates_total`: route status patches.
    pub status_updates: IntCounter,
    /// `switchboard_operator_routes{accepted_reason}`: routes by `Accepted` reason.
    pub routes: IntGaugeVec,
    /// `switchboard_operator_gateways{state}`: gateways by poll result (`serving`, `unready`, `unreachable`).
    pub gateways: IntGaugeVec,
    /// `switchboard_operator_leader`: 1 while this replica holds the Lease.
    pub leader: IntGauge,
    /// `switchboard_build_info{version,commit}`: always 1; the labels name the build.
    pub build_info: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Create and register every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounter::new(
            "switchboard_operator_reconciles_total",
            "Reconcile passes run by the leader.",
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "switchboard_operator_reconcile_errors_total",
                "Failed reconcile passes by error kind.",
            ),
            &["reason"],
        )?;
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "switchboard_operator_reconcile_duration_seconds",
                "Time per reconcile pass.",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )?;
        let snapshot_bytes = IntGauge::new(
            "switchboard_operator_snapshot_bytes",
            "Size of the gateway snapshot document in bytes.",
        )?;
        let snapshot_generation = IntGauge::new(
            "switchboard_operator_snapshot_generation",
            "Generation of the gateway snapshot.",
        )?;
        let snapshot_writes = IntCounter::new(
            "switchboard_operator_snapshot_writes_total",
            "Snapshot creates and replaces.",
        )?;
        let status_updates = IntCounter::new(
            "switchboard_operator_status_updates_total",
            "RealtimeRoute status patches.",
        )?;
        let routes = IntGaugeVec::new(
            Opts::new(
                "switchboard_operator_routes",
                "RealtimeRoutes by Accepted reason.",
            ),
            &["accepted_reason"],
        )?;
        let gateways = IntGaugeVec::new(
            Opts::new(
                "switchboard_operator_gateways",
                "Gateways by the result of the last /status poll.",
            ),
            &["state"],
        )?;
        let leader = IntGauge::new(
            "switchboard_operator_leader",
            "1 while this replica holds the leader Lease.",
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(snapshot_bytes.clone()))?;
        registry.register(Box::new(snapshot_generation.clone()))?;
        registry.register(Box::new(snapshot_writes.clone()))?;
        registry.register(Box::new(status_updates.clone()))?;
        registry.register(Box::new(routes.clone()))?;
        registry.register(Box::new(gateways.clone()))?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "switchboard_build_info",
                "Always 1; the labels are the version and git commit of the running binary.",
            ),
            &["version", "commit"],
        )?;
        build_info.with_label_values(&[VERSION, COMMIT]).set(1);
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(build_info.clone()))?;
        Ok(Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            snapshot_bytes,
            snapshot_generation,
            snapshot_writes,
            status_updates,
            routes,
            gateways,
            leader,
            build_info,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding gathered families into a Vec cannot fail for the text format.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_rendered_with_its_name() {
        let m = Metrics::new().unwrap();
        m.reconciles.inc();
        m.reconcile_errors.with_label_values(&["kube_api"]).inc();
        m.snapshot_bytes.set(1234);
        m.snapshot_generation.set(7);
        m.routes.with_label_values(&["Accepted"]).set(2);
        m.gateways.with_label_values(&["serving"]).set(3);
        let text = m.render();
        for needle in [
            "switchboard_operator_reconciles_total 1",
            "switchboard_operator_reconcile_errors_total{reason=\"kube_api\"} 1",
            "switchboard_operator_snapshot_bytes 1234",
            "switchboard_operator_snapshot_generation 7",
            "switchboard_operator_routes{accepted_reason=\"Accepted\"} 2",
            "switchboard_operator_gateways{state=\"serving\"} 3",
            "switchboard_operator_leader 0",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        let build =
            format!("switchboard_build_info{{commit=\"{COMMIT}\",version=\"{VERSION}\"}} 1");
        assert!(
            text.lines().any(|l| l == build),
            "missing {build} in\n{text}"
        );
    }
}
