use super::*;

fn settings() -> LeaseSettings {
    LeaseSettings {
        namespace: "sys".into(),
        name: "switchboard-operator".into(),
        identity: "me".into(),
        duration: StdDuration::from_secs(15),
    }
}

fn lease(holder: Option<&str>, renewed_at: i64, transitions: i32) -> Lease {
    Lease {
        metadata: ObjectMeta {
            resource_version: Some("9".into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed_at).unwrap())),
            lease_duration_seconds: Some(15),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }),
    }
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap()
}

#[test]
fn no_lease_means_create_it() {
    assert_eq!(decide(None, "me", at(100)), Action::Create);
}

#[test]
fn our_own_lease_is_renewed() {
    assert_eq!(
        decide(Some(&lease(Some("me"), 0, 0)), "me", at(100)),
        Action::Renew
    );
}

#[test]
fn a_live_lease_held_by_another_is_followed() {
    assert_eq!(
        decide(Some(&lease(Some("other"), 100, 0)), "me", at(110)),
        Action::Follow {
            holder: "other".into()
        }
    );
}

#[test]
fn an_expired_or_released_lease_is_taken_over() {
    assert_eq!(
        decide(Some(&lease(Some("other"), 100, 0)), "me", at(116)),
        Action::TakeOver
    );
    assert_eq!(
        decide(Some(&lease(None, 100, 0)), "me", at(101)),
        Action::TakeOver
    );
}

#[test]
fn taking_over_counts_a_transition_and_keeps_the_resource_version() {
    let cur = lease(Some("other"), 0, 4);
    let l = desired(Some(&cur), &Action::TakeOver, &settings(), at(100)).unwrap();
    let spec = l.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("me"));
    assert_eq!(spec.lease_transitions, Some(5));
    assert_eq!(spec.acquire_time, Some(MicroTime(at(100))));
    assert_eq!(l.metadata.resource_version.as_deref(), Some("9"));
}

#[test]
fn renewing_moves_only_the_renew_time() {
    let mut cur = lease(Some("me"), 0, 2);
    if let Some(s) = cur.spec.as_mut() {
        s.acquire_time = Some(MicroTime(at(0)));
    }
    let l = desired(Some(&cur), &Action::Renew, &settings(), at(50)).unwrap();
    let spec = l.spec.unwrap();
    assert_eq!(spec.renew_time, Some(MicroTime(at(50))));
    assert_eq!(spec.acquire_time, Some(MicroTime(at(0))));
    assert_eq!(spec.lease_transitions, Some(2));
}

#[test]
fn following_writes_nothing() {
    let cur = lease(Some("other"), 100, 0);
    assert_eq!(
        desired(
            Some(&cur),
            &Action::Follow {
                holder: "other".into()
            },
            &settings(),
            at(101)
        ),
        None
    );
}
