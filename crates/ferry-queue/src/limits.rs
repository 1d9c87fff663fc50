//! Length limits of names and keys, checked where input enters the core.
//!
//! Queue names, exchange names, routing keys and binding keys are AMQP
//! short strings: at most [`SHORT_MAX`] bytes. A message's exchange and
//! routing key are stored in the queue and stream records with a one-byte
//! length, so a longer value must be refused *before* anything is stored:
//! the record encoders never clamp (they return an error), and every entry
//! point refuses a longer value with RabbitMQ's answer where RabbitMQ has
//! one:
//!
//! | entry | checked in | answer |
//! | --- | --- | --- |
//! | queue / exchange name (HTTP PUT, definitions import) | `VHost::declare_queue`, `declare_exchange` | 400 `queue should be less than 255 bytes, actually was N` (RabbitMQ's text; exchanges: the same form) |
//! | binding key (HTTP, definitions import) | `VHost::binding` | 400 `routing_key should be less than 255 bytes, actually was N` |
//! | publish routing key (HTTP publish) | `VHost::route` | 400, same text |
//! | `x-dead-letter-exchange`, `x-dead-letter-routing-key` (longstr) | `QueueArgs::validate` | 406 `invalid arg '…' for queue '…' in vhost '…': {value_too_long,N}` |
//! | policy `dead-letter-exchange`, `dead-letter-routing-key`, `alternate-exchange` (policy PUT, definitions import, `ferry ctl set policy`) | `policy::validate` | 400 `Validation failed\n\n<key> should be less than 255 bytes, actually was N\n` — **Ferry only**: RabbitMQ 3.10 accepts such a policy |
//!
//! A dead letter whose routing key is still over-long (a policy stored
//! before the check) is dropped with a warning, never stored truncated.
//!
//! AMQP methods carry these values as short strings already (the codec
//! refuses longer ones); the x-arguments are long strings and are checked.

use crate::error::{CoreError, ErrorKind, Result};

/// The longest name or key in bytes (an AMQP short string).
pub const SHORT_MAX: usize = 255;

/// RabbitMQ's refusal of an over-long name (`what` is `queue`,
/// `exchange` or `routing_key`), as its management API words it.
pub fn too_long_text(what: &str, len: usize) -> String {
    format!("{what} should be less than {SHORT_MAX} bytes, actually was {len}\n")
}

/// Refuses `value` (a `what`) when it is longer than [`SHORT_MAX`] bytes;
/// the error is a precondition failure (HTTP 400) with RabbitMQ's text.
pub fn check_short(what: &str, value: &str) -> Result<()> {
    if value.len() > SHORT_MAX {
        return Err(CoreError::request(
            ErrorKind::PreconditionFailed,
            too_long_text(what, value.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_inclusive_and_counts_bytes() {
        assert!(check_short("queue", &"a".repeat(255)).is_ok());
        let e = check_short("queue", &"a".repeat(256))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("queue should be less than 255 bytes, actually was 256\n")
        );
        // 128 two-byte characters: 256 bytes, 128 chars.
        assert!(check_short("routing_key", &"é".repeat(128)).is_err());
        assert!(check_short("routing_key", &"é".repeat(127)).is_ok());
    }
}
