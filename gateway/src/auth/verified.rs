//! A bounded cache of verified tokens, per route: a reconnect storm presents the same tokens
//! again and again, and a signature check is most of what a connect costs.
//!
//! An entry is what one token verified to, in the form the verifier keeps (`jwt.rs`: the
//! claims' compact JSON text, a fraction of a parsed map's size), keyed by the token's SHA-256
//! (so the cache never holds a token and a forged token cannot collide with a verified one), and
//! is used only while all of these hold:
//! - the token has not expired (`exp` plus the route's leeway, checked on every hit: an entry
//!   lives at most the token's remaining lifetime);
//! - the key sets it was verified against are the ones in service: any JWKS refresh of the
//!   route's sources (a rotated-out key among them) invalidates every entry verified before it;
//!   inline and file keys change only with a new config, which builds a new cache.
//!
//! Bounded by [`MAX_ENTRIES`] and [`MAX_BYTES`] per route; the oldest entries go first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// Most tokens one route's cache holds.
pub const MAX_ENTRIES: usize = 10_000;
/// Most bytes one route's cache charges for (the token's length twice, for the claims it holds,
/// plus a fixed overhead per entry).
pub const MAX_BYTES: usize = 8 * 1024 * 1024;
const ENTRY_OVERHEAD: usize = 160;

/// A token's SHA-256: what the cache is keyed by ([`VerifiedCache::key`]).
pub type Key = [u8; 32];

struct Entry<C> {
    claims: C,
    /// Unix seconds after which the entry is stale (`exp` + leeway).
    stale_after: u64,
    /// The key sets' generation the token was verified against.
    keys: u64,
    cost: usize,
    /// When it was put (the order slot that stands for it carries the same number).
    seq: u64,
}

struct State<C> {
    map: HashMap<Key, Entry<C>>,
    /// Insertion order, for eviction: a key and the `seq` of the entry it was put as. A slot
    /// whose entry was removed or put again since is stale: skipped, and dropped by compaction.
    order: VecDeque<(Key, u64)>,
    bytes: usize,
    /// The next entry's `seq`.
    next: u64,
}

impl<C> Default for State<C> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            next: 0,
        }
    }
}

/// Verified tokens of one route and what each verified to (the claims, `C`).
pub struct VerifiedCache<C> {
    state: Mutex<State<C>>,
}

impl<C> Default for VerifiedCache<C> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::default()),
        }
    }
}

impl<C: Clone> std::fmt::Debug for VerifiedCache<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedCache")
            .field("entries", &self.lock().map.len())
            .finish()
    }
}

