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

/// The `Programmed` verdict for a route first carried by generation 5, fleet by fleet: the
/// reason, and what the message must say (the count, each laggard and why it lags).
#[test]
fn programmed_only_when_every_gateway_is_ready_at_or_past_the_needed_generation() {
    let cases: [(&str, Fleet, &str, &[&str]); 7] = [
        (
            "every gateway ready at or past it",
            fleet(&[("a", Ok((5, true))), ("b", Ok((7, true)))]),
            reasons::PROGRAMMED,
            &["2 of 2 gateways serve snapshot generation 5 or later"],
        ),
        (
            "one gateway behind, named",
            fleet(&[
                ("http://10.0.0.1:9090/status", Ok((4, true))),
                ("b", Ok((5, true))),
            ]),
            reasons::PENDING,
            &["1 of 2", "10.0.0.1:9090", "generation 4"],
        ),
        (
            "a gateway past it but unready",
            fleet(&[("a", Ok((9, false)))]),
            reasons::PENDING,
            &["0 of 1", "a is not ready"],
        ),
        (
            "a silent gateway, with why",
            fleet(&[("a", Err("connection refused"))]),
            reasons::PENDING,
            &["a did not answer (connection refused)"],
        ),
        (
            "no gateways found",
            fleet(&[]),
            reasons::PENDING,
            &["no ready gateway"],
        ),
        (
            "no way to find gateways",
            Fleet::default(),
            reasons::PENDING,
            &["--gateway-admin-service"],
        ),
        (
            "only the first 3 laggards named",
            fleet(&[
                ("a", Ok((1, true))),
                ("b", Ok((1, true))),
                ("c", Ok((1, true))),
                ("d", Ok((1, true))),
            ]),
            reasons::PENDING,
            &[
                "0 of 4",
                "a is at generation 1, b is at generation 1, c is at generation 1",
            ],
        ),
    ];
    for (what, fleet, reason, says) in cases {
        let v = fleet.programmed(5, "ns/r");
        assert_eq!(v.reason, reason, "{what}: {v:?}");
        assert_eq!(v.ok, reason == reasons::PROGRAMMED, "{what}: {v:?}");
        for needle in says {
            assert!(
                v.message.contains(needle),
                "{what}: {needle:?} not in {}",
                v.message
            );
        }
    }
    let four = fleet(&[
        ("a", Ok((1, true))),
        ("b", Ok((1, true))),
        ("c", Ok((1, true))),
        ("d", Ok((1, true))),
    ]);
    assert!(!four.programmed(5, "ns/r").message.contains("d is at"));
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
