//! Broker calls that write files, made from the AMQP front end's async tasks.
//!
//! Declaring, deleting and binding durable things rewrites and fsyncs a
//! small metadata file (definitions), creates or removes a queue's
//! directory, or both. A channel's methods are plain functions called from
//! its connection task, so such a call runs inside
//! `tokio::task::block_in_place`: the worker hands its other tasks to
//! another thread before blocking, and no other connection waits for the
//! disk. On a current-thread runtime (tests, the fuzzer) there is no other
//! worker to hand over to and the call runs inline.
//!
//! The publish / deliver path does not come here: it does bounded
//! page-cache I/O only (ARCHITECTURE.md, "Blocking").

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `f`, which may block on file I/O, without stalling the other
/// tasks of this worker thread.
pub fn run<T>(f: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}
