//! Comparisons of argument values (`ferry_model::Value`), in the three
//! flavours RabbitMQ uses:
//!
//! - identity ([`cmp_value`], [`hash_table`]): a binding's arguments are
//!   part of its identity and RabbitMQ compares them with Erlang's exact
//!   term equality, so the field type matters (`long 1` ≠ `signedint 1`).
//!   We extend that to a total order so bindings can live in a `BTreeSet`;
//!   floats compare by bit pattern, which keeps the order total (NaN equals
//!   an identical NaN) and agrees with RabbitMQ on every value it can hold.
//!   Tables compare as RabbitMQ's sorted tables: by their entries in key
//!   order, the first entry of a repeated key counting ([`sorted`]), so the
//!   order a table was given in never matters.
//! - routing ([`routing_eq`]): the headers exchange compares values with
//!   the type tag stripped (RabbitMQ ≥ 3.13: `maps:get(K, Headers) =:= V`),
//!   so every integer type compares numerically, and string-like types
//!   compare by bytes.
//! - redeclare ([`equivalent_arg`]): `exchange.declare` compares arguments
//!   by RabbitMQ's "type class" (all integer types are one class, float and
//!   double are another) and then by value.
//!
//! Type names ([`type_name`]) are RabbitMQ's AMQP field type names, as its
//! error texts print them; a model `Str` is AMQP's long string.

pub(crate) use ferry_model::args::{sorted, type_name};
use ferry_model::{Table, Value};
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

/// Position of the variant in the identity order.
fn rank(v: &Value) -> u8 {
    match v {
        Value::Bool(_) => 0,
        Value::I8(_) => 1,
        Value::U8(_) => 2,
        Value::I16(_) => 3,
        Value::U16(_) => 4,
        Value::I32(_) => 5,
        Value::U32(_) => 6,
        Value::I64(_) => 7,
        Value::F32(_) => 8,
        Value::F64(_) => 9,
        Value::Decimal { .. } => 10,
        Value::Str(_) => 12,
        Value::Array(_) => 13,
        Value::Timestamp(_) => 14,
        Value::Table(_) => 15,
        Value::Bytes(_) => 16,
        Value::Void => 17,
    }
}

/// Total order on values: by type first, then by value.
pub(crate) fn cmp_value(a: &Value, b: &Value) -> Ordering {
    use Value as V;
    match (a, b) {
        (V::Bool(x), V::Bool(y)) => x.cmp(y),
        (V::I8(x), V::I8(y)) => x.cmp(y),
        (V::U8(x), V::U8(y)) => x.cmp(y),
        (V::I16(x), V::I16(y)) => x.cmp(y),
        (V::U16(x), V::U16(y)) => x.cmp(y),
        (V::I32(x), V::I32(y)) => x.cmp(y),
        (V::U32(x), V::U32(y)) => x.cmp(y),
        (V::I64(x), V::I64(y)) => x.cmp(y),
        (V::F32(x), V::F32(y)) => x.total_cmp(y),
        (V::F64(x), V::F64(y)) => x.total_cmp(y),
        (
            V::Decimal {
                scale: s1,
                value: v1,
            },
            V::Decimal {
                scale: s2,
                value: v2,
            },
        ) => (s1, v1).cmp(&(s2, v2)),
        (V::Str(x), V::Str(y)) => x.as_ref().cmp(y.as_ref()),
        (V::Array(x), V::Array(y)) => cmp_slice(x, y),
        (V::Timestamp(x), V::Timestamp(y)) => x.cmp(y),
        (V::Table(x), V::Table(y)) => cmp_table(x, y),
        (V::Bytes(x), V::Bytes(y)) => x.as_ref().cmp(y.as_ref()),
        _ => rank(a).cmp(&rank(b)),
    }
}

fn cmp_slice(a: &[Value], b: &[Value]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match cmp_value(x, y) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    a.len().cmp(&b.len())
}

/// Total order on tables: lexicographic over their [`sorted`] entries.
pub(crate) fn cmp_table(a: &Table, b: &Table) -> Ordering {
    // Most bindings have no arguments: no sorting (or allocation) then.
    if a.is_empty() || b.is_empty() {
        return a.len().cmp(&b.len());
    }
    let (a, b) = (sorted(a), sorted(b));
    for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
        match ka.cmp(kb).then_with(|| cmp_value(va, vb)) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    a.len().cmp(&b.len())
}

