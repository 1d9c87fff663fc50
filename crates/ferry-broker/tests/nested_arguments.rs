//! Fuzz regression (amqp_session): a durable queue, exchange or binding
//! whose arguments nest deeply was saved to the definitions file, whose
//! JSON reader stops at 128 levels, and the broker then refused to start
//! ("definitions file ...: recursion limit exceeded"). ferry-amqp now
//! refuses field tables nesting deeper than 32 levels; this checks that
//! everything up to that depth survives a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_broker::{Broker, BrokerConfig, ExchangeArgs};
use ferry_log::SimIo;
use ferry_model::{Table, Value};
use ferry_queue::queue::QueueSpec;
use ferry_route::Destination;
use std::path::PathBuf;
use std::sync::Arc;

/// The deepest nesting the AMQP codec lets in (its `MAX_NESTING`).
const CODEC_MAX_NESTING: usize = 32;

/// A table nesting `depth` levels, tables and arrays alternating.
fn nested(depth: usize) -> Table {
    let mut v = Value::F64(f64::NAN);
    for i in 1..depth {
        v = if i % 2 == 0 {
            Value::Table([("t", v)].into_iter().collect())
        } else {
            Value::Array(vec![v])
        };
    }
    [("deep", v)].into_iter().collect()
}

#[test]
fn deepest_arguments_the_codec_accepts_survive_a_restart() {
    let io = SimIo::new();
    let cfg = BrokerConfig::new(PathBuf::from("/data"));
    let args = nested(CODEC_MAX_NESTING);
    {
        let broker = Broker::open(cfg.clone(), io.shared()).unwrap();
        let vhost = broker.vhost("/").unwrap();
        vhost
            .declare_exchange(
                "x",
                "headers",
                false,
                ExchangeArgs {
                    durable: true,
                    arguments: args.clone(),
                    ..ExchangeArgs::default()
                },
            )
            .unwrap();
        let spec = QueueSpec {
            name: Arc::from("q"),
            durable: true,
            exclusive_owner: None,
            auto_delete: false,
            arguments: args.clone(),
        };
        vhost.declare_queue(spec, false, 1).unwrap();
        vhost
            .binding(
                true,
                "x",
                Destination::Queue(Arc::from("q")),
                "k",
                args.clone(),
                1,
            )
            .unwrap();
        broker.shutdown();
    }
    let broker = Broker::open(cfg, io.shared()).expect("restart with nested arguments");
    let vhost = broker.vhost("/").unwrap();
    let q = vhost.queue_for("q", 2).unwrap();
    // NaN is not equal to itself: compare the shapes through Debug.
    assert_eq!(format!("{:?}", q.spec().arguments), format!("{args:?}"));
    assert!(vhost.has_exchange("x"));
    broker.shutdown();
}
