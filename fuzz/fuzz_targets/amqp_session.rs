//! The real connection code (`ferry_server::Frontend::serve`, the same
//! `connection.rs` a TCP or TLS client gets: handshake, framing limits,
//! channel routing, soft and hard errors, writer task, shutdown) over a
//! real broker core (`ferry_broker::Broker` on `ferry_log::SimIo`, so
//! nothing touches the disk), driven through an in-process pipe
//! (`tokio::io::duplex`) by a client whose frames the fuzzer chooses.
//!
//! The harness is only a client: it writes a valid handshake and then the
//! bytes of each op (encoded with `ferry_amqp`, or raw), and reads and
//! parses everything the server writes back. After each op it waits for a
//! marker round trip (see `wire.rs`). One current-thread tokio runtime per
//! input, its clock paused, so the server's timers (close delays, ticks)
//! pass without sleeping and a run does not depend on the machine's speed.
//! A connection the server ends (hard error, lost framing, dropped
//! socket) or the client ends (half a frame written) is followed by a new
//! one.
//!
//! Besides "no panic, no hang", it checks, on the wire:
//! - every frame the server writes parses and fits frame_max (a content
//!   header may exceed it by RabbitMQ's 8-byte allowance), content is whole
//!   and never interleaved with other frames, no heartbeat with heartbeats
//!   off;
//! - delivery tags on a channel are 1, 2, 3, ... in wire order;
//! - every delivered, got or returned message is one that was published
//!   (also after a restart or a simulated power cut);
//! - publisher confirms: once a step is over (and the queues synced),
//!   every publish of a confirm-mode channel is acked or nacked, none
//!   twice, and no confirm names a publish that did not happen;
//! - every tx.commit that succeeded gets exactly one commit-ok;
//! - the handshake always succeeds, the connection task ends once its
//!   stream does, and the front end's shutdown (320 to the open
//!   connection) completes; after a clean stop or a power cut
//!   (`SimIo::crash`) the broker starts again.

#![no_main]

#[path = "amqp_session/checks.rs"]
mod checks;
#[path = "amqp_session/harness.rs"]
mod harness;
#[path = "amqp_session/input.rs"]
mod input;
#[path = "amqp_session/ops.rs"]
mod ops;
#[path = "amqp_session/wire.rs"]
mod wire;

use harness::*;
use input::*;
use wire::*;

use arbitrary::{Arbitrary, Unstructured};
use bytes::{BufMut, Bytes, BytesMut};
use ferry_amqp::amq_protocol::protocol::{
    basic, channel, confirm, connection, exchange, queue, tx,
};
use ferry_amqp::{
    check_frame, encode_method, encode_properties, parse_frame, AMQPClass, AMQPValue,
    BasicProperties, FieldArray, FieldTable, Frame, ShortString, PROTOCOL_HEADER,
};
use ferry_broker::{Broker, BrokerConfig, VHost};
use ferry_log::{LogConfig, SimIo};
use ferry_server::{Frontend, ServerConfig};
use libfuzzer_sys::fuzz_target;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

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
        // The client leaves, then the front end stops (`Broker::shutdown`).
        h.client_close();
        h.stop_front();
        if ferry_fuzz::debug() {
            eprintln!("stats: {:?}", h.stats);
        }
    }
);
