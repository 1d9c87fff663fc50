//! Tests of a single exchange: bindings, per-kind routing, redeclare
//! checks and serialization.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::test_support::{ms as s, mtable as table};
use ferry_model::Value;

fn ex(kind: ExchangeKind) -> Exchange {
    Exchange::new("x", kind, true, false, false, Table::new())
}

fn q(name: &str) -> Destination {
    Destination::queue(name)
}

fn bq(name: &str, key: &str) -> Binding {
    Binding::new(q(name), key, Table::new())
}

fn routed(x: &Exchange, key: &str, headers: Option<&Table>) -> Vec<String> {
    let mut out = Vec::new();
    x.route(key, headers, &mut out);
    let mut names: Vec<String> = out
        .iter()
        .map(|d| match d {
            Destination::Queue(n) => format!("q:{n}"),
            Destination::Exchange(n) => format!("x:{n}"),
        })
        .collect();
    let n = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n, "route must not repeat a destination");
    names
}

#[test]
fn bind_is_idempotent_and_unbind_tolerant() {
    let mut x = ex(ExchangeKind::Direct);
    assert!(x.bind(bq("q1", "k")));
    assert!(!x.bind(bq("q1", "k")), "second bind is a no-op");
    assert_eq!(x.binding_count(), 1);
    assert!(x.has_binding(&bq("q1", "k")));
    assert!(
        !x.unbind(&bq("q1", "other")),
        "unbinding what is absent is fine"
    );
    assert!(x.unbind(&bq("q1", "k")));
    assert!(!x.unbind(&bq("q1", "k")));
    assert!(!x.has_bindings());
    assert_eq!(routed(&x, "k", None), Vec::<String>::new());
}

#[test]
fn direct_routes_by_exact_key() {
    let mut x = ex(ExchangeKind::Direct);
    x.bind(bq("q1", "k"));
    x.bind(bq("q2", "k"));
    x.bind(bq("q3", "other"));
    x.bind(Binding::new(Destination::exchange("e2"), "k", Table::new()));
    assert_eq!(routed(&x, "k", None), ["q:q1", "q:q2", "x:e2"]);
    assert_eq!(routed(&x, "other", None), ["q:q3"]);
    assert_eq!(routed(&x, "K", None), Vec::<String>::new());
    assert_eq!(routed(&x, "", None), Vec::<String>::new());
}

#[test]
fn same_destination_with_different_arguments_is_two_bindings() {
    // RabbitMQ keeps both; the queue stays routed until both are gone.
    let mut x = ex(ExchangeKind::Direct);
    let b1 = Binding::new(q("q"), "k", table(&[("foo", s("bar"))]));
    let b2 = Binding::new(q("q"), "k", table(&[("foo", s("baz"))]));
    assert!(x.bind(b1.clone()));
    assert!(x.bind(b2.clone()));
    assert_eq!(x.binding_count(), 2);
    assert_eq!(routed(&x, "k", None), ["q:q"], "routed once");
    x.unbind(&b1);
    assert_eq!(routed(&x, "k", None), ["q:q"]);
    x.unbind(&b2);
    assert_eq!(routed(&x, "k", None), Vec::<String>::new());
}

#[test]
fn fanout_ignores_key() {
    let mut x = ex(ExchangeKind::Fanout);
    x.bind(bq("q1", ""));
    x.bind(bq("q1", "ignored"));
    x.bind(bq("q2", "whatever"));
    assert_eq!(routed(&x, "anything", None), ["q:q1", "q:q2"]);
    x.unbind(&bq("q1", ""));
    assert_eq!(routed(&x, "", None), ["q:q1", "q:q2"]);
    x.unbind(&bq("q1", "ignored"));
    assert_eq!(routed(&x, "", None), ["q:q2"]);
}

#[test]
fn topic_deduplicates_overlapping_patterns() {
    let mut x = ex(ExchangeKind::Topic);
    for p in ["a.#", "#.b", "a.b", "*.*", "#"] {
        x.bind(bq("q1", p));
    }
    x.bind(bq("q2", "a.*"));
    x.bind(bq("q3", "c.#"));
    assert_eq!(routed(&x, "a.b", None), ["q:q1", "q:q2"]);
    assert_eq!(routed(&x, "c", None), ["q:q1", "q:q3"]);
}

