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
use ferry_model::Table;

/// Installs [`legacy_to_blob`] as the core's converter for properties in
/// v1 records. Call before the broker opens its queues and streams.
pub fn install_legacy_converter() {
    ferry_core::props::set_legacy_converter(legacy_to_blob);
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
    ferry_core::props::with_headers(blob, Some(&h), false).ok()
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
    fn v1_properties_convert_to_the_blob() {
        let raw = encode_properties(&BasicProperties::default().with_delivery_mode(2)).unwrap();
        assert_eq!(&legacy_to_blob(&raw).unwrap()[..], &[4, 1, 2]);
        assert!(legacy_to_blob(&[0x80, 0x00]).is_err());
    }
}
