//! The `x-consistent-hash` exchange type, as RabbitMQ 3.10's
//! rabbitmq_consistent_hash_exchange plugin defines it: the pure rules.
//!
//! * A binding's key is its weight: a decimal integer (an optional sign,
//!   digits, nothing else) of at least 1. Anything else is refused with a
//!   406 and the plugin's text (`The binding key must be an integer:
//!   <<"abc">>`, `The binding key must be greater than 0`).
//! * The exchange owns a ring of buckets: each binding, in the order the
//!   bindings were made, takes `weight` consecutive buckets. A message goes
//!   to exactly one destination, the owner of the bucket that jump
//!   consistent hashing (Lamport & Veach) picks for the hash of its first
//!   routing key, of the header named by the `hash-header` argument, or of
//!   the property named by `hash-property` (`message_id`, `correlation_id`,
//!   `timestamp`). A message without that header or property hashes as
//!   "undefined": all such messages go to one destination, as in the plugin.
//! * Jump hashing moves only the keys that land in new buckets when a
//!   binding is added (its share of the new total); removing a binding
//!   shifts the buckets after it down, as the plugin does.
//! * `hash-header` and `hash-property` together are a 406 (`hash-header and
//!   hash-property are mutually exclusive`); an unknown property is a 406
//!   (`Unsupported property: foo`); either argument not a long string
//!   crashes the plugin's validation, which RabbitMQ answers with a
//!   connection error 541 INTERNAL_ERROR: Ferry answers the same.
//!
//! The hash function is Ferry's own (FNV-1a, then a 64-bit finaliser), so
//! which queue a key lands on differs from RabbitMQ's choice; the spread
//! and stability properties are the same. A long string header hashes as
//! the routing key of the same bytes; another header value hashes its type
//! with a canonical encoding of its value (`header_hash`).

use super::binding::{Binding, Destination};
use ferry_model::{Table, Value};

/// The exchange type's wire name.
pub const TYPE_NAME: &str = "x-consistent-hash";
/// The argument naming the header to hash.
pub const HASH_HEADER: &str = "hash-header";
/// The argument naming the property to hash.
pub const HASH_PROPERTY: &str = "hash-property";

/// A message property a consistent-hash exchange can hash on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashProperty {
    /// `message_id`.
    MessageId,
    /// `correlation_id`.
    CorrelationId,
    /// `timestamp` (hashed as its decimal text, like the plugin).
    Timestamp,
}

impl HashProperty {
    fn parse(name: &[u8]) -> Option<Self> {
        match name {
            b"message_id" => Some(Self::MessageId),
            b"correlation_id" => Some(Self::CorrelationId),
            b"timestamp" => Some(Self::Timestamp),
            _ => None,
        }
    }
}

/// What an exchange hashes a message by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// The (first) routing key.
    RoutingKey,
    /// The value of this header (type included).
    Header(String),
    /// This property.
    Property(HashProperty),
}

/// Why the arguments of a consistent-hash exchange are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashArgError {
    /// 406 PRECONDITION_FAILED.
    #[error("hash-header and hash-property are mutually exclusive")]
    MutuallyExclusive,
    /// 406 PRECONDITION_FAILED.
    #[error("Unsupported property: {0}")]
    UnsupportedProperty(String),
    /// Not a long string: the plugin crashes, RabbitMQ closes the
    /// connection with 541 INTERNAL_ERROR (no detail text).
    #[error("")]
    NotALongString,
}

/// What an exchange declared with `arguments` hashes by, or why the
/// declare is refused (the plugin's `validate`).
pub fn hash_on(arguments: &Table) -> Result<HashOn, HashArgError> {
    let long = |name: &str| -> Result<Option<Vec<u8>>, HashArgError> {
        match arguments.get(name) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s.to_vec())),
            Some(_) => Err(HashArgError::NotALongString),
        }
    };
    match (long(HASH_HEADER)?, long(HASH_PROPERTY)?) {
        (None, None) => Ok(HashOn::RoutingKey),
        (Some(h), None) => Ok(HashOn::Header(String::from_utf8_lossy(&h).into_owned())),
        (None, Some(p)) => HashProperty::parse(&p)
            .map(HashOn::Property)
            .ok_or_else(|| {
                HashArgError::UnsupportedProperty(String::from_utf8_lossy(&p).into_owned())
            }),
        (Some(_), Some(_)) => Err(HashArgError::MutuallyExclusive),
    }
}