#[test]
fn headers_routes_by_arguments_and_ignores_key() {
    let mut x = ex(ExchangeKind::Headers);
    x.bind(Binding::new(
        q("all"),
        "k",
        table(&[("a", s("1")), ("b", s("2"))]),
    ));
    x.bind(Binding::new(
        q("any"),
        "",
        table(&[("x-match", s("any")), ("a", s("1")), ("b", s("2"))]),
    ));
    x.bind(Binding::new(q("has-c"), "", table(&[("c", Value::Void)])));
    x.bind(Binding::new(q("everything"), "", Table::new()));
    let h = |pairs: &[(&str, Value)]| table(pairs);
    assert_eq!(
        routed(&x, "ignored", Some(&h(&[("a", s("1")), ("b", s("2"))]))),
        ["q:all", "q:any", "q:everything"]
    );
    assert_eq!(
        routed(&x, "", Some(&h(&[("a", s("1")), ("c", Value::I64(0))]))),
        ["q:any", "q:everything", "q:has-c"]
    );
    assert_eq!(routed(&x, "", None), ["q:everything"]);
}

#[test]
fn headers_bindings_differing_only_in_ignored_args_unbind_cleanly() {
    let mut x = ex(ExchangeKind::Headers);
    let b1 = Binding::new(q("q"), "", table(&[("x-note", s("1")), ("a", s("1"))]));
    let b2 = Binding::new(q("q"), "", table(&[("x-note", s("2")), ("a", s("1"))]));
    x.bind(b1.clone());
    x.bind(b2.clone());
    let hdr = table(&[("a", s("1"))]);
    assert_eq!(routed(&x, "", Some(&hdr)), ["q:q"]);
    x.unbind(&b2);
    assert_eq!(routed(&x, "", Some(&hdr)), ["q:q"]);
    x.unbind(&b1);
    assert_eq!(routed(&x, "", Some(&hdr)), Vec::<String>::new());
}

#[test]
fn validate_binding_only_checks_headers_exchanges() {
    let bad = Binding::new(q("q"), "", table(&[("x-match", s("most"))]));
    assert!(ex(ExchangeKind::Headers).validate_binding(&bad).is_err());
    assert!(ex(ExchangeKind::Direct).validate_binding(&bad).is_ok());
}

#[test]
fn unbind_destination_removes_exactly_that_destination() {
    for kind in [
        ExchangeKind::Direct,
        ExchangeKind::Fanout,
        ExchangeKind::Topic,
        ExchangeKind::Headers,
    ] {
        let mut x = ex(kind);
        x.bind(bq("p", "k"));
        x.bind(bq("q", "k"));
        x.bind(bq("q", "k2"));
        x.bind(Binding::new(q("q"), "k", table(&[("a", s("1"))])));
        x.bind(bq("r", "k"));
        x.bind(Binding::new(Destination::exchange("q"), "k", Table::new()));
        assert!(x.has_bindings_to(&q("q")));
        assert_eq!(x.unbind_destination(&q("q")), 3, "{kind}");
        assert_eq!(x.unbind_destination(&q("q")), 0);
        assert!(!x.has_bindings_to(&q("q")));
        assert!(x.has_bindings_to(&Destination::exchange("q")));
        assert_eq!(x.binding_count(), 3);
        let hdr = table(&[("a", s("1"))]);
        assert_eq!(routed(&x, "k", Some(&hdr)), ["q:p", "q:r", "x:q"], "{kind}");
    }
}

#[test]
fn retain_bindings_filters_and_reindexes() {
    let mut x = ex(ExchangeKind::Topic);
    x.bind(bq("durable", "a.#"));
    x.bind(bq("transient", "a.*"));
    assert_eq!(
        x.retain_bindings(|b| &**b.destination.name() == "durable"),
        1
    );
    assert_eq!(routed(&x, "a.b", None), ["q:durable"]);
}

