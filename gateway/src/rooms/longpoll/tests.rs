use super::*;

#[test]
fn a_poll_waits_its_timeout_the_default_or_at_most_thirty_seconds() {
    let wait = |q: &str| poll_wait(Some(q)).ok();
    assert_eq!(poll_wait(None).ok(), Some(Duration::from_secs(25)));
    assert_eq!(wait("rooms=a"), Some(Duration::from_secs(25)));
    assert_eq!(wait("timeout=500ms"), Some(Duration::from_millis(500)));
    assert_eq!(wait("rooms=a&timeout=7"), Some(Duration::from_secs(7)));
    assert_eq!(wait("timeout=0"), Some(Duration::ZERO));
    assert_eq!(wait("timeout=1h"), Some(MAX_POLL_WAIT));
}

/// `abc`, `-1`, `1e3` and `1.5` each waited the default 25 s.
#[test]
fn a_timeout_that_is_not_a_duration_is_refused() {
    for bad in ["abc", "-1", "1e3", "1.5", "", "25x"] {
        let got = poll_wait(Some(&format!("rooms=a&timeout={bad}")));
        assert!(
            matches!(got, Err(Refusal::BadRoomsRequest(_))),
            "{bad:?}: {got:?}"
        );
    }
}