/// The weight a binding key stands for, or the 406 text refusing it.
/// Weights beyond `u32::MAX` count as `u32::MAX` (the plugin would try to
/// allocate that many buckets).
pub fn weight(key: &str) -> Result<u64, String> {
    let digits = key.strip_prefix(['+', '-']).unwrap_or(key);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "The binding key must be an integer: {}",
            erlang_binary(key.as_bytes())
        ));
    }
    if key.starts_with('-') || digits.bytes().all(|b| b == b'0') {
        return Err("The binding key must be greater than 0".to_string());
    }
    Ok(digits
        .parse::<u64>()
        .map_or(u64::from(u32::MAX), |w| w.min(u64::from(u32::MAX))))
}

/// A binary as Erlang's `~p` prints it: `<<"text">>` with `"` and `\`
/// escaped, `<<>>` when empty, `<<1,2,3>>` when not printable.
fn erlang_binary(b: &[u8]) -> String {
    if b.is_empty() {
        return "<<>>".to_string();
    }
    let text = std::str::from_utf8(b).ok().filter(|s| {
        s.chars()
            .all(|c| !c.is_control() || matches!(c, '\n' | '\t' | '\r'))
    });
    match text {
        Some(s) => format!("<<\"{}\">>", ferry_model::args::erlang_escaped(s)),
        None => {
            let parts: Vec<String> = b.iter().map(u8::to_string).collect();
            format!("<<{}>>", parts.join(","))
        }
    }
}

/// Reads a property of the message being routed (None: absent, or the
/// properties cannot be read).
pub type PropertyLookup<'a> = &'a dyn Fn(HashProperty) -> Option<Vec<u8>>;

/// The buckets of one exchange: its bindings in the order they were made,
/// each with its weight, and the running total for the lookup.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ring {
    /// (binding, weight), in binding order.
    entries: Vec<(Binding, u64)>,
    /// `ends[i]` = total weight of `entries[..=i]`.
    ends: Vec<u64>,
}

impl Ring {
    /// Adds a binding's buckets after the existing ones. A key that is not
    /// a valid weight (bindings are validated before they are made; this
    /// covers definitions written elsewhere) counts as weight 1.
    pub(crate) fn insert(&mut self, b: &Binding) {
        let w = weight(&b.routing_key).unwrap_or(1);
        let end = self.total().saturating_add(w);
        self.entries.push((b.clone(), w));
        self.ends.push(end);
    }

    /// Removes a binding's buckets; the ones after it shift down.
    pub(crate) fn remove(&mut self, b: &Binding) {
        let Some(i) = self.entries.iter().position(|(e, _)| e == b) else {
            return;
        };
        self.entries.remove(i);
        self.ends.truncate(i);
        let mut total = self.total();
        for (_, w) in &self.entries[i..] {
            total = total.saturating_add(*w);
            self.ends.push(total);
        }
    }

    fn total(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// The bindings in ring order.
    pub(crate) fn bindings(&self) -> Vec<&Binding> {
        self.entries.iter().map(|(b, _)| b).collect()
    }

    /// The destination of a message whose hash is `hash`.
    pub(crate) fn pick(&self, hash: u64) -> Option<&Destination> {
        let n = self.total();
        if n == 0 {
            return None;
        }
        let bucket = jump(hash, n);
        let i = self.ends.partition_point(|end| *end <= bucket);
        self.entries.get(i).map(|(b, _)| &b.destination)
    }
}

/// The bucket in `0..n` for `key` (jump consistent hash; `n` > 0).
pub fn jump(mut key: u64, n: u64) -> u64 {
    let mut b: u64 = 0;
    let mut j: u64 = 0;
    while j < n {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        let r = ((key >> 33) + 1) as f64;
        // (b + 1) * 2^31 / r, at most 2^31 * n: saturate above u64.
        let next = (b as f64 + 1.0) * (f64::from(1u32 << 31) / r);
        j = if next >= u64::MAX as f64 {
            u64::MAX
        } else {
            next as u64
        };
    }
    b
}

/// Ferry's stable 64-bit hash state: FNV-1a over the bytes fed, then the
/// splitmix64 finaliser so nearby inputs spread over all bits. Fixed by
/// this file alone (no dependency's formatting or hashing), so a key's
/// bucket never changes with a dependency bump (pinned by unit tests).
struct StableHasher(u64);

impl StableHasher {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// A type tag, then the separator no tag contains.
    fn tag(&mut self, tag: &[u8]) {
        self.write(tag);
        self.write(&[0xff]);
    }

