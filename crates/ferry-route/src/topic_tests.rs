//! Tests of the topic matcher: RabbitMQ's own routing table, edge cases,
//! and a seeded comparison of the trie against two reference matchers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The obvious recursive matcher: exponential on bad patterns, but short
/// enough to trust. Used only to check the other two.
fn naive(p: &[&str], k: &[&str]) -> bool {
    match p.split_first() {
        None => k.is_empty(),
        Some((&"#", rest)) => (0..=k.len()).any(|n| naive(rest, &k[n..])),
        Some((&"*", rest)) => !k.is_empty() && naive(rest, &k[1..]),
        Some((w, rest)) => k.first() == Some(w) && naive(rest, &k[1..]),
    }
}

fn naive_matches(pattern: &str, key: &str) -> bool {
    let p: Vec<&str> = words(pattern).collect();
    let k: Vec<&str> = words(key).collect();
    naive(&p, &k)
}

fn sorted_matches<T: Ord + Clone>(t: &TopicTrie<T>, key: &str) -> Vec<T> {
    let mut out = Vec::new();
    t.matches(key, &mut out);
    out.sort();
    out.dedup();
    out
}

fn live_nodes<T>(t: &TopicTrie<T>) -> usize {
    t.nodes.len() - t.free.len()
}

/// Bindings and expectations of RabbitMQ's `topic_matching` test (its
/// unit suite), restated as data. The two "args-test" rows bind the same
/// queue twice under one key (different arguments in RabbitMQ).
const BINDINGS: &[(&str, &str)] = &[
    ("a.b.c", "t1"),
    ("a.*.c", "t2"),
    ("a.#.b", "t3"),
    ("a.b.b.c", "t4"),
    ("#", "t5"),
    ("#.#", "t6"),
    ("#.b", "t7"),
    ("*.*", "t8"),
    ("a.*", "t9"),
    ("*.b.c", "t10"),
    ("a.#", "t11"),
    ("a.#.#", "t12"),
    ("b.b.c", "t13"),
    ("a.b.b", "t14"),
    ("a.b", "t15"),
    ("b.c", "t16"),
    ("", "t17"),
    ("*.*.*", "t18"),
    ("vodka.martini", "t19"),
    ("a.b.c", "t20"),
    ("*.#", "t21"),
    ("#.*.#", "t22"),
    ("*.#.#", "t23"),
    ("#.#.#", "t24"),
    ("*", "t25"),
    ("#.b.#", "t26"),
    ("args-test", "t27"),
    ("args-test", "t27"),
];

