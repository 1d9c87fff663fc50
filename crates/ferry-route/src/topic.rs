//! Topic matching with RabbitMQ's semantics.
//!
//! A key or pattern is a list of words separated by '.'. Every word counts,
//! empty ones included: "a..b" is ["a", "", "b"] and "a." is ["a", ""].
//! The empty string alone is zero words (as RabbitMQ splits it), so the
//! pattern "" matches only the key "", and "*" does not match "".
//! In patterns, `*` matches exactly one word and `#` zero or more, so "#"
//! matches every key, "" included. `*` and `#` are special only as whole
//! words ("a*" is a literal word).

use super::multiset::Multiset;
use std::collections::{HashMap, HashSet};

/// Splits a key or pattern into words ("" → no words).
fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split('.').filter(move |_| !s.is_empty())
}

/// Whether `pattern` matches `key`. Linear-space dynamic programming over
/// (pattern word, key word), so no pattern can make it exponential.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    let key: Vec<&str> = words(key).collect();
    // reach[j]: the pattern words seen so far can match key[..j].
    let mut reach = vec![false; key.len() + 1];
    reach[0] = true;
    for p in words(pattern) {
        match p {
            "#" => {
                let mut any = false;
                for r in reach.iter_mut() {
                    any |= *r;
                    *r = any;
                }
            }
            _ => {
                for j in (1..=key.len()).rev() {
                    reach[j] = reach[j - 1] && (p == "*" || p == key[j - 1]);
                }
                reach[0] = false;
            }
        }
    }
    reach[key.len()]
}

/// One trie node: the pattern prefix spelled by the path to it.
#[derive(Debug, Clone)]
struct Node<T> {
    words: HashMap<Box<str>, usize>,
    star: Option<usize>,
    hash: Option<usize>,
    /// Values bound with exactly this pattern.
    values: Multiset<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Self {
            words: HashMap::new(),
            star: None,
            hash: None,
            values: Multiset::default(),
        }
    }
}

impl<T: Ord> Node<T> {
    fn has_children(&self) -> bool {
        !self.words.is_empty() || self.star.is_some() || self.hash.is_some()
    }
}

#[derive(Clone, Copy)]
enum Edge<'a> {
    Word(&'a str),
    Star,
    Hash,
}

impl<'a> Edge<'a> {
    fn of(word: &'a str) -> Self {
        match word {
            "*" => Edge::Star,
            "#" => Edge::Hash,
            w => Edge::Word(w),
        }
    }
}

/// The edges of a pattern's path. A run of `#` matches exactly what one `#`
/// does, so runs are collapsed: fewer nodes, and no repeated work for
/// patterns like "#.#.#".
fn path(pattern: &str) -> impl Iterator<Item = Edge<'_>> {
    let mut prev_hash = false;
    words(pattern).map(Edge::of).filter(move |e| {
        let is_hash = matches!(e, Edge::Hash);
        let keep = !(is_hash && prev_hash);
        prev_hash = is_hash;
        keep
    })
}

const ROOT: usize = 0;

/// Topic patterns → values, matched against routing keys.
///
/// A trie keyed by pattern word, with separate `*` and `#` edges. Matching
/// walks the key once per viable branch: literal words cost one hash
/// lookup, so a key is matched against thousands of patterns without
/// looking at most of them. A `#` edge tries every split of the remaining
/// words; entries into each `#` node are memoized per key position, which
/// bounds the work by (nodes × key words) whatever the patterns. A value
/// inserted several times under one pattern stays until removed as often.
#[derive(Debug, Clone)]
pub struct TopicTrie<T> {
    /// Arena; slot 0 is the root. Freed slots are reused.
    nodes: Vec<Node<T>>,
    free: Vec<usize>,
    len: usize,
}

impl<T: Ord + Clone> Default for TopicTrie<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Ord + Clone> TopicTrie<T> {
    /// An empty trie.
    pub fn new() -> Self {
        Self {
            nodes: vec![Node::default()],
            free: Vec::new(),
            len: 0,
        }
    }

