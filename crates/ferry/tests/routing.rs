//! Exchange routing: direct, fanout, topic, headers, default exchange, exchange-to-exchange
//! bindings, alternate exchanges, unbind/delete semantics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};

#[tokio::test]
async fn direct_exchange_routes_by_exact_key_to_every_matching_queue() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let ex = unique("direct");
    declare_exchange(&ch, &ex, ExchangeKind::Direct, FieldTable::default()).await;
    let q1 = declare_queue(&ch, "d1").await;
    let q2 = declare_queue(&ch, "d2").await;
    bind(&ch, &q1, &ex, "a", FieldTable::default()).await;
    bind(&ch, &q1, &ex, "b", FieldTable::default()).await;
    bind(&ch, &q1, &ex, "b", FieldTable::default()).await; // duplicate binding: no-op
    bind(&ch, &q2, &ex, "a", FieldTable::default()).await;
    bind(&ch, &q2, &ex, "", FieldTable::default()).await;
    for key in ["a", "b", "c", "A", "", "a "] {
        publish(&ch, &ex, key, format!("<{key}>").as_bytes()).await;
    }
    settle(&ch).await;
    assert_eq!(drain_get(&ch, &q1).await, ["<a>", "<b>"]);
    assert_eq!(drain_get(&ch, &q2).await, ["<a>", "<>"]);
}

#[tokio::test]
async fn default_exchange_routes_by_queue_name() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, "dflt").await;
    publish(&ch, "", &q, b"by-name").await;
    publish(&ch, "", &format!("{q}-nope"), b"nowhere").await;
    settle(&ch).await;
    assert_eq!(drain_get(&ch, &q).await, ["by-name"]);

    // "amq.default" is only a display name: publishing to it is a 404 channel error.
    let other = conn.create_channel().await.unwrap();
    let mut watch = watch_channel(&other).await;
    publish(&other, "amq.default", &q, b"via-alias").await;
    let (code, text) = expect_channel_error(&mut watch).await;
    assert_eq!(code, 404);
    assert_eq!(text, "NOT_FOUND - no exchange 'amq.default' in vhost '/'");
    assert!(drain_get(&ch, &q).await.is_empty());
}

#[tokio::test]
async fn fanout_ignores_routing_key() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let ex = unique("fanout");
    declare_exchange(&ch, &ex, ExchangeKind::Fanout, FieldTable::default()).await;
    let qs = [
        declare_queue(&ch, "f1").await,
        declare_queue(&ch, "f2").await,
        declare_queue(&ch, "f3").await,
    ];
    for (i, q) in qs.iter().enumerate() {
        bind(&ch, q, &ex, &format!("ignored-{i}"), FieldTable::default()).await;
    }
    publish(&ch, &ex, "whatever", b"one").await;
    publish(&ch, &ex, "", b"two").await;
    settle(&ch).await;
    for q in &qs {
        assert_eq!(drain_get(&ch, q).await, ["one", "two"]);
    }
}

