//! Command-line flags (each with an environment variable) and the base config they point at.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration as StdDuration;

use switchboard_config::GatewayConfig;

use crate::{Error, Result};

fn duration(text: &str) -> Result<StdDuration, String> {
    crate::api::duration::parse(text).map_err(|e| e.to_string())
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `switchboard-operator` flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "switchboard-operator",
    version = crate::metrics::VERSION_LINE,
    about = "Reconciles RealtimeRoutes into the Switchboard gateways' config snapshot."
)]
pub struct Args {
    /// GatewayConfig YAML without routes: the listeners, admin address, global limits, drain,
    /// room bus (`bus.nats`) and publish API every gateway uses, copied into the snapshot
    /// unchanged. Routes come from RealtimeRoutes.
    #[arg(long, env = "SWITCHBOARD_BASE_CONFIG")]
    pub base_config: PathBuf,

    /// Validate the base config, print the result and exit (0 valid, 64 invalid).
    #[arg(long)]
    pub check: bool,

    /// Watch RealtimeRoutes (and their Services and Secrets) only in these namespaces,
    /// comma-separated. Default: all namespaces.
    #[arg(long, env = "SWITCHBOARD_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Namespace of the snapshot Secret and the leader Lease. Default: the kubeconfig's or
    /// service account's namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,

    /// Name of the snapshot Secret the gateways watch.
    #[arg(
        long,
        env = "SWITCHBOARD_SNAPSHOT_NAME",
        default_value = "switchboard-gateway-snapshot"
    )]
    pub snapshot_name: String,

    /// `namespace/name` of the Service selecting the gateway pods' admin port; its
    /// EndpointSlices say which gateways to poll on `/status`.
    #[arg(long, env = "SWITCHBOARD_GATEWAY_ADMIN_SERVICE")]
    pub gateway_admin_service: Option<String>,

    /// Name of the admin port in those EndpointSlices (a slice with a single port is used
    /// whatever its name).
    #[arg(
        long,
        env = "SWITCHBOARD_GATEWAY_ADMIN_PORT_NAME",
        default_value = "admin"
    )]
    pub gateway_admin_port_name: String,

    /// Fixed gateway status URLs (`http://host:port/status`), comma-separated, in addition to
    /// (or instead of) the admin Service; for gateways outside the cluster and for tests.
    #[arg(
        long = "gateway-status-url",
        env = "SWITCHBOARD_GATEWAY_STATUS_URLS",
        value_delimiter = ','
    )]
    pub gateway_status_urls: Vec<String>,

    /// The gateway pods' `terminationGracePeriodSeconds`. When set, each route gets a
    /// `DrainFits` condition saying whether its drain fits in it.
    #[arg(long, env = "SWITCHBOARD_GATEWAY_TERMINATION_GRACE_PERIOD")]
    pub gateway_termination_grace_period: Option<u64>,

    /// How often gateways are polled while a route waits for `Programmed`.
    #[arg(long, env = "SWITCHBOARD_GATEWAY_POLL_INTERVAL", default_value = "2s", value_parser = duration)]
    pub gateway_poll_interval: StdDuration,

    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(
        long,
        env = "SWITCHBOARD_METRICS_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_address: SocketAddr,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "SWITCHBOARD_LEASE_NAME",
        default_value = "switchboard-operator"
    )]
    pub lease_name: String,

    /// How long a leader's Lease lasts without renewal (it renews every third of this).
    #[arg(long, env = "SWITCHBOARD_LEASE_DURATION", default_value = "15s", value_parser = duration)]
    pub lease_duration: StdDuration,

    /// This replica's identity in the Lease. Default: `POD_NAME`, else the host name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Full reconcile at least this often even without events.
    #[arg(long, env = "SWITCHBOARD_RESYNC_INTERVAL", default_value = "5m", value_parser = duration)]
    pub resync_interval: StdDuration,

    /// Field selector for the Secret watch (keeps large Secrets nobody references, like Helm
    /// releases, out of memory).
    #[arg(
        long,
        env = "SWITCHBOARD_SECRET_FIELD_SELECTOR",
        default_value = "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token"
    )]
    pub secret_field_selector: String,

    /// `text` or `json`.
    #[arg(
        long,
        env = "SWITCHBOARD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// Load the base config: a valid `GatewayConfig` with no routes.
