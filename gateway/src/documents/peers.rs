//! Which awareness clients (cursors) of a document each other pod's replica announced, and when
//! that replica was last heard from. Replicas with editors that announced awareness publish a
//! heartbeat every [`HEARTBEAT`]; a replica not heard from for [`PEER_TIMEOUT`] (its pod crashed
//! or lost NATS) has its clients' states removed by the others, which tell their editors. Pure:
//! the caller passes the time.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use yrs::ClientID;
use yrs::sync::awareness::AwarenessUpdate;

/// How often a replica with awareness clients tells the other pods it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(3);
/// A replica silent this long is gone: its clients' awareness states are removed on the other
/// pods (between `PEER_TIMEOUT` and `PEER_TIMEOUT + HEARTBEAT` after its last message).
pub const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// Most owners one message from another replica may name (a replica's editors hold at most
/// eight ids each; no replica the gateway runs holds this many).
pub const MAX_OWNERS_PER_MESSAGE: usize = 4096;
/// Most named owners kept per replica.
const MAX_USERS_PER_PEER: usize = 4 * MAX_OWNERS_PER_MESSAGE;

/// The JSON an awareness update entry carries for a removed state.
const REMOVED: &str = "null";

struct Peer {
    seen: Instant,
    clients: HashSet<ClientID>,
    /// The token `sub` of the editor holding each client, as the replica told
    /// ([`Peers::owners`]); clients of editors without one are not here.
    users: HashMap<ClientID, String>,
}

/// Other replicas of one document and the awareness clients each announced.
#[derive(Default)]
pub struct Peers {
    by_origin: HashMap<u64, Peer>,
}

impl Peers {
    fn peer(&mut self, origin: u64, now: Instant) -> &mut Peer {
        let p = self.by_origin.entry(origin).or_insert_with(|| Peer {
            seen: now,
            clients: HashSet::new(),
            users: HashMap::new(),
        });
        p.seen = now;
        p
    }

    /// A heartbeat (or any message) from `origin`.
    pub fn heard(&mut self, origin: u64, now: Instant) {
        self.peer(origin, now);
    }

    /// An awareness update relayed by `origin`: the clients it sets belong to it (and no longer
    /// to another replica: an editor that reconnected elsewhere), the clients it removes are
    /// gone.
    pub fn update(&mut self, origin: u64, update: &AwarenessUpdate, now: Instant) {
        let set: Vec<ClientID> = update
            .clients
            .iter()
            .filter(|(_, e)| e.json.as_ref() != REMOVED)
            .map(|(id, _)| *id)
            .collect();
        self.claimed_elsewhere(&set, Some(origin));
        let p = self.peer(origin, now);
        for (id, e) in &update.clients {
            if e.json.as_ref() == REMOVED {
                p.clients.remove(id);
                p.users.remove(id);
            } else {
                p.clients.insert(*id);
            }
        }
    }

    /// Whose the clients `origin`'s editors hold are (client id in decimal -> token `sub`),
    /// told before the update that sets them. Ids that are not numbers are ignored.
    pub fn owners(&mut self, origin: u64, owners: HashMap<String, String>, now: Instant) {
        let p = self.peer(origin, now);
        // Names for ids the replica does not hold (any more) are not kept while it lives.
        let clients = &p.clients;
        p.users.retain(|id, _| clients.contains(id));
        for (id, user) in owners {
            if p.users.len() >= MAX_USERS_PER_PEER {
                break;
            }
            if let Ok(id) = id.parse::<u64>() {
                p.users.insert(ClientID::new(id), user);
            }
        }
    }

    /// The user holding `id` on another replica: `None` when no other replica holds it,
    /// `Some(None)` when one does but did not say whose (no `sub`, or an older version).
    pub fn owner(&self, id: ClientID) -> Option<Option<&String>> {
        self.by_origin
            .values()
            .find(|p| p.clients.contains(&id))
            .map(|p| p.users.get(&id))
    }

    /// `ids` were announced by an editor of this pod: no other replica owns them.
    pub fn claimed_locally(&mut self, ids: &[ClientID]) {
        self.claimed_elsewhere(ids, None);
    }

