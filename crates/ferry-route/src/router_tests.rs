//! Tests of routing through exchange graphs: e2e bindings, cycles,
//! alternate exchanges, CC/BCC.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::{Binding, ExchangeKind};
use ferry_model::{Table, Value};
use std::collections::HashMap;

/// A vhost's worth of exchanges.
#[derive(Default)]
struct Graph(HashMap<Arc<str>, Exchange>);

impl Graph {
    fn add(&mut self, name: &str, kind: ExchangeKind, ae: Option<&str>) -> &mut Self {
        let mut args = Table::new();
        if let Some(ae) = ae {
            args.insert("alternate-exchange", Value::str(ae));
        }
        let x = Exchange::new(name, kind, false, false, false, args);
        self.0.insert(Arc::from(name), x);
        self
    }

    fn bind(&mut self, src: &str, dest: Destination, key: &str) -> &mut Self {
        let x = self.0.get_mut(src).unwrap();
        x.bind(Binding::new(dest, key, Table::new()));
        self
    }

    fn bind_q(&mut self, src: &str, q: &str, key: &str) -> &mut Self {
        self.bind(src, Destination::queue(q), key)
    }

    fn bind_x(&mut self, src: &str, x: &str, key: &str) -> &mut Self {
        self.bind(src, Destination::exchange(x), key)
    }

    fn route(&self, start: &str, key: &str) -> Vec<String> {
        self.route_keys(start, &[key], None)
    }