/// Hash consistent with [`cmp_value`] equality.
fn hash_value<H: Hasher>(v: &Value, h: &mut H) {
    use Value as V;
    rank(v).hash(h);
    match v {
        V::Bool(x) => x.hash(h),
        V::I8(x) => x.hash(h),
        V::U8(x) => x.hash(h),
        V::I16(x) => x.hash(h),
        V::U16(x) => x.hash(h),
        V::I32(x) => x.hash(h),
        V::U32(x) => x.hash(h),
        V::I64(x) => x.hash(h),
        V::F32(x) => x.to_bits().hash(h),
        V::F64(x) => x.to_bits().hash(h),
        V::Decimal { scale, value } => (scale, value).hash(h),
        V::Str(x) => x.as_ref().hash(h),
        V::Array(x) => {
            x.len().hash(h);
            for e in x {
                hash_value(e, h);
            }
        }
        V::Timestamp(x) => x.hash(h),
        V::Table(x) => hash_table(x, h),
        V::Bytes(x) => x.as_ref().hash(h),
        V::Void => {}
    }
}

/// Hash consistent with [`cmp_table`] equality.
pub(crate) fn hash_table<H: Hasher>(t: &Table, h: &mut H) {
    let entries = sorted(t);
    entries.len().hash(h);
    for (k, v) in entries {
        k.hash(h);
        hash_value(v, h);
    }
}

/// A value with its type stripped, the way RabbitMQ's headers exchange
/// sees it (an Erlang term).
enum Plain<'a> {
    Int(i128),
    Float(f64),
    Bytes(&'a [u8]),
    Bool(bool),
    Decimal(u8, u32),
    Void,
    /// Arrays and tables keep their element types in RabbitMQ, so they
    /// compare by identity.
    Nested(&'a Value),
}

fn plain(v: &Value) -> Plain<'_> {
    use Value as V;
    match v {
        V::Bool(b) => Plain::Bool(*b),
        V::I8(x) => Plain::Int((*x).into()),
        V::U8(x) => Plain::Int((*x).into()),
        V::I16(x) => Plain::Int((*x).into()),
        V::U16(x) => Plain::Int((*x).into()),
        V::I32(x) => Plain::Int((*x).into()),
        V::U32(x) => Plain::Int((*x).into()),
        V::I64(x) => Plain::Int((*x).into()),
        // RabbitMQ ≥ 3.13 multiplies a message's timestamp header by 1000
        // before matching but not the binding's value, so a timestamp
        // header can only match a binding value 1000× larger. We treat it
        // as the plain integer it is on the wire instead.
        V::Timestamp(x) => Plain::Int((*x).into()),
        // Erlang decodes a 32-bit float into a double holding the same value.
        V::F32(x) => Plain::Float((*x).into()),
        V::F64(x) => Plain::Float(*x),
        V::Decimal { scale, value } => Plain::Decimal(*scale, *value),
        V::Str(s) => Plain::Bytes(s),
        V::Bytes(b) => Plain::Bytes(b),
        V::Void => Plain::Void,
        V::Array(_) | V::Table(_) => Plain::Nested(v),
    }
}

// The headers matcher compares model values (`headers::routing_eq`, the
// same rules); this AMQP form stays for the argument half of issue 11.
#[allow(dead_code)]
/// Headers-exchange value equality (see the module doc). Integers never
/// equal floats (Erlang `=:=`); floats compare numerically (NaN never
/// matches, 0.0 matches -0.0).
pub(crate) fn routing_eq(a: &Value, b: &Value) -> bool {
    match (plain(a), plain(b)) {
        (Plain::Int(x), Plain::Int(y)) => x == y,
        (Plain::Float(x), Plain::Float(y)) => x == y,
        (Plain::Bytes(x), Plain::Bytes(y)) => x == y,
        (Plain::Bool(x), Plain::Bool(y)) => x == y,
        (Plain::Decimal(s1, v1), Plain::Decimal(s2, v2)) => s1 == s2 && v1 == v2,
        (Plain::Void, Plain::Void) => true,
        (Plain::Nested(x), Plain::Nested(y)) => cmp_value(x, y) == Ordering::Equal,
        _ => false,
    }
}

/// RabbitMQ's `type_class/1`, used when comparing redeclared arguments.
#[derive(PartialEq, Eq)]
enum TypeClass {
    Int,
    Float,
    Str,
    Other(u8),
}

fn type_class(v: &Value) -> TypeClass {
    use Value as V;
    match v {
        V::I8(_)
        | V::U8(_)
        | V::I16(_)
        | V::U16(_)
        | V::I32(_)
        | V::U32(_)
        | V::I64(_)
        | V::Decimal { .. } => TypeClass::Int,
        V::F32(_) | V::F64(_) => TypeClass::Float,
        V::Str(_) => TypeClass::Str,
        other => TypeClass::Other(rank(other)),
    }
}