pub fn load_base_config(path: &std::path::Path) -> Result<GatewayConfig> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::BaseConfig {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    parse_base_config(&text, &shown)
}

/// Parse and check base config text (see [`load_base_config`]).
pub fn parse_base_config(text: &str, shown: &str) -> Result<GatewayConfig> {
    let cfg = GatewayConfig::from_yaml(text).map_err(|e| Error::BaseConfig {
        path: shown.to_owned(),
        message: e.to_string(),
    })?;
    if !cfg.routes.is_empty() {
        return Err(Error::BaseConfig {
            path: shown.to_owned(),
            message: "routes: must be empty; routes come from RealtimeRoutes".into(),
        });
    }
    Ok(cfg)
}

impl Args {
    /// The gateway admin Service as `(namespace, name)`.
    pub fn gateway_admin_service(&self) -> Result<Option<(String, String)>> {
        let Some(s) = &self.gateway_admin_service else {
            return Ok(None);
        };
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Some((ns.to_owned(), name.to_owned())))
            }
            _ => Err(Error::Settings(format!(
                "--gateway-admin-service: `{s}` is not `namespace/name`"
            ))),
        }
    }

    /// The Lease identity: `--identity`, else the host name, else a random one.
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("switchboard-operator-{:08x}", rand::random::<u32>()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["switchboard-operator", "--base-config", "base.yaml"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let a = args(&[]);
        assert!(a.namespaces.is_empty());
        assert_eq!(a.snapshot_name, "switchboard-gateway-snapshot");
        assert_eq!(a.gateway_poll_interval, StdDuration::from_secs(2));
        assert_eq!(a.lease_duration, StdDuration::from_secs(15));
        assert_eq!(a.resync_interval, StdDuration::from_secs(300));
        assert_eq!(a.gateway_admin_port_name, "admin");
        assert_eq!(a.log_format, LogFormat::Text);
    }

    #[test]
    fn lists_and_durations_parse_from_flags() {
        let a = args(&[
            "--namespaces",
            "a,b",
            "--gateway-status-url",
            "http://127.0.0.1:9090/status",
            "--lease-duration",
            "1m",
            "--gateway-admin-service",
            "edge/gateway-admin",
        ]);
        assert_eq!(a.namespaces, ["a", "b"]);
        assert_eq!(a.gateway_status_urls, ["http://127.0.0.1:9090/status"]);
        assert_eq!(a.lease_duration, StdDuration::from_secs(60));
        assert_eq!(
            a.gateway_admin_service().unwrap(),
            Some(("edge".into(), "gateway-admin".into()))
        );
    }

    #[test]
    fn a_bad_duration_or_service_reference_is_refused() {
        let bad = Args::try_parse_from(["x", "--base-config", "b", "--lease-duration", "15"]);
        assert!(bad.is_err());
        let a = args(&["--gateway-admin-service", "just-a-name"]);
        assert!(a.gateway_admin_service().is_err());
    }

    #[test]
    fn a_base_config_with_routes_is_refused() {
        let text = "apiVersion: switchboard.dev/v1alpha1\nkind: GatewayConfig\nlisteners: [{name: p, address: '0.0.0.0:8443'}]\nroutes: [{name: a, path: {value: /}, proxy: {backends: []}}]\n";
        let e = parse_base_config(text, "base.yaml").unwrap_err();
        assert!(e.to_string().contains("routes: must be empty"), "{e}");
    }

    #[test]
    fn an_invalid_base_config_names_the_file_and_field() {
        let e = parse_base_config(
            "apiVersion: switchboard.dev/v1alpha1\nkind: GatewayConfig\nlisteners: []\n",
            "base.yaml",
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("base config base.yaml:"), "{text}");
        assert!(text.contains("listeners"), "{text}");
    }
}
