//! Message properties at the AMQP edge. The core stores and edits a
//! message's properties as a `ferry-model` props blob; a publish converts
//! its raw AMQP property bytes to the blob once ([`to_blob`]), a delivery
//! converts back into the frame it writes (`writer`), both with
//! `ferry_amqp::model` (an AMQP message round-trips byte for byte).
//!
//! Records written before the blob (format v1) hold raw AMQP properties:
//! [`install_legacy_converter`] hands the core the converter it upgrades
//! them with when it reads them.

use bytes::Bytes;
use ferry_amqp::model::props_to_model;
use ferry_amqp::CodecError;
use ferry_model::props::{self, tag, Fields};
use ferry_model::Table;

/// Installs [`legacy_to_blob`] as the core's converter for properties in
/// v1 records. Call before the broker opens its queues and streams.
pub fn install_legacy_converter() {
    ferry_queue::props::set_legacy_converter(legacy_to_blob);
}

/// The props blob of raw AMQP properties stored by a v1 record.
pub fn legacy_to_blob(raw: &[u8]) -> Result<Bytes, String> {
    props_to_model(raw).map_err(|e| e.to_string())
}

/// The props blob of a publish's raw AMQP properties, and its headers
/// (decoded only when it has some: routing reads CC, BCC, x-delay and
/// headers-exchange matches from them).
pub fn to_blob(raw: &[u8]) -> Result<(Bytes, Option<Table>), CodecError> {
    let blob = props_to_model(raw)?;
    let headers =
        ferry_model::props::headers(&blob).map_err(|_| CodecError::MalformedProperties)?;
    Ok((blob, headers))
}

/// What the channel reads of a publish's properties.
#[derive(Debug, Default, PartialEq)]
pub struct Facts {
    /// `delivery-mode`.
    pub delivery_mode: Option<u8>,
    /// `reply-to` (a direct reply-to request is rewritten).
    pub reply_to: Option<Bytes>,
    /// `expiration`, as sent.
    pub expiration: Option<Bytes>,
    /// `user-id` (checked against the connection's user).
    pub user_id: Option<Bytes>,
    /// The headers (CC, BCC, x-delay, headers exchanges).
    pub headers: Option<Table>,
}

/// [`Facts`] of a props blob, in one pass (the headers table is decoded
/// only when there is one).
pub fn facts(blob: &Bytes) -> Result<Facts, CodecError> {
    let bad = |_| CodecError::MalformedProperties;
    let mut f = Facts::default();
    for field in Fields::new(blob) {
        let (t, v) = field.map_err(bad)?;
        match t {
            tag::HEADERS => {
                let mut r = ferry_model::wire::Reader::new(&v);
                f.headers = Some(ferry_model::wire::read_table(&mut r).map_err(bad)?);
            }
            tag::DELIVERY_MODE => f.delivery_mode = v.first().copied(),
            tag::REPLY_TO => f.reply_to = Some(v),
            tag::EXPIRATION => f.expiration = Some(v),
            tag::USER_ID => f.user_id = Some(v),
            _ => {}
        }
    }
    Ok(f)
}

/// The blob with its `reply-to` set to `reply_to`.
pub fn with_reply_to(blob: &Bytes, reply_to: &[u8]) -> Result<Bytes, CodecError> {
    let mut out = Vec::with_capacity(blob.len() + reply_to.len());
    let mut put = Some(reply_to);
    for field in Fields::new(blob) {
        let (t, v) = field.map_err(|_| CodecError::MalformedProperties)?;
        if t >= tag::REPLY_TO {
            if let Some(r) = put.take() {
                props::put_field(&mut out, tag::REPLY_TO, r);
            }
        }
        if t != tag::REPLY_TO {
            props::put_field(&mut out, t, &v);
        }
    }
    if let Some(r) = put {
        props::put_field(&mut out, tag::REPLY_TO, r);
    }
    Ok(Bytes::from(out))
}

