//! Dead-lettering as RabbitMQ 3.10 does it (`rabbit_dead_letter`): what a
//! queue hands over when a message dies, the `x-death` header, and cycle
//! detection. Routing the new message is the vhost's job
//! ([`DeadLetterRouter`]); re-encoding properties is the codec's, passed in
//! from the front end ([`PropertyCodec`]) so the core never encodes AMQP.

use crate::message::Message;
use amq_protocol_types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use bytes::Bytes;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Why a message died (the `reason` of its x-death entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its TTL passed.
    Expired,
    /// The queue's length limit pushed it out (or refused it).
    Maxlen,
    /// basic.reject / basic.nack without requeue.
    Rejected,
    /// Returned to the queue more often than `x-delivery-limit` allows.
    DeliveryLimit,
}

impl Reason {
    /// The x-death text.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Expired => "expired",
            Reason::Maxlen => "maxlen",
            Reason::Rejected => "rejected",
            Reason::DeliveryLimit => "delivery_limit",
        }
    }

    /// Its code in a Drop record.
    pub fn code(self) -> u8 {
        match self {
            Reason::Expired => 1,
            Reason::Maxlen => 2,
            Reason::Rejected => 3,
            Reason::DeliveryLimit => 4,
        }
    }

    /// From a Drop record code.
    pub fn from_code(c: u8) -> Option<Reason> {
        match c {
            1 => Some(Reason::Expired),
            2 => Some(Reason::Maxlen),
            3 => Some(Reason::Rejected),
            4 => Some(Reason::DeliveryLimit),
            _ => None,
        }
    }
}

/// A message a queue let go of, to be republished to its dead-letter
/// exchange.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The message as it was in the queue.
    pub message: Arc<Message>,
    /// Why.
    pub reason: Reason,
    /// The queue it died in.
    pub queue: Arc<str>,
    /// `x-dead-letter-exchange`.
    pub exchange: Arc<str>,
    /// `x-dead-letter-routing-key` (None: the message's own keys).
    pub routing_key: Option<Arc<str>>,
}

/// Republishes dead letters (the vhost).
pub trait DeadLetterRouter: Send + Sync + std::fmt::Debug {
    /// Routes each letter to its exchange. Called without any queue lock.
    fn dead_letter(&self, letters: Vec<DeadLetter>);

    /// A running stream read a record that does not decode and stopped
    /// (`reason`): its vhost reports it as crashed. Called without any
    /// lock, from a thread of its own.
    fn stream_crashed(&self, _name: &str, _reason: String) {}
}

/// The two properties dead-lettering changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderEdit {
    /// The `headers` table.
    pub headers: Option<FieldTable>,
    /// The `expiration` property.
    pub expiration: Option<String>,
}

/// Decodes and re-encodes raw AMQP content-header properties (implemented
/// by the front end with its codec).
pub trait PropertyCodec: Send + Sync + std::fmt::Debug {
    /// The headers and expiration of `raw`.
    fn read(&self, raw: &[u8]) -> Result<HeaderEdit, String>;
    /// `raw` with its headers and expiration replaced by `edit`'s (absent
    /// in `edit` = removed); every other property kept.
    fn write(&self, raw: &[u8], edit: &HeaderEdit) -> Result<Bytes, String>;
    /// The `priority` property of `raw` (priority queues read it once, at
    /// enqueue; the level goes into the Enqueue record). A codec that
    /// cannot tell says None: the message gets priority 0.
    fn priority(&self, raw: &[u8]) -> Option<u8> {
        let _ = raw;
        None
    }
    /// The `message_id`, `correlation_id` or `timestamp` (as decimal text)
    /// of `raw`, which a consistent-hash exchange with `hash-property`
    /// hashes. None: absent or unreadable.
    fn hash_property(
        &self,
        raw: &[u8],
        property: crate::exchange::consistent_hash::HashProperty,
    ) -> Option<Vec<u8>> {
        let _ = (raw, property);
        None
    }
}

type Headers = BTreeMap<ShortString, AMQPValue>;

fn lstr(s: impl AsRef<[u8]>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_ref().to_vec()))
}

