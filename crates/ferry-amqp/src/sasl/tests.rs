#![allow(clippy::unwrap_used, clippy::expect_used)]

use amq_protocol::auth::{Credentials as AmqpCredentials, SASLMechanism};
use amq_protocol::frame::WriteContext;
use amq_protocol::types::generation::gen_field_table;
use amq_protocol::types::{AMQPValue, FieldTable};

use super::*;
use crate::ReplyCode;

fn creds(username: &str, password: &str) -> Credentials {
    Credentials {
        username: username.into(),
        password: password.into(),
    }
}

#[test]
fn plain_as_clients_send_it() {
    // pika, amqplib, the Java client: "\0user\0pass".
    assert_eq!(
        parse_plain(b"\0guest\0guest").unwrap(),
        creds("guest", "guest")
    );
    // lapin, through amq-protocol.
    let lapin = AmqpCredentials::new("üser".into(), "p@ss word".into())
        .sasl_auth_string(SASLMechanism::Plain);
    assert_eq!(
        parse_sasl_response("PLAIN", lapin.as_bytes()).unwrap(),
        creds("üser", "p@ss word")
    );
    // Empty password, and an authzid equal to the username (RFC 4616).
    assert_eq!(parse_plain(b"\0u\0").unwrap(), creds("u", ""));
    assert_eq!(parse_plain(b"u\0u\0p").unwrap(), creds("u", "p"));
}

#[test]
fn malformed_plain() {
    for bad in [
        &b""[..],
        b"guest",
        b"\0guest",
        b"\0guest\0pa\0ss",
        b"admin\0guest\0guest",
        b"\0\xff\0pass",
        b"\0user\0\xc3",
    ] {
        let err = parse_plain(bad).unwrap_err();
        assert!(
            matches!(
                err,
                CodecError::MalformedSasl {
                    mechanism: "PLAIN",
                    ..
                }
            ),
            "{bad:?}"
        );
        assert_eq!(err.reply_code(), ReplyCode::SYNTAX_ERROR);
    }
}

fn table(entries: &[(&str, AMQPValue)]) -> Vec<u8> {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    let out = gen_field_table(&t)(WriteContext::from(Vec::new()))
        .unwrap()
        .into_inner()
        .0;
    out
}

#[test]
fn amqplain_without_length_prefix() {
    // What lapin (amq-protocol), py-amqp and amqplib send.
    let lapin = AmqpCredentials::new("guest".into(), "secret".into())
        .sasl_auth_string(SASLMechanism::AMQPlain);
    assert_eq!(
        parse_sasl_response("AMQPLAIN", lapin.as_bytes()).unwrap(),
        creds("guest", "secret")
    );
    assert_eq!(
        parse_amqplain(b"\x05LOGINS\x00\x00\x00\x05guest\x08PASSWORDS\x00\x00\x00\x05guest")
            .unwrap(),
        creds("guest", "guest")
    );
}

#[test]
fn amqplain_with_length_prefix() {
    // What the old node-amqp client sends: the whole table.
    let t = table(&[
        ("LOGIN", AMQPValue::LongString("bob".into())),
        ("PASSWORD", AMQPValue::LongString("pw".into())),
        ("EXTRA", AMQPValue::LongLongInt(1)),
    ]);
    assert_eq!(parse_amqplain(&t).unwrap(), creds("bob", "pw"));
    // And the same entries unprefixed, in another order.
    assert_eq!(parse_amqplain(&t[4..]).unwrap(), creds("bob", "pw"));
}

#[test]
fn amqplain_takes_the_first_of_duplicate_keys() {
    let raw =
        b"\x05LOGINS\x00\x00\x00\x01a\x05LOGINS\x00\x00\x00\x01b\x08PASSWORDS\x00\x00\x00\x01p";
    assert_eq!(parse_amqplain(raw).unwrap(), creds("a", "p"));
}

#[test]
fn malformed_amqplain() {
    let missing = table(&[("LOGIN", AMQPValue::LongString("bob".into()))]);
    let wrong_type = table(&[
        ("LOGIN", AMQPValue::LongString("bob".into())),
        ("PASSWORD", AMQPValue::LongInt(1)),
    ]);
    let mut bad_prefix = table(&[
        ("LOGIN", AMQPValue::LongString("bob".into())),
        ("PASSWORD", AMQPValue::LongString("pw".into())),
    ]);
    bad_prefix[3] += 1;
    for bad in [
        &b""[..],
        b"\x05LOG",
        b"\x05LOGINZ",
        &missing,
        &missing[4..],
        &wrong_type,
        &wrong_type[4..],
        &bad_prefix,
    ] {
        let err = parse_amqplain(bad).unwrap_err();
        assert!(
            matches!(
                err,
                CodecError::MalformedSasl {
                    mechanism: "AMQPLAIN",
                    ..
                }
            ),
            "{bad:?}: {err:?}"
        );
        assert_eq!(err.reply_code(), ReplyCode::SYNTAX_ERROR);
    }
}

#[test]
fn unknown_mechanism() {
    let err = parse_sasl_response("EXTERNAL", b"").unwrap_err();
    assert_eq!(err, CodecError::UnsupportedMechanism("EXTERNAL".into()));
    assert_eq!(err.reply_code(), ReplyCode::COMMAND_INVALID);
    assert_eq!(err.method_ids(), (10, 11));
    // Mechanism names are case-sensitive, as in RabbitMQ.
    assert!(parse_sasl_response("plain", b"\0a\0b").is_err());
}

#[test]
fn debug_hides_the_password() {
    let text = format!("{:?}", creds("alice", "hunter2"));
    assert!(text.contains("alice"));
    assert!(!text.contains("hunter2"));
}
