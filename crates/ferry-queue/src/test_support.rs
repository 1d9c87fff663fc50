//! What the queue and stream unit tests share (and ferry-broker's, through
//! the `test-support` feature): sinks
//! that record what a queue hands them, message properties as props blobs
//! (built and read with ferry-model),
//! and a queue over SimIo with a manual clock.
//!
//! Test-only: compiled under `cfg(test)` or the `test-support` feature.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::clock::{Clock, ManualClock};
use crate::queue::{
    ConfirmSink, ConsumerSink, DeadLetter, DeadLetterRouter, Delivery, Queue, QueueEnv, QueueSpec,
    Reason,
};
use crate::syncer::Syncer;
use bytes::Bytes;
use ferry_log::{LogConfig, SimIo};
use ferry_model::message::Message;
use ferry_model::Table;
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::Arc;

/// The manual clock's start (ms since the epoch, a realistic value).
pub const T0: u64 = 1_700_000_000_000;

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

/// The properties tests give messages (priority, headers, expiration),
/// encoded as the props blob a front end would have made.
#[derive(Default)]
pub struct TestProps {
    pub priority: Option<u8>,
    pub headers: Table,
    pub expiration: Option<String>,
}

impl TestProps {
    pub fn encode(&self) -> Bytes {
        ferry_model::Properties {
            priority: self.priority,
            headers: (!self.headers.is_empty()).then(|| self.headers.clone()),
            expiration: self
                .expiration
                .as_ref()
                .map(|e| Bytes::copy_from_slice(e.as_bytes())),
            ..ferry_model::Properties::default()
        }
        .encode()
    }
}

/// A props blob with these headers and expiration.
pub fn props(headers: Table, expiration: Option<&str>) -> Bytes {
    TestProps {
        priority: None,
        headers,
        expiration: expiration.map(str::to_owned),
    }
    .encode()
}

/// The headers of a props blob (empty when it has none).
pub fn headers_in(blob: &Bytes) -> Table {
    crate::props::headers(blob).unwrap().unwrap_or_default()
}

/// The headers of a delivery.
pub fn headers_of(d: &Delivery) -> Table {
    headers_in(&d.message.properties)
}

/// Installs the AMQP converter for v1 records' properties, as the server
/// does.
#[cfg(test)]
pub fn install_legacy_converter() {
    crate::props::set_legacy_converter(|raw| {
        ferry_amqp::model::props_to_model(raw).map_err(|e| e.to_string())
    });
}

/// One durable queue `q` over SimIo with a manual clock at `T0`; its dead
/// letters are collected in `letters`.
pub struct Fixture {
    pub io: SimIo,
    pub clock: Arc<ManualClock>,
    pub letters: Arc<Letters>,
    router: Arc<dyn DeadLetterRouter>,
    syncer: Arc<Syncer>,
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
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
