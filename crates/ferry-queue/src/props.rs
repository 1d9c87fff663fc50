//! Reading and editing a message's properties.
//!
//! [`ferry_model::Message::properties`] is a `ferry-model` props blob
//! (docs/message-model.md): protocol-neutral, so the core reads what it
//! needs (expiration, priority, headers, the properties a consistent-hash
//! exchange hashes) and edits headers itself (x-death, x-delivery-count,
//! x-delay, x-stream-offset) without any front end's codec. Front ends
//! convert to the blob when a message is published and back when it is
//! delivered.
//!
//! Records written before the blob (format v1) hold a front end's raw
//! property bytes; the front end installs the converter that upgrades them
//! when they are read ([`set_legacy_converter`]): a process-wide fact,
//! like the format of the files it applies to.

use crate::error::{CoreError, Result};
use bytes::Bytes;
use ferry_model::props::{self as mp, tag, Fields};
use ferry_model::{wire, ModelError, Table, Value};
use ferry_route::consistent_hash::HashProperty;
use std::sync::OnceLock;

/// The headers table of a blob (None: no headers property).
pub fn headers(blob: &Bytes) -> std::result::Result<Option<Table>, ModelError> {
    mp::headers(blob)
}

/// The `expiration` property of a blob, as sent (text).
pub fn expiration(blob: &Bytes) -> std::result::Result<Option<Bytes>, ModelError> {
    mp::field(blob, tag::EXPIRATION)
}

/// The `priority` property (None: absent or unreadable).
pub fn priority(blob: &Bytes) -> Option<u8> {
    mp::priority(blob).ok().flatten()
}

/// The `message_id`, `correlation_id` or `timestamp` (as decimal text) of
/// a blob, which a consistent-hash exchange with `hash-property` hashes.
/// None: absent or unreadable.
pub fn hash_property(blob: &Bytes, property: HashProperty) -> Option<Vec<u8>> {
    match property {
        HashProperty::MessageId => mp::field(blob, tag::MESSAGE_ID).ok()?.map(|b| b.to_vec()),
        HashProperty::CorrelationId => mp::field(blob, tag::CORRELATION_ID)
            .ok()?
            .map(|b| b.to_vec()),
        HashProperty::Timestamp => {
            let v = mp::field(blob, tag::TIMESTAMP).ok()??;
            let a: [u8; 8] = v[..].try_into().ok()?;
            Some(u64::from_be_bytes(a).to_string().into_bytes())
        }
    }
}

/// `blob` with its headers replaced by `headers` (None: removed) and,
/// with `drop_expiration`, its `expiration` removed; every other field
/// (unknown tags too) kept as it was.
pub fn with_headers(
    blob: &Bytes,
    headers: Option<&Table>,
    drop_expiration: bool,
) -> std::result::Result<Bytes, ModelError> {
    let mut out = Vec::with_capacity(blob.len() + 64);
    let mut pending = headers;
    let mut put_headers = |out: &mut Vec<u8>| {
        if let Some(h) = pending.take() {
            let mut t = Vec::with_capacity(64);
            wire::put_table(&mut t, h);
            mp::put_field(out, tag::HEADERS, &t);
        }
    };
    for f in Fields::new(blob) {
        let (t, v) = f?;
        if t >= tag::HEADERS {
            put_headers(&mut out);
        }
        if t == tag::HEADERS || (drop_expiration && t == tag::EXPIRATION) {
            continue;
        }
        mp::put_field(&mut out, t, &v);
    }
    put_headers(&mut out);
    Ok(Bytes::from(out))
}

/// `blob` with header `key` set to `value` (replacing the first entry of
/// that key in place, or appended; a headers table is added if there was
/// none).
pub fn with_header(
    blob: &Bytes,
    key: &str,
    value: Value,
) -> std::result::Result<Bytes, ModelError> {
    let mut h = headers(blob)?.unwrap_or_default();
    h.insert(key, value);
    with_headers(blob, Some(&h), false)
}

/// `t` with its entries in key order, one per key (the last given wins):
/// the table RabbitMQ re-encodes when it rewrites a message's headers
/// (dead-lettering).
pub fn sorted(t: &Table) -> Table {
    let mut entries: Vec<(&std::sync::Arc<str>, &Value)> = t.iter().collect();
    // Stable: equal keys keep their order, so the last is the one kept.
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut out: Vec<(std::sync::Arc<str>, Value)> = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        match out.last_mut() {
            Some((last, slot)) if last == k => *slot = v.clone(),
            _ => out.push((k.clone(), v.clone())),
        }
    }
    out.into_iter().collect()
}

