//! The members of one local room, by connection id: a short list while the room is small (most
//! rooms have one member: every connection's own `user:<sub>` room) and a map once it is not,
//! so a room of one costs one small allocation and a room of thousands still finds a member in
//! constant time. A map that empties back to a few members becomes a list again (its memory is
//! returned).

use std::collections::HashMap;

/// Members a list holds before it becomes a map.
const FEW: usize = 8;

pub(super) enum Members<V> {
    Few(Vec<(Box<str>, V)>),
    Many(HashMap<Box<str>, V>),
}

impl<V> Default for Members<V> {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

/// Either variant's iterator.
pub(super) enum Either<A, B> {
    A(A),
    B(B),
}

impl<T, A: Iterator<Item = T>, B: Iterator<Item = T>> Iterator for Either<A, B> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        match self {
            Self::A(a) => a.next(),
            Self::B(b) => b.next(),
        }
    }
}

impl<V> Members<V> {
    /// Add or replace `conn`'s entry; the previous one, if any.
    pub(super) fn insert(&mut self, conn: &str, value: V) -> Option<V> {
        if let Some(v) = self.get_mut(conn) {
            return Some(std::mem::replace(v, value));
        }
        match self {
            Self::Few(list) if list.len() < FEW => {
                if list.capacity() == 0 {
                    list.reserve_exact(1); // the common room of one: no spare slots
                }
                list.push((conn.into(), value));
            }
            Self::Few(list) => {
                let mut map: HashMap<Box<str>, V> = std::mem::take(list).into_iter().collect();
                map.insert(conn.into(), value);
                *self = Self::Many(map);
            }
            Self::Many(map) => {
                map.insert(conn.into(), value);
            }
        }
        None
    }

    pub(super) fn remove(&mut self, conn: &str) -> Option<V> {
        let removed = match self {
            Self::Few(list) => {
                let i = list.iter().position(|(c, _)| &**c == conn)?;
                let (_, v) = list.swap_remove(i);
                if list.is_empty() {
                    *list = Vec::new();
                }
                v
            }
            Self::Many(map) => {
                let v = map.remove(conn)?;
                if map.len() <= FEW / 2 {
                    *self = Self::Few(std::mem::take(map).into_iter().collect());
                } else if map.len() * 4 < map.capacity() {
                    // Maps never shrink on their own; amortised: half of what is left must go
                    // before the next shrink.
                    map.shrink_to(map.len() * 2);
                }
                v
            }
        };
        Some(removed)
    }

    pub(super) fn get(&self, conn: &str) -> Option<&V> {
        match self {
            Self::Few(list) => list.iter().find(|(c, _)| &**c == conn).map(|(_, v)| v),
            Self::Many(map) => map.get(conn),
        }
    }

    pub(super) fn get_mut(&mut self, conn: &str) -> Option<&mut V> {
        match self {
            Self::Few(list) => list.iter_mut().find(|(c, _)| &**c == conn).map(|(_, v)| v),
            Self::Many(map) => map.get_mut(conn),
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Self::Few(list) => list.len(),
            Self::Many(map) => map.len(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        match self {
            Self::Few(list) => Either::A(list.iter().map(|(_, v)| v)),
            Self::Many(map) => Either::B(map.values()),
        }
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut V)> {
        match self {
            Self::Few(list) => Either::A(list.iter_mut().map(|(c, v)| (&**c, v))),
            Self::Many(map) => Either::B(map.iter_mut().map(|(c, v)| (&**c, v))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(m: &Members<u32>) -> Vec<u32> {
        let mut v: Vec<u32> = m.values().copied().collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn members_are_found_replaced_and_removed_across_the_list_to_map_change() {
        let mut m = Members::default();
        for i in 0..20u32 {
            assert_eq!(m.insert(&format!("c{i}"), i), None);
            assert!(matches!(m, Members::Few(_)) == (i < FEW as u32), "{i}");
        }
        assert_eq!(m.insert("c3", 33), Some(3), "a second insert replaces");
        assert_eq!(m.len(), 20);
        assert_eq!(m.get_mut("c19").copied(), Some(19));
        for i in 0..17u32 {
            assert!(m.remove(&format!("c{i}")).is_some());
        }
        assert!(matches!(m, Members::Few(_)), "a few left: a list again");
        assert_eq!(sorted(&m), vec![17, 18, 19]);
        for (conn, v) in m.iter_mut() {
            *v = conn[1..].parse::<u32>().unwrap() * 2;
        }
        assert_eq!(sorted(&m), vec![34, 36, 38]);
        assert_eq!(m.remove("nobody"), None);
        for i in 17..20 {
            m.remove(&format!("c{i}"));
        }
        assert!(m.is_empty());
        assert!(
            matches!(&m, Members::Few(l) if l.capacity() == 0),
            "memory returned"
        );
    }
}
