//! Hot reload: the config file and every file it refers to are polled; when any changed, the
//! document is parsed, validated and compiled, then swapped in. A document that does not parse
//! or validate keeps the last good config running and logs why; a route that does not compile
//! is reported on its own while every other route applies ([`Gateway::apply`]).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use switchboard_config::GatewayConfig;

use crate::gateway::{Gateway, referenced_files};
use crate::metrics::metrics;

/// Polls the config file and its referenced files.
pub struct ConfigWatch {
    pub gateway: Arc<Gateway>,
    pub path: PathBuf,
    pub interval: Duration,
}

/// Fingerprint of the document and every file it names (missing files hash as absent).
fn fingerprint(text: &str, cfg: Option<&GatewayConfig>) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    if let Some(cfg) = cfg {
        for f in referenced_files(cfg) {
            f.hash(&mut h);
            std::fs::read(&f).ok().hash(&mut h);
        }
    }
    h.finish()
}

impl ConfigWatch {
    /// One poll: reload when anything changed. Returns the new fingerprint.
    pub fn poll(&self, last: u64) -> u64 {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "config reload: cannot read file; keeping the last good config");
                return last;
            }
        };
        let parsed = GatewayConfig::from_yaml(&text);
        let print = fingerprint(&text, parsed.as_ref().ok());
        if print == last {
            return last;
        }
        let result = parsed
            .map_err(switchboard_config::Error::into_problems)
            .and_then(|cfg| {
                let generation = cfg.generation;
                self.gateway
                    .apply(cfg)
                    .map(|failed| (generation, failed.len()))
            });
        match result {
            Ok((generation, failed_routes)) => {
                metrics().config_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(
                    generation,
                    routes = self.gateway.routes.load().len(),
                    failed_routes,
                    "config reloaded"
                );
            }
            Err(problems) => {
                metrics().config_reloads.with_label_values(&["error"]).inc();
                for p in &problems {
                    tracing::error!(problem = %p, "config reload refused; keeping the last good config");
                }
            }
        }
        print
    }
}

#[async_trait]
impl BackgroundService for ConfigWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let initial = std::fs::read_to_string(&self.path).unwrap_or_default();
        let mut last = fingerprint(&initial, Some(&self.gateway.config.load()));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => last = self.poll(last),
                _ = shutdown.changed() => return,
            }
        }
    }
}