    fn route_keys(&self, start: &str, keys: &[&str], headers: Option<&Table>) -> Vec<String> {
        let mut out = Vec::new();
        route_all_keys(|n| self.0.get(n), start, keys, headers, &mut out);
        out.iter().map(|q| q.to_string()).collect()
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

use ExchangeKind::{Direct, Fanout, Topic};

#[test]
fn follows_exchange_to_exchange_bindings() {
    let mut g = Graph::default();
    g.add("a", Direct, None)
        .add("b", Topic, None)
        .add("c", Fanout, None);
    g.bind_x("a", "b", "k.x").bind_q("a", "qa", "k.x");
    g.bind_x("b", "c", "k.*").bind_q("b", "qb", "#");
    g.bind_q("c", "qc", "");
    assert_eq!(sorted(g.route("a", "k.x")), ["qa", "qb", "qc"]);
    // The key is the message's all the way down.
    assert_eq!(g.route("a", "other"), Vec::<String>::new());
    assert_eq!(sorted(g.route("b", "k.y")), ["qb", "qc"]);
}

#[test]
fn cycles_terminate_and_each_queue_appears_once() {
    let mut g = Graph::default();
    g.add("a", Fanout, None)
        .add("b", Fanout, None)
        .add("c", Fanout, None);
    g.bind_x("a", "b", "")
        .bind_x("b", "c", "")
        .bind_x("c", "a", "");
    g.bind_x("a", "a", "");
    g.bind_q("a", "q", "")
        .bind_q("b", "q", "")
        .bind_q("c", "q", "")
        .bind_q("c", "qc", "");
    assert_eq!(sorted(g.route("a", "")), ["q", "qc"]);
    assert_eq!(sorted(g.route("c", "")), ["q", "qc"]);
}

#[test]
fn diamond_delivers_once() {
    let mut g = Graph::default();
    g.add("top", Fanout, None)
        .add("l", Fanout, None)
        .add("r", Fanout, None);
    g.add("bottom", Fanout, None);
    g.bind_x("top", "l", "").bind_x("top", "r", "");
    g.bind_x("l", "bottom", "")
        .bind_x("r", "bottom", "")
        .bind_q("bottom", "q", "");
    assert_eq!(g.route("top", ""), ["q"]);
}

#[test]
fn alternate_exchange_catches_unroutable() {
    let mut g = Graph::default();
    g.add("x", Direct, Some("ae")).add("ae", Fanout, None);
    g.bind_q("x", "q", "known").bind_q("ae", "unrouted", "");
    assert_eq!(g.route("x", "known"), ["q"], "routed: AE unused");
    assert_eq!(g.route("x", "unknown"), ["unrouted"]);
}

#[test]
fn alternate_exchanges_chain_and_cycles_end() {
    let mut g = Graph::default();
    g.add("x", Direct, Some("ae1"))
        .add("ae1", Direct, Some("ae2"));
    g.add("ae2", Direct, Some("x"));
    g.bind_q("ae2", "caught", "k2")
        .bind_q("ae1", "caught1", "k1");
    assert_eq!(g.route("x", "k1"), ["caught1"]);
    assert_eq!(g.route("x", "k2"), ["caught"], "x → ae1 → ae2");
    // Nobody routes "k3": ae2's AE is x, already visited: the loop ends.
    assert_eq!(g.route("x", "k3"), Vec::<String>::new());
    // Self-AE.
    g.add("self", Direct, Some("self"));
    assert_eq!(g.route("self", "k"), Vec::<String>::new());
}

#[test]
fn alternate_exchange_of_a_downstream_exchange() {
    let mut g = Graph::default();
    g.add("x", Fanout, Some("ae-x"))
        .add("y", Direct, Some("ae-y"));
    g.add("ae-x", Fanout, None).add("ae-y", Fanout, None);
    g.bind_x("x", "y", "")
        .bind_q("ae-x", "qx", "")
        .bind_q("ae-y", "qy", "");
    // x routes (to y), so x's AE is unused even though y finds no queue;
    // y routes nothing, so y's AE is used.
    assert_eq!(g.route("x", "k"), ["qy"]);
}

#[test]
fn routing_only_to_visited_exchanges_still_counts_as_routed() {
    let mut g = Graph::default();
    g.add("x", Fanout, Some("ae")).add("ae", Fanout, None);
    g.bind_x("x", "x", "").bind_q("ae", "caught", "");
    assert_eq!(g.route("x", ""), Vec::<String>::new());
}

#[test]
fn missing_exchanges_are_skipped() {
    let mut g = Graph::default();
    g.add("x", Fanout, Some("gone"))
        .add("y", Direct, Some("gone"));
    g.bind_x("x", "nowhere", "").bind_q("x", "q", "");
    assert_eq!(g.route("x", ""), ["q"]);
    assert_eq!(g.route("y", "k"), Vec::<String>::new());
    assert_eq!(g.route("absent", "k"), Vec::<String>::new());
}

#[test]
fn existing_output_is_respected_and_large_fanouts_dedupe() {
    let mut g = Graph::default();
    g.add("a", Fanout, None).add("b", Fanout, None);
    g.bind_x("a", "b", "");
    for i in 0..40 {
        g.bind_q("a", &format!("q{i}"), "")
            .bind_q("b", &format!("q{i}"), "");
    }
    let mut out: Vec<Arc<str>> = vec![Arc::from("q3"), Arc::from("other")];
    route_all(|n| g.0.get(n), "a", "", None, &mut out);
    assert_eq!(out.len(), 41);
    let mut names: Vec<&str> = out.iter().map(|q| &**q).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 41);
}

#[test]
fn many_exchanges_are_visited_once() {
    let mut g = Graph::default();
    g.add("hub", Fanout, None);
    for i in 0..50 {
        let name = format!("x{i}");
        g.add(&name, Fanout, None);
        g.bind_x("hub", &name, "")
            .bind_x(&name, "hub", "")
            .bind_q(&name, "q", "");
    }
    assert_eq!(g.route("hub", ""), ["q"]);
}

fn cc_headers(cc: &[&str], bcc: &[&str]) -> Table {
    let arr = |keys: &[&str]| Value::Array(keys.iter().map(|k| Value::str(*k)).collect());
    let mut h = Table::new();
    h.insert("CC", arr(cc));
    h.insert("BCC", arr(bcc));
    h
}

#[test]
fn sender_selected_distribution() {
    let h = cc_headers(&["k2"], &["k3"]);
    let keys = sender_selected_keys(Some(&h)).unwrap();
    assert_eq!(keys, ["k2", "k3"]);
    let mut g = Graph::default();
    g.add("x", Direct, None).add("t", Topic, None);
    g.bind_q("x", "q1", "k1")
        .bind_q("x", "q2", "k2")
        .bind_q("x", "q3", "k3");
    g.bind_x("x", "t", "k3").bind_q("t", "qt", "k2");
    let mut all = vec!["k1"];
    all.extend(keys);
    // Downstream exchanges route by every key too (t matches "k2").
    assert_eq!(
        sorted(g.route_keys("x", &all, Some(&h))),
        ["q1", "q2", "q3", "qt"]
    );

    assert_eq!(sender_selected_keys(None).unwrap(), Vec::<&str>::new());
    let mut mixed = Table::new();
    mixed.insert("CC", Value::Array(vec![Value::I64(1), Value::str("k")]));
    assert_eq!(sender_selected_keys(Some(&mixed)).unwrap(), ["k"]);
    let mut bad = Table::new();
    bad.insert("BCC", Value::str("k"));
    let err = sender_selected_keys(Some(&bad)).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"invalid message: {unacceptable_type_in_header,"BCC",longstr}"#
    );
}
