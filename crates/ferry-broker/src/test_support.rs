//! What the broker's unit tests share: ferry-queue's fixtures (sinks,
//! messages, props blobs, specs) and a whole broker over SimIo.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub use ferry_queue::test_support::*;

use ferry_log::SimIo;
use ferry_queue::clock::ManualClock;
use std::path::PathBuf;
use std::sync::Arc;

/// A whole broker over `io` at `/data`, on the manual clock.
pub fn broker(io: &SimIo, clock: &Arc<ManualClock>) -> Arc<crate::Broker> {
    crate::Broker::open_with_clock(
        crate::BrokerConfig::new(PathBuf::from("/data")),
        io.shared(),
        clock.clone(),
    )
    .unwrap()
}
