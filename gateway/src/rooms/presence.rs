//! One pod's view of who is in a room, as its members with presence events have been told.
//!
//! Presence events travel on the bus (core NATS: at most once), and a pod that crashes never
//! publishes the `leave` of its members: their entries only expire from the cluster's listing.
//! So the view is kept from the events and repaired from periodic listings: a member that the
//! watchers were told of but that is no longer listed gets a synthetic `leave`; a listed member
//! they were never told of (its `join` was lost in an outage) gets a synthetic `join`. A listing
//! can race an event still in flight, so a difference must show in two consecutive listings
//! before it is announced. Every event is idempotent against the view: no member is announced
//! twice, none leaves twice.

use std::collections::{HashMap, HashSet};

use super::bus::Member;

/// Who this pod's watchers of one room know to be present.
#[derive(Debug, Default)]
pub struct PresenceView {
    /// By connection id. `None` until the first listing: until then events pass unchanged.
    known: Option<HashMap<String, Member>>,
    /// Known, but missing from the last listing.
    missing: HashSet<String>,
    /// Listed, but unknown in the last listing.
    unannounced: HashSet<String>,
}

impl PresenceView {
    /// A presence event from the bus: whether to pass it on to the watchers.
    pub fn on_event(&mut self, joined: bool, member: &Member) -> bool {
        self.missing.remove(&member.conn);
        self.unannounced.remove(&member.conn);
        let Some(known) = &mut self.known else {
            return true;
        };
        if joined {
            known.insert(member.conn.clone(), member.clone()).is_none()
        } else {
            known.remove(&member.conn).is_some()
        }
    }

    /// A complete listing of the room: the events (`joined`, member) to announce now.
    pub fn on_listing(&mut self, listed: Vec<Member>) -> Vec<(bool, Member)> {
        let listed: HashMap<String, Member> =
            listed.into_iter().map(|m| (m.conn.clone(), m)).collect();
        let Some(known) = &mut self.known else {
            // The first listing is the baseline: the watchers had the snapshot to learn it.
            self.known = Some(listed);
            return Vec::new();
        };
        let mut announce = Vec::new();
        let gone: Vec<String> = known
            .keys()
            .filter(|conn| !listed.contains_key(*conn))
            .cloned()
            .collect();
        let mut still_missing = HashSet::new();
        for conn in gone {
            if self.missing.contains(&conn) {
                if let Some(m) = known.remove(&conn) {
                    announce.push((false, m));
                }
            } else {
                still_missing.insert(conn);
            }
        }
        let mut still_unannounced = HashSet::new();
        for (conn, m) in listed {
            if known.contains_key(&conn) {
                continue;
            }
            if self.unannounced.contains(&conn) {
                known.insert(conn, m.clone());
                announce.push((true, m));
            } else {
                still_unannounced.insert(conn);
            }
        }
        self.missing = still_missing;
        self.unannounced = still_unannounced;
        announce
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn events_pass_unchanged_until_the_first_listing() {
        let mut v = PresenceView::default();
        assert!(v.on_event(true, &m("a")));
        assert!(v.on_event(true, &m("a")));
        assert!(v.on_event(false, &m("b")));
    }

    #[test]
    fn a_member_that_vanished_from_two_listings_gets_one_leave() {
        let mut v = PresenceView::default();
        assert!(v.on_listing(vec![m("a"), m("b")]).is_empty());
        // b's pod crashed: its entry expires, no leave event ever comes.
        assert!(
            v.on_listing(vec![m("a")]).is_empty(),
            "one listing is not enough"
        );
        assert_eq!(conns(&v.on_listing(vec![m("a")])), [(false, "b")]);
        assert!(v.on_listing(vec![m("a")]).is_empty(), "announced once");
        // A late leave event for b is not passed on a second time.
        assert!(!v.on_event(false, &m("b")));
    }

    #[test]
    fn a_listing_that_raced_a_join_event_does_not_announce_a_leave() {
        let mut v = PresenceView::default();
        v.on_listing(vec![m("a")]);
        assert!(v.on_event(true, &m("c")));
        // The listing was read before c's entry was written.
        assert!(v.on_listing(vec![m("a")]).is_empty());
        assert!(v.on_listing(vec![m("a"), m("c")]).is_empty());
        assert!(v.on_listing(vec![m("a"), m("c")]).is_empty());
    }

    #[test]
    fn a_listing_that_raced_a_leave_event_does_not_announce_a_join() {
        let mut v = PresenceView::default();
        v.on_listing(vec![m("a"), m("b")]);
        assert!(v.on_event(false, &m("b")));
        // The listing was read before b's entry was removed.
        assert!(v.on_listing(vec![m("a"), m("b")]).is_empty());
        assert!(v.on_listing(vec![m("a")]).is_empty());
    }

    #[test]
    fn a_join_lost_on_the_bus_is_announced_after_two_listings() {
        let mut v = PresenceView::default();
        v.on_listing(vec![m("a")]);
        assert!(v.on_listing(vec![m("a"), m("d")]).is_empty());
        assert_eq!(conns(&v.on_listing(vec![m("a"), m("d")])), [(true, "d")]);
        // The event, arriving after all, is not passed on twice.
        assert!(!v.on_event(true, &m("d")));
    }

    #[test]
    fn duplicate_events_are_passed_on_once() {
        let mut v = PresenceView::default();
        v.on_listing(vec![]);
        assert!(v.on_event(true, &m("e")));
        assert!(!v.on_event(true, &m("e")));
        assert!(v.on_event(false, &m("e")));
        assert!(!v.on_event(false, &m("e")));
    }
}
