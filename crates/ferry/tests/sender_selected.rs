//! Sender-selected distribution (`CC` / `BCC` headers) through lapin: extra routing keys,
//! one copy per queue, BCC stripped, mandatory counting the extra routes, RabbitMQ's 406
//! for a header that is not an array. Broker-agnostic (scripts/lapin-oracle runs it against
//! RabbitMQ 3.10 in CI); tests/python/test_sender_selected.py has the full set of cases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

fn keys(ks: &[&str]) -> AMQPValue {
    AMQPValue::FieldArray(FieldArray::from(
        ks.iter().map(|k| s(k)).collect::<Vec<_>>(),
    ))
}

fn headers(items: &[(&str, AMQPValue)]) -> BasicProperties {
    BasicProperties::default().with_headers(table(items))
}

/// `n` exclusive server-named queues.
async fn queues(ch: &Channel, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            common::server_named_queue(ch)
                .await
                .name()
                .as_str()
                .to_string(),
        );
    }
    out
}

/// Everything in `q` (basic.get, no-ack).
async fn get_all(ch: &Channel, q: &str) -> Vec<lapin::message::Delivery> {
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(q.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        out.push(m.delivery);
    }
    out
}

#[tokio::test]
async fn cc_and_bcc_add_routing_keys_one_copy_per_queue() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let qs = queues(&ch, 4).await;
    let (a, b, c, none) = (&qs[0], &qs[1], &qs[2], &qs[3]);
    let x = unique("cc");
    declare_exchange(&ch, &x, ExchangeKind::Direct, FieldTable::default()).await;
    bind(&ch, a, &x, "a", FieldTable::default()).await;
    bind(&ch, a, &x, "b", FieldTable::default()).await; // two keys reach it: one copy
    bind(&ch, b, &x, "b", FieldTable::default()).await;
    bind(&ch, c, &x, "c", FieldTable::default()).await;
    let props = headers(&[
        ("CC", keys(&["b"])),
        ("BCC", keys(&["c", "a"])),
        ("h", s("v")),
    ]);
    publish_props(&ch, &x, "a", b"m", props).await;
    settle(&ch).await;
    for q in [a, b, c] {
        let got = get_all(&ch, q).await;
        assert_eq!(got.len(), 1, "{q}: one copy");
        let d = &got[0];
        assert_eq!(
            (d.exchange.as_str(), d.routing_key.as_str(), body_str(d)),
            (x.as_str(), "a", "m".to_string()),
            "delivered with the publish's exchange and key"
        );
        assert_eq!(header(d, "CC"), Some(keys(&["b"])), "CC kept");
        assert_eq!(header(d, "BCC"), None, "BCC stripped");
        assert_eq!(header(d, "h"), Some(s("v")));
    }
    assert!(get_all(&ch, none).await.is_empty());
}

#[tokio::test]
async fn mandatory_counts_the_cc_and_bcc_routes() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let a = queues(&ch, 1).await.remove(0);
    let key = unique("k");
    bind(&ch, &a, "amq.direct", &key, FieldTable::default()).await;
    let mandatory = |body: &'static [u8], props: BasicProperties| {
        let ch = ch.clone();
        async move {
            ch.basic_publish(
                "amq.direct".into(),
                "nowhere".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap()
        }
    };
    for (body, h) in [(&b"cc"[..], "CC"), (&b"bcc"[..], "BCC")] {
        let confirm = mandatory(body, headers(&[(h, keys(&[&key]))])).await;
        assert!(confirm.is_ack(), "{confirm:?}");
        assert!(
            confirm.take_message().is_none(),
            "routed by its {h} key: not returned"
        );
    }
    let props = headers(&[("CC", keys(&["x"])), ("BCC", keys(&["y"]))]);
    let confirm = mandatory(b"none", props).await;
    assert!(confirm.is_ack(), "{confirm:?}");
    let ret = confirm.take_message().expect("returned: no key routes");
    assert_eq!((ret.reply_code, ret.reply_text.as_str()), (312, "NO_ROUTE"));
    assert_eq!(header(&ret.delivery, "CC"), Some(keys(&["x"])));
    assert_eq!(header(&ret.delivery, "BCC"), None, "returned without BCC");
    let got: Vec<String> = get_all(&ch, &a).await.iter().map(body_str).collect();
    assert_eq!(got, ["cc", "bcc"]);
}

#[tokio::test]
async fn a_cc_or_bcc_that_is_not_an_array_is_406() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    for (h, value, type_name) in [
        ("CC", s("k"), "longstr"),
        ("BCC", AMQPValue::LongInt(5), "signedint"),
    ] {
        let ch = confirm_channel(&conn).await;
        let confirm = ch
            .basic_publish(
                "amq.direct".into(),
                "k".into(),
                BasicPublishOptions::default(),
                b"x",
                headers(&[(h, value)]),
            )
            .await
            .unwrap();
        let res = tokio::time::timeout(STEP, confirm)
            .await
            .expect("confirm future hung");
        assert_eq!(
            expect_amqp_err(res, "publish with a bad header"),
            (
                406,
                format!(
                    "PRECONDITION_FAILED - invalid message: \
                     {{unacceptable_type_in_header,\"{h}\",{type_name}}}"
                )
            )
        );
    }
    // The connection is unaffected.
    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "still-fine").await;
}
