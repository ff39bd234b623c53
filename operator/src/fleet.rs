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
use serde::{Deserialize, Serialize};

use crate::compile::Verdict;
use crate::conditions::reasons;

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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

    /// `(url, Ok((generation, ready)) | Err(why))`.
    type Reading<'a> = (&'a str, Result<(u64, bool), &'a str>);

    fn fleet(gateways: &[Reading<'_>]) -> Fleet {
        Fleet {
            configured: true,
            gateways: gateways
                .iter()
                .map(|(u, r)| {
                    (
                        u.to_string(),
                        r.map(|(generation, ready)| GatewayStatus {
                            generation,
                            ready,
                            route_failures: Vec::new(),
                        })
                        .map_err(str::to_owned),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn programmed_when_every_gateway_is_ready_at_or_past_the_needed_generation() {
        let f = fleet(&[("a", Ok((5, true))), ("b", Ok((7, true)))]);
        let v = f.programmed(5, "ns/r");
        assert!(v.ok, "{v:?}");
        assert_eq!(v.reason, reasons::PROGRAMMED);
        assert!(v.message.starts_with("2 of 2"), "{}", v.message);
    }

    #[test]
    fn pending_while_one_gateway_is_behind_and_the_message_names_it() {
        let f = fleet(&[
            ("http://10.0.0.1:9090/status", Ok((4, true))),
            ("b", Ok((5, true))),
        ]);
        let v = f.programmed(5, "ns/r");
        assert!(!v.ok);
        assert_eq!(v.reason, reasons::PENDING);
        assert!(v.message.contains("1 of 2"), "{}", v.message);
        assert!(v.message.contains("10.0.0.1:9090"), "{}", v.message);
        assert!(v.message.contains("generation 4"), "{}", v.message);
    }

    #[test]
    fn a_route_a_gateway_cannot_compile_is_compile_failed_and_only_that_route() {
        let mut f = fleet(&[("a", Ok((5, true))), ("b", Ok((5, true)))]);
        if let Some(Ok(s)) = f.gateways.get_mut("b") {
            s.route_failures.push(GatewayRouteFailure {
                route: "apps/keyed".into(),
                problems: vec![
                    "routes[1].jwt.keys[0]: the PEM is not a public key usable with RS256".into(),
                ],
            });
        }
        let v = f.programmed(5, "apps/keyed");
        assert!(!v.ok);
        assert_eq!(v.reason, reasons::COMPILE_FAILED);
        assert_eq!(
            v.message,
            "1 of 2 gateways cannot compile this route; b: routes[1].jwt.keys[0]: the PEM is not a public key usable with RS256"
        );
        assert!(
            f.programmed(5, "apps/chat").ok,
            "the other routes are programmed"
        );
        // A failure reported for an older generation is a gateway that is behind, not a verdict.
        let v = f.programmed(6, "apps/keyed");
        assert_eq!(v.reason, reasons::PENDING);
    }

    #[test]
    fn a_status_without_route_failures_parses_as_none() {
        let s: GatewayStatus = serde_json::from_str(r#"{"generation": 3, "ready": true}"#).unwrap();
        assert!(s.route_failures.is_empty());
        let s: GatewayStatus = serde_json::from_str(
            r#"{"generation": 3, "ready": true, "routes": 2, "routeFailures": [{"route": "a/b", "problems": ["x"], "serving": "none"}]}"#,
        )
        .unwrap();
        assert_eq!(s.route_failures[0].route, "a/b");
    }

    #[test]
    fn pending_while_a_gateway_is_unready_or_silent() {
        assert!(!fleet(&[("a", Ok((9, false)))]).programmed(1, "ns/r").ok);
        let v = fleet(&[("a", Err("connection refused"))]).programmed(1, "ns/r");
        assert!(!v.ok);
        assert!(v.message.contains("connection refused"), "{}", v.message);
    }

    #[test]
    fn pending_with_no_gateways_or_no_discovery() {
        let v = fleet(&[]).programmed(1, "ns/r");
        assert_eq!(v.reason, reasons::PENDING);
        assert!(v.message.contains("no ready gateway"), "{}", v.message);
        let v = Fleet::default().programmed(1, "ns/r");
        assert!(
            v.message.contains("--gateway-admin-service"),
            "{}",
            v.message
        );
    }

    #[test]
    fn max_generation_ignores_gateways_that_did_not_answer() {
        let f = fleet(&[("a", Ok((3, true))), ("b", Err("x")), ("c", Ok((8, false)))]);
        assert_eq!(f.max_generation(), 8);
        assert_eq!(Fleet::default().max_generation(), 0);
    }

    fn slice(ports: &[(Option<&str>, i32)], endpoints: &[(&str, Option<bool>)]) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| EndpointPort {
                        name: n.map(str::to_owned),
                        port: Some(*p),
                        ..EndpointPort::default()
                    })
                    .collect(),
            ),
            endpoints: Some(
                endpoints
                    .iter()
                    .map(|(a, ready)| Endpoint {
                        addresses: vec![a.to_string()],
                        conditions: Some(EndpointConditions {
                            ready: *ready,
                            ..EndpointConditions::default()
                        }),
                        ..Endpoint::default()
                    })
                    .collect(),
            ),
            ..EndpointSlice::default()
        }
    }

    #[test]
    fn status_urls_use_the_named_port_and_skip_unready_endpoints() {
        let s = slice(
            &[(Some("http"), 8080), (Some("admin"), 9090)],
            &[
                ("10.0.0.2", Some(true)),
                ("10.0.0.1", None),
                ("10.0.0.3", Some(false)),
            ],
        );
        assert_eq!(
            status_urls(&[s], "admin"),
            ["http://10.0.0.1:9090/status", "http://10.0.0.2:9090/status"]
        );
    }

    #[test]
    fn status_urls_fall_back_to_a_single_unnamed_port_and_bracket_ipv6() {
        let s = slice(&[(None, 9090)], &[("fd00::1", Some(true))]);
        assert_eq!(status_urls(&[s], "admin"), ["http://[fd00::1]:9090/status"]);
        let ambiguous = slice(
            &[(Some("a"), 1), (Some("b"), 2)],
            &[("10.0.0.1", Some(true))],
        );
        assert!(status_urls(&[ambiguous], "admin").is_empty());
    }

    #[tokio::test]
    async fn poll_reads_a_gateway_status_document_over_http() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await.unwrap();
            let body = r#"{"generation": 12, "ready": true}"#;
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(resp.as_bytes()).await.unwrap();
        });
        let p = Poller::new(StdDuration::from_secs(1));
        let got = p.poll(&format!("http://{addr}/status")).await;
        assert_eq!(
            got,
            Ok(GatewayStatus {
                generation: 12,
                ready: true,
                route_failures: Vec::new(),
            })
        );
    }

    #[tokio::test]
    async fn poll_reports_a_refused_connection_as_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let p = Poller::new(StdDuration::from_secs(1));
        assert!(p.poll(&format!("http://{addr}/status")).await.is_err());
    }
}
