//! What the core's unit tests share (queue, stream and broker tests): sinks
//! that record what a queue hands them, a JSON property codec (so core tests
//! need no AMQP codec), and a queue over SimIo with a manual clock.
//!
//! Test-only: compiled under `cfg(test)`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::clock::{Clock, ManualClock};
use crate::message::Message;
use crate::queue::{
    ConfirmSink, ConsumerSink, DeadLetter, DeadLetterRouter, Delivery, HeaderEdit, PropertyCodec,
    Queue, QueueEnv, QueueSpec, Reason,
};
use crate::syncer::Syncer;
use amq_protocol_types::{AMQPValue, FieldTable, LongString};
use bytes::Bytes;
use ferry_log::{LogConfig, SimIo};
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::Arc;

/// The manual clock's start (ms since the epoch, a realistic value).
pub const T0: u64 = 1_700_000_000_000;

/// A long-string field value.
pub fn s(x: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(x))
}

/// A field table (x-arguments, headers) from pairs.
pub fn table(items: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in items {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// A string value (model).
pub fn ms(x: &str) -> ferry_model::Value {
    ferry_model::Value::str(x)
}

/// A model table (x-arguments, binding arguments, headers to match) from
/// pairs, in the order given.
pub fn mtable(items: &[(&str, ferry_model::Value)]) -> ferry_model::Table {
    items.iter().map(|(k, v)| (*k, v.clone())).collect()
}

/// A non-exclusive, non-auto-delete queue spec.
pub fn spec(name: &str, durable: bool, arguments: ferry_model::Table) -> QueueSpec {
    QueueSpec {
        name: Arc::from(name),
        durable,
        exclusive_owner: None,
        auto_delete: false,
        arguments,
    }
}

/// A message published to the default exchange with key `q`; tests adjust
/// the other fields with struct update syntax.
pub fn message(body: &str, persistent: bool) -> Message {
    Message {
        exchange: Arc::from(""),
        routing_key: Arc::from("q"),
        properties: Bytes::from_static(&[0, 0]),
        body: Bytes::copy_from_slice(body.as_bytes()),
        persistent,
        expiration_ms: None,
        bcc: Vec::new(),
    }
}

/// A message body as text.
pub fn body_of(m: &Message) -> String {
    String::from_utf8_lossy(&m.body).into_owned()
}

/// Takes every ready message with basic.get (auto-ack); their bodies.
pub fn drain(q: &Queue) -> Vec<String> {
    let mut out = Vec::new();
    while let Some((d, _)) = q.get(true).unwrap() {
        out.push(body_of(&d.message));
    }
    out
}

/// Records confirmed and failed publish sequence numbers.
#[derive(Debug, Default)]
pub struct Confirms {
    pub ok: Mutex<Vec<u64>>,
    pub failed: Mutex<Vec<u64>>,
}

impl ConfirmSink for Confirms {
    fn confirmed(&self, seqs: &[u64]) {
        self.ok.lock().extend_from_slice(seqs);
    }
    fn failed(&self, seqs: &[u64]) {
        self.failed.lock().extend_from_slice(seqs);
    }
}

/// A consumer with a fixed amount of credit (a prefetch window whose acks
/// the test hands back with `grant`).
#[derive(Debug, Default)]
pub struct Taker {
    credit: Mutex<u32>,
    pub got: Mutex<Vec<Delivery>>,
    pub cancelled: Mutex<bool>,
}

impl Taker {
    pub fn new(credit: u32) -> Arc<Self> {
        let t = Taker::default();
        *t.credit.lock() = credit;
        Arc::new(t)
    }
    pub fn grant(&self, n: u32) {
        *self.credit.lock() += n;
    }
    pub fn offsets(&self) -> Vec<u64> {
        self.got.lock().iter().map(|d| d.msg_id).collect()
    }
    pub fn bodies(&self) -> Vec<String> {
        self.got
            .lock()
            .iter()
            .map(|d| body_of(&d.message))
            .collect()
    }
}

impl ConsumerSink for Taker {
    fn reserve(&self) -> bool {
        let mut c = self.credit.lock();
        if *c == 0 {
            return false;
        }
        *c -= 1;
        true
    }
    fn unreserve(&self) {
        *self.credit.lock() += 1;
    }
    fn deliver(&self, _tag: &Arc<str>, d: Delivery) {
        self.got.lock().push(d);
    }
    fn cancelled(&self, _tag: &Arc<str>) {
        *self.cancelled.lock() = true;
    }
}

/// Collects dead letters instead of routing them.
#[derive(Debug, Default)]
pub struct Letters(Mutex<Vec<DeadLetter>>);

impl DeadLetterRouter for Letters {
    fn dead_letter(&self, letters: Vec<DeadLetter>) {
        self.0.lock().extend(letters);
    }
}

impl Letters {
    /// The letters so far (emptying the list).
    pub fn take_all(&self) -> Vec<DeadLetter> {
        std::mem::take(&mut *self.0.lock())
    }
    /// The letters so far as (body, reason).
    pub fn take(&self) -> Vec<(String, Reason)> {
        self.take_all()
            .into_iter()
            .map(|d| (body_of(&d.message), d.reason))
            .collect()
    }
}

/// Properties as JSON (priority, headers, expiration).
#[derive(Debug)]
pub struct JsonCodec;

#[derive(serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct JsonProps {
    pub priority: Option<u8>,
    #[serde(with = "amqp_headers")]
    pub headers: FieldTable,
    pub expiration: Option<String>,
}

impl JsonProps {
    pub fn parse(raw: &[u8]) -> std::result::Result<Self, String> {
        serde_json::from_slice(raw).map_err(|e| e.to_string())
    }
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap())
    }
}

