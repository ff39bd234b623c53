//! Exact concurrent-use counting with RAII slots (a count-min estimate would refuse innocent
//! keys at high cardinality; caps must be exact).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// Counts live holders per key.
pub struct ConcurrencyCounter<K: Hash + Eq + Clone> {
    inner: Arc<Mutex<HashMap<K, u32>>>,
}

impl<K: Hash + Eq + Clone> Default for ConcurrencyCounter<K> {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
        }
    }
}

/// One held unit; dropping it gives the unit back.
pub struct Slot<K: Hash + Eq + Clone> {
    inner: Arc<Mutex<HashMap<K, u32>>>,
    key: K,
}

impl<K: Hash + Eq + Clone> ConcurrencyCounter<K> {
    /// Take a unit of `key` unless `cap` units are already held.
    pub fn try_acquire(&self, key: K, cap: Option<u32>) -> Option<Slot<K>> {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key.clone()).or_insert(0);
        if cap.is_some_and(|c| *n >= c) {
            if *n == 0 {
                map.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(Slot {
            inner: self.inner.clone(),
            key,
        })
    }

    /// Units of `key` held now.
    pub fn get(&self, key: &K) -> u32 {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).copied().unwrap_or(0)
    }
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_keys_leave_no_entry_behind() {
        let c = ConcurrencyCounter::<u32>::default();
        let s = c.try_acquire(7, Some(1)).unwrap();
        assert_eq!(c.get(&7), 1);
        drop(s);
        assert_eq!(c.get(&7), 0);
        assert!(c.inner.lock().unwrap().is_empty());
    }

    #[test]
    fn no_cap_means_unlimited() {
        let c = ConcurrencyCounter::<u32>::default();
        let slots: Vec<_> = (0..1000).map(|_| c.try_acquire(1, None).unwrap()).collect();
        assert_eq!(c.get(&1), 1000);
        drop(slots);
        assert_eq!(c.get(&1), 0);
    }
}
