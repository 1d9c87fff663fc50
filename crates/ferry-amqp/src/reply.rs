//! AMQP 0-9-1 reply codes, as RabbitMQ uses them in `connection.close`,
//! `channel.close` and `basic.return`.
//!
//! The spec splits errors into "soft" ones, which close only the channel,
//! and "hard" ones, which close the whole connection. RabbitMQ follows that
//! split (e.g. 404 closes a channel, 501 closes the connection), and so must
//! we: clients decide whether to reopen a channel or reconnect from the code.

use std::fmt;

/// Longest reply text that fits in the `reply-text` short string.
const MAX_REPLY_TEXT: usize = 255;

/// An AMQP reply code. The associated constants are the codes of the
/// 0-9-1 spec; other values can be carried (e.g. a client's `channel.close`)
/// but have no name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyCode(u16);

/// Whether a code closes the channel, the connection, or is not an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorScope {
    /// Not an error (200 REPLY_SUCCESS, or an unknown code).
    None,
    /// A soft error: the server closes the channel with `channel.close`.
    Channel,
    /// A hard error: the server closes the connection with `connection.close`.
    Connection,
}

/// The one table: code, RabbitMQ's name for it, scope.
const TABLE: &[(u16, &str, ErrorScope)] = &[
    (200, "REPLY_SUCCESS", ErrorScope::None),
    (311, "CONTENT_TOO_LARGE", ErrorScope::Channel),
    (312, "NO_ROUTE", ErrorScope::Channel),
    (313, "NO_CONSUMERS", ErrorScope::Channel),
    (320, "CONNECTION_FORCED", ErrorScope::Connection),
    (402, "INVALID_PATH", ErrorScope::Connection),
    (403, "ACCESS_REFUSED", ErrorScope::Channel),
    (404, "NOT_FOUND", ErrorScope::Channel),
    (405, "RESOURCE_LOCKED", ErrorScope::Channel),
    (406, "PRECONDITION_FAILED", ErrorScope::Channel),
    (501, "FRAME_ERROR", ErrorScope::Connection),
    (502, "SYNTAX_ERROR", ErrorScope::Connection),
    (503, "COMMAND_INVALID", ErrorScope::Connection),
    (504, "CHANNEL_ERROR", ErrorScope::Connection),
    (505, "UNEXPECTED_FRAME", ErrorScope::Connection),
    (506, "RESOURCE_ERROR", ErrorScope::Connection),
    (530, "NOT_ALLOWED", ErrorScope::Connection),
    (540, "NOT_IMPLEMENTED", ErrorScope::Connection),
    (541, "INTERNAL_ERROR", ErrorScope::Connection),
];

impl ReplyCode {
    /// 200: normal close.
    pub const REPLY_SUCCESS: ReplyCode = ReplyCode(200);
    /// 311: message too large to deliver (channel).
    pub const CONTENT_TOO_LARGE: ReplyCode = ReplyCode(311);
    /// 312: mandatory message could not be routed (`basic.return`).
    pub const NO_ROUTE: ReplyCode = ReplyCode(312);
    /// 313: immediate message had no consumer (`basic.return`).
    pub const NO_CONSUMERS: ReplyCode = ReplyCode(313);
    /// 320: operator closed the connection.
    pub const CONNECTION_FORCED: ReplyCode = ReplyCode(320);
    /// 402: unknown virtual host path.
    pub const INVALID_PATH: ReplyCode = ReplyCode(402);
    /// 403: no permission, or login refused.
    pub const ACCESS_REFUSED: ReplyCode = ReplyCode(403);
    /// 404: queue or exchange does not exist.
    pub const NOT_FOUND: ReplyCode = ReplyCode(404);
    /// 405: exclusive queue owned by another connection.
    pub const RESOURCE_LOCKED: ReplyCode = ReplyCode(405);
    /// 406: e.g. redeclare with different arguments, unknown delivery tag.
    pub const PRECONDITION_FAILED: ReplyCode = ReplyCode(406);
    /// 501: malformed frame.
    pub const FRAME_ERROR: ReplyCode = ReplyCode(501);
    /// 502: illegal field values.
    pub const SYNTAX_ERROR: ReplyCode = ReplyCode(502);
    /// 503: command not valid in the current state.
    pub const COMMAND_INVALID: ReplyCode = ReplyCode(503);
    /// 504: channel used before being opened, or reused.
    pub const CHANNEL_ERROR: ReplyCode = ReplyCode(504);
    /// 505: a frame not expected at this point (e.g. body without header).
    pub const UNEXPECTED_FRAME: ReplyCode = ReplyCode(505);
    /// 506: server out of a resource.
    pub const RESOURCE_ERROR: ReplyCode = ReplyCode(506);
    /// 530: not allowed by server policy (e.g. channel_max reached).
    pub const NOT_ALLOWED: ReplyCode = ReplyCode(530);
    /// 540: functionality not implemented.
    pub const NOT_IMPLEMENTED: ReplyCode = ReplyCode(540);
    /// 541: internal server error.
    pub const INTERNAL_ERROR: ReplyCode = ReplyCode(541);