/// Converts properties stored by a v1 record (a front end's raw bytes) to
/// a props blob.
pub type LegacyConverter = fn(&[u8]) -> std::result::Result<Bytes, String>;

static LEGACY: OnceLock<LegacyConverter> = OnceLock::new();

/// Installs the converter for v1 records' properties (the AMQP front end
/// does, with `ferry_amqp::model::props_to_model`, before any queue or
/// stream is opened). The first one installed stays.
pub fn set_legacy_converter(f: LegacyConverter) {
    let _ = LEGACY.set(f);
}

/// The props blob of properties a v1 record stored.
pub(crate) fn from_legacy(raw: &[u8]) -> Result<Bytes> {
    let f = LEGACY.get().ok_or_else(|| {
        CoreError::Corrupt("v1 record: no converter for its properties is installed".into())
    })?;
    f(raw).map_err(|e| CoreError::Corrupt(format!("v1 record properties: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ferry_model::Properties;

    fn blob() -> Bytes {
        Properties {
            content_type: Some(Bytes::from_static(b"text/plain")),
            headers: Some(
                [("b", Value::I32(1)), ("a", Value::str("x"))]
                    .into_iter()
                    .collect(),
            ),
            delivery_mode: Some(2),
            priority: Some(7),
            correlation_id: Some(Bytes::from_static(b"c1")),
            expiration: Some(Bytes::from_static(b"100")),
            message_id: Some(Bytes::from_static(b"m1")),
            timestamp: Some(1_700_000_000),
            unknown: vec![(200, Bytes::from_static(b"future"))],
            ..Properties::default()
        }
        .encode()
    }

    #[test]
    fn reads_the_fields_the_core_needs() {
        let b = blob();
        assert_eq!(priority(&b), Some(7));
        assert_eq!(expiration(&b).unwrap().as_deref(), Some(&b"100"[..]));
        assert_eq!(
            headers(&b).unwrap().unwrap().get("a"),
            Some(&Value::str("x"))
        );
        assert_eq!(
            hash_property(&b, HashProperty::MessageId),
            Some(b"m1".to_vec())
        );
        assert_eq!(
            hash_property(&b, HashProperty::CorrelationId),
            Some(b"c1".to_vec())
        );
        assert_eq!(
            hash_property(&b, HashProperty::Timestamp),
            Some(b"1700000000".to_vec())
        );
        assert_eq!(priority(&Bytes::new()), None);
        assert_eq!(hash_property(&Bytes::new(), HashProperty::Timestamp), None);
    }

    #[test]
    fn header_edits_keep_every_other_field() {
        let b = blob();
        let h: Table = [("x", Value::I64(1))].into_iter().collect();
        let edited = with_headers(&b, Some(&h), true).unwrap();
        let mut want = Properties::decode(&b).unwrap();
        want.headers = Some(h);
        want.expiration = None;
        assert_eq!(Properties::decode(&edited).unwrap(), want);
        let none = with_headers(&b, None, false).unwrap();
        let mut want = Properties::decode(&b).unwrap();
        want.headers = None;
        assert_eq!(Properties::decode(&none).unwrap(), want);
        // Added to a blob without headers, in tag order.
        let only_mode = Properties {
            delivery_mode: Some(1),
            content_type: Some(Bytes::from_static(b"t")),
            ..Properties::default()
        }
        .encode();
        let added = with_header(&only_mode, "x-stream-offset", Value::I64(5)).unwrap();
        let p = Properties::decode(&added).unwrap();
        assert_eq!(p.delivery_mode, Some(1));
        assert_eq!(
            p.headers.unwrap().get("x-stream-offset"),
            Some(&Value::I64(5))
        );
        // Replaced in place.
        let again = with_header(&b, "b", Value::I8(2)).unwrap();
        let keys: Vec<String> = headers(&again)
            .unwrap()
            .unwrap()
            .iter()
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(keys, ["b", "a"]);
    }

    #[test]
    fn sorted_tables_keep_one_entry_per_key_the_last() {
        let t: Table = [
            ("b", Value::I32(1)),
            ("a", Value::I32(2)),
            ("b", Value::I32(3)),
        ]
        .into_iter()
        .collect();
        let s = sorted(&t);
        let got: Vec<(String, Value)> = s.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        assert_eq!(
            got,
            [
                ("a".to_string(), Value::I32(2)),
                ("b".to_string(), Value::I32(3))
            ]
        );
    }
}
