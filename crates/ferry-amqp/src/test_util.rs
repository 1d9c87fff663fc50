//! Helpers shared by the unit tests of several modules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use amq_protocol::frame::{gen_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::{
    access, basic, channel, confirm, connection, exchange, queue, tx, AMQPClass,
};
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};
use bytes::{BufMut, Bytes, BytesMut};

pub(crate) fn args() -> FieldTable {
    let mut nested = FieldTable::default();
    nested.insert("n".into(), AMQPValue::LongLongInt(-5));
    let mut t = FieldTable::default();
    t.insert("x-message-ttl".into(), AMQPValue::LongInt(60_000));
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    t.insert("flag".into(), AMQPValue::Boolean(true));
    t.insert("nested".into(), AMQPValue::FieldTable(nested));
    t.insert(
        "list".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::ShortShortUInt(7),
            AMQPValue::Void,
        ])),
    );
    t
}

/// One value of every method amq-protocol knows, with non-default fields.
pub(crate) fn all_methods() -> Vec<AMQPClass> {
    use AMQPClass as C;
    let ls = |s: &str| LongString::from(s);
    vec![
        C::Connection(connection::AMQPMethod::Start(connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: args(),
            mechanisms: ls("PLAIN AMQPLAIN"),
            locales: ls("en_US"),
        })),
        C::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: args(),
            mechanism: "PLAIN".into(),
            response: ls("\0guest\0guest"),
            locale: "en_US".into(),
        })),
        C::Connection(connection::AMQPMethod::Secure(connection::Secure {
            challenge: ls("challenge"),
        })),
        C::Connection(connection::AMQPMethod::SecureOk(connection::SecureOk {
            response: ls("answer"),
        })),
        C::Connection(connection::AMQPMethod::Tune(connection::Tune {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
        })),
        C::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 10,
            frame_max: 4096,
            heartbeat: 0,
        })),
        C::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        })),
        C::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
        C::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 320,
            reply_text: "CONNECTION_FORCED - bye".into(),
            class_id: 0,
            method_id: 0,
        })),
        C::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
        C::Connection(connection::AMQPMethod::Blocked(connection::Blocked {
            reason: "low on memory".into(),
        })),
        C::Connection(connection::AMQPMethod::Unblocked(connection::Unblocked {})),
        C::Connection(connection::AMQPMethod::UpdateSecret(
            connection::UpdateSecret {
                new_secret: ls("s3cret"),
                reason: "rotation".into(),
            },
        )),
        C::Connection(connection::AMQPMethod::UpdateSecretOk(
            connection::UpdateSecretOk {},
        )),
        C::Channel(channel::AMQPMethod::Open(channel::Open {})),
        C::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
        C::Channel(channel::AMQPMethod::Flow(channel::Flow { active: true })),
        C::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk {
            active: false,
        })),
        C::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: 404,
            reply_text: "NOT_FOUND - no queue 'q' in vhost '/'".into(),
            class_id: 50,
            method_id: 10,
        })),
        C::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
        C::Access(access::AMQPMethod::Request(access::Request {
            realm: "/data".into(),
            exclusive: false,
            passive: true,
            active: true,
            write: false,
            read: true,
        })),
        C::Access(access::AMQPMethod::RequestOk(access::RequestOk {})),
        C::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
            exchange: "logs".into(),
            kind: "topic".into(),
            passive: false,
            durable: true,
            auto_delete: false,
            internal: true,
            nowait: false,
            arguments: args(),
        })),
        C::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})),
        C::Exchange(exchange::AMQPMethod::Delete(exchange::Delete {
            exchange: "logs".into(),
            if_unused: true,
            nowait: true,
        })),
        C::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
        C::Exchange(exchange::AMQPMethod::Bind(exchange::Bind {
            destination: "dst".into(),
            source: "src".into(),
            routing_key: "a.*".into(),
            nowait: false,
            arguments: args(),
        })),
        C::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})),
        C::Exchange(exchange::AMQPMethod::Unbind(exchange::Unbind {
            destination: "dst".into(),
            source: "src".into(),
            routing_key: "a.#".into(),
            nowait: true,
            arguments: FieldTable::default(),
        })),
        C::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})),
        C::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "jobs".into(),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: true,
            nowait: false,
            arguments: args(),
        })),
        C::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
            queue: "amq.gen-abc".into(),
            message_count: 12,
            consumer_count: 3,
        })),
        C::Queue(queue::AMQPMethod::Bind(queue::Bind {
            queue: "jobs".into(),
            exchange: "amq.direct".into(),
            routing_key: "jobs".into(),
            nowait: false,
            arguments: args(),
        })),
        C::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})),
        C::Queue(queue::AMQPMethod::Purge(queue::Purge {
            queue: "jobs".into(),
            nowait: true,
        })),
        C::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk {
            message_count: 9,
        })),
        C::Queue(queue::AMQPMethod::Delete(queue::Delete {
            queue: "jobs".into(),
            if_unused: true,
            if_empty: false,
            nowait: true,
        })),
        C::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
            message_count: 4,
        })),
        C::Queue(queue::AMQPMethod::Unbind(queue::Unbind {
            queue: "jobs".into(),
            exchange: "amq.topic".into(),
            routing_key: "#".into(),
            arguments: args(),
        })),
        C::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})),
        C::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 100,
            global: true,
        })),
        C::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
        C::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: "jobs".into(),
            consumer_tag: "ctag-1".into(),
            no_local: false,
            no_ack: true,
            exclusive: true,
            nowait: false,
            arguments: args(),
        })),
        C::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
            consumer_tag: "amq.ctag-xyz".into(),
        })),
        C::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
            consumer_tag: "ctag-1".into(),
            nowait: true,
        })),
        C::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
            consumer_tag: "ctag-1".into(),
        })),
        C::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "amq.topic".into(),
            routing_key: "a.b.c".into(),
            mandatory: true,
            immediate: false,
        })),
        C::Basic(basic::AMQPMethod::Return(basic::Return {
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
            exchange: "amq.topic".into(),
            routing_key: "nowhere".into(),
        })),
        C::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: "ctag-1".into(),
            delivery_tag: 1 << 40,
            redelivered: true,
            exchange: "".into(),
            routing_key: "jobs".into(),
        })),
        C::Basic(basic::AMQPMethod::Get(basic::Get {
            queue: "jobs".into(),
            no_ack: true,
        })),
        C::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
            delivery_tag: 7,
            redelivered: false,
            exchange: "x".into(),
            routing_key: "rk".into(),
            message_count: 41,
        })),
        C::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
        C::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: 99,
            multiple: true,
        })),
        C::Basic(basic::AMQPMethod::Reject(basic::Reject {
            delivery_tag: 5,
            requeue: true,
        })),
        C::Basic(basic::AMQPMethod::RecoverAsync(basic::RecoverAsync {
            requeue: true,
        })),
        C::Basic(basic::AMQPMethod::Recover(basic::Recover {
            requeue: false,
        })),
        C::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
        C::Basic(basic::AMQPMethod::Nack(basic::Nack {
            delivery_tag: u64::MAX,
            multiple: false,
            requeue: true,
        })),
        C::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: true,
        })),
        C::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
        C::Tx(tx::AMQPMethod::Select(tx::Select {})),
        C::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})),
        C::Tx(tx::AMQPMethod::Commit(tx::Commit {})),
        C::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})),
        C::Tx(tx::AMQPMethod::Rollback(tx::Rollback {})),
        C::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})),
    ]
}

/// amq-protocol's own whole-frame generator, as the reference.
pub(crate) fn reference_frame(channel: u16, method: &AMQPClass) -> Vec<u8> {
    let frame = AMQPFrame::Method(channel, method.clone());
    let out = gen_frame(&frame)(WriteContext::from(Vec::new()))
        .unwrap()
        .into_inner()
        .0;
    out
}

/// A method frame around an arbitrary payload.
pub(crate) fn method_frame(channel: u16, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_u8(1);
    buf.put_u16(channel);
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
    buf.put_u8(0xCE);
    buf.freeze()
}