#[tokio::test]
async fn topic_patterns_match_like_rabbitmq() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let ex = unique("topic");
    declare_exchange(&ch, &ex, ExchangeKind::Topic, FieldTable::default()).await;

    // (patterns bound to one queue, routing keys that queue must receive, in publish order)
    let keys = [
        "quick.orange.rabbit",
        "lazy.orange.elephant",
        "quick.orange.fox",
        "lazy.brown.fox",
        "lazy",
        "quick.orange.male.rabbit",
        "orange",
        "a.z",
        "a.b.z",
        "a.b.c.z",
        "az",
        "a..z",
        "",
        "x.y",
        ".",
        "lazy.",
    ];
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["*.orange.*"],
            vec![
                "quick.orange.rabbit",
                "lazy.orange.elephant",
                "quick.orange.fox",
            ],
        ),
        (
            vec!["*.*.rabbit", "lazy.#"],
            vec![
                "quick.orange.rabbit",
                "lazy.orange.elephant",
                "lazy.brown.fox",
                "lazy",
                "lazy.",
            ],
        ),
        (vec!["#"], keys.to_vec()),
        (vec!["a.#.z"], vec!["a.z", "a.b.z", "a.b.c.z", "a..z"]),
        (vec!["a.*.z"], vec!["a.b.z", "a..z"]),
        (vec!["quick.orange.rabbit"], vec!["quick.orange.rabbit"]),
        // "" is zero words for RabbitMQ ("*" needs exactly one), while "." is two empty words.
        (vec!["*"], vec!["lazy", "orange", "az"]),
        (vec!["*.*"], vec!["a.z", "x.y", ".", "lazy."]),
        (vec!["#.fox"], vec!["quick.orange.fox", "lazy.brown.fox"]),
        (vec![""], vec![""]),
        (vec!["#.#"], keys.to_vec()),
        // Overlapping bindings on one queue still deliver one copy.
        (vec!["#", "quick.#", "*.orange.*"], keys.to_vec()),
    ];
    let mut queues = Vec::new();
    for (patterns, _) in &cases {
        let q = declare_queue(&ch, "t").await;
        for p in patterns {
            bind(&ch, &q, &ex, p, FieldTable::default()).await;
        }
        queues.push(q);
    }
    for k in keys {
        publish(&ch, &ex, k, k.as_bytes()).await;
    }
    settle(&ch).await;
    for ((patterns, expected), q) in cases.iter().zip(&queues) {
        assert_eq!(
            drain_get(&ch, q).await,
            *expected,
            "queue bound with {patterns:?}"
        );
    }
}

#[tokio::test]
async fn headers_exchange_all_any_and_types() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let ex = unique("headers");
    declare_exchange(&ch, &ex, ExchangeKind::Headers, FieldTable::default()).await;

    let bindings: Vec<(&str, FieldTable)> = vec![
        (
            "all",
            table(&[
                ("x-match", s("all")),
                ("format", s("pdf")),
                ("type", s("report")),
            ]),
        ),
        (
            "any",
            table(&[
                ("x-match", s("any")),
                ("format", s("pdf")),
                ("type", s("report")),
            ]),
        ),
        (
            "default-is-all",
            table(&[("format", s("pdf")), ("type", s("report"))]),
        ),
        (
            "int",
            table(&[("x-match", s("all")), ("n", AMQPValue::LongInt(5))]),
        ),
        (
            "x-args-ignored",
            table(&[
                ("x-match", s("all")),
                ("x-custom", s("zzz")),
                ("format", s("pdf")),
            ]),
        ),
        ("void-means-present", table(&[("flag", AMQPValue::Void)])),
        (
            "empty-all-matches-everything",
            table(&[("x-match", s("all"))]),
        ),
    ];
    let mut queues = Vec::new();
    for (label, args) in &bindings {
        let q = declare_queue(&ch, label).await;
        // The routing key is irrelevant for headers exchanges.
        bind(&ch, &q, &ex, "ignored-key", args.clone()).await;
        queues.push(q);
    }
    let messages: Vec<(&str, Option<FieldTable>)> = vec![
        (
            "both",
            Some(table(&[("format", s("pdf")), ("type", s("report"))])),
        ),
        ("format-only", Some(table(&[("format", s("pdf"))]))),
        ("type-only", Some(table(&[("type", s("report"))]))),
        (
            "both-plus-extra",
            Some(table(&[
                ("format", s("pdf")),
                ("type", s("report")),
                ("extra", AMQPValue::Boolean(true)),
            ])),
        ),
        (
            "wrong-case",
            Some(table(&[("format", s("PDF")), ("type", s("report"))])),
        ),
        ("n5", Some(table(&[("n", AMQPValue::LongInt(5))]))),
        ("n6", Some(table(&[("n", AMQPValue::LongInt(6))]))),
        ("flag-set", Some(table(&[("flag", s("anything"))]))),
        ("empty-headers", Some(FieldTable::default())),
        ("no-headers", None),
    ];
    for (label, headers) in &messages {
        let mut props = BasicProperties::default();
        if let Some(h) = headers {
            props = props.with_headers(h.clone());
        }
        publish_props(&ch, &ex, "some-key", label.as_bytes(), props).await;
    }
    settle(&ch).await;
    let all: Vec<&str> = messages.iter().map(|(l, _)| *l).collect();
    let expected: Vec<Vec<&str>> = vec![
        vec!["both", "both-plus-extra"],
        vec![
            "both",
            "format-only",
            "type-only",
            "both-plus-extra",
            "wrong-case",
        ],
        vec!["both", "both-plus-extra"],
        vec!["n5"],
        vec!["both", "format-only", "both-plus-extra"],
        vec!["flag-set"],
        all,
    ];
    for (((label, _), q), exp) in bindings.iter().zip(&queues).zip(expected) {
        assert_eq!(drain_get(&ch, q).await, exp, "headers binding `{label}`");
    }
}

