//! Comparisons of AMQP field values, in the three flavours RabbitMQ uses:
//!
//! - identity ([`cmp_value`], [`hash_table`]): a binding's arguments are
//!   part of its identity and RabbitMQ compares them with Erlang's exact
//!   term equality, so the field type matters (`long 1` ≠ `signedint 1`).
//!   We extend that to a total order so bindings can live in a `BTreeSet`;
//!   floats compare by bit pattern, which keeps the order total (NaN equals
//!   an identical NaN) and agrees with RabbitMQ on every value it can hold.
//! - routing ([`routing_eq`]): the headers exchange compares values with
//!   the type tag stripped (RabbitMQ ≥ 3.13: `maps:get(K, Headers) =:= V`),
//!   so every integer type compares numerically, and string-like types
//!   compare by bytes.
//! - redeclare ([`equivalent_arg`]): `exchange.declare` compares arguments
//!   by RabbitMQ's "type class" (all integer types are one class, float and
//!   double are another) and then by value.
//!
//! AMQP 0-9-1 as RabbitMQ speaks it has no short-string field type
//! (`s` is a short int on the wire), so `AMQPValue::ShortString` only
//! appears when Rust code builds a table; we treat it as a long string
//! everywhere except identity, where the type still counts.

use amq_protocol_types::{AMQPValue, FieldTable};
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

/// Position of the variant in the identity order.
fn rank(v: &AMQPValue) -> u8 {
    match v {
        AMQPValue::Boolean(_) => 0,
        AMQPValue::ShortShortInt(_) => 1,
        AMQPValue::ShortShortUInt(_) => 2,
        AMQPValue::ShortInt(_) => 3,
        AMQPValue::ShortUInt(_) => 4,
        AMQPValue::LongInt(_) => 5,
        AMQPValue::LongUInt(_) => 6,
        AMQPValue::LongLongInt(_) => 7,
        AMQPValue::Float(_) => 8,
        AMQPValue::Double(_) => 9,
        AMQPValue::DecimalValue(_) => 10,
        AMQPValue::ShortString(_) => 11,
        AMQPValue::LongString(_) => 12,
        AMQPValue::FieldArray(_) => 13,
        AMQPValue::Timestamp(_) => 14,
        AMQPValue::FieldTable(_) => 15,
        AMQPValue::ByteArray(_) => 16,
        AMQPValue::Void => 17,
    }
}

/// Total order on values: by type first, then by value.
pub(crate) fn cmp_value(a: &AMQPValue, b: &AMQPValue) -> Ordering {
    use AMQPValue as V;
    match (a, b) {
        (V::Boolean(x), V::Boolean(y)) => x.cmp(y),
        (V::ShortShortInt(x), V::ShortShortInt(y)) => x.cmp(y),
        (V::ShortShortUInt(x), V::ShortShortUInt(y)) => x.cmp(y),
        (V::ShortInt(x), V::ShortInt(y)) => x.cmp(y),
        (V::ShortUInt(x), V::ShortUInt(y)) => x.cmp(y),
        (V::LongInt(x), V::LongInt(y)) => x.cmp(y),
        (V::LongUInt(x), V::LongUInt(y)) => x.cmp(y),
        (V::LongLongInt(x), V::LongLongInt(y)) => x.cmp(y),
        (V::Float(x), V::Float(y)) => x.total_cmp(y),
        (V::Double(x), V::Double(y)) => x.total_cmp(y),
        (V::DecimalValue(x), V::DecimalValue(y)) => (x.scale, x.value).cmp(&(y.scale, y.value)),
        (V::ShortString(x), V::ShortString(y)) => x.cmp(y),
        (V::LongString(x), V::LongString(y)) => x.as_bytes().cmp(y.as_bytes()),
        (V::FieldArray(x), V::FieldArray(y)) => cmp_slice(x.as_slice(), y.as_slice()),
        (V::Timestamp(x), V::Timestamp(y)) => x.cmp(y),
        (V::FieldTable(x), V::FieldTable(y)) => cmp_table(x, y),
        (V::ByteArray(x), V::ByteArray(y)) => x.as_slice().cmp(y.as_slice()),
        _ => rank(a).cmp(&rank(b)),
    }
}

fn cmp_slice(a: &[AMQPValue], b: &[AMQPValue]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match cmp_value(x, y) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    a.len().cmp(&b.len())
}

