//! Dead-lettering as RabbitMQ 3.10 does it (`rabbit_dead_letter`): what a
//! queue hands over when a message dies, the `x-death` header, and cycle
//! detection. Routing the new message is the vhost's job
//! ([`DeadLetterRouter`]); its properties are edited as a props blob
//! (`crate::props`), headers as a `ferry_model::Table`.

use bytes::Bytes;
use ferry_model::message::Message;
use ferry_model::{Table, Value};
use std::collections::HashSet;
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

type Headers = Table;

fn lstr(s: impl AsRef<[u8]>) -> Value {
    Value::Str(Bytes::copy_from_slice(s.as_ref()))
}

/// An Erlang-level value: what `rabbit_misc:table_lookup` gives without the
/// type, for the `=:=` comparisons RabbitMQ makes.
#[derive(PartialEq)]
enum Term<'a> {
    Bin(&'a [u8]),
    Int(i128),
    Other(&'a Value),
}

fn term(v: &Value) -> Term<'_> {
    match v {
        Value::Str(s) | Value::Bytes(s) => Term::Bin(s),
        Value::Timestamp(x) => Term::Int(i128::from(*x)),
        other => other
            .as_i64()
            .map_or(Term::Other(other), |n| Term::Int(i128::from(n))),
    }
}

fn key<'a>(t: &'a Table, k: &str) -> Option<Term<'a>> {
    t.get(k).map(term)
}

fn same_event(a: &Table, b: &Table) -> bool {
    key(a, "queue") == key(b, "queue") && key(a, "reason") == key(b, "reason")
}

/// `t` with `count` set to `n`, keys in order (as RabbitMQ's re-encoded
/// tables come out).
fn with_count(t: &Table, n: i64) -> Table {
    let mut m = t.clone();
    m.insert("count", Value::I64(n));
    crate::props::sorted(&m)
}