impl PropertyCodec for JsonCodec {
    fn read(&self, raw: &[u8]) -> std::result::Result<HeaderEdit, String> {
        let p = JsonProps::parse(raw)?;
        Ok(HeaderEdit {
            headers: Some(p.headers),
            expiration: p.expiration,
        })
    }
    fn write(&self, raw: &[u8], e: &HeaderEdit) -> std::result::Result<Bytes, String> {
        // The priority is not part of an edit: it stays what it was.
        let p = JsonProps {
            priority: JsonProps::parse(raw).ok().and_then(|p| p.priority),
            headers: e.headers.clone().unwrap_or_default(),
            expiration: e.expiration.clone(),
        };
        Ok(p.encode())
    }
    fn priority(&self, raw: &[u8]) -> Option<u8> {
        JsonProps::parse(raw).ok()?.priority
    }
}

/// `JsonProps::headers` (amq-protocol, as `HeaderEdit` carries them) in
/// the JSON form of `exchange::table_serde`, through the model.
mod amqp_headers {
    use amq_protocol_types::{
        AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString,
    };
    use ferry_model::Value;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &FieldTable, s: S) -> Result<S::Ok, S::Error> {
        crate::exchange::table_serde::serialize(&crate::amqp_shim::table(t), s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<FieldTable, D::Error> {
        let t = crate::exchange::table_serde::deserialize(d)?;
        Ok(table(&t))
    }

    fn table(t: &ferry_model::Table) -> FieldTable {
        let mut out = FieldTable::default();
        for (k, v) in t.iter() {
            out.insert((&**k).into(), value(v));
        }
        out
    }

    fn value(v: &Value) -> AMQPValue {
        use AMQPValue as A;
        match v {
            Value::Bool(b) => A::Boolean(*b),
            Value::I8(x) => A::ShortShortInt(*x),
            Value::U8(x) => A::ShortShortUInt(*x),
            Value::I16(x) => A::ShortInt(*x),
            Value::U16(x) => A::ShortUInt(*x),
            Value::I32(x) => A::LongInt(*x),
            Value::U32(x) => A::LongUInt(*x),
            Value::I64(x) => A::LongLongInt(*x),
            Value::F32(x) => A::Float(*x),
            Value::F64(x) => A::Double(*x),
            Value::Decimal { scale, value } => A::DecimalValue(DecimalValue {
                scale: *scale,
                value: *value,
            }),
            Value::Str(s) => A::LongString(LongString::from(s.to_vec())),
            Value::Timestamp(t) => A::Timestamp(*t),
            Value::Table(t) => A::FieldTable(table(t)),
            Value::Array(a) => {
                A::FieldArray(FieldArray::from(a.iter().map(value).collect::<Vec<_>>()))
            }
            Value::Bytes(b) => A::ByteArray(ByteArray::from(b.to_vec())),
            Value::Void => A::Void,
        }
    }
}

/// The headers of a delivery whose properties `JsonCodec` wrote.
pub fn headers_of(d: &Delivery) -> FieldTable {
    JsonProps::parse(&d.message.properties).unwrap().headers
}

/// A whole broker over `io` at `/data`, on the manual clock, reading
/// properties with `JsonCodec`.
pub fn broker(io: &SimIo, clock: &Arc<ManualClock>) -> Arc<crate::Broker> {
    let b = crate::Broker::open_with_clock(
        crate::BrokerConfig::new(PathBuf::from("/data")),
        io.shared(),
        clock.clone(),
    )
    .unwrap();
    b.set_property_codec(Arc::new(JsonCodec));
    b
}

/// One durable queue `q` over SimIo with a manual clock at `T0`; its dead
/// letters are collected in `letters`.
pub struct Fixture {
    pub io: SimIo,
    pub clock: Arc<ManualClock>,
    pub letters: Arc<Letters>,
    router: Arc<dyn DeadLetterRouter>,
    syncer: Arc<Syncer>,
    json_codec: bool,
}

impl Fixture {
    pub fn new() -> Self {
        Self::with_syncer(Syncer::start(ferry_log::RoundPolicy::per_file()).unwrap())
    }

    /// Durability rounds only when the test runs them (`Syncer::manual`):
    /// nothing syncs behind the test's back (`sync_now` still works).
    pub fn with_manual_rounds() -> Self {
        Self::with_syncer(Syncer::manual(ferry_log::RoundPolicy::per_file()))
    }

    fn with_syncer(syncer: Arc<Syncer>) -> Self {
        let letters = Arc::new(Letters::default());
        Fixture {
            io: SimIo::new(),
            clock: ManualClock::new(T0),
            router: letters.clone(),
            letters,
            syncer,
            json_codec: false,
        }
    }

    /// Queues read message properties with `JsonCodec` (priorities,
    /// headers they add).
    pub fn with_json_codec() -> Self {
        Fixture {
            json_codec: true,
            ..Fixture::new()
        }
    }

    pub fn env(&self) -> QueueEnv {
        let mut env = QueueEnv::new(
            self.io.shared(),
            self.syncer.clone(),
            LogConfig {
                segment_bytes: 1 << 20,
                ..LogConfig::default()
            },
            1 << 20,
        )
        .with_clock(self.clock.clone());
        env.dead_letters = Some(Arc::downgrade(&self.router));
        if self.json_codec {
            let _ = env.codec.set(Arc::new(JsonCodec));
        }
        env
    }

    /// Opens (or reopens) queue `q` with these arguments.
    pub fn open(&self, a: &[(&str, ferry_model::Value)]) -> Arc<Queue> {
        Queue::open(
            spec("q", true, mtable(a)),
            Arc::from("/"),
            PathBuf::from("/data/q"),
            self.env(),
        )
        .unwrap()
    }

    pub fn now(&self) -> u64 {
        self.clock.now_ms()
    }
}