/// Total order on tables: lexicographic over their (sorted) entries.
pub(crate) fn cmp_table(a: &FieldTable, b: &FieldTable) -> Ordering {
    for ((ka, va), (kb, vb)) in a.inner().iter().zip(b.inner()) {
        match ka.cmp(kb).then_with(|| cmp_value(va, vb)) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    a.inner().len().cmp(&b.inner().len())
}

/// Hash consistent with [`cmp_value`] equality.
fn hash_value<H: Hasher>(v: &AMQPValue, h: &mut H) {
    use AMQPValue as V;
    rank(v).hash(h);
    match v {
        V::Boolean(x) => x.hash(h),
        V::ShortShortInt(x) => x.hash(h),
        V::ShortShortUInt(x) => x.hash(h),
        V::ShortInt(x) => x.hash(h),
        V::ShortUInt(x) => x.hash(h),
        V::LongInt(x) => x.hash(h),
        V::LongUInt(x) => x.hash(h),
        V::LongLongInt(x) => x.hash(h),
        V::Float(x) => x.to_bits().hash(h),
        V::Double(x) => x.to_bits().hash(h),
        V::DecimalValue(x) => x.hash(h),
        V::ShortString(x) => x.hash(h),
        V::LongString(x) => x.as_bytes().hash(h),
        V::FieldArray(x) => {
            x.as_slice().len().hash(h);
            for e in x.as_slice() {
                hash_value(e, h);
            }
        }
        V::Timestamp(x) => x.hash(h),
        V::FieldTable(x) => hash_table(x, h),
        V::ByteArray(x) => x.as_slice().hash(h),
        V::Void => {}
    }
}

/// Hash consistent with [`cmp_table`] equality.
pub(crate) fn hash_table<H: Hasher>(t: &FieldTable, h: &mut H) {
    t.inner().len().hash(h);
    for (k, v) in t {
        k.hash(h);
        hash_value(v, h);
    }
}

/// A value with its AMQP type stripped, the way RabbitMQ's headers
/// exchange sees it (an Erlang term).
enum Plain<'a> {
    Int(i128),
    Float(f64),
    Bytes(&'a [u8]),
    Bool(bool),
    Decimal(u8, u32),
    Void,
    /// Arrays and tables keep their element types in RabbitMQ, so they
    /// compare by identity.
    Nested(&'a AMQPValue),
}

fn plain(v: &AMQPValue) -> Plain<'_> {
    use AMQPValue as V;
    match v {
        V::Boolean(b) => Plain::Bool(*b),
        V::ShortShortInt(x) => Plain::Int((*x).into()),
        V::ShortShortUInt(x) => Plain::Int((*x).into()),
        V::ShortInt(x) => Plain::Int((*x).into()),
        V::ShortUInt(x) => Plain::Int((*x).into()),
        V::LongInt(x) => Plain::Int((*x).into()),
        V::LongUInt(x) => Plain::Int((*x).into()),
        V::LongLongInt(x) => Plain::Int((*x).into()),
        // RabbitMQ ≥ 3.13 multiplies a message's timestamp header by 1000
        // before matching but not the binding's value, so a timestamp
        // header can only match a binding value 1000× larger. We treat it
        // as the plain integer it is on the wire instead.
        V::Timestamp(x) => Plain::Int((*x).into()),
        // Erlang decodes a 32-bit float into a double holding the same value.
        V::Float(x) => Plain::Float((*x).into()),
        V::Double(x) => Plain::Float(*x),
        V::DecimalValue(d) => Plain::Decimal(d.scale, d.value),
        V::ShortString(s) => Plain::Bytes(s.as_str().as_bytes()),
        V::LongString(s) => Plain::Bytes(s.as_bytes()),
        V::ByteArray(b) => Plain::Bytes(b.as_slice()),
        V::Void => Plain::Void,
        V::FieldArray(_) | V::FieldTable(_) => Plain::Nested(v),
    }
}

// The headers matcher compares model values (`headers::routing_eq`, the
// same rules); this AMQP form stays for the argument half of issue 11.
#[allow(dead_code)]
/// Headers-exchange value equality (see the module doc). Integers never
/// equal floats (Erlang `=:=`); floats compare numerically (NaN never
/// matches, 0.0 matches -0.0).
pub(crate) fn routing_eq(a: &AMQPValue, b: &AMQPValue) -> bool {
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

/// RabbitMQ's name for the value's field type (as in its error texts).
pub(crate) fn type_name(v: &AMQPValue) -> &'static str {
    use AMQPValue as V;
    match v {
        V::Boolean(_) => "bool",
        V::ShortShortInt(_) => "byte",
        V::ShortShortUInt(_) => "unsignedbyte",
        V::ShortInt(_) => "short",
        V::ShortUInt(_) => "unsignedshort",
        V::LongInt(_) => "signedint",
        V::LongUInt(_) => "unsignedint",
        V::LongLongInt(_) => "long",
        V::Float(_) => "float",
        V::Double(_) => "double",
        V::DecimalValue(_) => "decimal",
        V::ShortString(_) => "shortstr",
        V::LongString(_) => "longstr",
        V::FieldArray(_) => "array",
        V::Timestamp(_) => "timestamp",
        V::FieldTable(_) => "table",
        V::ByteArray(_) => "binary",
        V::Void => "void",
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

fn type_class(v: &AMQPValue) -> TypeClass {
    use AMQPValue as V;
    match v {
        V::ShortShortInt(_)
        | V::ShortShortUInt(_)
        | V::ShortInt(_)
        | V::ShortUInt(_)
        | V::LongInt(_)
        | V::LongUInt(_)
        | V::LongLongInt(_)
        | V::DecimalValue(_) => TypeClass::Int,
        V::Float(_) | V::Double(_) => TypeClass::Float,
        V::ShortString(_) | V::LongString(_) => TypeClass::Str,
        other => TypeClass::Other(rank(other)),
    }
}

/// Whether a redeclared argument value is equivalent to the current one:
/// same type class and equal value (Erlang `==`, so `1` and `1.0` would be
/// equal, but they are never in the same class).
pub fn equivalent_arg(current: &AMQPValue, requested: &AMQPValue) -> bool {
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
pub fn describe_bare(v: &AMQPValue) -> String {
    format!("'{}'", display(v))
}

/// A typed value as RabbitMQ prints it: `the value 'x' of type 'longstr'`.
pub fn describe_typed(v: &AMQPValue) -> String {
    format!("the value '{}' of type '{}'", display(v), type_name(v))
}

fn display(v: &AMQPValue) -> String {
    use AMQPValue as V;
    match v {
        V::Boolean(b) => b.to_string(),
        V::ShortShortInt(x) => x.to_string(),
        V::ShortShortUInt(x) => x.to_string(),
        V::ShortInt(x) => x.to_string(),
        V::ShortUInt(x) => x.to_string(),
        V::LongInt(x) => x.to_string(),
        V::LongUInt(x) => x.to_string(),
        V::LongLongInt(x) => x.to_string(),
        V::Timestamp(x) => x.to_string(),
        // Debug keeps the ".0" Erlang prints for whole floats.
        V::Float(x) => format!("{x:?}"),
        V::Double(x) => format!("{x:?}"),
        V::DecimalValue(d) => format!("{{{},{}}}", d.scale, d.value),
        V::ShortString(s) => s.to_string(),
        V::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        V::ByteArray(b) => String::from_utf8_lossy(b.as_slice()).into_owned(),
        V::Void => "undefined".to_string(),
        V::FieldArray(a) => format!("{:?}", a.as_slice()),
        V::FieldTable(t) => format!("{:?}", t.inner()),
    }
}

/// A non-negative integer argument of any AMQP integer type (e.g.
/// `x-consumer-timeout`, `x-max-length`), as RabbitMQ accepts them.
pub fn as_u64(v: &AMQPValue) -> Option<u64> {
    use AMQPValue as V;
    match v {
        V::ShortShortInt(x) => u64::try_from(*x).ok(),
        V::ShortShortUInt(x) => Some(u64::from(*x)),
        V::ShortInt(x) => u64::try_from(*x).ok(),
        V::ShortUInt(x) => Some(u64::from(*x)),
        V::LongInt(x) => u64::try_from(*x).ok(),
        V::LongUInt(x) => Some(u64::from(*x)),
        V::LongLongInt(x) => u64::try_from(*x).ok(),
        V::Timestamp(x) => Some(*x),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use amq_protocol_types::{DecimalValue, FieldArray, LongString, ShortString};
    use std::collections::hash_map::DefaultHasher;

    fn s(x: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(x))
    }

    fn h(t: &FieldTable) -> u64 {
        let mut hasher = DefaultHasher::new();
        hash_table(t, &mut hasher);
        hasher.finish()
    }

    #[test]
    fn identity_is_typed_and_total() {
        use AMQPValue as V;
        assert_ne!(
            cmp_value(&V::LongLongInt(1), &V::LongInt(1)),
            Ordering::Equal
        );
        assert_eq!(
            cmp_value(&V::Double(f64::NAN), &V::Double(f64::NAN)),
            Ordering::Equal
        );
        assert_ne!(
            cmp_value(&V::Double(0.0), &V::Double(-0.0)),
            Ordering::Equal
        );
        assert_eq!(cmp_value(&s("a"), &s("b")), Ordering::Less);
        let mut a = FieldTable::default();
        a.insert("k".into(), V::LongLongInt(1));
        let mut b = FieldTable::default();
        b.insert("k".into(), V::LongLongInt(1));
        assert_eq!(cmp_table(&a, &b), Ordering::Equal);
        assert_eq!(h(&a), h(&b));
        b.insert("l".into(), V::Void);
        assert_eq!(cmp_table(&a, &b), Ordering::Less);
        assert_eq!(cmp_table(&b, &a), Ordering::Greater);
    }

    #[test]
    fn routing_equality_table() {
        use AMQPValue as V;
        let dec = |scale, value| V::DecimalValue(DecimalValue { scale, value });
        let cases: &[(AMQPValue, AMQPValue, bool)] = &[
            (V::LongLongInt(5), V::LongInt(5), true),
            (V::ShortShortUInt(5), V::Timestamp(5), true),
            (
                V::LongUInt(u32::MAX),
                V::LongLongInt(i64::from(u32::MAX)),
                true,
            ),
            (V::ShortShortInt(-1), V::ShortShortUInt(255), false),
            (V::LongLongInt(1), V::Double(1.0), false),
            (V::Float(1.5), V::Double(1.5), true),
            (V::Float(0.1), V::Double(0.1), false),
            (V::Double(f64::NAN), V::Double(f64::NAN), false),
            (V::Double(0.0), V::Double(-0.0), true),
            (s("abc"), V::ShortString(ShortString::from("abc")), true),
            (s("abc"), V::ByteArray(b"abc".to_vec().into()), true),
            (s("abc"), s("abd"), false),
            (V::Boolean(true), V::Boolean(true), true),
            (V::Boolean(true), V::LongLongInt(1), false),
            (dec(2, 100), dec(2, 100), true),
            (dec(2, 100), dec(1, 10), false),
            (V::Void, V::Void, true),
            (V::Void, s(""), false),
            (
                V::FieldArray(FieldArray::from(vec![V::LongLongInt(1)])),
                V::FieldArray(FieldArray::from(vec![V::LongLongInt(1)])),
                true,
            ),
            (
                V::FieldArray(FieldArray::from(vec![V::LongLongInt(1)])),
                V::FieldArray(FieldArray::from(vec![V::LongInt(1)])),
                false,
            ),
        ];
        for (a, b, want) in cases {
            assert_eq!(routing_eq(a, b), *want, "{a:?} vs {b:?}");
            assert_eq!(routing_eq(b, a), *want, "{b:?} vs {a:?}");
        }
    }

    #[test]
    fn redeclare_equivalence_uses_type_classes() {
        use AMQPValue as V;
        assert!(equivalent_arg(&s("ae"), &V::ShortString("ae".into())));
        assert!(equivalent_arg(&V::LongInt(3), &V::LongLongInt(3)));
        assert!(!equivalent_arg(&V::LongInt(3), &V::Double(3.0)));
        assert!(equivalent_arg(&V::Float(2.5), &V::Double(2.5)));
        assert!(!equivalent_arg(&s("a"), &s("b")));
        assert!(!equivalent_arg(&V::Timestamp(1), &V::LongLongInt(1)));
    }

    #[test]
    fn descriptions_follow_rabbitmq() {
        use AMQPValue as V;
        assert_eq!(describe_bare(&s("ae")), "'ae'");
        assert_eq!(describe_typed(&s("ae")), "the value 'ae' of type 'longstr'");
        assert_eq!(
            describe_typed(&V::LongLongInt(7)),
            "the value '7' of type 'long'"
        );
        assert_eq!(describe_bare(&V::Double(1.0)), "'1.0'");
        assert_eq!(crate::xargs::text(&s("x")), Some("x"));
        assert_eq!(crate::xargs::text(&V::LongString(vec![0xff].into())), None);
        assert_eq!(crate::xargs::text(&V::LongLongInt(1)), None);
    }
}
