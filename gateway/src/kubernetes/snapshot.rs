//! The snapshot Secret -> the live config.
//!
//! The operator writes one Secret (default `switchboard-gateway-snapshot`) whose key
//! `config.yaml` is the whole `GatewayConfig`. This watch (list + watch on that one name)
//! applies each new content through [`Gateway::apply`]: compiled first, then swapped; a route
//! that does not compile is reported and skipped (or keeps its last good version) while the
//! others apply. Before a snapshot is applied, the EndpointSlice watches of the Services
//! it names are started and given a moment to list (so a new route does not start with 503s).
//!
//! - Invalid content: the last good config keeps serving, every problem is logged and
//!   `switchboard_config_reloads_total{result="error"}` counts it (once per distinct content).
//! - The Secret deleted, or the API server unreachable: the last good config keeps serving;
//!   the watch retries with back-off (0.8 s doubling to 30 s) and re-lists when it reconnects.
//! - Readiness (`/readyz`, `/status`): from the first snapshot that loaded, never before.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use switchboard_config::GatewayConfig;

use crate::gateway::Gateway;
use crate::kubernetes::ObjectRef;
use crate::kubernetes::endpoints::{EndpointWatches, referenced_services};
use crate::metrics::metrics;

/// The data key holding the document.
pub const CONFIG_KEY: &str = "config.yaml";

/// The document in a snapshot Secret, or why there is none.
pub fn decode(secret: &Secret) -> Result<String, String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIG_KEY))
        .ok_or_else(|| format!("the snapshot Secret has no `{CONFIG_KEY}` key"))?;
    String::from_utf8(bytes.0.clone())
        .map_err(|_| format!("`{CONFIG_KEY}` in the snapshot Secret is not UTF-8"))
}

/// Applies snapshot contents to a gateway.
pub struct SnapshotSource {
    gateway: Arc<Gateway>,
    endpoints: EndpointWatches,
    /// How long a new snapshot waits for the first EndpointSlice list of Services it adds.
    endpoint_sync_timeout: Duration,
    /// The last content seen (applied or refused): the same content is not handled twice.
    last: Option<Content>,
}

/// What a version of the Secret held.
#[derive(Debug, PartialEq, Eq)]
enum Content {
    Document(String),
    Unreadable(String),
}

impl SnapshotSource {
    pub fn new(gateway: Arc<Gateway>, client: Client, endpoint_sync_timeout: Duration) -> Self {
        Self {
            gateway,
            endpoints: EndpointWatches::new(client),
            endpoint_sync_timeout,
            last: None,
        }
    }

    fn refuse(&self, problems: &[impl std::fmt::Display]) {
        metrics().config_reloads.with_label_values(&["error"]).inc();
        for p in problems {
            tracing::error!(problem = %p, "snapshot refused; keeping the last good config");
        }
    }

    /// Handle one version of the snapshot Secret.
    pub async fn on_secret(&mut self, secret: &Secret) {
        let resource_version = secret.metadata.resource_version.clone().unwrap_or_default();
        let content = match decode(secret) {
            Ok(text) => Content::Document(text),
            Err(problem) => Content::Unreadable(problem),
        };
        if self.last.as_ref() == Some(&content) {
            return;
        }
        let text = match &content {
            Content::Document(text) => text.clone(),
            Content::Unreadable(problem) => {
                self.refuse(std::slice::from_ref(problem));
                self.last = Some(content);
                return;
            }
        };
        self.last = Some(content);
        let cfg = match GatewayConfig::from_yaml(&text) {
            Ok(cfg) => cfg,
            Err(e) => return self.refuse(&[e]),
        };

        let sets = self.endpoints.ensure(&self.gateway.backends, &cfg);
        let wait = async {
            for set in sets.iter().filter(|s| !s.is_synced()) {
                set.wait_synced().await;
            }
        };
        if tokio::time::timeout(self.endpoint_sync_timeout, wait)
            .await
            .is_err()
        {
            tracing::warn!(
                timeout = ?self.endpoint_sync_timeout,
                "EndpointSlices of some Services not listed yet; applying the snapshot anyway (their routes answer 503 until they are)"
            );
        }

        let generation = cfg.generation;
        match self.gateway.apply(cfg) {
            Ok(failed) => {
                metrics().config_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(
                    generation,
                    resource_version = %resource_version,
                    routes = self.gateway.routes.load().len(),
                    failed_routes = failed.len(),
                    "snapshot loaded"
                );
                if !self.gateway.loaded() {
                    self.gateway.set_loaded(true);
                    tracing::info!(generation, "first snapshot loaded: ready");
                }
            }
            Err(problems) => self.refuse(&problems),
        }
        // Watch exactly what the live config uses (also stops watches a refused snapshot
        // started).
        let live = referenced_services(&self.gateway.config.load());
        self.endpoints.retain(&self.gateway.backends, &live);
    }

    /// Watch the snapshot Secret until the stream ends (it does not: errors are retried).
    pub async fn run(&mut self, client: Client, snapshot: &ObjectRef) {
        let api: Api<Secret> = Api::namespaced(client, &snapshot.namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={}", snapshot.name));
        let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
        let mut listed_it = false;
        let mut failing = false;
        while let Some(event) = stream.next().await {
            if failing && event.is_ok() {
                tracing::info!("snapshot watch recovered");
                failing = false;
            }
            match event {
                Ok(watcher::Event::Init) => listed_it = false,
                Ok(watcher::Event::InitApply(s) | watcher::Event::Apply(s)) => {
                    listed_it = true;
                    self.on_secret(&s).await;
                }
                Ok(watcher::Event::InitDone) => {
                    if !listed_it {
                        if self.gateway.loaded() {
                            tracing::warn!(snapshot = %snapshot, "the snapshot Secret is gone; keeping the last good config");
                        } else {
                            tracing::info!(snapshot = %snapshot, "waiting for the operator to write the snapshot Secret");
                        }
                    }
                }
                Ok(watcher::Event::Delete(_)) => {
                    tracing::warn!(snapshot = %snapshot, "the snapshot Secret was deleted; keeping the last good config");
                }
                Err(e) => {
                    metrics()
                        .kube_watch_errors
                        .with_label_values(&["snapshot"])
                        .inc();
                    if failing {
                        tracing::debug!(error = %e, "snapshot watch still failing");
                    } else {
                        tracing::warn!(error = %e, "snapshot watch failed; keeping the last good config and retrying with back-off");
                        failing = true;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(data: Option<(&str, &[u8])>) -> Secret {
        Secret {
            data: data.map(|(k, v)| BTreeMap::from([(k.to_owned(), ByteString(v.to_vec()))])),
            ..Secret::default()
        }
    }

    #[test]
    fn the_document_is_the_config_yaml_key() {
        assert_eq!(
            decode(&secret(Some(("config.yaml", b"kind: GatewayConfig")))).unwrap(),
            "kind: GatewayConfig"
        );
    }

    #[test]
    fn a_secret_without_the_key_or_with_binary_content_is_refused_with_a_reason() {
        assert!(
            decode(&secret(None))
                .unwrap_err()
                .contains("no `config.yaml` key")
        );
        assert!(
            decode(&secret(Some(("other", b"x"))))
                .unwrap_err()
                .contains("no `config.yaml`")
        );
        assert!(
            decode(&secret(Some(("config.yaml", &[0xff, 0xfe]))))
                .unwrap_err()
                .contains("not UTF-8")
        );
    }
}