type Expect = (&'static str, &'static [&'static str]);

const BEFORE: &[Expect] = &[
    (
        "a.b.c",
        &[
            "t1", "t2", "t5", "t6", "t10", "t11", "t12", "t18", "t20", "t21", "t22", "t23", "t24",
            "t26",
        ],
    ),
    (
        "a.b",
        &[
            "t3", "t5", "t6", "t7", "t8", "t9", "t11", "t12", "t15", "t21", "t22", "t23", "t24",
            "t26",
        ],
    ),
    (
        "a.b.b",
        &[
            "t3", "t5", "t6", "t7", "t11", "t12", "t14", "t18", "t21", "t22", "t23", "t24", "t26",
        ],
    ),
    ("", &["t5", "t6", "t17", "t24"]),
    (
        "b.c.c",
        &["t5", "t6", "t18", "t21", "t22", "t23", "t24", "t26"],
    ),
    (
        "a.a.a.a.a",
        &["t5", "t6", "t11", "t12", "t21", "t22", "t23", "t24"],
    ),
    ("vodka.gin", &["t5", "t6", "t8", "t21", "t22", "t23", "t24"]),
    (
        "vodka.martini",
        &["t5", "t6", "t8", "t19", "t21", "t22", "t23", "t24"],
    ),
    (
        "b.b.c",
        &[
            "t5", "t6", "t10", "t13", "t18", "t21", "t22", "t23", "t24", "t26",
        ],
    ),
    (
        "nothing.here.at.all",
        &["t5", "t6", "t21", "t22", "t23", "t24"],
    ),
    ("oneword", &["t5", "t6", "t21", "t22", "t23", "t24", "t25"]),
    (
        "args-test",
        &["t5", "t6", "t21", "t22", "t23", "t24", "t25", "t27"],
    ),
];

/// 1-based positions in `BINDINGS` that RabbitMQ's test removes.
const REMOVED: &[usize] = &[1, 5, 11, 19, 21, 28];

const AFTER: &[Expect] = &[
    (
        "a.b.c",
        &[
            "t2", "t6", "t10", "t12", "t18", "t20", "t22", "t23", "t24", "t26",
        ],
    ),
    (
        "a.b",
        &[
            "t3", "t6", "t7", "t8", "t9", "t12", "t15", "t22", "t23", "t24", "t26",
        ],
    ),
    (
        "a.b.b",
        &[
            "t3", "t6", "t7", "t12", "t14", "t18", "t22", "t23", "t24", "t26",
        ],
    ),
    ("", &["t6", "t17", "t24"]),
    ("b.c.c", &["t6", "t18", "t22", "t23", "t24", "t26"]),
    ("a.a.a.a.a", &["t6", "t12", "t22", "t23", "t24"]),
    ("vodka.gin", &["t6", "t8", "t22", "t23", "t24"]),
    ("vodka.martini", &["t6", "t8", "t22", "t23", "t24"]),
    (
        "b.b.c",
        &["t6", "t10", "t13", "t18", "t22", "t23", "t24", "t26"],
    ),
    ("nothing.here.at.all", &["t6", "t22", "t23", "t24"]),
    ("oneword", &["t6", "t22", "t23", "t24", "t25"]),
    ("args-test", &["t6", "t22", "t23", "t24", "t25", "t27"]),
];

fn check(t: &TopicTrie<&'static str>, table: &[Expect]) {
    for (key, want) in table {
        let mut want: Vec<&str> = want.to_vec();
        want.sort();
        assert_eq!(sorted_matches(t, key), want, "key {key:?}");
    }
}

#[test]
fn rabbitmq_topic_matching_table() {
    let mut t = TopicTrie::new();
    for (p, q) in BINDINGS {
        t.insert(p, *q);
    }
    assert_eq!(t.len(), BINDINGS.len());
    check(&t, BEFORE);
    for &i in REMOVED {
        let (p, q) = BINDINGS[i - 1];
        assert!(t.remove(p, &q), "remove {p:?}");
    }
    check(&t, AFTER);
    for (i, (p, q)) in BINDINGS.iter().enumerate() {
        if !REMOVED.contains(&(i + 1)) {
            assert!(t.remove(p, q));
        }
    }
    check(&t, &[("a.b.c", &[]), ("b.b.c", &[]), ("", &[])]);
    assert!(t.is_empty());
    assert_eq!(live_nodes(&t), 1, "only the root is left");
}

#[test]
fn edge_cases() {
    let cases: &[(&str, &str, bool)] = &[
        ("#", "", true),
        ("#", "a.b.c", true),
        ("", "", true),
        ("", "a", false),
        ("*", "", false),
        ("#.#", "", true),
        ("#.*", "", false),
        ("a.#", "a", true),
        ("a.#", "a.", true),
        ("#.a", "a", true),
        ("a.#.b", "a.b", true),
        ("a.#.b", "a.x.y.b", true),
        ("a.*.b", "a.b", false),
        ("a..b", "a..b", true),
        ("a..b", "a.b", false),
        ("a.*.b", "a..b", true),
        ("*", ".", false),
        ("*.*", ".", true),
        ("#", ".", true),
        ("*.", "a.", true),
        (".", ".", true),
        ("a", "a.", false),
        ("*.#.*", "a", false),
        ("*.#.*", "a.b", true),
        ("#.*.#", "a", true),
        ("a*", "ab", false),
        ("a*", "a*", true),
        ("#a", "a", false),
        ("a.#.#.b", "a.b", true),
    ];
    for (pattern, key, want) in cases {
        assert_eq!(
            naive_matches(pattern, key),
            *want,
            "naive {pattern:?} {key:?}"
        );
        assert_eq!(topic_matches(pattern, key), *want, "dp {pattern:?} {key:?}");
        let mut t = TopicTrie::new();
        t.insert(pattern, 1u8);
        assert_eq!(
            !sorted_matches(&t, key).is_empty(),
            *want,
            "trie {pattern:?} {key:?}"
        );
    }
}

fn random_string(rng: &mut StdRng, alphabet: &[&str], max_words: usize) -> String {
    let n = rng.gen_range(0..=max_words);
    (0..n)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
        .collect::<Vec<_>>()
        .join(".")
}

#[test]
fn trie_agrees_with_references_on_generated_patterns() {
    let mut rng = StdRng::seed_from_u64(0x00F3_1221);
    let patterns: Vec<String> = (0..300)
        .map(|_| random_string(&mut rng, &["a", "b", "", "*", "#", "#"], 5))
        .collect();
    let keys: Vec<String> = (0..300)
        .map(|_| random_string(&mut rng, &["a", "b", ""], 6))
        .collect();
    let mut t = TopicTrie::new();
    for (i, p) in patterns.iter().enumerate() {
        t.insert(p, i);
    }
    let mut live: Vec<bool> = vec![true; patterns.len()];
    let compare = |t: &TopicTrie<usize>, live: &[bool]| {
        for k in &keys {
            let want: Vec<usize> = (0..patterns.len())
                .filter(|&i| live[i] && naive_matches(&patterns[i], k))
                .collect();
            for &i in &want {
                assert!(topic_matches(&patterns[i], k), "dp {:?} {k:?}", patterns[i]);
            }
            assert_eq!(sorted_matches(t, k), want, "key {k:?}");
        }
    };
    compare(&t, &live);
    // Remove a random half (plus some removals that must fail).
    for i in 0..patterns.len() {
        if rng.gen_bool(0.5) {
            assert!(t.remove(&patterns[i], &i));
            assert!(!t.remove(&patterns[i], &i), "removed twice");
            live[i] = false;
        }
    }
    assert!(!t.remove("never.bound", &0));
    assert_eq!(t.len(), live.iter().filter(|l| **l).count());
    compare(&t, &live);
    for (i, p) in patterns.iter().enumerate() {
        if live[i] {
            assert!(t.remove(p, &i));
        }
    }
    assert!(t.is_empty());
    assert_eq!(live_nodes(&t), 1);
}

#[test]
fn many_hashes_do_not_explode() {
    let key = vec!["a"; 120].join(".");
    let mut t = TopicTrie::new();
    let patterns = [
        "#.a.#.a.#.a.#.a.#.a.#.b",
        "#.a.#.a.#.a.#.a.#.a.#",
        "*.#.*.#.*.#.*.#.*",
    ];
    for (i, p) in patterns.iter().enumerate() {
        t.insert(p, i);
    }
    let got = sorted_matches(&t, &key);
    let want: Vec<usize> = (0..patterns.len())
        .filter(|&i| topic_matches(patterns[i], &key))
        .collect();
    assert_eq!(got, want);
    assert_eq!(want, [1, 2]);
}

#[test]
fn removal_prunes_only_unused_nodes() {
    let mut t = TopicTrie::new();
    t.insert("a.b.c", 1);
    t.insert("a.b", 2);
    t.insert("a.b", 2);
    assert_eq!(live_nodes(&t), 4);
    assert!(!t.remove("a.b.c", &2), "wrong value");
    assert!(!t.remove("a.x", &1), "no such pattern");
    assert!(t.remove("a.b.c", &1));
    assert_eq!(live_nodes(&t), 3, "a.b still has values");
    assert!(t.remove("a.b", &2));
    assert_eq!(sorted_matches(&t, "a.b"), [2], "second copy remains");
    assert!(t.remove("a.b", &2));
    assert_eq!(live_nodes(&t), 1);
    // Freed slots are reused.
    t.insert("x.y", 3);
    assert_eq!(t.nodes.len(), 4);
    assert_eq!(sorted_matches(&t, "x.y"), [3]);
}