/// Whether a redeclared argument value is equivalent to the current one:
/// same type class and equal value (Erlang `==`, so `1` and `1.0` would be
/// equal, but they are never in the same class).
pub fn equivalent_arg(current: &Value, requested: &Value) -> bool {
    type_class(current) == type_class(requested)
        && match (plain(current), plain(requested)) {
            (Plain::Int(x), Plain::Int(y)) => x == y,
            (Plain::Float(x), Plain::Float(y)) => x == y,
            (Plain::Bytes(x), Plain::Bytes(y)) => x == y,
            _ => cmp_value(current, requested) == Ordering::Equal,
        }
}

/// A value as RabbitMQ prints a bare field value in an error text
/// (`'~ts'` for binaries, `'~tp'` otherwise).
pub fn describe_bare(v: &Value) -> String {
    format!("'{}'", display(v))
}

/// A typed value as RabbitMQ prints it: `the value 'x' of type 'longstr'`.
pub fn describe_typed(v: &Value) -> String {
    format!("the value '{}' of type '{}'", display(v), type_name(v))
}

fn display(v: &Value) -> String {
    use Value as V;
    match v {
        V::Bool(b) => b.to_string(),
        V::I8(x) => x.to_string(),
        V::U8(x) => x.to_string(),
        V::I16(x) => x.to_string(),
        V::U16(x) => x.to_string(),
        V::I32(x) => x.to_string(),
        V::U32(x) => x.to_string(),
        V::I64(x) => x.to_string(),
        V::Timestamp(x) => x.to_string(),
        // Debug keeps the ".0" Erlang prints for whole floats.
        V::F32(x) => format!("{x:?}"),
        V::F64(x) => format!("{x:?}"),
        V::Decimal { scale, value } => format!("{{{scale},{value}}}"),
        V::Str(s) => String::from_utf8_lossy(s).into_owned(),
        V::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        V::Void => "undefined".to_string(),
        V::Array(a) => format!("{a:?}"),
        V::Table(t) => format!("{:?}", sorted(t)),
    }
}

