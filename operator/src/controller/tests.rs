use super::*;
use crate::fixtures::{Scenario, test_context, timeout_after_1s, world_for};

#[test]
fn error_backoff_grows_exponentially_with_jitter_and_is_capped() {
    let e = Error::Settings("x".into());
    for _ in 0..50 {
        let first = error_policy(&e, 1);
        assert!(
            first >= StdDuration::from_millis(800) && first <= StdDuration::from_millis(1200),
            "{first:?}"
        );
        let fourth = error_policy(&e, 4);
        assert!(
            fourth >= StdDuration::from_millis(6400) && fourth <= StdDuration::from_millis(9600),
            "{fourth:?}"
        );
        let many = error_policy(&e, 1000);
        assert!(many <= StdDuration::from_secs(360), "{many:?}");
        assert!(many >= StdDuration::from_secs(240), "{many:?}");
    }
}

#[test]
fn only_programmed_true_makes_an_event_among_programmed_transitions() {
    let t = |type_: &str, status, reason: &str| conditions::Transition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message: "m".into(),
    };
    assert!(event_for(&t(types::PROGRAMMED, false, reasons::PENDING)).is_none());
    assert!(event_for(&t(types::PROGRAMMED, false, reasons::NOT_ACCEPTED)).is_none());
    let ev = event_for(&t(types::ACCEPTED, false, reasons::CONFLICTED)).unwrap();
    assert_eq!(ev.type_, EventType::Warning);
    assert_eq!(ev.reason, "Conflicted");
    let ev = event_for(&t(types::PROGRAMMED, true, reasons::PROGRAMMED)).unwrap();
    assert_eq!(ev.type_, EventType::Normal);
}

#[test]
fn long_event_notes_are_cut_on_a_character_boundary() {
    let ev = event_for(&conditions::Transition {
        type_: types::ACCEPTED.into(),
        status: false,
        reason: reasons::INVALID.into(),
        message: "é".repeat(800),
    })
    .unwrap();
    assert!(ev.note.unwrap().len() <= 1000);
}

#[tokio::test]
async fn a_valid_route_is_accepted_written_and_reported() {
    let (ctx, server) = test_context();
    let world = world_for(Scenario::Accepted);
    let mock = server.run(Scenario::Accepted);
    let report = reconcile(&ctx, &world, crate::fixtures::now())
        .await
        .unwrap();
    timeout_after_1s(mock).await;
    assert_eq!(report.generation, 1);
    assert!(report.snapshot_written);
    assert_eq!(report.statuses_patched, 1);
    assert!(report.pending);
}

#[tokio::test]
async fn the_newer_of_two_conflicting_routes_is_conflicted() {
    let (ctx, server) = test_context();
    let world = world_for(Scenario::Conflicted);
    let mock = server.run(Scenario::Conflicted);
    let report = reconcile(&ctx, &world, crate::fixtures::now())
        .await
        .unwrap();
    timeout_after_1s(mock).await;
    assert_eq!(report.statuses_patched, 2);
}

#[tokio::test]
async fn missing_refs_are_reported_and_a_missing_secret_keeps_the_route_out() {
    let (ctx, server) = test_context();
    let world = world_for(Scenario::MissingRefs);
    let mock = server.run(Scenario::MissingRefs);
    reconcile(&ctx, &world, crate::fixtures::now())
        .await
        .unwrap();
    timeout_after_1s(mock).await;
}

#[tokio::test]
async fn a_truncated_pem_keeps_only_its_route_out_with_the_reason() {
    let (ctx, server) = test_context();
    let world = world_for(Scenario::BrokenKey);
    let mock = server.run(Scenario::BrokenKey);
    reconcile(&ctx, &world, crate::fixtures::now())
        .await
        .unwrap();
    timeout_after_1s(mock).await;
}

