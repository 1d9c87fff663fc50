//! A counted set, used by the routing indexes.
//!
//! Several bindings can lead to the same destination from the same index
//! slot (same queue and key, different arguments: RabbitMQ keeps both), so
//! an index slot counts its destinations and forgets one only when its
//! last binding goes. Ordered so routing output is deterministic.

use std::collections::BTreeMap;

/// Distinct values, each with the number of times it was inserted.
#[derive(Debug, Clone)]
pub(crate) struct Multiset<T> {
    counts: BTreeMap<T, u32>,
}

impl<T> Default for Multiset<T> {
    fn default() -> Self {
        Self {
            counts: BTreeMap::new(),
        }
    }
}

impl<T: Ord> Multiset<T> {
    /// Adds one copy.
    pub(crate) fn insert(&mut self, v: T) {
        *self.counts.entry(v).or_insert(0) += 1;
    }

    /// Removes one copy; false if there was none.
    pub(crate) fn remove(&mut self, v: &T) -> bool {
        match self.counts.get_mut(v) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                self.counts.remove(v);
                true
            }
            None => false,
        }
    }

    /// Nothing left.
    pub(crate) fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The distinct values, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.counts.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_copies() {
        let mut m = Multiset::default();
        m.insert("a");
        m.insert("a");
        m.insert("b");
        assert_eq!(m.iter().copied().collect::<Vec<_>>(), ["a", "b"]);
        assert!(m.remove(&"a"));
        assert_eq!(m.iter().copied().collect::<Vec<_>>(), ["a", "b"]);
        assert!(m.remove(&"a"));
        assert!(!m.remove(&"a"));
        assert!(m.remove(&"b"));
        assert!(m.is_empty());
    }
}
