//! The feeds that keep a replica in step with the other pods (`bus.nats`): its document's
//! JetStream log (load, then live updates, and the owed-snapshot retry) and the awareness
//! subject (states, queries, heartbeats, crashed pods' editors removed).

use super::*;

/// Follow the document's log: load (every message up to `last`), then live updates.
pub(super) async fn follow(
    replica: Weak<Replica>,
    mut ordered: async_nats::jetstream::consumer::push::Ordered,
    last: u64,
) {
    let mut repair = tokio::time::interval(REPAIR_EVERY);
    loop {
        tokio::select! {
            msg = ordered.next() => {
                let Some(r) = replica.upgrade() else { return };
                let msg = match msg {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "document feed error (the consumer recovers)");
                        continue;
                    }
                    None => {
                        r.fail("document feed ended".into());
                        return;
                    }
                };
                let Some(s) = store::stored(&msg) else { continue };
                integrate(&r, s, last);
            }
            _ = repair.tick() => {
                let Some(r) = replica.upgrade() else { return };
                let owed = {
                    let mut st = r.lock();
                    let owed = st.owes_snapshot() && !st.compacting;
                    if owed {
                        st.compacting = true;
                    }
                    owed
                };
                if owed {
                    r.spawn(r.clone().snapshot());
                }
            }
        }
    }
}

/// Apply one log message to the replica (and relay it to the pod's editors).
fn integrate(r: &Arc<Replica>, s: store::Stored, last: u64) {
    let mut st = r.lock();
    if s.seq <= st.applied_seq {
        return; // redelivered after a consumer reset
    }
    let own = s.origin == Some(r.pod);
    if !own {
        let before = st.awareness.doc().transact().state_vector();
        match sync::apply(&st.awareness, &s.update, sync::Source::Log) {
            Err(refused) => {
                tracing::warn!(document = %r.key.room, seq = s.seq, error = %refused, "stored document update does not apply; skipped");
                // What yrs applied of it before it failed is the replica's now: its editors too.
                if let Some(partial) = &refused.partial {
                    broadcast(&st, None, &Bytes::from(sync::update(partial)));
                }
            }
            Ok(_) => {
                metrics()
                    .document_updates
                    .with_label_values(&["remote"])
                    .inc();
                if !st.editors.is_empty() {
                    let relay = if s.snapshot {
                        // Only what the snapshot added (usually nothing).
                        let diff = st.awareness.doc().transact().encode_diff_v1(&before);
                        (st.awareness.doc().transact().state_vector() != before).then_some(diff)
                    } else {
                        Some(s.update.to_vec())
                    };
                    if let Some(u) = relay {
                        broadcast(&st, None, &Bytes::from(sync::update(&u)));
                    }
                }
            }
        }
    }
    st.applied_seq = s.seq;
    if s.snapshot {
        st.since_snapshot = 0;
        st.exact(s.update.len() as u64);
    } else {
        st.since_snapshot += 1;
        if !own {
            st.doc_bytes += s.update.len() as u64;
        }
    }
    // The pod whose own update crossed the threshold compacts (one pod, not all of them).
    let compact =
        own && !s.snapshot && !st.compacting && st.since_snapshot >= r.cfg.compact_after_updates;
    if compact {
        st.compacting = true;
    }
    drop(st);
    if s.seq >= last && *r.load.borrow() == Load::Loading {
        r.load.send_replace(Load::Ready);
    }
    if compact {
        r.spawn(r.clone().snapshot());
    }
}