/// `group_by_queue_and_reason/1`: one table per (queue, reason), the first
/// seen, its count defaulting to how many there were. The fold prepends, so
/// with two or more tables the result comes out in reverse order, exactly
/// as RabbitMQ 3.10 reorders x-death on every death.
fn group(tables: Vec<Table>) -> Vec<Table> {
    if tables.len() < 2 {
        return tables;
    }
    let mut seen: Vec<&Table> = Vec::new();
    let mut out: Vec<Table> = Vec::new();
    for t in &tables {
        if seen.iter().any(|s| same_event(s, t)) {
            continue;
        }
        let matches: Vec<&Table> = tables.iter().filter(|x| same_event(x, t)).collect();
        let first = matches[0];
        let augmented = if first.get("count").is_some() {
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
    // Keys in order, as RabbitMQ's re-encoded table comes out.
    let mut info = Table::new();
    info.push("count", Value::I64(1));
    info.push("exchange", lstr(d.exchange));
    if let Some(e) = d.original_expiration {
        info.push("original-expiration", lstr(e));
    }
    info.push("queue", lstr(d.queue));
    info.push("reason", lstr(d.reason.as_str()));
    info.push(
        "routing-keys",
        Value::Array(d.routing_keys.iter().map(lstr).collect()),
    );
    info.push("time", Value::Timestamp(d.time));
    let x_death = match headers.remove("x-death") {
        None => {
            headers.insert("x-first-death-reason", lstr(d.reason.as_str()));
            headers.insert("x-first-death-queue", lstr(d.queue));
            headers.insert("x-first-death-exchange", lstr(d.exchange));
            vec![Value::Table(info)]
        }
        Some(Value::Array(a)) => {
            // RabbitMQ's fold would crash on a non-table element; skip it.
            let tables: Vec<Table> = a
                .into_iter()
                .filter_map(|v| match v {
                    Value::Table(t) => Some(t),
                    _ => None,
                })
                .collect();
            let (matches, others): (Vec<Table>, Vec<Table>) = group(tables)
                .into_iter()
                .partition(|t| same_event(t, &info));
            let head = match matches.first() {
                None => info,
                Some(m) => {
                    let n = match m.get("count").map(term) {
                        Some(Term::Int(n)) => i64::try_from(n).unwrap_or(i64::MAX),
                        _ => 0,
                    };
                    with_count(m, n.saturating_add(1))
                }
            };
            std::iter::once(head)
                .chain(others)
                .map(Value::Table)
                .collect()
        }
        // Not an array (a client re-published it mangled): start over.
        Some(_) => vec![Value::Table(info)],
    };
    headers.insert("x-death", Value::Array(x_death));
}

fn is_str(v: Option<&Value>, want: &[u8]) -> bool {
    matches!(v, Some(Value::Str(s)) if &s[..] == want)
}

/// RabbitMQ's `is_cycle/2`: whether a message whose x-death array is
/// `deaths` has gone round to `queue` with no rejection on the way (then it
/// is dropped instead of delivered there).
pub fn is_cycle(queue: &str, deaths: &[Value]) -> bool {
    let at = deaths.iter().position(|d| match d {
        Value::Table(t) => is_str(t.get("queue"), queue.as_bytes()),
        _ => false,
    });
    let Some(at) = at else { return false };
    deaths[..=at].iter().all(|d| match d {
        Value::Table(t) => !is_str(t.get("reason"), b"rejected"),
        // Something a client put there: not a fully automatic cycle.
        _ => false,
    })
}

/// The x-death array of `headers`, if it is one.
pub fn deaths(headers: &Headers) -> &[Value] {
    match headers.get("x-death") {
        Some(Value::Array(a)) => a,
        _ => &[],
    }
}

/// RabbitMQ's `header_routes/1`: the long strings of the `CC` and `BCC`
/// arrays (keys that are not UTF-8 cannot match a binding and are left out).
pub fn header_routes(headers: &Headers) -> Vec<&str> {
    let mut out = Vec::new();
    for h in ["CC", "BCC"] {
        if let Some(Value::Array(a)) = headers.get(h) {
            out.extend(a.iter().filter_map(Value::as_text));
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
    pub fn report(&self, target: &str, deaths: &[Value]) {
        let mut path: Vec<Arc<str>> = vec![Arc::from(target)];
        path.extend(deaths.iter().filter_map(|d| match d {
            Value::Table(t) => match t.get("queue") {
                Some(Value::Str(s)) => Some(Arc::from(String::from_utf8_lossy(s).as_ref())),
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
                let Value::Table(t) = d else {
                    panic!("not a table")
                };
                let s = |k: &str| match t.get(k) {
                    Some(Value::Str(s)) => String::from_utf8_lossy(s).into(),
                    other => panic!("{k}: {other:?}"),
                };
                let Some(Value::I64(n)) = t.get("count") else {
                    panic!("count")
                };
                (s("queue"), s("reason"), *n)
            })
            .collect()
    }

    fn e(q: &str, r: &str, n: i64) -> (String, String, i64) {
        (q.into(), r.into(), n)
    }

    fn get<'a>(h: &'a Headers, k: &str) -> &'a Value {
        h.get(k).unwrap()
    }

    #[test]
    fn first_death_sets_first_death_headers_and_fields() {
        let mut h = Headers::new();
        h.insert("keep", lstr("me"));
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
        assert_eq!(get(&h, "x-first-death-reason"), &lstr("expired"));
        assert_eq!(get(&h, "x-first-death-queue"), &lstr("q"));
        assert_eq!(get(&h, "x-first-death-exchange"), &lstr("amq.direct"));
        assert_eq!(get(&h, "keep"), &lstr("me"));
        let Value::Table(t) = &deaths(&h)[0] else {
            panic!()
        };
        assert_eq!(get(t, "count"), &Value::I64(1));
        assert_eq!(get(t, "time"), &Value::Timestamp(42));
        assert_eq!(get(t, "original-expiration"), &lstr("100"));
        assert_eq!(
            get(t, "routing-keys"),
            &Value::Array(vec![lstr("a"), lstr("b")])
        );
        // The layout RabbitMQ's re-encoded entry has: keys in order.
        let keys: Vec<&str> = t.iter().map(|(k, _)| &**k).collect();
        assert_eq!(
            keys,
            [
                "count",
                "exchange",
                "original-expiration",
                "queue",
                "reason",
                "routing-keys",
                "time"
            ]
        );
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
        assert_eq!(get(&h, "x-first-death-queue"), &lstr("a"));
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
        let Value::Table(t) = &deaths(&h)[0] else {
            panic!()
        };
        assert_eq!(get(t, "time"), &Value::Timestamp(1_700_000_000));
        assert_eq!(get(t, "original-expiration"), &lstr("5"));
        assert_eq!(get(t, "count"), &Value::I64(2));
    }

    #[test]
    fn invalid_x_death_is_reset_without_first_death_headers() {
        let mut h = Headers::new();
        h.insert("x-death", lstr("mangled"));
        add_death(&mut h, &death("a", Reason::Maxlen));
        assert_eq!(summary(&h), vec![e("a", "maxlen", 1)]);
        assert!(h.get("x-first-death-queue").is_none());
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
        h.insert("BCC", Value::Array(vec![lstr("z")]));
        h.insert(
            "CC",
            Value::Array(vec![lstr("x"), Value::I32(1), lstr("y")]),
        );
        assert_eq!(header_routes(&h), vec!["x", "y", "z"]);
    }
}
