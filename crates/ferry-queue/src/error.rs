//! Errors of the broker core. They carry a protocol-neutral kind; the front
//! ends map kinds to their own codes (AMQP reply codes, Kafka error codes,
//! HTTP statuses), so the core never names a wire protocol.

use ferry_log::LogError;

/// What went wrong, in terms a front end can map to its own error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The named entity does not exist (AMQP 404).
    NotFound,
    /// The request conflicts with the entity's current state (AMQP 406).
    PreconditionFailed,
    /// The entity is held exclusively by someone else (AMQP 405).
    ResourceLocked,
    /// The request is not permitted (AMQP 403).
    AccessRefused,
    /// The request is malformed or names an unknown type (AMQP 503).
    CommandInvalid,
    /// The request is not allowed in this context (AMQP 530).
    NotAllowed,
    /// A resource limit was hit (AMQP 506).
    ResourceError,
    /// The operation does not exist for this kind of queue, e.g. basic.get
    /// on a stream (AMQP 540).
    NotImplemented,
    /// Storage failed or another internal fault (AMQP 541).
    Internal,
    /// Client input that RabbitMQ answers as an internal error (AMQP 541
    /// INTERNAL_ERROR) because its code crashes on it, e.g. a
    /// consistent-hash exchange whose `hash-header` is not a string. The
    /// fault is the client's, not the broker's: HTTP answers it with 400.
    InputCrash,
}

/// An error of the core with a human readable text in RabbitMQ's style
/// (without the reply-code name prefix, which the front end adds).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// A request-scoped error: the caller answers it and goes on.
    #[error("{text}")]
    Request {
        /// Category of the failure.
        kind: ErrorKind,
        /// Detail text, e.g. "no queue 'x' in vhost '/'".
        text: String,
    },
    /// Storage failed; the affected queue refuses writes from now on.
    #[error("storage error: {0}")]
    Storage(#[from] LogError),
    /// A stored record or definitions file could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// A plain I/O error outside the log (definitions file, directories).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl CoreError {
    /// Builds a request-scoped error.
    pub fn request(kind: ErrorKind, text: impl Into<String>) -> Self {
        CoreError::Request {
            kind,
            text: text.into(),
        }
    }

    /// The kind a front end maps to its own code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CoreError::Request { kind, .. } => *kind,
            CoreError::Storage(_) | CoreError::Corrupt(_) | CoreError::Io(_) => ErrorKind::Internal,
        }
    }

    /// Whether stored data is damaged (a record that does not decode, a
    /// checksum that fails), as opposed to the disk failing now.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            CoreError::Corrupt(_) | CoreError::Storage(LogError::Corrupt { .. })
        )
    }

    /// `NotFound`: "no {what} '{name}' in vhost '{vhost}'".
    pub fn not_found(what: &str, name: &str, vhost: &str) -> Self {
        Self::request(
            ErrorKind::NotFound,
            format!("no {what} '{name}' in vhost '{vhost}'"),
        )
    }
}

impl From<ferry_log::framed::FramedError> for CoreError {
    fn from(e: ferry_log::framed::FramedError) -> Self {
        match e {
            ferry_log::framed::FramedError::Io(e) => CoreError::Io(e),
            ferry_log::framed::FramedError::Corrupt(text) => CoreError::Corrupt(text),
        }
    }
}

/// Result alias for the core.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
