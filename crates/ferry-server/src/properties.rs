//! The property codec ferry-core's dead-lettering uses to rewrite a
//! message's headers (x-death) and drop its `expiration`, built on the
//! ferry-amqp codec so the core never encodes AMQP itself.
//!
//! Like RabbitMQ, which decodes a dead-lettered message's properties and
//! encodes them again, the result is normalised: header tables come out
//! with sorted keys (RabbitMQ sorts the top level too) and RabbitMQ's
//! canonical field types.

use bytes::Bytes;
use ferry_amqp::FieldTable;
use ferry_amqp::{encode_properties, parse_properties, BasicProperties, ShortString};
use ferry_core::exchange::consistent_hash::HashProperty;
use ferry_core::queue::{HeaderEdit, PropertyCodec};

/// [`PropertyCodec`] over ferry-amqp.
#[derive(Debug, Default, Clone, Copy)]
pub struct AmqpPropertyCodec;

impl PropertyCodec for AmqpPropertyCodec {
    fn read(&self, raw: &[u8]) -> Result<HeaderEdit, String> {
        let p = parse_properties(raw).map_err(|e| e.to_string())?;
        Ok(HeaderEdit {
            headers: p.headers().clone(),
            expiration: p.expiration().as_ref().map(|s| s.as_str().to_string()),
        })
    }

    fn write(&self, raw: &[u8], edit: &HeaderEdit) -> Result<Bytes, String> {
        let p = parse_properties(raw).map_err(|e| e.to_string())?;
        // amq-protocol has setters only: rebuild, taking headers and
        // expiration from `edit`.
        let mut out = BasicProperties::default();
        let short = |s: &ShortString| s.clone();
        if let Some(v) = p.content_type() {
            out = out.with_content_type(short(v));
        }
        if let Some(v) = p.content_encoding() {
            out = out.with_content_encoding(short(v));
        }
        if let Some(h) = &edit.headers {
            out = out.with_headers(h.clone());
        }
        if let Some(v) = p.delivery_mode() {
            out = out.with_delivery_mode(*v);
        }
        if let Some(v) = p.priority() {
            out = out.with_priority(*v);
        }
        if let Some(v) = p.correlation_id() {
            out = out.with_correlation_id(short(v));
        }
        if let Some(v) = p.reply_to() {
            out = out.with_reply_to(short(v));
        }
        if let Some(e) = &edit.expiration {
            let e = ShortString::try_new(e.as_str()).map_err(|e| e.to_string())?;
            out = out.with_expiration(e);
        }
        if let Some(v) = p.message_id() {
            out = out.with_message_id(short(v));
        }
        if let Some(v) = p.timestamp() {
            out = out.with_timestamp(*v);
        }
        if let Some(v) = p.kind() {
            out = out.with_type(short(v));
        }
        if let Some(v) = p.user_id() {
            out = out.with_user_id(short(v));
        }
        if let Some(v) = p.app_id() {
            out = out.with_app_id(short(v));
        }
        if let Some(v) = p.cluster_id() {
            out = out.with_cluster_id(short(v));
        }
        encode_properties(&out).map_err(|e| e.to_string())
    }

    fn priority(&self, raw: &[u8]) -> Option<u8> {
        parse_properties(raw).ok().and_then(|p| *p.priority())
    }

    fn hash_property(&self, raw: &[u8], property: HashProperty) -> Option<Vec<u8>> {
        let p = parse_properties(raw).ok()?;
        match property {
            HashProperty::MessageId => p.message_id().as_ref().map(|s| s.as_str().into()),
            HashProperty::CorrelationId => p.correlation_id().as_ref().map(|s| s.as_str().into()),
            HashProperty::Timestamp => p.timestamp().map(|t| t.to_string().into_bytes()),
        }
    }
}

