//! Setup shared by ferry-broker's integration tests (each test binary uses a
//! subset of it).
#![allow(dead_code)]

use ferry_broker::BrokerConfig;
use ferry_queue::queue::QueueSpec;
use std::path::PathBuf;
use std::sync::Arc;

/// A broker config on `/data` (a `SimIo` path).
pub fn config() -> BrokerConfig {
    BrokerConfig::new(PathBuf::from("/data"))
}

/// A durable, non-exclusive, non-auto-delete queue without arguments.
pub fn durable_queue(name: &str) -> QueueSpec {
    QueueSpec {
        name: Arc::from(name),
        durable: true,
        exclusive_owner: None,
        auto_delete: false,
        arguments: Default::default(),
    }
}
