//! The one object gateways watch: a Secret (default `switchboard-gateway-snapshot` in the
//! operator's namespace) whose key `config.yaml` is the whole `GatewayConfig`.
//!
//! Why a Secret and not a ConfigMap: the snapshot carries key material copied from the Secrets
//! routes reference (HMAC secrets, identity-signature secrets), so it must be readable only by
//! the gateways and the operator, with the same RBAC and at-rest encryption as other Secrets.
//!
//! Versioning: `generation` in the document (mirrored in the annotation
//! `switchboard.dev/generation`) increases by one each time the content changes and never
//! otherwise, so "gateway loaded generation N" means exactly one content. The annotation
//! `switchboard.dev/route-index` records, per route, the first generation that carries the
//! route as it is now; `Programmed` waits for gateways to reach that generation.
//! Writes use the object's `resourceVersion` (optimistic concurrency), so two operators can
//! never interleave; a conflict is retried from a fresh read.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use serde::{Deserialize, Serialize};
use switchboard_config::GatewayConfig;

use crate::{Error, Result};

/// The data key holding the document.
pub const CONFIG_KEY: &str = "config.yaml";
/// Annotation: the document's generation.
pub const GENERATION_ANNOTATION: &str = "switchboard.dev/generation";
/// Annotation: JSON map `namespace/name -> {"since": generation}`.
pub const INDEX_ANNOTATION: &str = "switchboard.dev/route-index";
/// The Secret `type`, so the object says what it is.
pub const SECRET_TYPE: &str = "switchboard.dev/gateway-snapshot";
/// Secrets are limited to 1 MiB by the API server; refuse earlier with a clear error.
pub const MAX_BYTES: usize = 1_000_000;

/// Per-route entry of the route index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// First snapshot generation that carries the route as it is now.
    pub since: u64,
}

/// What the snapshot writer decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The generation gateways must load to have the current content.
    pub generation: u64,
    /// Per accepted route: the first generation that carries it as it is now.
    pub index: BTreeMap<String, IndexEntry>,
    /// The object to write (create when it has no `resourceVersion`, replace otherwise);
    /// `None` when the stored content is already the desired one.
    pub write: Option<Secret>,
    /// Size of `config.yaml` in bytes.
    pub bytes: usize,
}

/// What is stored now, read back from the Secret.
#[derive(Debug, Clone, Default)]
struct Stored {
    generation: u64,
    text: Option<String>,
    config: Option<GatewayConfig>,
    index: BTreeMap<String, IndexEntry>,
}

fn stored(current: Option<&Secret>) -> Stored {
    let Some(secret) = current else {
        return Stored::default();
    };
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let text = secret
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIG_KEY))
        .and_then(|b| String::from_utf8(b.0.clone()).ok());
    let config = text
        .as_deref()
        .and_then(|t| GatewayConfig::from_yaml(t).ok());
    let generation = annotations
        .get(GENERATION_ANNOTATION)
        .and_then(|g| g.parse().ok())
        .or_else(|| config.as_ref().map(|c| c.generation))
        .unwrap_or(0);
    let index = annotations
        .get(INDEX_ANNOTATION)
        .and_then(|i| serde_json::from_str(i).ok())
        .unwrap_or_default();
    Stored {
        generation,
        text,
        config,
        index,
    }
}

/// Decide whether and what to write. `desired` is the planned config (its generation is
/// ignored); `floor` is the highest generation any gateway reports, so a re-created Secret
/// never goes back to numbers gateways have already seen.
pub fn decide(
    current: Option<&Secret>,
    desired: &GatewayConfig,
    name: &str,
    namespace: &str,
    floor: u64,
) -> Result<Decision> {
    let old = stored(current);
    let mut doc = desired.clone();
    doc.generation = old.generation;
    let same_text = doc.to_yaml();
    if current.is_some() && old.text.as_deref() == Some(same_text.as_str()) {
        let index = doc
            .routes
            .iter()
            .map(|r| {
                let since = old.index.get(&r.name).copied().unwrap_or(IndexEntry {
                    since: old.generation,
                });
                (r.name.clone(), since)
            })
            .collect();
        return Ok(Decision {
            generation: old.generation,
            index,
            write: None,
            bytes: same_text.len(),
        });
    }

    let generation = old.generation.max(floor) + 1;
    doc.generation = generation;
    let text = doc.to_yaml();
    if text.len() > MAX_BYTES {
        return Err(Error::SnapshotTooLarge {
            bytes: text.len(),
            limit: MAX_BYTES,
        });
    }
    let index: BTreeMap<String, IndexEntry> = doc
        .routes
        .iter()
        .map(|r| {
            let unchanged = old
                .config
                .as_ref()
                .and_then(|c| c.route(&r.name))
                .is_some_and(|o| o == r);
            let since = match old.index.get(&r.name) {
                Some(e) if unchanged => *e,
                _ => IndexEntry { since: generation },
            };
            (r.name.clone(), since)
        })
        .collect();
    let index_json = serde_json::to_string(&index).map_err(Error::Encode)?;

    let mut annotations = BTreeMap::new();
    annotations.insert(GENERATION_ANNOTATION.to_owned(), generation.to_string());
    annotations.insert(INDEX_ANNOTATION.to_owned(), index_json);
    let mut labels = BTreeMap::new();
    labels.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        "switchboard-operator".to_owned(),
    );
    labels.insert(
        "app.kubernetes.io/component".to_owned(),
        "gateway-snapshot".to_owned(),
    );
    let mut data = BTreeMap::new();
    let bytes = text.len();
    data.insert(CONFIG_KEY.to_owned(), ByteString(text.into_bytes()));
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            resource_version: current.and_then(|c| c.metadata.resource_version.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        type_: Some(SECRET_TYPE.to_owned()),
        data: Some(data),
        ..Secret::default()
    };
    Ok(Decision {
        generation,
        index,
        write: Some(secret),
        bytes,
    })
}

/// Write the decided object: create it when new, otherwise replace it at the
/// `resourceVersion` it was read at (a concurrent writer makes this fail with 409).
pub async fn write(api: &Api<Secret>, secret: &Secret) -> Result<()> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let pp = PostParams {
        field_manager: Some(crate::FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    let result = if secret.metadata.resource_version.is_some() {
        api.replace(&name, &pp, secret).await
    } else {
        api.create(&pp, secret).await
    };
    result.map(|_| ()).map_err(Error::Kube)
}

/// Read the gateway config back out of a snapshot Secret (used by tests and tooling).
pub fn config_of(secret: &Secret) -> Option<GatewayConfig> {
    stored(Some(secret)).config
}

#[cfg(test)]
mod tests;
