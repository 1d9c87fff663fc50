//! The real channel state machine (`ferry_server::channel::Channel`) over
//! a real broker core (`ferry_core::Broker` on `ferry_log::SimIo`, so
//! nothing touches the disk), fed frames chosen by the fuzzer.
//!
//! There are no sockets: the harness plays the connection task. Every
//! client frame is encoded to bytes and cut again with `check_frame` /
//! `parse_frame`, then dispatched as `connection.rs` does after the
//! handshake (channel.open / close / close-ok bookkeeping, soft errors
//! close the channel, hard errors the connection; the harness then opens a
//! new connection). Everything the server queues in the outbox is encoded
//! as the writer task does and parsed back.
//!
//! Besides "no panic, no hang", it checks:
//! - every outbound item encodes (the writer drops what does not, which
//!   would lose a delivery) into frames that parse and fit frame_max;
//! - delivery tags on a channel are 1, 2, 3, ... in outbox order;
//! - every delivered, got or returned message is one that was published
//!   (also after a restart or a simulated power cut);
//! - publisher confirms: once a step is over (and the queues synced),
//!   every publish of a confirm-mode channel is acked or nacked, none
//!   twice, and no confirm names a publish that did not happen;
//! - every tx.commit that succeeded gets exactly one commit-ok;
//! - after a power cut (`SimIo::crash`), the broker starts again.

#![no_main]

#[path = "amqp_session/checks.rs"]
mod checks;
#[path = "amqp_session/harness.rs"]
mod harness;
#[path = "amqp_session/input.rs"]
mod input;
#[path = "amqp_session/ops.rs"]
mod ops;

use harness::*;
use input::*;

use arbitrary::{Arbitrary, Unstructured};
use bytes::{BufMut, Bytes, BytesMut};
use ferry_amqp::amq_protocol::protocol::{
    basic, channel, confirm, connection, exchange, queue, tx,
};
use ferry_amqp::{
    check_frame, encode_method, encode_properties, parse_frame, AMQPClass, AMQPValue,
    BasicProperties, FieldArray, FieldTable, Frame, ShortString,
};
use ferry_core::auth::CompiledPermissions;
use ferry_core::{Broker, BrokerConfig, VHost};
use ferry_log::{LogConfig, SimIo};
use ferry_server::channel::{Channel, ChannelCtx};
use ferry_server::outbox::{Outbound, Outbox};
use ferry_server::writer::{self, WriterParams};
use ferry_server::{AmqpError, ServerConfig};
use libfuzzer_sys::fuzz_target;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, DuplexStream};

fuzz_target!(
    init: {
        ferry_fuzz::write_seeds_and_exit_if_asked(|| {
            let mut buf = bytes::BytesMut::new();
            ferry_fuzz::streams::session(&mut buf, 4096);
            let mut raw = vec![RAW_MODE];
            raw.extend_from_slice(&buf);
            vec![("session-stream".into(), raw)]
        });
    },
    |data: &[u8]| {
        let input = match data.split_first() {
            // A raw client stream (after the handshake) at frame_max 4096,
            // then a clean restart: whatever it declared must load again.
            Some((&RAW_MODE, rest)) => Input {
                big_frames: false,
                small_socket_buffer: false,
                ops: vec![Op::Raw(rest.to_vec()), Op::Restart(None)],
            },
            _ => match Input::arbitrary_take_rest(Unstructured::new(data)) {
                Ok(input) => input,
                Err(_) => return,
            },
        };
        if ferry_fuzz::debug() {
            eprintln!("{input:#?}");
        }
        let Some(mut h) = Harness::new(&input) else {
            return;
        };
        for op in input.ops.iter().take(200) {
            if !h.run(op) {
                break;
            }
            h.settle();
        }
        h.close_connection();
        h.broker.shutdown();
        if ferry_fuzz::debug() {
            eprintln!("stats: {:?}", h.stats);
        }
    }
);