/// An Erlang-level value: what `rabbit_misc:table_lookup` gives without the
/// type, for the `=:=` comparisons RabbitMQ makes.
#[derive(PartialEq)]
enum Term<'a> {
    Bin(&'a [u8]),
    Int(i128),
    Other(&'a AMQPValue),
}

fn term(v: &AMQPValue) -> Term<'_> {
    use AMQPValue as V;
    match v {
        V::LongString(s) => Term::Bin(s.as_bytes()),
        V::ShortString(s) => Term::Bin(s.as_str().as_bytes()),
        V::ByteArray(b) => Term::Bin(b.as_slice()),
        V::ShortShortInt(x) => Term::Int(i128::from(*x)),
        V::ShortShortUInt(x) => Term::Int(i128::from(*x)),
        V::ShortInt(x) => Term::Int(i128::from(*x)),
        V::ShortUInt(x) => Term::Int(i128::from(*x)),
        V::LongInt(x) => Term::Int(i128::from(*x)),
        V::LongUInt(x) => Term::Int(i128::from(*x)),
        V::LongLongInt(x) => Term::Int(i128::from(*x)),
        V::Timestamp(x) => Term::Int(i128::from(*x)),
        other => Term::Other(other),
    }
}

fn key<'a>(t: &'a FieldTable, k: &str) -> Option<Term<'a>> {
    t.inner().get(k).map(term)
}

fn same_event(a: &FieldTable, b: &FieldTable) -> bool {
    key(a, "queue") == key(b, "queue") && key(a, "reason") == key(b, "reason")
}

fn with_count(t: &FieldTable, n: i64) -> FieldTable {
    let mut m = t.inner().clone();
    m.insert("count".into(), AMQPValue::LongLongInt(n));
    FieldTable::from(m)
}

/// `group_by_queue_and_reason/1`: one table per (queue, reason), the first
/// seen, its count defaulting to how many there were. The fold prepends, so
/// with two or more tables the result comes out in reverse order, exactly
/// as RabbitMQ 3.10 reorders x-death on every death.
fn group(tables: Vec<FieldTable>) -> Vec<FieldTable> {
    if tables.len() < 2 {
        return tables;
    }
    let mut seen: Vec<&FieldTable> = Vec::new();
    let mut out: Vec<FieldTable> = Vec::new();
    for t in &tables {
        if seen.iter().any(|s| same_event(s, t)) {
            continue;
        }
        let matches: Vec<&FieldTable> = tables.iter().filter(|x| same_event(x, t)).collect();
        let first = matches[0];
        let augmented = if first.contains_key("count") {
            first.clone()
        } else {
            with_count(first, matches.len() as i64)
        };
        out.insert(0, augmented);
        seen.push(t);
    }
    out
}

/// What one death adds to the x-death header.
#[derive(Debug, Clone)]
pub struct Death<'a> {
    /// Why.
    pub reason: Reason,
    /// Queue it died in.
    pub queue: &'a str,
    /// Seconds since the epoch.
    pub time: u64,
    /// Exchange the message was (last) published to.
    pub exchange: &'a str,
    /// Its routing keys: the publish key, then CC and BCC keys.
    pub routing_keys: &'a [&'a str],
    /// Its `expiration` property, if it had one.
    pub original_expiration: Option<&'a str>,
}

/// Records a death in `headers` as `rabbit_dead_letter:update_x_death_header`
/// does: the first death also sets `x-first-death-{reason,queue,exchange}`;
/// a later one for the same (queue, reason) increments that entry's count
/// (keeping its other fields) and moves it to the front; any other is
/// prepended with count 1.
pub fn add_death(headers: &mut Headers, d: &Death<'_>) {
    let mut info = FieldTable::default();
    info.insert("count".into(), AMQPValue::LongLongInt(1));
    info.insert("reason".into(), lstr(d.reason.as_str()));
    info.insert("queue".into(), lstr(d.queue));
    info.insert("time".into(), AMQPValue::Timestamp(d.time));
    info.insert("exchange".into(), lstr(d.exchange));
    info.insert(
        "routing-keys".into(),
        AMQPValue::FieldArray(FieldArray::from(
            d.routing_keys.iter().map(lstr).collect::<Vec<_>>(),
        )),
    );
    if let Some(e) = d.original_expiration {
        info.insert("original-expiration".into(), lstr(e));
    }
    let x_death = match headers.remove("x-death") {
        None => {
            headers.insert("x-first-death-reason".into(), lstr(d.reason.as_str()));
            headers.insert("x-first-death-queue".into(), lstr(d.queue));
            headers.insert("x-first-death-exchange".into(), lstr(d.exchange));
            vec![AMQPValue::FieldTable(info)]
        }
        Some(AMQPValue::FieldArray(a)) => {
            // RabbitMQ's fold would crash on a non-table element; skip it.
            let tables: Vec<FieldTable> = a
                .as_slice()
                .iter()
                .filter_map(|v| match v {
                    AMQPValue::FieldTable(t) => Some(t.clone()),
                    _ => None,
                })
                .collect();
            let (matches, others): (Vec<FieldTable>, Vec<FieldTable>) = group(tables)
                .into_iter()
                .partition(|t| same_event(t, &info));
            let head = match matches.first() {
                None => info,
                Some(m) => {
                    let n = match m.inner().get("count").map(term) {
                        Some(Term::Int(n)) => i64::try_from(n).unwrap_or(i64::MAX),
                        _ => 0,
                    };
                    with_count(m, n.saturating_add(1))
                }
            };
            std::iter::once(head)
                .chain(others)
                .map(AMQPValue::FieldTable)
                .collect()
        }
        // Not an array (a client re-published it mangled): start over.
        Some(_) => vec![AMQPValue::FieldTable(info)],
    };
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(x_death)),
    );
}