/// Follow the document's awareness from the other pods; answer their queries; every
/// [`peers::HEARTBEAT`] say this replica's editors are still here and remove the states of
/// replicas silent for [`peers::PEER_TIMEOUT`] (a crashed pod's editors).
pub(super) async fn follow_awareness(replica: Weak<Replica>, mut sub: async_nats::Subscriber) {
    let mut heartbeat = tokio::time::interval(peers::HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let msg = tokio::select! {
            msg = sub.next() => match msg {
                Some(m) => m,
                None => return,
            },
            _ = heartbeat.tick() => {
                let Some(r) = replica.upgrade() else { return };
                let alive = !r.lock().local_clients().is_empty();
                if alive {
                    r.publish_awareness(AW_ALIVE, &[]).await;
                }
                r.expire_peers(std::time::Instant::now());
                continue;
            }
        };
        let Some(r) = replica.upgrade() else { return };
        let p = &msg.payload;
        if p.len() < 9 {
            continue;
        }
        let origin = u64::from_be_bytes(p[1..9].try_into().unwrap_or_default());
        if origin == r.pod {
            continue;
        }
        let now = std::time::Instant::now();
        match p[0] {
            AW_QUERY => {
                // Only this pod's editors' states: each pod answers for its own.
                let (owners, snap) = {
                    let st = r.lock();
                    let local = st.local_clients();
                    let snap = st
                        .awareness
                        .update_with_clients(local.clone())
                        .ok()
                        .filter(|u| !u.clients.is_empty())
                        .map(|u| u.encode_v1());
                    (st.owners_of(&local), snap)
                };
                if let Some(owners) = owners {
                    r.publish_awareness(AW_OWNERS, &owners).await;
                }
                if let Some(snap) = snap {
                    r.publish_awareness(AW_UPDATE, &snap).await;
                }
            }
            AW_UPDATE => {
                let update = match sync::decode_awareness(&p[9..]) {
                    Ok(update) => update,
                    Err(e) => {
                        tracing::warn!(error = %e, "awareness from another pod refused");
                        continue;
                    }
                };
                let mut st = r.lock();
                st.peers.update(origin, &update, now);
                // Only what changed here goes to this pod's editors.
                let changed = st
                    .awareness
                    .apply_update_summary(update)
                    .ok()
                    .flatten()
                    .and_then(|s| st.awareness.update_with_clients(s.all_changes()).ok());
                if let Some(changed) = changed {
                    broadcast(&st, None, &Bytes::from(sync::awareness(changed)));
                }
            }
            AW_ALIVE => r.lock().peers.heard(origin, now),
            AW_OWNERS => match serde_json::from_slice::<HashMap<String, String>>(&p[9..]) {
                Ok(owners) if owners.len() <= peers::MAX_OWNERS_PER_MESSAGE => {
                    r.lock().peers.owners(origin, owners, now)
                }
                Ok(owners) => tracing::warn!(
                    owners = owners.len(),
                    "awareness owners from another pod refused: too many"
                ),
                Err(e) => tracing::warn!(error = %e, "awareness owners from another pod refused"),
            },
            _ => {}
        }
    }
}

impl Replica {
    /// Remove the awareness states of the replicas not heard from for [`peers::PEER_TIMEOUT`]
    /// and tell this pod's editors. The removal keeps each state's clock (as y-protocols
    /// removes a remote state), so the client's own next update is accepted again.
    fn expire_peers(&self, now: std::time::Instant) {
        let mut st = self.lock();
        let gone = st.peers.expire(now, peers::PEER_TIMEOUT);
        if gone.is_empty() {
            return;
        }
        let local: HashSet<ClientID> = st.local_clients().into_iter().collect();
        let removal = AwarenessUpdate {
            clients: gone
                .into_iter()
                .filter(|id| {
                    !local.contains(id) && st.awareness.state::<serde_json::Value>(*id).is_some()
                })
                .filter_map(|id| {
                    st.awareness.meta(id).map(|(clock, _)| {
                        (
                            id,
                            yrs::sync::awareness::AwarenessUpdateEntry {
                                clock,
                                json: "null".into(),
                            },
                        )
                    })
                })
                .collect(),
        };
        if removal.clients.is_empty() {
            return;
        }
        tracing::info!(
            document = %self.key.room,
            clients = removal.clients.len(),
            "awareness of a silent pod's editors removed"
        );
        if st.awareness.apply_update(removal.clone()).is_ok() {
            broadcast(&st, None, &Bytes::from(sync::awareness(removal)));
        }
    }
}
