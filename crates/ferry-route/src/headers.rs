//! Headers-exchange matching, as RabbitMQ (≥ 3.13) does it.
//!
//! A binding's arguments are the match spec. `x-match` says how to combine
//! the other arguments: `all` (the default) needs every one to match,
//! `any` needs at least one. Arguments whose names start with `x-` are
//! ignored, except with `all-with-x` / `any-with-x` (RabbitMQ 3.10+), where
//! only `x-match` itself is ignored. An argument matches when the message
//! has a header of that name and:
//! - the argument's value is void: any value (presence test);
//! - otherwise: an equal value, compared with the field type stripped (all
//!   integer types compare numerically, long strings / short strings /
//!   byte arrays compare by bytes, integers never equal floats). See
//!   `args::routing_eq` for the details and the one deliberate difference
//!   (timestamps).
//!
//! Edge cases that follow from this, as in RabbitMQ: `all` with nothing to
//! compare matches every message; `any` with nothing to compare matches
//! none; a message without headers is a message with no headers.
//!
//! Binding arguments and message headers are both `ferry_model` tables; a
//! message header repeated in a table is looked up by its first entry (as
//! RabbitMQ's `table_lookup`), a binding's arguments are taken in key order
//! with the first of a repeated key (the sorted table RabbitMQ stores).

use super::args;
use ferry_model::{Table, Value};
use std::cmp::Ordering;
use std::sync::Arc;

/// How a headers binding combines its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum XMatch {
    /// Every argument must match (default).
    All,
    /// At least one argument must match.
    Any,
    /// Like `All`, but `x-` arguments (other than `x-match`) take part.
    AllWithX,
    /// Like `Any`, but `x-` arguments (other than `x-match`) take part.
    AnyWithX,
}

impl XMatch {
    /// The mode of a binding's arguments. Like RabbitMQ's router this is
    /// lenient: a missing or unrecognized `x-match` means `All` (bindings
    /// are checked with [`validate_binding_arguments`] when created).
    pub fn of(arguments: &Table) -> Self {
        match arguments.get("x-match").and_then(ferry_model::args::text) {
            Some("any") => XMatch::Any,
            Some("all-with-x") => XMatch::AllWithX,
            Some("any-with-x") => XMatch::AnyWithX,
            _ => XMatch::All,
        }
    }

    fn with_x(self) -> bool {
        matches!(self, XMatch::AllWithX | XMatch::AnyWithX)
    }

    fn is_any(self) -> bool {
        matches!(self, XMatch::Any | XMatch::AnyWithX)
    }
}

/// A headers binding's arguments, compiled for matching: the mode and the
/// arguments that take part (`None` = void = presence test).
#[derive(Debug, Clone)]
pub struct HeadersMatcher {
    mode: XMatch,
    fields: Vec<(Arc<str>, Option<Value>)>,
}

impl HeadersMatcher {
    /// Compiles a binding's arguments (in key order, see the module doc).
    pub fn new(arguments: &Table) -> Self {
        let mode = XMatch::of(arguments);
        let fields = args::sorted(arguments)
            .into_iter()
            .filter(|(k, _)| {
                let k: &str = k;
                k != "x-match" && (mode.with_x() || !k.starts_with("x-"))
            })
            .map(|(k, v)| {
                let want = match v {
                    Value::Void => None,
                    v => Some(v.clone()),
                };
                (k.clone(), want)
            })
            .collect::<Vec<_>>();
        Self { mode, fields }
    }

    /// The mode.
    pub fn mode(&self) -> XMatch {
        self.mode
    }

    /// Whether a message with these headers matches.
    pub fn matches(&self, headers: Option<&Table>) -> bool {
        let one =
            |(k, want): &(Arc<str>, Option<Value>)| match (headers.and_then(|h| h.get(k)), want) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(got), Some(want)) => args::routing_eq(got, want),
            };
        if self.mode.is_any() {
            self.fields.iter().any(one)
        } else {
            self.fields.iter().all(one)
        }
    }
}

/// Two matchers are equal when they match exactly the same messages by
/// construction (same mode, same fields, values identical incl. type).
/// Bindings whose arguments differ only in ignored `x-` fields compile to
/// equal matchers, which is what lets the index drop either one.
impl PartialEq for HeadersMatcher {
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode
            && self.fields.len() == other.fields.len()
            && self
                .fields
                .iter()
                .zip(&other.fields)
                .all(|((k1, v1), (k2, v2))| {
                    k1 == k2
                        && match (v1, v2) {
                            (None, None) => true,
                            (Some(a), Some(b)) => args::cmp_value(a, b) == Ordering::Equal,
                            _ => false,
                        }
                })
    }
}