#[tokio::test]
async fn an_invalid_route_is_refused_with_the_reason() {
    let (ctx, server) = test_context();
    let world = world_for(Scenario::Invalid);
    let mock = server.run(Scenario::Invalid);
    reconcile(&ctx, &world, crate::fixtures::now())
        .await
        .unwrap();
    timeout_after_1s(mock).await;
}

#[tokio::test]
async fn a_deleted_route_is_removed_from_the_snapshot() {
    let (ctx, server) = test_context();
    let world = world_for(Scenario::Deleted);
    let mock = server.run(Scenario::Deleted);
    let report = reconcile(&ctx, &world, crate::fixtures::now())
        .await
        .unwrap();
    timeout_after_1s(mock).await;
    assert_eq!(report.generation, 2);
    assert_eq!(report.statuses_patched, 0);
}

#[tokio::test]
async fn an_unchanged_world_writes_nothing() {
    let (ctx, server) = test_context();
    let world = world_for(Scenario::SnapshotUnchanged);
    let mock = server.run(Scenario::SnapshotUnchanged);
    let report = reconcile(&ctx, &world, crate::fixtures::now())
        .await
        .unwrap();
    timeout_after_1s(mock).await;
    assert!(!report.snapshot_written);
    assert_eq!(report.statuses_patched, 0);
    assert!(!report.pending);
}

#[tokio::test]
async fn a_route_becomes_programmed_once_gateways_report_its_generation() {
    let (ctx, server) = test_context();
    let world = world_for(Scenario::Programmed);
    let mock = server.run(Scenario::Programmed);
    let report = reconcile(&ctx, &world, crate::fixtures::now())
        .await
        .unwrap();
    timeout_after_1s(mock).await;
    assert!(!report.snapshot_written);
    assert_eq!(report.statuses_patched, 1);
    assert!(!report.pending);
}

#[tokio::test]
async fn a_pass_right_after_a_write_does_not_repeat_it_while_the_cache_lags() {
    let (ctx, server) = test_context();
    let world = world_for(Scenario::StaleCacheAfterWrite);
    let mock = server.run(Scenario::StaleCacheAfterWrite);
    let first = reconcile(&ctx, &world, crate::fixtures::now())
        .await
        .unwrap();
    assert_eq!(first.statuses_patched, 1);
    // Same (stale) world, a second later: nothing to write.
    let later = crate::fixtures::now() + k8s_openapi::jiff::SignedDuration::from_secs(1);
    let second = reconcile(&ctx, &world, later).await.unwrap();
    timeout_after_1s(mock).await;
    assert!(!second.snapshot_written);
    assert_eq!(second.statuses_patched, 0);
}

#[tokio::test]
async fn a_write_conflict_on_the_snapshot_fails_the_pass_for_a_retry() {
    let (ctx, server) = test_context();
    let world = world_for(Scenario::SnapshotConflict);
    let mock = server.run(Scenario::SnapshotConflict);
    let err = reconcile(&ctx, &world, crate::fixtures::now())
        .await
        .unwrap_err();
    timeout_after_1s(mock).await;
    assert_eq!(err.metric_label(), "conflict");
    assert!(error_policy(&err, 1) < StdDuration::from_millis(400));
}

#[test]
fn refs_from_copies_service_ports_and_secret_data() {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    let svc = Service {
        metadata: kube::api::ObjectMeta {
            namespace: Some("ns".into()),
            name: Some("chat".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sec = Secret {
        metadata: kube::api::ObjectMeta {
            namespace: Some("ns".into()),
            name: Some("keys".into()),
            ..Default::default()
        },
        data: Some([("k".to_string(), ByteString(b"v".to_vec()))].into()),
        ..Default::default()
    };
    let refs = refs_from(&[svc], &[sec]);
    assert_eq!(refs.services[&("ns".into(), "chat".into())], vec![80]);
    assert_eq!(
        refs.secrets[&("ns".into(), "keys".into())]["k"],
        b"v".to_vec()
    );
}
