//! Errors of the AMQP front end: a reply code plus the method that caused
//! it, scoped to a channel or the whole connection by the code (RabbitMQ's
//! soft/hard split).

use ferry_amqp::{reply_text, CodecError, ErrorScope, ReplyCode};
use ferry_queue::{CoreError, ErrorKind};

/// An AMQP error to be answered with channel.close or connection.close.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{text}")]
pub struct AmqpError {
    /// The reply code.
    pub code: ReplyCode,
    /// Full reply text, "NAME - detail".
    pub text: String,
    /// Class of the offending method (0 if none).
    pub class_id: u16,
    /// Id of the offending method (0 if none).
    pub method_id: u16,
}

impl AmqpError {
    /// An error with a detail text; the code's name is prefixed.
    pub fn new(code: ReplyCode, detail: impl AsRef<str>) -> Self {
        AmqpError {
            code,
            text: reply_text(code, detail.as_ref()),
            class_id: 0,
            method_id: 0,
        }
    }

    /// Attaches the method that caused the error.
    pub fn on(mut self, class_id: u16, method_id: u16) -> Self {
        self.class_id = class_id;
        self.method_id = method_id;
        self
    }

    /// Whether it closes the whole connection.
    pub fn is_connection_error(&self) -> bool {
        self.code.scope() == ErrorScope::Connection
    }

    /// The reply code as a number.
    pub fn code_u16(&self) -> u16 {
        self.code.code()
    }
}

impl From<CoreError> for AmqpError {
    fn from(e: CoreError) -> Self {
        let code = match e.kind() {
            ErrorKind::NotFound => ReplyCode::NOT_FOUND,
            ErrorKind::PreconditionFailed => ReplyCode::PRECONDITION_FAILED,
            ErrorKind::ResourceLocked => ReplyCode::RESOURCE_LOCKED,
            ErrorKind::AccessRefused => ReplyCode::ACCESS_REFUSED,
            ErrorKind::CommandInvalid => ReplyCode::COMMAND_INVALID,
            ErrorKind::NotAllowed => ReplyCode::NOT_ALLOWED,
            ErrorKind::ResourceError => ReplyCode::RESOURCE_ERROR,
            ErrorKind::NotImplemented => ReplyCode::NOT_IMPLEMENTED,
            ErrorKind::Internal | ErrorKind::InputCrash => ReplyCode::INTERNAL_ERROR,
            _ => ReplyCode::INTERNAL_ERROR,
        };
        AmqpError::new(code, e.to_string())
    }
}

impl From<CodecError> for AmqpError {
    fn from(e: CodecError) -> Self {
        let (class_id, method_id) = e.method_ids();
        AmqpError::new(e.reply_code(), e.to_string()).on(class_id, method_id)
    }
}

/// Errors that end a connection task.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Socket error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The broker core failed to start.
    #[error("core: {0}")]
    Core(#[from] CoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_faults_and_input_crashes_are_541_connection_errors() {
        for kind in [ErrorKind::Internal, ErrorKind::InputCrash] {
            let e = AmqpError::from(CoreError::request(kind, String::new()));
            assert_eq!(e.code_u16(), 541, "{kind:?}");
            assert!(e.is_connection_error(), "{kind:?}");
        }
        let e = AmqpError::from(CoreError::request(ErrorKind::NotFound, "x"));
        assert_eq!(e.code_u16(), 404);
    }
}
