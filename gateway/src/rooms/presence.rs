//! One pod's view of who is in a room, as its members with presence events have been told.
//!
//! Presence events travel on the bus (core NATS: at most once), and a pod that crashes never
//! publishes the `leave` of its members: their entries only expire from the cluster's listing.
//! So the view is kept from the events and repaired from periodic listings (every
//! `presenceTtl / 3`): a member the watchers were told of that stays missing from
//! [`LEAVE_AFTER_MISSES`] listings in a row gets a synthetic `leave`; a listed member they were
//! never told of (its `join` was lost in an outage) gets a synthetic `join` once it shows in
//! [`JOIN_AFTER_SIGHTINGS`] listings in a row. A listing can race an event still in flight, and
//! a restarted NATS serves an empty bucket until the pods' next refreshes, hence the repeats: a
//! leave waits for three refresh periods (one TTL) of absence. Every event is idempotent
//! against the view: no member is announced twice, none leaves twice.

use std::collections::HashMap;

use super::bus::Member;

/// Consecutive listings a known member must be missing from before its `leave` is announced:
/// three periods of `presenceTtl / 3` span one TTL, longer than a restarted NATS takes to be
/// refilled by the pods' refreshes.
pub const LEAVE_AFTER_MISSES: u32 = 4;
/// Consecutive listings an unknown member must be in before its `join` is announced.
pub const JOIN_AFTER_SIGHTINGS: u32 = 2;

/// Who this pod's watchers of one room know to be present.
#[derive(Debug, Default)]
pub struct PresenceView {
    /// By connection id. `None` until the first listing.
    known: Option<HashMap<String, Member>>,
    /// Before the first listing: the last event per member, passed on to the watchers as it
    /// came, and applied on top of that listing (which may predate it).
    early: HashMap<String, (bool, Member)>,
    /// Known members missing from the latest listings, with how many in a row.
    missing: HashMap<String, u32>,
    /// Unknown members in the latest listings, with how many in a row.
    unannounced: HashMap<String, u32>,
}

impl PresenceView {
    /// A presence event from the bus: whether to pass it on to the watchers.
    pub fn on_event(&mut self, joined: bool, member: &Member) -> bool {
        self.missing.remove(&member.conn);
        self.unannounced.remove(&member.conn);
        let Some(known) = &mut self.known else {
            self.early
                .insert(member.conn.clone(), (joined, member.clone()));
            return true;
        };
        if joined {
            known.insert(member.conn.clone(), member.clone()).is_none()
        } else {
            known.remove(&member.conn).is_some()
        }
    }

    /// A listing could not be read (the bus is down): the runs of misses and sightings are
    /// broken, nothing is concluded across the gap.
    pub fn on_listing_failed(&mut self) {
        self.missing.clear();
        self.unannounced.clear();
    }

    /// A complete listing of the room: the events (`joined`, member) to announce now.
    pub fn on_listing(&mut self, listed: Vec<Member>) -> Vec<(bool, Member)> {
        let listed: HashMap<String, Member> =
            listed.into_iter().map(|m| (m.conn.clone(), m)).collect();
        let Some(known) = &mut self.known else {
            // The first listing is the baseline (the watchers had the snapshot to learn it),
            // with the events already passed on applied on top.
            let mut known = listed;
            for (conn, (joined, member)) in self.early.drain() {
                if joined {
                    known.insert(conn, member);
                } else {
                    known.remove(&conn);
                }
            }
            self.known = Some(known);
            return Vec::new();
        };
        let mut announce = Vec::new();
        let mut missing = HashMap::new();
        let gone: Vec<String> = known
            .keys()
            .filter(|conn| !listed.contains_key(*conn))
            .cloned()
            .collect();
        for conn in gone {
            let misses = self.missing.get(&conn).copied().unwrap_or(0) + 1;
            if misses >= LEAVE_AFTER_MISSES {
                if let Some(m) = known.remove(&conn) {
                    announce.push((false, m));
                }
            } else {
                missing.insert(conn, misses);
            }
        }
        let mut unannounced = HashMap::new();
        for (conn, m) in listed {
            if known.contains_key(&conn) {
                continue;
            }
            let sightings = self.unannounced.get(&conn).copied().unwrap_or(0) + 1;
            if sightings >= JOIN_AFTER_SIGHTINGS {
                known.insert(conn, m.clone());
                announce.push((true, m));
            } else {
                unannounced.insert(conn, sightings);
            }
        }
        self.missing = missing;
        self.unannounced = unannounced;
        announce
    }
}

#[cfg(test)]
mod tests;
