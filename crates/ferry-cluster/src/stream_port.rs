//! A node outside a replicated stream's group serving its clients'
//! consumers of the stream ([`StreamReaders`], the stream's `StreamPort`):
//! a reader task per consumer asks a member for the committed records
//! from the consumer's offset (`stream_served` there), never more than
//! the consumer's credit takes now, and hands them to the stream, which
//! delivers them as a member's consumer gets them.
//!
//! * The member asked is the group's guessed leader (`leadership`, the
//!   guess the node's forwarded publishes use); any member serves, so a
//!   member that fails or refuses moves the guess to the next one and the
//!   read is asked again from the same offset: nothing is skipped or
//!   delivered twice, as every replica holds the same records at the same
//!   offsets.
//! * The first request carries the consumer's `x-stream-offset` (the
//!   member resolves it); the following ones the offset to go on from.
//! * A consumer at the tail keeps one read waiting on the member (a long
//!   poll of [`WAIT`]); one whose channel is full asks for nothing until
//!   an ack or a freed channel wakes its reader.
//! * Cancelling the consumer (basic.cancel, its channel closing, the
//!   stream deleted) wakes its reader, which drops any read in flight and
//!   ends.

use crate::leadership::Leadership;
use crate::link::Links;
use crate::wire::stream::{self, ReadAnswer, ReadRequest, ReadStart, MAX_READ_BYTES};
use crate::wire::KIND_REPLY;
use bytes::Bytes;
use ferry_queue::stream::{record, OffsetSpec, Stream, StreamPort, StreamRecord};
use ferry_raft::NodeId;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A consumer asks for at most this many records at a time.
const CAP: u32 = 256;
/// How long a member may hold a read while nothing is committed at its
/// offset.
const WAIT: Duration = Duration::from_secs(3);
/// How long a read may take beyond its wait.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pauses between failed reads (doubling from the first to the last).
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// Failed reads in a row before one is logged as a warning.
const WARN_AFTER: u32 = 20;

/// The readers of a stream's consumers on this node (outside its group).
#[derive(Clone)]
pub struct StreamReaders {
    shared: Arc<Shared>,
}

struct Shared {
    lead: Leadership,
    links: Arc<Links>,
    group: u64,
    /// Weak: the stream holds this port.
    stream: Weak<Stream>,
    rt: tokio::runtime::Handle,
    /// Each consumer's reader.
    readers: Mutex<HashMap<u64, Reader>>,
}

/// A consumer's reader: its wake-up and its task.
struct Reader {
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for StreamReaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReaders")
            .field("group", &self.shared.group)
            .field("readers", &self.shared.readers.lock().len())
            .finish()
    }
}