/// A headers binding whose `x-match` RabbitMQ refuses. Sent as a channel
/// error 406 PRECONDITION_FAILED (`ErrorKind::PreconditionFailed`) with
/// this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBinding {
    /// `x-match` is a string but not one of the four modes.
    #[error(
        "Invalid x-match field value <<\"{0}\">>; expected all, any, all-with-x, or any-with-x"
    )]
    XMatchValue(String),
    /// `x-match` is not a string.
    #[error("Invalid x-match field type {type_name} (value {value}); expected longstr")]
    XMatchType {
        /// RabbitMQ's name of the field type given.
        type_name: &'static str,
        /// The value given, as text.
        value: String,
    },
    /// A consistent-hash binding key that is not a weight (the plugin's
    /// text, e.g. `The binding key must be greater than 0`).
    #[error("{0}")]
    Weight(String),
}

/// Checks a headers binding's arguments the way RabbitMQ does before
/// creating the binding: `x-match`, when present, must be a string naming
/// one of the four modes.
pub fn validate_binding_arguments(arguments: &Table) -> Result<(), InvalidBinding> {
    let Some(v) = arguments.get("x-match") else {
        return Ok(());
    };
    match ferry_model::args::text(v) {
        Some("all" | "any" | "all-with-x" | "any-with-x") => Ok(()),
        Some(other) => Err(InvalidBinding::XMatchValue(other.to_string())),
        None => match v {
            // A string that is not UTF-8 is still a string, just not a mode.
            Value::Str(s) => Err(InvalidBinding::XMatchValue(
                String::from_utf8_lossy(s).into_owned(),
            )),
            _ => Err(InvalidBinding::XMatchType {
                type_name: args::type_name(v),
                value: args::describe_bare(v).trim_matches('\'').to_string(),
            }),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::test_support::{ms as s, mtable as table};

    /// (binding arguments, message headers, expected match)
    type Case = (Table, Option<Table>, bool);

    fn run(cases: Vec<Case>) {
        for (i, (binding, headers, want)) in cases.into_iter().enumerate() {
            let m = HeadersMatcher::new(&binding);
            assert_eq!(
                m.matches(headers.as_ref()),
                want,
                "case {i}: {binding:?} / {headers:?}"
            );
        }
    }

    #[test]
    fn all_and_any() {
        use Value as V;
        let ab = || table(&[("a", s("1")), ("b", s("2"))]);
        let any = |extra: &[(&str, Value)]| {
            let mut t = table(&[("x-match", s("any")), ("a", s("1")), ("b", s("2"))]);
            for (k, v) in extra {
                t.insert(*k, v.clone());
            }
            t
        };
        run(vec![
            // default is all
            (ab(), Some(table(&[("a", s("1")), ("b", s("2"))])), true),
            (
                ab(),
                Some(table(&[("a", s("1")), ("b", s("2")), ("c", s("3"))])),
                true,
            ),
            (ab(), Some(table(&[("a", s("1"))])), false),
            (ab(), Some(table(&[("a", s("1")), ("b", s("x"))])), false),
            (ab(), None, false),
            // explicit all
            (
                table(&[("x-match", s("all")), ("a", s("1"))]),
                Some(table(&[("a", s("1"))])),
                true,
            ),
            // any
            (any(&[]), Some(table(&[("b", s("2"))])), true),
            (
                any(&[]),
                Some(table(&[("a", s("x")), ("b", s("y"))])),
                false,
            ),
            (any(&[]), Some(table(&[])), false),
            (any(&[]), None, false),
            // integers of any width are equal; int vs string is not
            (
                table(&[("n", V::I64(7))]),
                Some(table(&[("n", V::U8(7))])),
                true,
            ),
            (
                table(&[("n", V::I64(7))]),
                Some(table(&[("n", s("7"))])),
                false,
            ),
        ]);
    }

    #[test]
    fn nothing_to_compare() {
        run(vec![
            (Table::new(), None, true),
            (
                table(&[("x-match", s("all"))]),
                Some(table(&[("a", s("1"))])),
                true,
            ),
            (
                table(&[("x-match", s("any"))]),
                Some(table(&[("a", s("1"))])),
                false,
            ),
            (
                table(&[("x-match", s("any")), ("x-foo", s("1"))]),
                Some(table(&[("x-foo", s("1"))])),
                false,
            ),
        ]);
    }

    #[test]
    fn void_means_presence() {
        use Value as V;
        let b = || table(&[("a", V::Void)]);
        run(vec![
            (b(), Some(table(&[("a", s("anything"))])), true),
            (b(), Some(table(&[("a", V::Void)])), true),
            (b(), Some(table(&[("a", V::I64(0))])), true),
            (b(), Some(table(&[("b", s("1"))])), false),
            (b(), None, false),
            // a void header does not equal a non-void argument
            (
                table(&[("a", s(""))]),
                Some(table(&[("a", V::Void)])),
                false,
            ),
            (
                table(&[("x-match", s("any")), ("a", V::Void), ("b", s("2"))]),
                Some(table(&[("a", s("1"))])),
                true,
            ),
        ]);
    }

    #[test]
    fn x_arguments_only_count_with_x() {
        let h = || Some(table(&[("x-tag", s("blue")), ("a", s("1"))]));
        run(vec![
            // ignored: only "a" is compared
            (table(&[("x-tag", s("red")), ("a", s("1"))]), h(), true),
            (
                table(&[("x-match", s("any")), ("x-tag", s("blue"))]),
                h(),
                false,
            ),
            // with-x: x-tag is compared, x-match never is
            (
                table(&[
                    ("x-match", s("all-with-x")),
                    ("x-tag", s("red")),
                    ("a", s("1")),
                ]),
                h(),
                false,
            ),
            (
                table(&[
                    ("x-match", s("all-with-x")),
                    ("x-tag", s("blue")),
                    ("a", s("1")),
                ]),
                h(),
                true,
            ),
            (
                table(&[("x-match", s("any-with-x")), ("x-tag", s("blue"))]),
                h(),
                true,
            ),
            (
                table(&[("x-match", s("any-with-x")), ("x-tag", s("red"))]),
                h(),
                false,
            ),
        ]);
    }

    #[test]
    fn modes_and_leniency() {
        use Value as V;
        let mode = |v: Value| XMatch::of(&table(&[("x-match", v)]));
        assert_eq!(XMatch::of(&Table::new()), XMatch::All);
        assert_eq!(mode(s("any")), XMatch::Any);
        assert_eq!(mode(s("any-with-x")), XMatch::AnyWithX);
        assert_eq!(mode(s("all-with-x")), XMatch::AllWithX);
        assert_eq!(mode(s("ANY")), XMatch::All);
        assert_eq!(mode(V::I64(1)), XMatch::All);
    }

    #[test]
    fn validation_texts() {
        use Value as V;
        let check = |v: Value| validate_binding_arguments(&table(&[("x-match", v)]));
        assert_eq!(validate_binding_arguments(&Table::new()), Ok(()));
        for ok in ["all", "any", "all-with-x", "any-with-x"] {
            assert_eq!(check(s(ok)), Ok(()));
        }
        assert_eq!(
            check(s("some")).unwrap_err().to_string(),
            "Invalid x-match field value <<\"some\">>; expected all, any, all-with-x, or any-with-x"
        );
        assert_eq!(
            check(V::I64(1)).unwrap_err().to_string(),
            "Invalid x-match field type long (value 1); expected longstr"
        );
    }

    #[test]
    fn matcher_equality_ignores_what_matching_ignores() {
        let a = HeadersMatcher::new(&table(&[("x-foo", s("1")), ("k", s("v"))]));
        let b = HeadersMatcher::new(&table(&[("x-foo", s("2")), ("k", s("v"))]));
        let c = HeadersMatcher::new(&table(&[("k", Value::I32(1))]));
        let d = HeadersMatcher::new(&table(&[("k", Value::I64(1))]));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(c, d, "identical means identical type too");
        // Order of the arguments given does not matter; first entry wins.
        let e = HeadersMatcher::new(&table(&[("k", s("v")), ("j", s("w"))]));
        let f = HeadersMatcher::new(&table(&[("j", s("w")), ("k", s("v")), ("k", s("z"))]));
        assert_eq!(e, f);
    }

    #[test]
    fn repeated_message_headers_match_by_their_first_entry() {
        let m = HeadersMatcher::new(&table(&[("a", s("1"))]));
        assert!(m.matches(Some(&table(&[("a", s("1")), ("a", s("2"))]))));
        assert!(!m.matches(Some(&table(&[("a", s("2")), ("a", s("1"))]))));
    }
}