    /// Number of (pattern, value) insertions not yet removed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing inserted.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn child(&self, n: usize, e: Edge<'_>) -> Option<usize> {
        let node = &self.nodes[n];
        match e {
            Edge::Word(w) => node.words.get(w).copied(),
            Edge::Star => node.star,
            Edge::Hash => node.hash,
        }
    }

    fn alloc(&mut self) -> usize {
        match self.free.pop() {
            Some(i) => i,
            None => {
                self.nodes.push(Node::default());
                self.nodes.len() - 1
            }
        }
    }

    /// Adds `value` under `pattern`.
    pub fn insert(&mut self, pattern: &str, value: T) {
        let mut n = ROOT;
        for e in path(pattern) {
            n = match self.child(n, e) {
                Some(c) => c,
                None => {
                    let c = self.alloc();
                    let node = &mut self.nodes[n];
                    match e {
                        Edge::Word(w) => {
                            node.words.insert(w.into(), c);
                        }
                        Edge::Star => node.star = Some(c),
                        Edge::Hash => node.hash = Some(c),
                    }
                    c
                }
            };
        }
        self.nodes[n].values.insert(value);
        self.len += 1;
    }

    /// Removes one insertion of `value` under `pattern`; false if absent.
    /// Nodes left with no values and no children are freed.
    pub fn remove(&mut self, pattern: &str, value: &T) -> bool {
        let mut trail: Vec<(usize, Edge<'_>)> = Vec::new();
        let mut n = ROOT;
        for e in path(pattern) {
            match self.child(n, e) {
                Some(c) => {
                    trail.push((n, e));
                    n = c;
                }
                None => return false,
            }
        }
        if !self.nodes[n].values.remove(value) {
            return false;
        }
        self.len -= 1;
        // Prune upwards while the node is useless.
        while let Some((parent, e)) = trail.pop() {
            let node = &self.nodes[n];
            if !node.values.is_empty() || node.has_children() {
                break;
            }
            let p = &mut self.nodes[parent];
            match e {
                Edge::Word(w) => {
                    p.words.remove(w);
                }
                Edge::Star => p.star = None,
                Edge::Hash => p.hash = None,
            }
            // Drop the node's allocations now rather than on reuse.
            self.nodes[n] = Node::default();
            self.free.push(n);
            n = parent;
        }
        true
    }

    /// Appends the values of every pattern matching `key` to `out`. A value
    /// reachable through several patterns may be appended more than once;
    /// callers that need a set deduplicate.
    pub fn matches(&self, key: &str, out: &mut Vec<T>) {
        if self.is_empty() {
            return;
        }
        let key: Vec<&str> = words(key).collect();
        let mut seen = None;
        self.visit(ROOT, 0, &key, &mut seen, out);
    }

    /// Matches `key[i..]` from node `n`. `seen` holds the (`#` node, key
    /// position) pairs already entered; it is allocated only when a key
    /// actually meets a non-final `#`.
    fn visit(
        &self,
        n: usize,
        i: usize,
        key: &[&str],
        seen: &mut Option<HashSet<(usize, usize)>>,
        out: &mut Vec<T>,
    ) {
        let node = &self.nodes[n];
        match key.get(i) {
            None => out.extend(node.values.iter().cloned()),
            Some(w) => {
                if let Some(&c) = node.words.get(*w) {
                    self.visit(c, i + 1, key, seen, out);
                }
                if let Some(c) = node.star {
                    self.visit(c, i + 1, key, seen, out);
                }
            }
        }
        if let Some(h) = node.hash {
            let hn = &self.nodes[h];
            if !hn.has_children() {
                // A final '#' swallows whatever is left: no need to try
                // each split (the common "a.#" case stays allocation-free).
                out.extend(hn.values.iter().cloned());
            } else {
                for j in i..=key.len() {
                    if seen.get_or_insert_with(HashSet::new).insert((h, j)) {
                        self.visit(h, j, key, seen, out);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "topic_tests.rs"]
mod tests;