#[tokio::test]
async fn exchange_to_exchange_bindings_route_and_unbind() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let src = unique("e2e-src");
    let dst = unique("e2e-dst");
    declare_exchange(&ch, &src, ExchangeKind::Topic, FieldTable::default()).await;
    declare_exchange(&ch, &dst, ExchangeKind::Fanout, FieldTable::default()).await;
    let via_dst = declare_queue(&ch, "via-dst").await;
    let direct_src = declare_queue(&ch, "on-src").await;
    bind(&ch, &via_dst, &dst, "", FieldTable::default()).await;
    bind(&ch, &direct_src, &src, "#", FieldTable::default()).await;
    ch.exchange_bind(
        dst.as_str().into(),
        src.as_str().into(),
        "a.*".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&ch, &src, "a.b", b"1:a.b").await;
    publish(&ch, &src, "b.c", b"2:b.c").await;
    publish(&ch, &dst, "zzz", b"3:direct-to-dst").await;
    settle(&ch).await;
    assert_eq!(drain_get(&ch, &via_dst).await, ["1:a.b", "3:direct-to-dst"]);
    assert_eq!(drain_get(&ch, &direct_src).await, ["1:a.b", "2:b.c"]);

    // A cycle src -> dst -> src must not duplicate or loop.
    ch.exchange_bind(
        src.as_str().into(),
        dst.as_str().into(),
        "".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&ch, &src, "a.x", b"4:cycle").await;
    settle(&ch).await;
    assert_eq!(drain_get(&ch, &via_dst).await, ["4:cycle"]);
    assert_eq!(drain_get(&ch, &direct_src).await, ["4:cycle"]);

    ch.exchange_unbind(
        dst.as_str().into(),
        src.as_str().into(),
        "a.*".into(),
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&ch, &src, "a.b", b"5:after-unbind").await;
    settle(&ch).await;
    assert!(drain_get(&ch, &via_dst).await.is_empty());
    assert_eq!(drain_get(&ch, &direct_src).await, ["5:after-unbind"]);
}

