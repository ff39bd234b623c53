use super::*;

fn m(conn: &str) -> Member {
    Member {
        conn: conn.into(),
        user: Some(format!("user-of-{conn}")),
        info: serde_json::Value::Null,
    }
}

fn conns(events: &[(bool, Member)]) -> Vec<(bool, &str)> {
    events.iter().map(|(j, m)| (*j, m.conn.as_str())).collect()
}

/// Feed the same listing `n` times; everything announced.
fn listings(v: &mut PresenceView, n: u32, listed: &[&str]) -> Vec<(bool, Member)> {
    (0..n)
        .flat_map(|_| v.on_listing(listed.iter().map(|c| m(c)).collect()))
        .collect()
}

#[test]
fn events_pass_unchanged_until_the_first_listing() {
    let mut v = PresenceView::default();
    assert!(v.on_event(true, &m("a")));
    assert!(v.on_event(true, &m("a")));
    assert!(v.on_event(false, &m("b")));
}

#[test]
fn a_member_that_vanished_for_a_whole_ttl_gets_one_leave() {
    let mut v = PresenceView::default();
    assert!(listings(&mut v, 1, &["a", "b"]).is_empty());
    // b's pod crashed: its entry expires, no leave event ever comes.
    assert!(
        listings(&mut v, LEAVE_AFTER_MISSES - 1, &["a"]).is_empty(),
        "fewer misses are not enough"
    );
    assert_eq!(conns(&listings(&mut v, 1, &["a"])), [(false, "b")]);
    assert!(listings(&mut v, 5, &["a"]).is_empty(), "announced once");
    // A late leave event for b is not passed on a second time.
    assert!(!v.on_event(false, &m("b")));
}

#[test]
fn a_restarted_bus_that_lists_nobody_for_a_while_announces_nothing() {
    let mut v = PresenceView::default();
    listings(&mut v, 1, &["a", "b"]);
    // NATS restarted with an empty bucket; the pods' refreshes fill it again.
    assert!(listings(&mut v, LEAVE_AFTER_MISSES - 1, &[]).is_empty());
    assert!(listings(&mut v, 3, &["a", "b"]).is_empty());
}

#[test]
fn a_failed_listing_breaks_a_run_of_misses() {
    let mut v = PresenceView::default();
    listings(&mut v, 1, &["a", "b"]);
    listings(&mut v, LEAVE_AFTER_MISSES - 1, &["a"]);
    v.on_listing_failed();
    assert!(listings(&mut v, LEAVE_AFTER_MISSES - 1, &["a"]).is_empty());
    assert_eq!(conns(&listings(&mut v, 1, &["a"])), [(false, "b")]);
}

#[test]
fn a_listing_that_raced_a_join_event_does_not_announce_a_leave() {
    let mut v = PresenceView::default();
    listings(&mut v, 1, &["a"]);
    assert!(v.on_event(true, &m("c")));
    // The listing was read before c's entry was written.
    assert!(listings(&mut v, 1, &["a"]).is_empty());
    assert!(listings(&mut v, 5, &["a", "c"]).is_empty());
}

#[test]
fn a_listing_that_raced_a_leave_event_does_not_announce_a_join() {
    let mut v = PresenceView::default();
    listings(&mut v, 1, &["a", "b"]);
    assert!(v.on_event(false, &m("b")));
    // The listing was read before b's entry was removed.
    assert!(listings(&mut v, 1, &["a", "b"]).is_empty());
    assert!(listings(&mut v, 5, &["a"]).is_empty());
}

#[test]
fn a_join_lost_on_the_bus_is_announced_once_it_was_listed_twice() {
    let mut v = PresenceView::default();
    listings(&mut v, 1, &["a"]);
    assert!(listings(&mut v, JOIN_AFTER_SIGHTINGS - 1, &["a", "d"]).is_empty());
    assert_eq!(conns(&listings(&mut v, 1, &["a", "d"])), [(true, "d")]);
    // The event, arriving after all, is not passed on twice.
    assert!(!v.on_event(true, &m("d")));
}

#[test]
fn events_before_the_first_listing_are_applied_on_top_of_it() {
    let mut v = PresenceView::default();
    // Passed on before the baseline; the baseline listing was read before either.
    assert!(v.on_event(false, &m("b")));
    assert!(v.on_event(true, &m("c")));
    listings(&mut v, 1, &["a", "b"]);
    // So b is not announced leaving again, nor c joining again.
    assert!(listings(&mut v, 5, &["a", "c"]).is_empty());
    assert!(!v.on_event(false, &m("b")));
    assert!(!v.on_event(true, &m("c")));
}

#[test]
fn duplicate_events_are_passed_on_once() {
    let mut v = PresenceView::default();
    listings(&mut v, 1, &[]);
    assert!(v.on_event(true, &m("e")));
    assert!(!v.on_event(true, &m("e")));
    assert!(v.on_event(false, &m("e")));
    assert!(!v.on_event(false, &m("e")));
}
