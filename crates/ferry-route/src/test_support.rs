//! What the unit tests here share: model values and tables from literals.

/// A string value.
pub fn ms(x: &str) -> ferry_model::Value {
    ferry_model::Value::str(x)
}

/// A table from pairs, in the order given.
pub fn mtable(items: &[(&str, ferry_model::Value)]) -> ferry_model::Table {
    items.iter().map(|(k, v)| (*k, v.clone())).collect()
}
