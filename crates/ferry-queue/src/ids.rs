//! A hasher for maps keyed by server-assigned integer ids (message ids,
//! delivery tags, channel numbers, reply ids).
//!
//! std's SipHash guards maps whose keys an attacker chooses; these keys are
//! assigned by the broker (or bounded small integers), so one multiply is
//! enough. Lookups with client-supplied ids cannot add keys, so they
//! cannot build collisions. Hot paths (check-out and settle of every
//! message) use it: SipHash was ~1 % of a fanout run's CPU.

use std::hash::{BuildHasherDefault, Hasher};

/// Fibonacci hashing's multiplier (2^64 / φ, odd): sequential ids spread
/// over the high bits hashbrown uses for its control bytes, and stay
/// distinct in the low bits it uses for the bucket.
const K: u64 = 0x9E37_79B9_7F4A_7C15;

/// The hasher: the key times [`K`].
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Other key types: fold the bytes in, eight at a time.
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(K);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// `BuildHasher` for `HashMap<u64, _, IdBuild>`.
pub type IdBuild = BuildHasherDefault<IdHasher>;

/// A map keyed by ids.
pub type IdMap<K, V> = std::collections::HashMap<K, V, IdBuild>;

/// A set of ids.
pub type IdSet<K> = std::collections::HashSet<K, IdBuild>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn sequential_ids_differ_in_the_low_and_the_high_bits() {
        let b = IdBuild::default();
        let hashes: Vec<u64> = (0..1024u64).map(|i| b.hash_one(i)).collect();
        let low: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 1023).collect();
        assert_eq!(low.len(), 1024, "bucket bits are a permutation");
        let top: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(top.len() > 100, "control bytes vary: {}", top.len());
    }

    #[test]
    fn a_map_works_with_it() {
        let mut m: IdMap<u64, u64> = IdMap::default();
        for i in 0..10_000 {
            m.insert(i * 7, i);
        }
        assert!((0..10_000).all(|i| m.get(&(i * 7)) == Some(&i)));
        assert_eq!(m.get(&3), None);
    }
}
