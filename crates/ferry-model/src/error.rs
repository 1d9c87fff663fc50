//! The one error type of the model layer: a binary form that does not decode.

/// Why bytes are not a valid value, table or props blob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// The input ends inside an item (or a length points past its end).
    #[error("truncated")]
    Truncated,
    /// A value type byte this version does not know.
    #[error("unknown value type {0:#04x}")]
    UnknownType(u8),
    /// Tables or arrays nested deeper than `wire::MAX_DEPTH`.
    #[error("nested too deep")]
    TooDeep,
    /// Anything else, with what was wrong.
    #[error("malformed: {0}")]
    Malformed(&'static str),
}