    /// Wraps any numeric code (named or not).
    #[must_use]
    pub const fn from_u16(code: u16) -> Self {
        ReplyCode(code)
    }

    /// The numeric code, as sent on the wire.
    #[must_use]
    pub const fn code(self) -> u16 {
        self.0
    }

    fn entry(self) -> Option<&'static (u16, &'static str, ErrorScope)> {
        TABLE.iter().find(|(code, _, _)| *code == self.0)
    }

    /// RabbitMQ's name for the code (`"NOT_FOUND"`), or `"UNKNOWN"`.
    #[must_use]
    pub fn name(self) -> &'static str {
        self.entry().map_or("UNKNOWN", |(_, name, _)| name)
    }

    /// Whether this code is a soft error, a hard error, or neither.
    #[must_use]
    pub fn scope(self) -> ErrorScope {
        self.entry()
            .map_or(ErrorScope::None, |(_, _, scope)| *scope)
    }

    /// True for hard errors: answer with `connection.close`.
    #[must_use]
    pub fn is_connection_error(self) -> bool {
        self.scope() == ErrorScope::Connection
    }

    /// True for soft errors: answer with `channel.close`.
    #[must_use]
    pub fn is_channel_error(self) -> bool {
        self.scope() == ErrorScope::Channel
    }
}

impl From<u16> for ReplyCode {
    fn from(code: u16) -> Self {
        ReplyCode(code)
    }
}

impl From<ReplyCode> for u16 {
    fn from(code: ReplyCode) -> Self {
        code.0
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.name())
    }
}

/// Builds a reply text in RabbitMQ's style: `"NOT_FOUND - no queue 'x' in
/// vhost '/'"`, or just the name when `detail` is empty.
///
/// The result is cut to 255 bytes (on a char boundary) because reply-text is
/// a short string: a longer one could not be encoded at all, and details such
/// as queue names are client-controlled.
#[must_use]
pub fn reply_text(code: ReplyCode, detail: &str) -> String {
    let mut text = if detail.is_empty() {
        code.name().to_owned()
    } else {
        format!("{} - {}", code.name(), detail)
    };
    if text.len() > MAX_REPLY_TEXT {
        // RabbitMQ keeps 252 bytes and marks the cut with "...".
        let mut end = MAX_REPLY_TEXT - 3;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::{AMQPHardError, AMQPSoftError};

    #[test]
    fn names_and_scopes() {
        assert_eq!(ReplyCode::NOT_FOUND.name(), "NOT_FOUND");
        assert!(ReplyCode::NOT_FOUND.is_channel_error());
        assert!(!ReplyCode::NOT_FOUND.is_connection_error());
        assert!(ReplyCode::FRAME_ERROR.is_connection_error());
        assert_eq!(ReplyCode::REPLY_SUCCESS.scope(), ErrorScope::None);
        assert_eq!(ReplyCode::from_u16(999).name(), "UNKNOWN");
        assert_eq!(ReplyCode::from_u16(999).scope(), ErrorScope::None);
        assert_eq!(ReplyCode::NOT_ALLOWED.to_string(), "530 NOT_ALLOWED");
    }

    /// Our table must agree with amq-protocol's (generated from the spec)
    /// on which codes are soft (channel) and hard (connection).
    #[test]
    fn scopes_agree_with_spec() {
        for (code, name, scope) in TABLE {
            let spec = if AMQPSoftError::from_id(*code).is_some() {
                ErrorScope::Channel
            } else if AMQPHardError::from_id(*code).is_some() {
                ErrorScope::Connection
            } else {
                ErrorScope::None
            };
            assert_eq!(spec, *scope, "{code} {name}");
            if let Some(e) = AMQPSoftError::from_id(*code) {
                assert_eq!(e.to_string().replace('-', "_"), *name);
            }
            if let Some(e) = AMQPHardError::from_id(*code) {
                assert_eq!(e.to_string().replace('-', "_"), *name);
            }
        }
        assert_eq!(TABLE.len(), 19);
    }

    #[test]
    fn reply_text_style() {
        assert_eq!(
            reply_text(ReplyCode::NOT_FOUND, "no queue 'x' in vhost '/'"),
            "NOT_FOUND - no queue 'x' in vhost '/'"
        );
        assert_eq!(reply_text(ReplyCode::NO_ROUTE, ""), "NO_ROUTE");
    }

    #[test]
    fn reply_text_is_cut_to_a_short_string() {
        let long = "é".repeat(300);
        let text = reply_text(ReplyCode::PRECONDITION_FAILED, &long);
        assert!(text.len() <= 255);
        assert!(text.starts_with("PRECONDITION_FAILED - é"));
    }
}
