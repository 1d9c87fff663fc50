//! Aligned text tables from API JSON rows.

use serde_json::Value;

/// One column: its header and the dotted JSON path of its value
/// (e.g. `queue.name`).
pub struct Column {
    pub header: &'static str,
    pub path: &'static str,
}

/// Shorthand for a column list.
pub const fn col(header: &'static str, path: &'static str) -> Column {
    Column { header, path }
}

/// A cell's text: strings as they are, arrays joined with ",", other
/// objects as compact JSON, absent or null as empty.
#[must_use]
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| cell(Some(i)))
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::Object(m)) if m.is_empty() => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The value at a dotted path.
#[must_use]
pub fn lookup<'a>(row: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(row, |v, k| v.get(k))
}

/// Renders rows under headers, columns padded to their widest cell and
/// separated by two spaces; control characters in cells become spaces so
/// one row stays one line.
#[must_use]
pub fn render(columns: &[Column], rows: &[Value]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| {
                    cell(lookup(r, c.path))
                        .chars()
                        .map(|ch| if ch.is_control() { ' ' } else { ch })
                        .collect()
                })
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.header.chars().count()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let headers: Vec<String> = columns.iter().map(|c| c.header.to_string()).collect();
    for row in std::iter::once(&headers).chain(&cells) {
        let mut line = String::new();
        for (i, (c, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(c);
            if i + 1 < row.len() {
                line.extend(std::iter::repeat_n(
                    ' ',
                    w.saturating_sub(c.chars().count()),
                ));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_align_and_nested_paths_resolve() {
        let rows = vec![
            json!({"name": "a", "messages": 10, "queue": {"name": "x"}, "tags": ["t1", "t2"]}),
            json!({"name": "longer-name", "messages": null, "queue": {}, "tags": []}),
        ];
        let cols = [
            col("name", "name"),
            col("messages", "messages"),
            col("queue", "queue.name"),
            col("tags", "tags"),
        ];
        let text = render(&cols, &rows);
        assert_eq!(
            text,
            "name         messages  queue  tags\n\
             a            10        x      t1,t2\n\
             longer-name\n"
        );
    }

    #[test]
    fn control_characters_do_not_break_rows() {
        let text = render(&[col("p", "p")], &[json!({"p": "a\nb"})]);
        assert_eq!(text, "p\na b\n");
    }
}