impl<C: Clone> VerifiedCache<C> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<C>> {
        // A panic while holding the lock leaves only a cache behind: keep using it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The key of `token` (its SHA-256), computed once per verification for both [`Self::get`]
    /// and [`Self::put`].
    pub fn key(token: &str) -> Key {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The claims of the token whose key is `k` if it was verified against key sets of
    /// generation `keys` and is still fresh at `now` (Unix seconds).
    pub fn get(&self, k: &Key, now: u64, keys: u64) -> Option<C> {
        let k = *k;
        let mut st = self.lock();
        let fresh = st
            .map
            .get(&k)
            .map(|e| e.keys == keys && now <= e.stale_after)?;
        if fresh {
            return st.map.get(&k).map(|e| e.claims.clone());
        }
        if let Some(e) = st.map.remove(&k) {
            st.bytes -= e.cost;
        }
        None
    }

    /// Remember that the token whose key is `k` (`token_len` bytes long), expiring at `exp`
    /// (Unix seconds), verified to `claims` against key sets of generation `keys`. A token
    /// without `exp` is not cached (the gateway requires one; this is a guard).
    pub fn put(
        &self,
        k: Key,
        token_len: usize,
        claims: &C,
        exp: Option<u64>,
        leeway: u64,
        keys: u64,
    ) {
        let Some(exp) = exp else { return };
        let cost = token_len * 2 + ENTRY_OVERHEAD;
        if cost > MAX_BYTES {
            return;
        }
        let mut st = self.lock();
        if let Some(old) = st.map.remove(&k) {
            st.bytes -= old.cost;
        }
        while st.map.len() >= MAX_ENTRIES || st.bytes + cost > MAX_BYTES {
            let Some((oldest, seq)) = st.order.pop_front() else {
                break;
            };
            if st.map.get(&oldest).is_some_and(|e| e.seq == seq)
                && let Some(e) = st.map.remove(&oldest)
            {
                st.bytes -= e.cost;
            }
        }
        let seq = st.next;
        st.next += 1;
        st.map.insert(
            k,
            Entry {
                claims: claims.clone(),
                stale_after: exp.saturating_add(leeway),
                keys,
                cost,
                seq,
            },
        );
        st.order.push_back((k, seq));
        st.bytes += cost;
        // Slots of replaced or removed entries pile up in `order`; compact when it doubles
        // (what is left is one slot per entry).
        if st.order.len() > 2 * st.map.len() + 64 {
            let State { map, order, .. } = &mut *st;
            order.retain(|(k, seq)| map.get(k).is_some_and(|e| e.seq == *seq));
        }
    }

    /// Entries held (for tests and the debug view).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// No entries held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a token verified to, in these tests: its `exp`.
    type Claims = u64;

    fn claims(exp: u64) -> Claims {
        exp
    }

    fn put(c: &VerifiedCache<Claims>, token: &str, claims: Claims, leeway: u64, keys: u64) {
        let k = VerifiedCache::<Claims>::key(token);
        c.put(k, token.len(), &claims, Some(claims), leeway, keys);
    }

    fn get(c: &VerifiedCache<Claims>, token: &str, now: u64, keys: u64) -> Option<Claims> {
        c.get(&VerifiedCache::<Claims>::key(token), now, keys)
    }

    #[test]
    fn a_cached_token_is_served_until_its_exp_plus_leeway_and_not_after() {
        let c = VerifiedCache::<Claims>::default();
        put(&c, "t", claims(100), 5, 1);
        assert!(get(&c, "t", 104, 1).is_some());
        assert!(get(&c, "t", 105, 1).is_some());
        assert!(get(&c, "t", 106, 1).is_none(), "stale after exp + leeway");
        assert!(c.is_empty(), "a stale entry is dropped");
    }

    #[test]
    fn another_key_generation_misses_and_drops_the_entry() {
        let c = VerifiedCache::<Claims>::default();
        put(&c, "t", claims(100), 0, 1);
        assert!(get(&c, "t", 50, 2).is_none(), "key sets changed since");
        assert!(get(&c, "t", 50, 1).is_none(), "and the entry is gone");
    }

    #[test]
    fn a_different_token_never_hits() {
        let c = VerifiedCache::<Claims>::default();
        put(&c, "token-a", claims(100), 0, 1);
        assert!(get(&c, "token-b", 50, 1).is_none());
    }

    #[test]
    fn the_cache_holds_at_most_max_entries_dropping_the_oldest() {
        let c = VerifiedCache::<Claims>::default();
        for i in 0..MAX_ENTRIES + 10 {
            put(&c, &format!("t{i}"), claims(100), 0, 1);
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        assert!(get(&c, "t0", 50, 1).is_none(), "the oldest went first");
        assert!(get(&c, &format!("t{}", MAX_ENTRIES + 9), 50, 1).is_some());
    }

    #[test]
    fn a_token_verified_again_counts_as_new_and_an_older_one_is_evicted_first() {
        let c = VerifiedCache::<Claims>::default();
        put(&c, "again", claims(100), 0, 1);
        put(&c, "older", claims(100), 0, 1);
        // Verified again (concurrent misses, or after a key rotation): now the newest.
        put(&c, "again", claims(100), 0, 1);
        for i in 0..MAX_ENTRIES - 1 {
            put(&c, &format!("t{i}"), claims(100), 0, 1);
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        assert!(get(&c, "older", 50, 1).is_none(), "the oldest went first");
        assert!(
            get(&c, "again", 50, 1).is_some(),
            "not the one verified again"
        );
    }

    #[test]
    fn verifying_one_token_again_and_again_keeps_the_eviction_order_bounded() {
        let c = VerifiedCache::<Claims>::default();
        put(&c, "other", claims(100), 0, 1);
        for _ in 0..10_000 {
            put(&c, "same", claims(100), 0, 1);
        }
        assert_eq!(c.len(), 2);
        assert!(
            c.lock().order.len() <= 2 * 2 + 64,
            "{}",
            c.lock().order.len()
        );
    }

    #[test]
    fn the_cache_holds_at_most_max_bytes_of_tokens() {
        let c = VerifiedCache::<Claims>::default();
        let big = "x".repeat(60_000);
        for i in 0..200 {
            put(&c, &format!("{big}{i}"), claims(100), 0, 1);
        }
        assert!(c.lock().bytes <= MAX_BYTES);
        assert!(c.len() < 200);
    }
}
