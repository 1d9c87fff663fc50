//! Which confirm-mode channels handled frames since their held confirms
//! were last flushed (`Channel::flush_confirms`): a bitset over channel
//! numbers (grown to the highest channel seen) plus the list of the marked
//! ones, so marking is O(1) per frame and a flush visits only those.

/// Channels to flush.
#[derive(Debug, Default)]
pub(super) struct DirtyChannels {
    bits: Vec<u64>,
    list: Vec<u16>,
}

impl DirtyChannels {
    /// Marks `ch` (once until the next `take`).
    pub(super) fn mark(&mut self, ch: u16) {
        let (word, bit) = (usize::from(ch) / 64, 1u64 << (ch % 64));
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & bit == 0 {
            self.bits[word] |= bit;
            self.list.push(ch);
        }
    }

    /// The marked channels, in marking order; clears the marks (the list
    /// keeps its capacity: no allocation per flush).
    pub(super) fn drain(&mut self) -> std::vec::Drain<'_, u16> {
        for ch in &self.list {
            if let Some(w) = self.bits.get_mut(usize::from(*ch) / 64) {
                *w = 0;
            }
        }
        self.list.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::DirtyChannels;

    #[test]
    fn marks_each_channel_once_until_taken() {
        let mut d = DirtyChannels::default();
        for ch in [3, 65535, 3, 1, 65535, 64] {
            d.mark(ch);
        }
        assert_eq!(d.drain().collect::<Vec<_>>(), vec![3, 65535, 1, 64]);
        assert_eq!(d.drain().count(), 0);
        d.mark(3);
        assert_eq!(d.drain().collect::<Vec<_>>(), vec![3]);
    }
}