    fn claimed_elsewhere(&mut self, ids: &[ClientID], owner: Option<u64>) {
        for (origin, p) in &mut self.by_origin {
            if Some(*origin) != owner {
                for id in ids {
                    p.clients.remove(id);
                    p.users.remove(id);
                }
            }
        }
    }

    /// Forget the replicas silent for `timeout`; the clients they had announced.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<ClientID> {
        let mut gone = Vec::new();
        self.by_origin.retain(|_, p| {
            let alive = now.saturating_duration_since(p.seen) < timeout;
            if !alive {
                gone.extend(p.clients.drain());
                p.users.clear();
            }
            alive
        });
        gone
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use yrs::sync::awareness::AwarenessUpdateEntry;

    use super::*;

    fn id(n: u64) -> ClientID {
        ClientID::new(n)
    }

    fn update(entries: &[(u64, &str)]) -> AwarenessUpdate {
        AwarenessUpdate {
            clients: entries
                .iter()
                .map(|(id, json)| {
                    (
                        ClientID::new(*id),
                        AwarenessUpdateEntry {
                            clock: 1,
                            json: Arc::from(*json),
                        },
                    )
                })
                .collect(),
        }
    }

    fn sorted(v: Vec<ClientID>) -> Vec<u64> {
        let mut v: Vec<u64> = v.into_iter().map(|c| c.get()).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn a_silent_replicas_clients_expire_and_a_heard_ones_do_not() {
        let t0 = Instant::now();
        let mut peers = Peers::default();
        peers.update(1, &update(&[(10, "{}"), (11, "{}")]), t0);
        peers.update(2, &update(&[(20, "{}")]), t0);
        peers.heard(2, t0 + Duration::from_secs(8));
        assert!(
            peers
                .expire(t0 + Duration::from_secs(9), PEER_TIMEOUT)
                .is_empty()
        );
        assert_eq!(
            sorted(peers.expire(t0 + PEER_TIMEOUT, PEER_TIMEOUT)),
            [10, 11]
        );
        assert!(
            peers.expire(t0 + PEER_TIMEOUT, PEER_TIMEOUT).is_empty(),
            "reported once"
        );
        assert_eq!(
            sorted(peers.expire(t0 + Duration::from_secs(18), PEER_TIMEOUT)),
            [20]
        );
    }

    #[test]
    fn a_removed_client_or_one_that_moved_to_another_pod_is_not_expired_with_its_old_replica() {
        let t0 = Instant::now();
        let mut peers = Peers::default();
        peers.update(1, &update(&[(10, "{}"), (11, "{}"), (12, "{}")]), t0);
        peers.update(1, &update(&[(10, "null")]), t0); // its editor left
        peers.update(2, &update(&[(11, "{}")]), t0); // reconnected to another pod
        peers.claimed_locally(&[id(12)]); // reconnected to this pod
        peers.heard(2, t0 + PEER_TIMEOUT);
        assert!(peers.expire(t0 + PEER_TIMEOUT, PEER_TIMEOUT).is_empty());
        assert_eq!(
            sorted(peers.expire(t0 + PEER_TIMEOUT * 2, PEER_TIMEOUT)),
            [11]
        );
    }

    #[test]
    fn a_peers_clients_are_owned_by_the_users_it_named_until_removed_or_claimed() {
        let t0 = Instant::now();
        let mut peers = Peers::default();
        let named = |pairs: &[(u64, &str)]| {
            pairs
                .iter()
                .map(|(id, user)| (id.to_string(), user.to_string()))
                .collect()
        };
        peers.owners(1, named(&[(10, "alice")]), t0);
        peers.update(1, &update(&[(10, "{}"), (11, "{}")]), t0);
        assert_eq!(peers.owner(id(10)), Some(Some(&"alice".to_string())));
        assert_eq!(peers.owner(id(11)), Some(None), "held, owner not named");
        assert_eq!(peers.owner(id(12)), None, "held by no other replica");
        peers.update(1, &update(&[(10, "null")]), t0);
        assert_eq!(peers.owner(id(10)), None);
        peers.claimed_locally(&[id(11)]);
        assert_eq!(peers.owner(id(11)), None);
    }
}