#[test]
fn alternate_exchange_argument() {
    let with = |v: Value| {
        Exchange::new(
            "x",
            ExchangeKind::Direct,
            true,
            false,
            false,
            table(&[("alternate-exchange", v)]),
        )
    };
    assert_eq!(ex(ExchangeKind::Direct).alternate_exchange(), None);
    assert_eq!(with(s("ae")).alternate_exchange(), Some("ae"));
    assert_eq!(with(Value::I64(1)).alternate_exchange(), None);
}

#[test]
fn redeclare_equivalence_names_the_first_mismatch() {
    let ae = |v: &str| table(&[("alternate-exchange", s(v))]);
    let x = Exchange::new("x", ExchangeKind::Direct, true, false, false, ae("ae1"));
    let check = |k, d, a, i, args: Table| x.check_equivalent(k, d, a, i, &args, "/");
    let d = ExchangeKind::Direct;
    assert_eq!(check(d, true, false, false, ae("ae1")), Ok(()));
    // Other arguments are not compared, as in RabbitMQ.
    let mut extra = ae("ae1");
    extra.insert("x-other", s("1"));
    assert_eq!(check(d, true, false, false, extra), Ok(()));
    let cases: Vec<(Result<(), String>, &str)> = vec![
        (
            check(ExchangeKind::Fanout, false, false, false, ae("ae1")),
            "inequivalent arg 'type' for exchange 'x' in vhost '/': received 'fanout' but current is 'direct'",
        ),
        (
            check(d, false, true, true, ae("ae1")),
            "inequivalent arg 'durable' for exchange 'x' in vhost '/': received 'false' but current is 'true'",
        ),
        (
            check(d, true, true, false, ae("ae1")),
            "inequivalent arg 'auto_delete' for exchange 'x' in vhost '/': received 'true' but current is 'false'",
        ),
        (
            check(d, true, false, true, ae("ae1")),
            "inequivalent arg 'internal' for exchange 'x' in vhost '/': received 'true' but current is 'false'",
        ),
        (
            check(d, true, false, false, ae("ae2")),
            "inequivalent arg 'alternate-exchange' for exchange 'x' in vhost '/': received 'ae2' but current is 'ae1'",
        ),
        (
            check(d, true, false, false, Table::new()),
            "inequivalent arg 'alternate-exchange' for exchange 'x' in vhost '/': received none but current is the value 'ae1' of type 'longstr'",
        ),
    ];
    for (got, want) in cases {
        assert_eq!(got, Err(want.to_string()));
    }
    let plain = ex(ExchangeKind::Direct);
    assert_eq!(
        plain.check_equivalent(d, true, false, false, &ae("ae"), "v"),
        Err("inequivalent arg 'alternate-exchange' for exchange 'x' in vhost 'v': received the value 'ae' of type 'longstr' but current is none".to_string())
    );
    assert!(x.equivalent(d, true, false, false, &ae("ae1")));
    assert!(!x.equivalent(d, true, false, false, &ae("ae2")));
}

#[test]
fn serde_round_trip_rebuilds_the_index() {
    let mut x = Exchange::new(
        "logs",
        ExchangeKind::Topic,
        true,
        true,
        false,
        table(&[("alternate-exchange", s("ae"))]),
    );
    x.bind(bq("q1", "a.#"));
    x.bind(Binding::new(
        Destination::exchange("e2"),
        "*.b",
        table(&[("n", Value::F64(f64::NAN))]),
    ));
    let json = serde_json::to_string(&x).unwrap();
    assert!(json.starts_with(r#"{"name":"logs","kind":"topic","durable":true,"auto_delete":true,"internal":false,"arguments":{"alternate-exchange":{"longstr":"ae"}},"bindings":["#));
    let back: Exchange = serde_json::from_str(&json).unwrap();
    assert_eq!(&*back.name, "logs");
    assert_eq!(back.kind, ExchangeKind::Topic);
    assert!(back.durable && back.auto_delete && !back.internal);
    assert_eq!(back.alternate_exchange(), Some("ae"));
    assert!(back.bindings().eq(x.bindings()));
    assert_eq!(routed(&back, "a.b", None), ["q:q1", "x:e2"]);
    let minimal: Exchange = serde_json::from_str(
        r#"{"name":"m","kind":"fanout","durable":false,"auto_delete":false,"internal":true}"#,
    )
    .unwrap();
    assert!(minimal.internal && !minimal.has_bindings());
}