/// The properties without the `BCC` header, if they have one: what RabbitMQ
/// stores and delivers of a message published with BCC (its
/// `strip_header`: the header table stays, possibly empty). The BCC keys
/// route the publish and stay with the message (`Message::bcc`), not in
/// its headers (nor in x-death).
#[must_use]
pub fn without_bcc(props: &BasicProperties) -> Option<BasicProperties> {
    let h = props.headers().as_ref()?;
    if !h.contains_key("BCC") {
        return None;
    }
    let mut map = h.inner().clone();
    map.remove("BCC");
    Some(props.clone().with_headers(FieldTable::from(map)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ferry_amqp::{AMQPValue, FieldTable};

    #[test]
    fn hash_properties_are_read_timestamp_as_decimal_text() {
        let props = BasicProperties::default()
            .with_correlation_id("c1".into())
            .with_message_id("m1".into())
            .with_timestamp(1_700_000_000);
        let raw = encode_properties(&props).unwrap();
        let c = AmqpPropertyCodec;
        assert_eq!(
            c.hash_property(&raw, HashProperty::MessageId),
            Some(b"m1".to_vec())
        );
        assert_eq!(
            c.hash_property(&raw, HashProperty::CorrelationId),
            Some(b"c1".to_vec())
        );
        assert_eq!(
            c.hash_property(&raw, HashProperty::Timestamp),
            Some(b"1700000000".to_vec())
        );
        let empty = encode_properties(&BasicProperties::default()).unwrap();
        assert_eq!(c.hash_property(&empty, HashProperty::MessageId), None);
        assert_eq!(c.hash_property(b"\xff", HashProperty::MessageId), None);
    }

    #[test]
    fn write_replaces_headers_and_expiration_and_keeps_the_rest() {
        let mut h = FieldTable::default();
        h.insert("a".into(), AMQPValue::LongInt(1));
        let props = BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_content_encoding("gzip".into())
            .with_headers(h)
            .with_delivery_mode(2)
            .with_priority(3)
            .with_correlation_id("c".into())
            .with_reply_to("r".into())
            .with_expiration("100".into())
            .with_message_id("m".into())
            .with_timestamp(1_700_000_000)
            .with_type("t".into())
            .with_user_id("guest".into())
            .with_app_id("app".into())
            .with_cluster_id("cl".into());
        let raw = encode_properties(&props).unwrap();
        let codec = AmqpPropertyCodec;
        let mut edit = codec.read(&raw).unwrap();
        assert_eq!(edit.expiration.as_deref(), Some("100"));
        let mut h2 = edit.headers.clone().unwrap();
        h2.insert("b".into(), AMQPValue::Boolean(true));
        edit.headers = Some(h2.clone());
        edit.expiration = None;
        let out = parse_properties(&codec.write(&raw, &edit).unwrap()).unwrap();
        let mut want = props.clone().with_headers(h2);
        // No setter clears a property: compare everything else field by field.
        assert_eq!(out.expiration(), &None);
        want = BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_content_encoding("gzip".into())
            .with_headers(want.headers().clone().unwrap())
            .with_delivery_mode(2)
            .with_priority(3)
            .with_correlation_id("c".into())
            .with_reply_to("r".into())
            .with_message_id("m".into())
            .with_timestamp(1_700_000_000)
            .with_type("t".into())
            .with_user_id("guest".into())
            .with_app_id("app".into())
            .with_cluster_id("cl".into());
        assert_eq!(out, want);
        assert!(codec.read(&[0xff]).is_err());
    }

    #[test]
    fn without_bcc_keeps_everything_else() {
        use ferry_amqp::FieldArray;
        let mut h = FieldTable::default();
        h.insert("BCC".into(), AMQPValue::FieldArray(FieldArray::default()));
        h.insert("CC".into(), AMQPValue::FieldArray(FieldArray::default()));
        let p = BasicProperties::default()
            .with_headers(h)
            .with_correlation_id("c".into());
        let out = without_bcc(&p).unwrap();
        let headers = out.headers().clone().unwrap_or_default();
        assert!(!headers.contains_key("BCC"));
        assert!(headers.contains_key("CC"));
        assert_eq!(out.correlation_id(), p.correlation_id());
        assert!(without_bcc(&out).is_none());
        assert!(without_bcc(&BasicProperties::default()).is_none());
    }
}
