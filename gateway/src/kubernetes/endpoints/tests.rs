use super::*;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn port(name: Option<&str>, number: i32) -> EndpointPort {
    EndpointPort {
        name: name.map(str::to_owned),
        port: Some(number),
        protocol: Some("TCP".into()),
        ..EndpointPort::default()
    }
}

/// `(ip, ready, terminating)`; `None` = condition unset.
type Ep<'a> = (&'a str, Option<bool>, Option<bool>);

fn slice(name: &str, ports: Vec<EndpointPort>, endpoints: &[Ep<'_>]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        ports: Some(ports),
        endpoints: Some(
            endpoints
                .iter()
                .map(|(ip, ready, terminating)| Endpoint {
                    addresses: vec![(*ip).into()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        serving: *ready,
                        terminating: *terminating,
                    }),
                    ..Endpoint::default()
                })
                .collect(),
        ),
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn a_single_port_slice_uses_its_target_port_whatever_the_service_port() {
    let s = slice(
        "a",
        vec![port(Some("ws"), 8080)],
        &[("10.0.0.1", Some(true), None)],
    );
    let (b, unresolved) = backends_from_slices([&s], 80);
    assert_eq!(
        b,
        vec![Backend {
            address: addr("10.0.0.1:8080"),
            draining: false
        }]
    );
    assert!(unresolved.is_empty());
}

#[test]
fn a_multi_port_slice_uses_the_port_numbered_like_the_service_port() {
    let ports = vec![port(Some("metrics"), 9090), port(Some("ws"), 8080)];
    let s = slice("a", ports.clone(), &[("10.0.0.1", Some(true), None)]);
    let (b, _) = backends_from_slices([&s], 8080);
    assert_eq!(b[0].address, addr("10.0.0.1:8080"));
    let (b, unresolved) = backends_from_slices([&s], 80);
    assert!(b.is_empty());
    assert_eq!(unresolved, vec!["a".to_string()]);
}

#[test]
fn udp_ports_are_never_chosen() {
    let mut udp = port(None, 80);
    udp.protocol = Some("UDP".into());
    assert_eq!(target_port(&[udp.clone()], 80), None);
    assert_eq!(target_port(&[udp, port(None, 80)], 80), Some(80));
}

#[test]
fn terminating_endpoints_drain_and_unready_ones_are_left_out() {
    let s = slice(
        "a",
        vec![port(None, 8080)],
        &[
            ("10.0.0.1", Some(true), Some(false)),
            ("10.0.0.2", Some(false), Some(true)),
            ("10.0.0.3", Some(false), Some(false)),
            ("10.0.0.4", None, None),
        ],
    );
    let (b, _) = backends_from_slices([&s], 8080);
    let got: Vec<(String, bool)> = b
        .iter()
        .map(|b| (b.address.ip().to_string(), b.draining))
        .collect();
    assert_eq!(
        got,
        vec![
            ("10.0.0.1".into(), false),
            ("10.0.0.2".into(), true),
            ("10.0.0.4".into(), false),
        ]
    );
}

#[test]
fn an_address_in_two_slices_counts_once_and_ready_wins() {
    let a = slice(
        "a",
        vec![port(None, 8080)],
        &[("10.0.0.1", Some(false), Some(true))],
    );
    let b = slice(
        "b",
        vec![port(None, 8080)],
        &[("10.0.0.1", Some(true), None)],
    );
    let (got, _) = backends_from_slices([&a, &b], 8080);
    assert_eq!(
        got,
        vec![Backend {
            address: addr("10.0.0.1:8080"),
            draining: false
        }]
    );
}

#[test]
fn fqdn_slices_and_unparsable_addresses_are_skipped() {
    let mut fqdn = slice(
        "a",
        vec![port(None, 80)],
        &[("example.com", Some(true), None)],
    );
    fqdn.address_type = "FQDN".into();
    let bad = slice(
        "b",
        vec![port(None, 80)],
        &[("not-an-ip", Some(true), None)],
    );
    let (got, unresolved) = backends_from_slices([&fqdn, &bad], 80);
    assert!(got.is_empty());
    assert!(unresolved.is_empty());
}

#[test]
fn a_relist_replaces_the_set_at_once_and_only_then_is_visible() {
    let mut set = SliceSet::default();
    let one = slice(
        "one",
        vec![port(None, 80)],
        &[("10.0.0.1", Some(true), None)],
    );
    let two = slice(
        "two",
        vec![port(None, 80)],
        &[("10.0.0.2", Some(true), None)],
    );
    assert!(!set.apply(watcher::Event::Init));
    assert!(!set.apply(watcher::Event::InitApply(one.clone())));
    assert!(set.apply(watcher::Event::InitDone));
    assert_eq!(set.slices().count(), 1);
    assert!(set.apply(watcher::Event::Apply(two.clone())));
    assert_eq!(set.slices().count(), 2);
    // A re-list after a broken watch: `one` is gone, only `two` is listed.
    assert!(!set.apply(watcher::Event::Init));
    assert!(!set.apply(watcher::Event::InitApply(two)));
    assert_eq!(set.slices().count(), 2, "old set visible until InitDone");
    assert!(set.apply(watcher::Event::InitDone));
    let names: Vec<_> = set
        .slices()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["two"]);
    assert!(set.apply(watcher::Event::Delete(one)));
}