/// The blob without the `BCC` header, if its headers have one: what
/// RabbitMQ stores and delivers of a message published with BCC (its
/// `strip_header`: the header table stays, possibly empty). The BCC keys
/// route the publish and stay with the message (`Message::bcc`), not in
/// its headers (nor in x-death).
pub fn without_bcc(blob: &Bytes, headers: Option<&Table>) -> Option<Bytes> {
    let h = headers?;
    h.get("BCC")?;
    let mut h = h.clone();
    h.remove("BCC");
    ferry_queue::props::with_headers(blob, Some(&h), false).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ferry_amqp::model::props_from_model;
    use ferry_amqp::{encode_properties, parse_properties, AMQPValue, BasicProperties, FieldTable};

    #[test]
    fn a_publish_round_trips_and_bcc_is_stripped_keeping_the_rest() {
        use ferry_amqp::FieldArray;
        let mut h = FieldTable::default();
        h.insert("BCC".into(), AMQPValue::FieldArray(FieldArray::default()));
        h.insert("CC".into(), AMQPValue::FieldArray(FieldArray::default()));
        let p = BasicProperties::default()
            .with_headers(h)
            .with_correlation_id("c".into());
        let raw = encode_properties(&p).unwrap();
        let (blob, headers) = to_blob(&raw).unwrap();
        assert_eq!(props_from_model(&blob).unwrap(), raw);
        let out = without_bcc(&blob, headers.as_ref()).unwrap();
        let back = parse_properties(&props_from_model(&out).unwrap()).unwrap();
        let h = back.headers().clone().unwrap();
        assert!(!h.contains_key("BCC"));
        assert!(h.contains_key("CC"));
        assert_eq!(back.correlation_id(), p.correlation_id());
        // Nothing to strip: None.
        let (plain, headers) =
            to_blob(&encode_properties(&BasicProperties::default()).unwrap()).unwrap();
        assert!(headers.is_none());
        assert_eq!(without_bcc(&plain, headers.as_ref()), None);
        assert!(to_blob(&[0xff]).is_err());
    }

    #[test]
    fn facts_are_read_in_one_pass_and_reply_to_is_replaced_in_place() {
        let mut h = FieldTable::default();
        h.insert("k".into(), AMQPValue::LongInt(1));
        let p = BasicProperties::default()
            .with_content_type("t".into())
            .with_headers(h)
            .with_delivery_mode(2)
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_expiration("100".into())
            .with_user_id("guest".into())
            .with_app_id("a".into());
        let (blob, headers) = to_blob(&encode_properties(&p).unwrap()).unwrap();
        let f = facts(&blob).unwrap();
        assert_eq!(f.delivery_mode, Some(2));
        assert_eq!(f.reply_to.as_deref(), Some(&b"amq.rabbitmq.reply-to"[..]));
        assert_eq!(f.expiration.as_deref(), Some(&b"100"[..]));
        assert_eq!(f.user_id.as_deref(), Some(&b"guest"[..]));
        assert_eq!(f.headers, headers);
        let out = with_reply_to(&blob, b"amq.rabbitmq.reply-to.x").unwrap();
        let back = parse_properties(&props_from_model(&out).unwrap()).unwrap();
        let want = p.clone().with_reply_to("amq.rabbitmq.reply-to.x".into());
        assert_eq!(back, want);
        // Added in its place when there was none.
        let (plain, _) =
            to_blob(&encode_properties(&BasicProperties::default().with_delivery_mode(1)).unwrap())
                .unwrap();
        let out = with_reply_to(&plain, b"r").unwrap();
        let back = parse_properties(&props_from_model(&out).unwrap()).unwrap();
        assert_eq!(
            back,
            BasicProperties::default()
                .with_delivery_mode(1)
                .with_reply_to("r".into())
        );
        assert_eq!(facts(&Bytes::new()).unwrap(), Facts::default());
    }

    #[test]
    fn v1_properties_convert_to_the_blob() {
        let raw = encode_properties(&BasicProperties::default().with_delivery_mode(2)).unwrap();
        assert_eq!(&legacy_to_blob(&raw).unwrap()[..], &[4, 1, 2]);
        assert!(legacy_to_blob(&[0x80, 0x00]).is_err());
    }
}
