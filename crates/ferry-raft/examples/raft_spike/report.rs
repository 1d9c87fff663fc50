//! One measurement = one row: printed as a markdown table or a JSON line.

use serde_json::{Map, Value};

/// An ordered set of named values.
#[derive(Debug, Default)]
pub struct Row {
    cells: Vec<(&'static str, Value)>,
}

impl Row {
    /// An empty row.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a cell.
    pub fn add(&mut self, name: &'static str, value: impl Into<Value>) -> &mut Self {
        self.cells.push((name, value.into()));
        self
    }

    /// Append a number rounded to `decimals`.
    pub fn num(&mut self, name: &'static str, value: f64, decimals: u32) -> &mut Self {
        let scale = 10f64.powi(decimals as i32);
        let rounded = (value * scale).round() / scale;
        self.add(name, rounded)
    }

    /// Append a duration in milliseconds (1 decimal), or null.
    pub fn ms(&mut self, name: &'static str, value: Option<std::time::Duration>) -> &mut Self {
        match value {
            Some(d) => self.num(name, d.as_secs_f64() * 1000.0, 1),
            None => self.add(name, Value::Null),
        }
    }
}

fn cell(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

/// Print `row` to stdout.
pub fn print(row: &Row, json: bool) {
    if json {
        let map: Map<String, Value> = row
            .cells
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.clone()))
            .collect();
        println!("{}", Value::Object(map));
        return;
    }
    let names: Vec<&str> = row.cells.iter().map(|(k, _)| *k).collect();
    let values: Vec<String> = row.cells.iter().map(|(_, v)| cell(v)).collect();
    println!("| {} |", names.join(" | "));
    println!("|{}", "---|".repeat(names.len()));
    println!("| {} |", values.join(" | "));
}
