//! Tunables of a log.

use crate::error::LogError;
use crate::record::RECORD_HEADER_LEN;
use crate::segment::SEGMENT_HEADER_LEN;

/// How a log lays out its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// A segment is rolled before an append would grow it past this size
    /// (a single larger record still gets a segment of its own).
    /// At most `u32::MAX`, because index entries store 32-bit positions.
    pub segment_bytes: u64,
    /// One sparse-index entry per this many bytes of records: the upper
    /// bound on how far a lookup by index scans.
    pub index_interval_bytes: u32,
    /// Index of the first record of a brand-new log. Ignored when the
    /// directory already holds a log.
    pub first_index: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 64 * 1024 * 1024,
            index_interval_bytes: 4096,
            first_index: 0,
        }
    }
}

impl LogConfig {
    pub(crate) fn validate(&self) -> Result<(), LogError> {
        if self.segment_bytes < SEGMENT_HEADER_LEN + RECORD_HEADER_LEN as u64 {
            return Err(LogError::InvalidConfig(
                "segment_bytes must leave room for the header and one record",
            ));
        }
        if self.segment_bytes > u64::from(u32::MAX) {
            return Err(LogError::InvalidConfig("segment_bytes must fit in 32 bits"));
        }
        if self.index_interval_bytes == 0 {
            return Err(LogError::InvalidConfig(
                "index_interval_bytes must be positive",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bounds_are_checked() {
        assert!(LogConfig::default().validate().is_ok());
        let tiny = LogConfig {
            segment_bytes: 10,
            ..LogConfig::default()
        };
        assert!(matches!(tiny.validate(), Err(LogError::InvalidConfig(_))));
        let huge = LogConfig {
            segment_bytes: 1 << 33,
            ..LogConfig::default()
        };
        assert!(huge.validate().is_err());
        let no_index = LogConfig {
            index_interval_bytes: 0,
            ..LogConfig::default()
        };
        assert!(no_index.validate().is_err());
    }
}