impl StreamReaders {
    /// The readers of `stream` (of group `group`), asking the members
    /// `lead` guesses. Needs a tokio runtime (its tasks run there).
    pub fn new(lead: Leadership, links: Arc<Links>, group: u64, stream: &Arc<Stream>) -> Self {
        StreamReaders {
            shared: Arc::new(Shared {
                lead,
                links,
                group,
                stream: Arc::downgrade(stream),
                rt: tokio::runtime::Handle::current(),
                readers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Stops every reader (the node no longer serves the stream from
    /// outside its group).
    pub fn shutdown(&self) {
        for (_, r) in self.shared.readers.lock().drain() {
            r.task.abort();
        }
    }

    /// Readers running now.
    pub fn len(&self) -> usize {
        self.shared.readers.lock().len()
    }

    /// Whether no reader runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl StreamPort for StreamReaders {
    fn attach(&self, id: u64, start: OffsetSpec) {
        let wake = Arc::new(Notify::new());
        // Under the map's lock: the task removes itself once done, which
        // must come after it is added.
        let mut readers = self.shared.readers.lock();
        let task = self
            .shared
            .rt
            .spawn(run_reader(self.shared.clone(), id, start, wake.clone()));
        if let Some(old) = readers.insert(id, Reader { wake, task }) {
            old.task.abort();
        }
    }

    fn wake(&self, id: u64) {
        if let Some(r) = self.shared.readers.lock().get(&id) {
            r.wake.notify_one();
        }
    }
}

/// How one read went.
enum Step {
    /// The answer of that member.
    Read(NodeId, ReadAnswer),
    /// The consumer is gone.
    Gone,
    /// No answer from that member (it is moved past).
    Failed(String),
}

/// Consumer `id`'s reader: reads while it has credit, until it is gone.
async fn run_reader(shared: Arc<Shared>, id: u64, start: OffsetSpec, wake: Arc<Notify>) {
    let mut at = ReadStart::Spec(start);
    let mut retry = RETRY_MIN;
    let mut failures = 0u32;
    while let Some(room) = shared.room(id) {
        if room == 0 {
            wake.notified().await;
            continue;
        }
        let e = match shared.read(id, at, room, &wake).await {
            Step::Gone => break,
            Step::Read(node, a) => match shared.deliver(id, at, a) {
                Ok(Some(next)) => {
                    at = ReadStart::At(next);
                    (retry, failures) = (RETRY_MIN, 0);
                    continue;
                }
                Ok(None) => break,
                Err(e) => {
                    shared.lead.missed(node, None);
                    e
                }
            },
            Step::Failed(e) => e,
        };
        failures = failures.saturating_add(1);
        if failures == WARN_AFTER {
            tracing::warn!(group = shared.group, error = %e, "a stream consumer outside the group cannot read through any member yet");
        } else {
            tracing::debug!(group = shared.group, error = %e, "a stream read through a member failed");
        }
        // A pause before the next member is asked (woken early only to
        // find the consumer gone).
        let pause = tokio::time::sleep(retry);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = &mut pause => break,
                _ = wake.notified() => if shared.room(id).is_none() { break },
            }
        }
        retry = (retry * 2).min(RETRY_MAX);
    }
    shared.readers.lock().remove(&id);
}

impl Shared {
    /// What consumer `id` takes now (None: it is gone).
    fn room(&self, id: u64) -> Option<u32> {
        self.stream.upgrade()?.remote_room(id, CAP)
    }

    /// One read of at most `room` records from `at`, through the guessed
    /// member; a wake that finds the consumer gone drops it.
    async fn read(&self, id: u64, at: ReadStart, room: u32, wake: &Notify) -> Step {
        let Some((node, addr)) = self.lead.leader() else {
            return Step::Failed("the stream's group has no members".into());
        };
        let body = stream::encode_read(&ReadRequest {
            start: at,
            max_records: room,
            max_bytes: MAX_READ_BYTES,
            wait_ms: u32::try_from(WAIT.as_millis()).unwrap_or(u32::MAX),
        });
        let link = self.links.link(node, &addr);
        let request = link.request(
            stream::KIND_STREAM_READ,
            self.group,
            body,
            WAIT + REQUEST_TIMEOUT,
        );
        tokio::pin!(request);
        let answer = loop {
            tokio::select! {
                r = &mut request => break r,
                _ = wake.notified() => if self.room(id).is_none() { return Step::Gone },
            }
        };
        let failed = |e: String| {
            // Any member serves: the next one is asked.
            self.lead.missed(node, None);
            Step::Failed(e)
        };
        match answer {
            Ok(f) if f.kind == stream::KIND_STREAM_READ | KIND_REPLY => {
                match stream::decode_read_answer(f.body) {
                    Ok(a) => Step::Read(node, a),
                    Err(e) => failed(e.to_string()),
                }
            }
            Ok(f) => failed(String::from_utf8_lossy(&f.body).into_owned()),
            Err(e) => failed(e.to_string()),
        }
    }

    /// Hands an answer to the stream: the offset to go on from, None once
    /// the consumer is gone. An answer that would go back, or whose
    /// records do not decode, is the member's failure (Err).
    fn deliver(&self, id: u64, at: ReadStart, a: ReadAnswer) -> Result<Option<u64>, String> {
        if let ReadStart::At(n) = at {
            if a.start < n {
                return Err(format!("a member answered from offset {} for {n}", a.start));
            }
        }
        let next = a.next();
        let mut records = Vec::with_capacity(a.records.len());
        for (offset, bytes) in (a.start..).zip(a.records) {
            let size = bytes.len() as u64;
            // Copied, as a member's own reads do: a message held long (a
            // prefetch window) does not pin the whole answer.
            let (timestamp_ms, message) = record::decode(Bytes::copy_from_slice(&bytes))
                .map_err(|e| format!("a member's record at offset {offset}: {e}"))?;
            records.push(StreamRecord {
                offset,
                timestamp_ms,
                bytes: size,
                message,
            });
        }
        let Some(stream) = self.stream.upgrade() else {
            return Ok(None);
        };
        Ok(stream.deliver_remote(id, next, records).then_some(next))
    }
}