/// A non-negative integer argument of any AMQP integer type (e.g.
/// `x-consumer-timeout`, `x-max-length`), as RabbitMQ accepts them.
pub fn as_u64(v: &Value) -> Option<u64> {
    use Value as V;
    match v {
        V::I8(x) => u64::try_from(*x).ok(),
        V::U8(x) => Some(u64::from(*x)),
        V::I16(x) => u64::try_from(*x).ok(),
        V::U16(x) => Some(u64::from(*x)),
        V::I32(x) => u64::try_from(*x).ok(),
        V::U32(x) => Some(u64::from(*x)),
        V::I64(x) => u64::try_from(*x).ok(),
        V::Timestamp(x) => Some(*x),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn s(x: &str) -> Value {
        Value::str(x)
    }

    fn h(t: &Table) -> u64 {
        let mut hasher = DefaultHasher::new();
        hash_table(t, &mut hasher);
        hasher.finish()
    }

    #[test]
    fn identity_is_typed_and_total() {
        use Value as V;
        assert_ne!(cmp_value(&V::I64(1), &V::I32(1)), Ordering::Equal);
        assert_eq!(
            cmp_value(&V::F64(f64::NAN), &V::F64(f64::NAN)),
            Ordering::Equal
        );
        assert_ne!(cmp_value(&V::F64(0.0), &V::F64(-0.0)), Ordering::Equal);
        assert_eq!(cmp_value(&s("a"), &s("b")), Ordering::Less);
        let mut a = Table::new();
        a.insert("k", V::I64(1));
        let mut b = Table::new();
        b.insert("k", V::I64(1));
        assert_eq!(cmp_table(&a, &b), Ordering::Equal);
        assert_eq!(h(&a), h(&b));
        b.insert("l", V::Void);
        assert_eq!(cmp_table(&a, &b), Ordering::Less);
        assert_eq!(cmp_table(&b, &a), Ordering::Greater);
    }

    #[test]
    fn tables_compare_as_sorted_tables_first_entry_winning() {
        use Value as V;
        let ab: Table = [("a", V::I64(1)), ("b", s("x"))].into_iter().collect();
        let ba: Table = [("b", s("x")), ("a", V::I64(1))].into_iter().collect();
        let repeated: Table = [("b", s("x")), ("a", V::I64(1)), ("a", V::I64(2))]
            .into_iter()
            .collect();
        let other: Table = [("a", V::I64(2)), ("b", s("x"))].into_iter().collect();
        assert_eq!(cmp_table(&ab, &ba), Ordering::Equal);
        assert_eq!(h(&ab), h(&ba));
        assert_eq!(cmp_table(&ab, &repeated), Ordering::Equal);
        assert_eq!(h(&ab), h(&repeated));
        assert_eq!(cmp_table(&ab, &other), Ordering::Less);
        let keys: Vec<&str> = sorted(&repeated).iter().map(|(k, _)| &***k).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(sorted(&repeated)[0].1, &V::I64(1));
        // Nested tables too.
        let nest = |t: &Table| -> Table { [("n", V::Table(t.clone()))].into_iter().collect() };
        assert_eq!(cmp_table(&nest(&ab), &nest(&ba)), Ordering::Equal);
        assert_eq!(h(&nest(&ab)), h(&nest(&ba)));
    }

    #[test]
    fn routing_equality_table() {
        use Value as V;
        let dec = |scale, value| V::Decimal { scale, value };
        let arr = |v: Vec<Value>| V::Array(v);
        let cases: &[(Value, Value, bool)] = &[
            (V::I64(5), V::I32(5), true),
            (V::U8(5), V::Timestamp(5), true),
            (V::U32(u32::MAX), V::I64(i64::from(u32::MAX)), true),
            (V::I8(-1), V::U8(255), false),
            (V::I64(1), V::F64(1.0), false),
            (V::F32(1.5), V::F64(1.5), true),
            (V::F32(0.1), V::F64(0.1), false),
            (V::F64(f64::NAN), V::F64(f64::NAN), false),
            (V::F64(0.0), V::F64(-0.0), true),
            (s("abc"), V::Bytes(bytes::Bytes::from_static(b"abc")), true),
            (s("abc"), s("abd"), false),
            (V::Bool(true), V::Bool(true), true),
            (V::Bool(true), V::I64(1), false),
            (dec(2, 100), dec(2, 100), true),
            (dec(2, 100), dec(1, 10), false),
            (V::Void, V::Void, true),
            (V::Void, s(""), false),
            (arr(vec![V::I64(1)]), arr(vec![V::I64(1)]), true),
            (arr(vec![V::I64(1)]), arr(vec![V::I32(1)]), false),
        ];
        for (a, b, want) in cases {
            assert_eq!(routing_eq(a, b), *want, "{a:?} vs {b:?}");
            assert_eq!(routing_eq(b, a), *want, "{b:?} vs {a:?}");
        }
    }

    #[test]
    fn redeclare_equivalence_uses_type_classes() {
        use Value as V;
        assert!(equivalent_arg(&s("ae"), &s("ae")));
        assert!(equivalent_arg(&V::I32(3), &V::I64(3)));
        assert!(!equivalent_arg(&V::I32(3), &V::F64(3.0)));
        assert!(equivalent_arg(&V::F32(2.5), &V::F64(2.5)));
        assert!(!equivalent_arg(&s("a"), &s("b")));
        assert!(!equivalent_arg(&V::Timestamp(1), &V::I64(1)));
    }

    #[test]
    fn type_names_are_rabbitmqs() {
        use Value as V;
        let cases = [
            (V::Bool(true), "bool"),
            (V::I8(0), "byte"),
            (V::U8(0), "unsignedbyte"),
            (V::I16(0), "short"),
            (V::U16(0), "unsignedshort"),
            (V::I32(0), "signedint"),
            (V::U32(0), "unsignedint"),
            (V::I64(0), "long"),
            (V::F32(0.0), "float"),
            (V::F64(0.0), "double"),
            (V::Decimal { scale: 0, value: 0 }, "decimal"),
            (s(""), "longstr"),
            (V::Timestamp(0), "timestamp"),
            (V::Table(Table::new()), "table"),
            (V::Array(vec![]), "array"),
            (V::Bytes(bytes::Bytes::new()), "binary"),
            (V::Void, "void"),
        ];
        for (v, name) in cases {
            assert_eq!(type_name(&v), name, "{v:?}");
        }
    }

    #[test]
    fn descriptions_follow_rabbitmq() {
        use Value as V;
        assert_eq!(describe_bare(&s("ae")), "'ae'");
        assert_eq!(describe_typed(&s("ae")), "the value 'ae' of type 'longstr'");
        assert_eq!(describe_typed(&V::I64(7)), "the value '7' of type 'long'");
        assert_eq!(describe_bare(&V::F64(1.0)), "'1.0'");
        assert_eq!(ferry_model::args::text(&s("x")), Some("x"));
        assert_eq!(
            ferry_model::args::text(&V::Str(bytes::Bytes::from_static(&[0xff]))),
            None
        );
        assert_eq!(ferry_model::args::text(&V::I64(1)), None);
    }
}