/// RabbitMQ's `is_cycle/2`: whether a message whose x-death array is
/// `deaths` has gone round to `queue` with no rejection on the way (then it
/// is dropped instead of delivered there).
pub fn is_cycle(queue: &str, deaths: &[AMQPValue]) -> bool {
    let at = deaths.iter().position(|d| match d {
        AMQPValue::FieldTable(t) => {
            matches!(t.inner().get("queue"), Some(AMQPValue::LongString(s)) if s.as_bytes() == queue.as_bytes())
        }
        _ => false,
    });
    let Some(at) = at else { return false };
    deaths[..=at].iter().all(|d| match d {
        AMQPValue::FieldTable(t) => !matches!(
            t.inner().get("reason"),
            Some(AMQPValue::LongString(s)) if s.as_bytes() == b"rejected"
        ),
        // Something a client put there: not a fully automatic cycle.
        _ => false,
    })
}

/// The x-death array of `headers`, if it is one.
pub fn deaths(headers: &Headers) -> &[AMQPValue] {
    match headers.get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice(),
        _ => &[],
    }
}

/// RabbitMQ's `header_routes/1`: the long strings of the `CC` and `BCC`
/// arrays (keys that are not UTF-8 cannot match a binding and are left out).
pub fn header_routes(headers: &Headers) -> Vec<&str> {
    let mut out = Vec::new();
    for h in ["CC", "BCC"] {
        if let Some(AMQPValue::FieldArray(a)) = headers.get(h) {
            out.extend(a.as_slice().iter().filter_map(|v| match v {
                AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
                _ => None,
            }));
        }
    }
    out
}

/// Remembers which cycles were reported, so each is logged once (as
/// RabbitMQ does), with a bound on the memory that takes.
#[derive(Debug, Default)]
pub struct CycleLog(parking_lot::Mutex<HashSet<Vec<Arc<str>>>>);

