//! What the gateways have loaded, and from that the `Programmed` condition.
//!
//! Contract with the gateways: each gateway pod answers `GET /status` on its admin port with
//! JSON `{"generation": <u64>, "ready": <bool>, "routeFailures": [{"route", "problems"}]}`: the
//! snapshot generation it is serving, whether it has synced, and the routes of it that it could
//! not compile (`CompileFailed`; absent from older gateways). The operator finds the pods through the EndpointSlices of the gateway
//! admin Service (`--gateway-admin-service namespace/name`, port named by
//! `--gateway-admin-port-name`, default `admin`) or through fixed `--gateway-status-url`s, and
//! polls them. A route is `Programmed` when every ready endpoint answers with `ready: true` and
//! a generation at or past the first snapshot generation that carries the route as it is now.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::Store;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::compile::Verdict;
use crate::conditions::reasons;
use crate::metrics::Metrics;

/// What one gateway says on `GET /status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayStatus {
    /// The snapshot generation it serves.
    pub generation: u64,
    /// Whether it has synced (its `/readyz` is OK).
    pub ready: bool,
    /// Routes of that generation it could not compile (absent from older gateways).
    #[serde(default, rename = "routeFailures")]
    pub route_failures: Vec<GatewayRouteFailure>,
}

/// One entry of a gateway's `/status` `routeFailures`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayRouteFailure {
    /// The route's name in the snapshot (`namespace/name`).
    pub route: String,
    /// Why, with the snapshot field path.
    #[serde(default)]
    pub problems: Vec<String>,
}

/// The latest poll of every known gateway, keyed by its status URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fleet {
    /// Whether any discovery is configured at all.
    pub configured: bool,
    /// Poll results by URL; `Err` carries why the gateway did not answer usefully.
    pub gateways: BTreeMap<String, Result<GatewayStatus, String>>,
}

impl Fleet {
    /// The highest generation any gateway reports (0 when none).
    pub fn max_generation(&self) -> u64 {
        self.gateways
            .values()
            .filter_map(|r| r.as_ref().ok().map(|s| s.generation))
            .max()
            .unwrap_or(0)
    }

    /// The `Programmed` verdict for route `route` first carried by snapshot generation `since`.
    /// A gateway at that generation or later that reports it could not compile the route makes
    /// it `CompileFailed` (the operator's own checks should have kept such a route out; this
    /// catches a gateway of another version, or a key file changed under it).
    pub fn programmed(&self, since: u64, route: &str) -> Verdict {
        if !self.configured {
            return Verdict::no(
                reasons::PENDING,
                "the operator has no way to ask gateways what they loaded (set --gateway-admin-service or --gateway-status-url)",
            );
        }
        if self.gateways.is_empty() {
            return Verdict::no(reasons::PENDING, "no ready gateway pods found");
        }
        let total = self.gateways.len();
        let failed: Vec<String> = self
            .gateways
            .iter()
            .filter_map(|(url, r)| {
                let s = r.as_ref().ok().filter(|s| s.generation >= since)?;
                let f = s.route_failures.iter().find(|f| f.route == route)?;
                Some(format!("{url}: {}", f.problems.join("; ")))
            })
            .collect();
        if let Some(first) = failed.first() {
            return Verdict::no(
                reasons::COMPILE_FAILED,
                format!(
                    "{} of {total} gateways cannot compile this route; {first}",
                    failed.len()
                ),
            );
        }
        let mut behind = Vec::new();
        for (url, r) in &self.gateways {
            match r {
                Ok(s) if s.ready && s.generation >= since => {}
                Ok(s) if !s.ready => behind.push(format!("{url} is not ready")),
                Ok(s) => behind.push(format!("{url} is at generation {}", s.generation)),
                Err(e) => behind.push(format!("{url} did not answer ({e})")),
            }
        }
        if behind.is_empty() {
            Verdict::yes(
                reasons::PROGRAMMED,
                format!("{total} of {total} gateways serve snapshot generation {since} or later"),
            )
        } else {
            let serving = total - behind.len();
            // Name a few laggards; a long list helps nobody and churns the status.
            behind.truncate(3);
            Verdict::no(
                reasons::PENDING,
                format!(
                    "{serving} of {total} gateways serve snapshot generation {since} or later; {}",
                    behind.join(", ")
                ),
            )
        }
    }
}