#[tokio::test]
async fn alternate_exchange_receives_unroutable_messages() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let ae = unique("ae");
    let main = unique("main");
    declare_exchange(&ch, &ae, ExchangeKind::Fanout, FieldTable::default()).await;
    declare_exchange(
        &ch,
        &main,
        ExchangeKind::Direct,
        table(&[("alternate-exchange", s(&ae))]),
    )
    .await;
    let main_q = declare_queue(&ch, "main-q").await;
    let ae_q = declare_queue(&ch, "ae-q").await;
    bind(&ch, &main_q, &main, "known", FieldTable::default()).await;
    bind(&ch, &ae_q, &ae, "", FieldTable::default()).await;

    publish(&ch, &main, "known", b"routed").await;
    publish(&ch, &main, "unknown", b"to-ae").await;
    // mandatory + unroutable-but-caught-by-AE: not returned, confirmed with ack.
    let confirm = ch
        .basic_publish(
            main.as_str().into(),
            "other".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"mandatory-to-ae",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(confirm, lapin::Confirmation::Ack(None));
    settle(&ch).await;
    assert_eq!(drain_get(&ch, &main_q).await, ["routed"]);
    assert_eq!(drain_get(&ch, &ae_q).await, ["to-ae", "mandatory-to-ae"]);

    // The routing key is preserved when the AE delivers.
    publish(&ch, &main, "rk-kept", b"x").await;
    settle(&ch).await;
    let m = ch
        .basic_get(ae_q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.delivery.routing_key.as_str(), "rk-kept");
    assert_eq!(m.delivery.exchange.as_str(), main);

    // An alternate exchange that does not exist just drops the message (no error).
    let dangling = unique("dangling");
    declare_exchange(
        &ch,
        &dangling,
        ExchangeKind::Direct,
        table(&[("alternate-exchange", s(&unique("missing-ae")))]),
    )
    .await;
    let confirm = ch
        .basic_publish(
            dangling.as_str().into(),
            "k".into(),
            BasicPublishOptions::default(),
            b"dropped",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
}

#[tokio::test]
async fn unbind_and_queue_delete_stop_routing() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let ex = unique("unbind");
    declare_exchange(&ch, &ex, ExchangeKind::Direct, FieldTable::default()).await;
    let q = declare_queue(&ch, "unbind-q").await;
    bind(&ch, &q, &ex, "k", FieldTable::default()).await;
    publish(&ch, &ex, "k", b"before").await;
    settle(&ch).await;
    ch.queue_unbind(
        q.as_str().into(),
        ex.as_str().into(),
        "k".into(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&ch, &ex, "k", b"after-unbind").await;
    settle(&ch).await;
    assert_eq!(drain_get(&ch, &q).await, ["before"]);
    // Unbinding a binding that does not exist is fine.
    ch.queue_unbind(
        q.as_str().into(),
        ex.as_str().into(),
        "never-bound".into(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    // Deleting the queue removes its bindings: a re-created queue is unbound.
    bind(&ch, &q, &ex, "k", FieldTable::default()).await;
    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&ch, &ex, "k", b"after-recreate").await;
    settle(&ch).await;
    assert!(drain_get(&ch, &q).await.is_empty());
}

#[tokio::test]
async fn exchange_delete_removes_its_bindings_and_auto_delete_exchange_goes_with_last_binding() {
    let broker = Broker::start().await;
    let conn = connect(&broker.amqp_url()).await;
    let ch = confirm_channel(&conn).await;
    let ex = unique("exdel");
    declare_exchange(&ch, &ex, ExchangeKind::Fanout, FieldTable::default()).await;
    let q = declare_queue(&ch, "exdel-q").await;
    bind(&ch, &q, &ex, "", FieldTable::default()).await;
    ch.exchange_delete(ex.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
    declare_exchange(&ch, &ex, ExchangeKind::Fanout, FieldTable::default()).await;
    publish(&ch, &ex, "", b"not-bound-anymore").await;
    settle(&ch).await;
    assert!(drain_get(&ch, &q).await.is_empty());

    let auto = unique("autodel");
    ch.exchange_declare(
        auto.as_str().into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    bind(&ch, &q, &auto, "k", FieldTable::default()).await;
    ch.queue_unbind(
        q.as_str().into(),
        auto.as_str().into(),
        "k".into(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    // The auto-delete exchange is gone once its last binding is removed.
    let res = ch
        .exchange_declare(
            auto.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    let (code, text) = expect_amqp_err(res, "passive declare of auto-deleted exchange");
    assert_eq!(code, 404);
    assert_eq!(
        text,
        format!("NOT_FOUND - no exchange '{auto}' in vhost '/'")
    );
}

#[tokio::test]
async fn predeclared_exchanges_exist() {
    let broker = Broker::start().await;
    let (_conn, ch) = connect_channel(&broker.amqp_url()).await;
    for (name, kind) in [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ] {
        ch.exchange_declare(
            name.into(),
            kind.clone(),
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        // A non-passive redeclare with the same (durable) attributes is also accepted.
        ch.exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("redeclare {name}: {e}"));
    }
}