    /// Variable-length bytes, prefixed by their length (so nested values
    /// cannot run into each other).
    fn sized(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }

    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 30;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }
}

/// Ferry's stable 64-bit hash of a tagged value (see `StableHasher`).
pub fn hash_value(tag: &[u8], bytes: &[u8]) -> u64 {
    let mut h = StableHasher::new();
    h.tag(tag);
    h.write(bytes);
    h.finish()
}

/// The tag a routing key (and a long string header) is hashed under.
const KEY_TAG: &[u8] = b"key";

/// The hash of a header value. A long string (the common case) hashes
/// exactly as a routing key of the same bytes does. Any other value hashes
/// its type with it (as the plugin hashes `{Type, Value}`): the type name,
/// then a canonical encoding of the value (see [`feed_value`]).
pub(crate) fn header_hash(v: &Value) -> u64 {
    if let Value::Str(s) = v {
        return hash_value(KEY_TAG, s);
    }
    let mut h = StableHasher::new();
    feed_value(&mut h, v);
    h.finish()
}

/// Feeds a field value's canonical encoding: its type name and the
/// separator, then integers and floats as fixed-width little-endian bytes
/// (floats by their bit pattern), a decimal as its scale then its value,
/// strings and byte arrays length-prefixed, an array as its length then
/// each element, a table as its length then each (length-prefixed) key and
/// value in key order. Recursion is bounded: the AMQP codec refuses field
/// values nested deeper than 32 levels, HTTP's JSON parser deeper than 128.
fn feed_value(h: &mut StableHasher, v: &Value) {
    use Value as V;
    h.tag(super::args::type_name(v).as_bytes());
    match v {
        V::Bool(b) => h.write(&[u8::from(*b)]),
        V::I8(n) => h.write(&n.to_le_bytes()),
        V::U8(n) => h.write(&n.to_le_bytes()),
        V::I16(n) => h.write(&n.to_le_bytes()),
        V::U16(n) => h.write(&n.to_le_bytes()),
        V::I32(n) => h.write(&n.to_le_bytes()),
        V::U32(n) => h.write(&n.to_le_bytes()),
        V::I64(n) => h.write(&n.to_le_bytes()),
        V::F32(f) => h.write(&f.to_bits().to_le_bytes()),
        V::F64(f) => h.write(&f.to_bits().to_le_bytes()),
        V::Decimal { scale, value } => {
            h.write(&[*scale]);
            h.write(&value.to_le_bytes());
        }
        V::Str(s) => h.sized(s),
        V::Bytes(b) => h.sized(b),
        V::Timestamp(t) => h.write(&t.to_le_bytes()),
        V::Array(a) => {
            h.write(&(a.len() as u64).to_le_bytes());
            for item in a {
                feed_value(h, item);
            }
        }
        V::Table(t) => {
            // Key order, the first of a repeated key: the sorted table the
            // hash was defined on.
            let entries = super::args::sorted(t);
            h.write(&(entries.len() as u64).to_le_bytes());
            for (k, item) in entries {
                h.sized(k.as_bytes());
                feed_value(h, item);
            }
        }
        Value::Void => {}
    }
}

/// The hash of a message: by its routing key, a header or a property.
pub(crate) fn message_hash(
    on: &HashOn,
    routing_key: &str,
    headers: Option<&Table>,
    properties: Option<PropertyLookup<'_>>,
) -> u64 {
    const UNDEFINED: u64 = 0x9e37_79b9_7f4a_7c15;
    match on {
        HashOn::RoutingKey => hash_value(KEY_TAG, routing_key.as_bytes()),
        HashOn::Header(name) => match headers.and_then(|h| h.get(name)) {
            Some(v) => header_hash(v),
            None => UNDEFINED,
        },
        HashOn::Property(p) => match properties.and_then(|f| f(*p)) {
            Some(v) => hash_value(b"prop", &v),
            None => UNDEFINED,
        },
    }
}

#[cfg(test)]
#[path = "consistent_hash_tests.rs"]
mod tests;