/// Status URLs of the ready endpoints in these EndpointSlices, on the port named `port_name`
/// (or the slice's only port). Terminating and not-ready endpoints are left out: they no longer
/// take new connections, so they do not hold `Programmed` back.
pub fn status_urls(slices: &[EndpointSlice], port_name: &str) -> Vec<String> {
    let mut urls = Vec::new();
    for slice in slices {
        let ports = slice.ports.clone().unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| p.name.as_deref() == Some(port_name))
            .or_else(|| (ports.len() == 1).then(|| &ports[0]))
            .and_then(|p| p.port);
        let Some(port) = port else {
            continue;
        };
        for ep in slice.endpoints.iter().flatten() {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            for addr in &ep.addresses {
                let host = if addr.contains(':') {
                    format!("[{addr}]")
                } else {
                    addr.clone()
                };
                urls.push(format!("http://{host}:{port}/status"));
            }
        }
    }
    urls.sort();
    urls.dedup();
    urls
}

/// Polls gateway `/status` endpoints over plain HTTP/1.1.
#[derive(Clone)]
pub struct Poller {
    client: HttpClient<HttpConnector, Empty<Bytes>>,
    timeout: StdDuration,
}

impl Poller {
    /// A poller whose requests give up after `timeout`.
    pub fn new(timeout: StdDuration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        Self {
            client: HttpClient::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    /// Ask one gateway.
    pub async fn poll(&self, url: &str) -> Result<GatewayStatus, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
        let fetch = async {
            let resp = self
                .client
                .get(uri)
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("HTTP {}", resp.status()));
            }
            let body = Limited::new(resp.into_body(), 64 * 1024)
                .collect()
                .await
                .map_err(|e| format!("reading body: {e}"))?
                .to_bytes();
            serde_json::from_slice::<GatewayStatus>(&body).map_err(|e| format!("bad JSON: {e}"))
        };
        match tokio::time::timeout(self.timeout, fetch).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    /// Ask every gateway, concurrently.
    pub async fn poll_all(
        &self,
        urls: &[String],
    ) -> BTreeMap<String, Result<GatewayStatus, String>> {
        let results = futures_util::future::join_all(urls.iter().map(|u| self.poll(u))).await;
        urls.iter().cloned().zip(results).collect()
    }
}

/// Where the gateways are: fixed status URLs and the gateway admin Service's EndpointSlices.
pub struct Sources {
    /// Fixed `--gateway-status-url`s.
    pub urls: Vec<String>,
    /// The EndpointSlice cache of the gateway admin Service, when one is configured.
    pub slices: Option<Store<EndpointSlice>>,
    /// The admin port's name in those EndpointSlices.
    pub port_name: String,
}

impl Sources {
    /// Every status URL to poll now, sorted, without duplicates.
    fn current(&self) -> Vec<String> {
        let mut urls = self.urls.clone();
        if let Some(store) = &self.slices {
            let all: Vec<EndpointSlice> = store.state().iter().map(|s| (**s).clone()).collect();
            urls.extend(status_urls(&all, &self.port_name));
        }
        urls.sort();
        urls.dedup();
        urls
    }
}

/// Poll every gateway every `interval` until `stop` fires: publish the readings to `fleet`
/// (waking its receivers only when they changed) and count the gateways by state in `metrics`.
pub async fn poll(
    sources: Sources,
    interval: StdDuration,
    metrics: Metrics,
    fleet: watch::Sender<Fleet>,
    mut stop: watch::Receiver<bool>,
) {
    let poller = Poller::new(StdDuration::from_secs(1).min(interval));
    loop {
        let gateways = poller.poll_all(&sources.current()).await;
        count(&gateways, &metrics);
        fleet.send_if_modified(|f| {
            let changed = f.gateways != gateways;
            f.gateways = gateways;
            changed
        });
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => break,
        }
    }
}

/// Set the `switchboard_operator_gateways{state}` gauges from one round of readings.
fn count(gateways: &BTreeMap<String, Result<GatewayStatus, String>>, metrics: &Metrics) {
    let (mut serving, mut unready, mut unreachable) = (0, 0, 0);
    for r in gateways.values() {
        match r {
            Ok(g) if g.ready => serving += 1,
            Ok(_) => unready += 1,
            Err(_) => unreachable += 1,
        }
    }
    for (state, n) in [
        ("serving", serving),
        ("unready", unready),
        ("unreachable", unreachable),
    ] {
        metrics.gateways.with_label_values(&[state]).set(n);
    }
}

#[cfg(test)]
mod tests;
