//! SASL responses from `connection.start-ok`, for the two mechanisms we
//! offer (see [`crate::MECHANISMS`]).
//!
//! - PLAIN (RFC 4616): `authzid \0 authcid \0 passwd`. pika, amqplib, the
//!   Java client and lapin (by default) send an empty authzid.
//! - AMQPLAIN: a field table with `LOGIN` and `PASSWORD` long strings.
//!   Clients disagree on the framing: lapin (amq-protocol), py-amqp/kombu
//!   and amqplib strip the table's 4-byte length prefix, which is what
//!   RabbitMQ parses; the old node-amqp client keeps it. We take both.
//!
//! This only parses. Checking the password is the broker's business.

use std::fmt;

use amq_protocol::types::parsing::{parse_short_string, parse_value};
use amq_protocol::types::AMQPValue;

use crate::error::CodecError;

/// A username and password from a SASL response.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The login.
    pub username: String,
    /// The password, in clear.
    pub password: String,
}

/// Never prints the password: credentials end up in logs via `{:?}`.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Parses the response for `mechanism` as named in `connection.start-ok`.
/// An unknown mechanism is COMMAND_INVALID, as in RabbitMQ.
pub fn parse_sasl_response(mechanism: &str, response: &[u8]) -> Result<Credentials, CodecError> {
    match mechanism {
        "PLAIN" => parse_plain(response),
        "AMQPLAIN" => parse_amqplain(response),
        other => Err(CodecError::UnsupportedMechanism(other.to_owned())),
    }
}

fn plain_error(reason: &'static str) -> CodecError {
    CodecError::MalformedSasl {
        mechanism: "PLAIN",
        reason,
    }
}

fn amqplain_error(reason: &'static str) -> CodecError {
    CodecError::MalformedSasl {
        mechanism: "AMQPLAIN",
        reason,
    }
}

/// Parses a PLAIN response, `[authzid] \0 username \0 password`.
///
/// An authorization identity is accepted only if empty or equal to the
/// username: acting as another user is not something we offer, and
/// silently ignoring it would log a client in as someone it did not ask to
/// be. Non-UTF-8 names or passwords are rejected: they could never match
/// configured (UTF-8) users anyway.
pub fn parse_plain(response: &[u8]) -> Result<Credentials, CodecError> {
    let mut parts = response.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(username), Some(password)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(plain_error("expected authzid\\0username\\0password"));
    };
    if password.contains(&0) {
        return Err(plain_error("NUL in password"));
    }
    if !authzid.is_empty() && authzid != username {
        return Err(plain_error("authorization identity differs from username"));
    }
    Ok(Credentials {
        username: utf8(username).ok_or_else(|| plain_error("username is not UTF-8"))?,
        password: utf8(password).ok_or_else(|| plain_error("password is not UTF-8"))?,
    })
}

fn utf8(bytes: &[u8]) -> Option<String> {
    String::from_utf8(bytes.to_vec()).ok()
}

/// Parses an AMQPLAIN response: table entries with or without the 4-byte
/// length prefix.
///
/// Both forms are tried, unprefixed first (the common one). They cannot be
/// confused: a prefixed response starts with a zero octet, which read as an
/// entry is an empty key followed by type octet 0, and no type is 0.
pub fn parse_amqplain(response: &[u8]) -> Result<Credentials, CodecError> {
    match amqplain_entries(response) {
        Ok(credentials) => Ok(credentials),
        Err(unprefixed) => match response {
            [a, b, c, d, rest @ ..]
                if u32::from_be_bytes([*a, *b, *c, *d]) as usize == rest.len() =>
            {
                amqplain_entries(rest)
            }
            _ => Err(unprefixed),
        },
    }
}

/// Reads `key value` entries to the end; takes the first LOGIN and
/// PASSWORD, which must be (long) strings, as RabbitMQ requires.
fn amqplain_entries(mut input: &[u8]) -> Result<Credentials, CodecError> {
    let mut username = None;
    let mut password = None;
    while !input.is_empty() {
        let Ok((rest, key)) = parse_short_string(input) else {
            return Err(amqplain_error("cannot decode table key"));
        };
        let Ok((rest, value)) = parse_value(rest) else {
            return Err(amqplain_error("cannot decode table value"));
        };
        input = rest;
        let slot = match key.as_str() {
            "LOGIN" => &mut username,
            "PASSWORD" => &mut password,
            _ => continue,
        };
        if slot.is_some() {
            continue;
        }
        let AMQPValue::LongString(s) = value else {
            return Err(amqplain_error("LOGIN and PASSWORD must be strings"));
        };
        *slot = Some(utf8(s.as_bytes()).ok_or_else(|| amqplain_error("not UTF-8"))?);
    }
    match (username, password) {
        (Some(username), Some(password)) => Ok(Credentials { username, password }),
        _ => Err(amqplain_error("missing LOGIN or PASSWORD")),
    }
}

#[cfg(test)]
mod tests;
