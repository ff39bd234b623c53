//! The Kubernetes config source: `switchboard-gateway --kube-snapshot NAMESPACE/NAME`.
//!
//! Instead of polling a file, the gateway watches the operator's snapshot Secret
//! ([`snapshot`]) and the EndpointSlices of every Service its routes name ([`endpoints`]).
//! Credentials: the kubeconfig (`KUBECONFIG`, else `~/.kube/config`) when there is one, else the
//! pod's service account (in-cluster); plain `http://` API servers work too.
//!
//! Sockets are bound once, at start, so they come from a bootstrap config: `--config FILE` (the
//! operator's base config is the natural choice; it must have no routes) or, without it,
//! the built-in bootstrap config of `boot.rs` (public `0.0.0.0:8080`, admin `0.0.0.0:9090`). The gateway starts with no
//! routes and not ready; `/readyz` turns 200 once the first snapshot has loaded.
//!
//! What the gateway needs from RBAC: `get, list, watch` on the snapshot Secret (restricted by
//! `resourceNames`; the watch selects it with `metadata.name=`), and `list, watch` on
//! `discovery.k8s.io` EndpointSlices in the namespaces of the Services routes name.

pub mod endpoints;
pub mod snapshot;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tracing::Instrument;

use crate::gateway::Gateway;

/// `namespace/name` of a namespaced object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

impl FromStr for ObjectRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self {
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(format!("`{s}` is not NAMESPACE/NAME")),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Everything the Kubernetes source needs.
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// The snapshot Secret.
    pub snapshot: ObjectRef,
    /// Where the API server is and how to authenticate ([`infer_client_config`]).
    pub client: kube::Config,
    /// How long a snapshot that adds a Service waits for its first EndpointSlice list.
    pub endpoint_sync_timeout: Duration,
}

/// Why the Kubernetes source cannot start.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("no usable kubeconfig or in-cluster service account: {0}")]
    NoCredentials(#[source] kube::config::InferConfigError),
    #[error("cannot start a runtime to read the kubeconfig: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Find API server credentials the way `kube::Client::try_default` does (kubeconfig, then
/// in-cluster), before anything is bound, so a missing one is a start-up error.
pub fn infer_client_config() -> Result<kube::Config, KubeError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(KubeError::Runtime)?;
    rt.block_on(kube::Config::infer())
        .map_err(KubeError::NoCredentials)
}

/// The pingora background service running the snapshot and EndpointSlice watches.
pub struct KubeSource {
    pub gateway: Arc<Gateway>,
    pub settings: KubeSettings,
}

#[async_trait]
impl BackgroundService for KubeSource {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let span = tracing::info_span!("kubernetes", snapshot = %self.settings.snapshot);
        let run = async {
            let client = match kube::Client::try_from(self.settings.client.clone()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the Kubernetes client; the gateway stays unready");
                    return;
                }
            };
            tracing::info!(api_server = %self.settings.client.cluster_url, "watching the snapshot Secret");
            let mut source = snapshot::SnapshotSource::new(
                self.gateway.clone(),
                client.clone(),
                self.settings.endpoint_sync_timeout,
            );
            tokio::select! {
                () = source.run(client, &self.settings.snapshot) => {}
                _ = shutdown.changed() => {}
            }
        };
        run.instrument(span).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_reference_is_namespace_slash_name() {
        let r: ObjectRef = "switchboard-system/switchboard-gateway-snapshot"
            .parse()
            .unwrap();
        assert_eq!(r.namespace, "switchboard-system");
        assert_eq!(r.name, "switchboard-gateway-snapshot");
        assert_eq!(
            r.to_string(),
            "switchboard-system/switchboard-gateway-snapshot"
        );
        for bad in ["name", "/name", "ns/", "a/b/c"] {
            assert!(bad.parse::<ObjectRef>().is_err(), "{bad}");
        }
    }
}
