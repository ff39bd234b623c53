use super::*;
use crate::fixtures::{base_config, compiled_route};

fn cfg(routes: &[(&str, &str)]) -> GatewayConfig {
    let mut c = base_config();
    c.routes = routes.iter().map(|(n, p)| compiled_route(n, p)).collect();
    c
}

fn stored_as(decision: &Decision, rv: &str) -> Secret {
    let mut s = decision.write.clone().unwrap();
    s.metadata.resource_version = Some(rv.into());
    s
}

#[test]
fn the_first_snapshot_is_generation_one_and_is_created() {
    let d = decide(None, &cfg(&[("default/a", "/a")]), "snap", "sys", 0).unwrap();
    assert_eq!(d.generation, 1);
    let s = d.write.unwrap();
    assert_eq!(s.metadata.resource_version, None);
    assert_eq!(s.type_.as_deref(), Some(SECRET_TYPE));
    let loaded = config_of(&s).unwrap();
    assert_eq!(loaded.generation, 1);
    assert_eq!(loaded.routes.len(), 1);
    assert_eq!(d.index["default/a"], IndexEntry { since: 1 });
}

#[test]
fn unchanged_content_is_not_written_and_keeps_its_generation() {
    let first = decide(None, &cfg(&[("default/a", "/a")]), "snap", "sys", 0).unwrap();
    let current = stored_as(&first, "7");
    let again = decide(
        Some(&current),
        &cfg(&[("default/a", "/a")]),
        "snap",
        "sys",
        0,
    )
    .unwrap();
    assert_eq!(again.write, None);
    assert_eq!(again.generation, 1);
    assert_eq!(again.index["default/a"], IndexEntry { since: 1 });
}

#[test]
fn changed_content_bumps_the_generation_and_replaces_at_the_read_resource_version() {
    let first = decide(None, &cfg(&[("default/a", "/a")]), "snap", "sys", 0).unwrap();
    let current = stored_as(&first, "7");
    let next = decide(
        Some(&current),
        &cfg(&[("default/a", "/a"), ("default/b", "/b")]),
        "snap",
        "sys",
        0,
    )
    .unwrap();
    assert_eq!(next.generation, 2);
    let s = next.write.unwrap();
    assert_eq!(s.metadata.resource_version.as_deref(), Some("7"));
    assert_eq!(config_of(&s).unwrap().generation, 2);
}

#[test]
fn an_untouched_route_keeps_the_generation_it_first_appeared_in() {
    let first = decide(None, &cfg(&[("default/a", "/a")]), "snap", "sys", 0).unwrap();
    let next = decide(
        Some(&stored_as(&first, "1")),
        &cfg(&[("default/a", "/a"), ("default/b", "/b")]),
        "snap",
        "sys",
        0,
    )
    .unwrap();
    assert_eq!(next.index["default/a"], IndexEntry { since: 1 });
    assert_eq!(next.index["default/b"], IndexEntry { since: 2 });
    let third = decide(
        Some(&stored_as(&next, "2")),
        &cfg(&[("default/a", "/a2"), ("default/b", "/b")]),
        "snap",
        "sys",
        0,
    )
    .unwrap();
    assert_eq!(third.index["default/a"], IndexEntry { since: 3 });
    assert_eq!(third.index["default/b"], IndexEntry { since: 2 });
}

#[test]
fn a_recreated_snapshot_starts_above_what_gateways_already_loaded() {
    let d = decide(None, &cfg(&[]), "snap", "sys", 41).unwrap();
    assert_eq!(d.generation, 42);
}

#[test]
fn an_unreadable_stored_snapshot_is_rewritten_with_a_higher_generation() {
    let mut junk = Secret::default();
    junk.metadata.resource_version = Some("3".into());
    let mut ann = BTreeMap::new();
    ann.insert(GENERATION_ANNOTATION.to_owned(), "5".to_owned());
    junk.metadata.annotations = Some(ann);
    let mut data = BTreeMap::new();
    data.insert(CONFIG_KEY.to_owned(), ByteString(b"not: [valid".to_vec()));
    junk.data = Some(data);
    let d = decide(Some(&junk), &cfg(&[]), "snap", "sys", 0).unwrap();
    assert_eq!(d.generation, 6);
    assert!(d.write.is_some());
}

#[test]
fn a_snapshot_over_the_secret_size_limit_is_refused() {
    let mut c = cfg(&[]);
    for i in 0..4000 {
        let mut r = compiled_route(&format!("default/r{i}"), &format!("/{i}"));
        r.origins.allowed = vec![format!("https://{}.example.com", "a".repeat(200))];
        c.routes.push(r);
    }
    assert!(matches!(
        decide(None, &c, "snap", "sys", 0),
        Err(Error::SnapshotTooLarge { .. })
    ));
}