impl CycleLog {
    /// Logs a dropped message's cycle the first time it is seen.
    pub fn report(&self, target: &str, deaths: &[AMQPValue]) {
        let mut path: Vec<Arc<str>> = vec![Arc::from(target)];
        path.extend(deaths.iter().filter_map(|d| match d {
            AMQPValue::FieldTable(t) => match t.inner().get("queue") {
                Some(AMQPValue::LongString(s)) => {
                    Some(Arc::from(String::from_utf8_lossy(s.as_bytes()).as_ref()))
                }
                _ => None,
            },
            _ => None,
        }));
        let mut seen = self.0.lock();
        if seen.len() < 1024 && seen.insert(path.clone()) {
            tracing::warn!(
                cycle = ?path,
                "message dropped: dead-letter queues cycle detected; this cycle will not be reported again"
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn death(queue: &'static str, reason: Reason) -> Death<'static> {
        Death {
            reason,
            queue,
            time: 1_700_000_000,
            exchange: "",
            routing_keys: &["k"],
            original_expiration: None,
        }
    }

    fn summary(h: &Headers) -> Vec<(String, String, i64)> {
        deaths(h)
            .iter()
            .map(|d| {
                let AMQPValue::FieldTable(t) = d else {
                    panic!("not a table")
                };
                let s = |k: &str| match t.inner().get(k) {
                    Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into(),
                    other => panic!("{k}: {other:?}"),
                };
                let Some(AMQPValue::LongLongInt(n)) = t.inner().get("count") else {
                    panic!("count")
                };
                (s("queue"), s("reason"), *n)
            })
            .collect()
    }

    fn e(q: &str, r: &str, n: i64) -> (String, String, i64) {
        (q.into(), r.into(), n)
    }

    #[test]
    fn first_death_sets_first_death_headers_and_fields() {
        let mut h = Headers::new();
        h.insert("keep".into(), lstr("me"));
        add_death(
            &mut h,
            &Death {
                reason: Reason::Expired,
                queue: "q",
                time: 42,
                exchange: "amq.direct",
                routing_keys: &["a", "b"],
                original_expiration: Some("100"),
            },
        );
        assert_eq!(h["x-first-death-reason"], lstr("expired"));
        assert_eq!(h["x-first-death-queue"], lstr("q"));
        assert_eq!(h["x-first-death-exchange"], lstr("amq.direct"));
        assert_eq!(h["keep"], lstr("me"));
        let AMQPValue::FieldTable(t) = &deaths(&h)[0] else {
            panic!()
        };
        let t = t.inner();
        assert_eq!(t["count"], AMQPValue::LongLongInt(1));
        assert_eq!(t["time"], AMQPValue::Timestamp(42));
        assert_eq!(t["original-expiration"], lstr("100"));
        assert_eq!(
            t["routing-keys"],
            AMQPValue::FieldArray(vec![lstr("a"), lstr("b")].into())
        );
        assert_eq!(t.len(), 7);
    }

    /// The sequence RabbitMQ 3.10.8 produced for a message rejected round
    /// a -> b -> c -> a -> b -> c (see tests/python/test_queue_features.py).
    #[test]
    fn repeated_deaths_follow_rabbitmq_3_10_order_and_counts() {
        let mut h = Headers::new();
        let r = "rejected";
        let steps = [
            ("a", vec![e("a", r, 1)]),
            ("b", vec![e("b", r, 1), e("a", r, 1)]),
            ("c", vec![e("c", r, 1), e("a", r, 1), e("b", r, 1)]),
            ("a", vec![e("a", r, 2), e("b", r, 1), e("c", r, 1)]),
            ("b", vec![e("b", r, 2), e("c", r, 1), e("a", r, 2)]),
        ];
        for (q, want) in steps {
            add_death(&mut h, &death(q, Reason::Rejected));
            assert_eq!(summary(&h), want);
        }
        assert_eq!(h["x-first-death-queue"], lstr("a"));
    }

    #[test]
    fn a_repeated_death_keeps_the_old_entry_fields() {
        let mut h = Headers::new();
        let mut d = death("a", Reason::Expired);
        d.original_expiration = Some("5");
        add_death(&mut h, &d);
        let mut d2 = death("a", Reason::Expired);
        d2.time = 99;
        add_death(&mut h, &d2);
        let AMQPValue::FieldTable(t) = &deaths(&h)[0] else {
            panic!()
        };
        assert_eq!(t.inner()["time"], AMQPValue::Timestamp(1_700_000_000));
        assert_eq!(t.inner()["original-expiration"], lstr("5"));
        assert_eq!(t.inner()["count"], AMQPValue::LongLongInt(2));
    }

    #[test]
    fn invalid_x_death_is_reset_without_first_death_headers() {
        let mut h = Headers::new();
        h.insert("x-death".into(), lstr("mangled"));
        add_death(&mut h, &death("a", Reason::Maxlen));
        assert_eq!(summary(&h), vec![e("a", "maxlen", 1)]);
        assert!(!h.contains_key("x-first-death-queue"));
    }

    #[test]
    fn cycles_without_a_rejection_are_detected() {
        let mut h = Headers::new();
        add_death(&mut h, &death("a", Reason::Expired));
        assert!(is_cycle("a", deaths(&h)));
        assert!(!is_cycle("b", deaths(&h)));
        add_death(&mut h, &death("b", Reason::Expired));
        assert!(is_cycle("a", deaths(&h)));
        let mut h = Headers::new();
        add_death(&mut h, &death("a", Reason::Rejected));
        add_death(&mut h, &death("b", Reason::Expired));
        assert!(!is_cycle("a", deaths(&h)), "a rejection breaks the cycle");
        assert!(is_cycle("b", deaths(&h)));
    }

    #[test]
    fn header_routes_are_cc_then_bcc() {
        let mut h = Headers::new();
        h.insert("BCC".into(), AMQPValue::FieldArray(vec![lstr("z")].into()));
        h.insert(
            "CC".into(),
            AMQPValue::FieldArray(vec![lstr("x"), AMQPValue::LongInt(1), lstr("y")].into()),
        );
        assert_eq!(header_routes(&h), vec!["x", "y", "z"]);
    }
}
