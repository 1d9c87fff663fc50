//! Query parameters of list endpoints, as RabbitMQ's management API takes
//! them: `columns` (comma-separated, dotted paths), `sort` (a dotted path),
//! `sort_reverse`, and paging (`page`, `page_size`, `name`, `use_regex`;
//! a `page` makes the answer a paging object instead of a bare list).

use crate::error::{ApiError, ApiResult};
use serde::Deserialize;
use serde_json::{Map, Value};

/// List parameters.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    columns: Option<String>,
    sort: Option<String>,
    sort_reverse: Option<String>,
    page: Option<String>,
    page_size: Option<String>,
    name: Option<String>,
    use_regex: Option<String>,
}

const MAX_PAGE_SIZE: usize = 500;

fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn order(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
        (None, None) => Ordering::Equal,
    }
}

/// Keeps only the named (dotted) columns of an object.
fn project(v: &Value, columns: &[&str]) -> Value {
    let mut out = Map::new();
    for c in columns {
        let Some(found) = lookup(v, c) else { continue };
        let mut parts = c.split('.').peekable();
        let mut cur = &mut out;
        while let Some(p) = parts.next() {
            if parts.peek().is_none() {
                cur.insert(p.to_string(), found.clone());
                break;
            }
            let next = cur
                .entry(p.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            match next {
                Value::Object(m) => cur = m,
                _ => break,
            }
        }
    }
    Value::Object(out)
}

fn flag(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|s| s == "true")
}

fn number(name: &str, v: &Option<String>) -> ApiResult<Option<usize>> {
    match v.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(ApiError::BadRequest(format!(
                "{name} must be a positive integer, got '{s}'"
            ))),
        },
    }
}

impl ListParams {
    /// Filters, sorts, pages and projects `items`.
    pub fn apply(&self, mut items: Vec<Value>) -> ApiResult<Value> {
        let total = items.len();
        if let Some(name) = self.name.as_deref().filter(|n| !n.is_empty()) {
            if flag(&self.use_regex) {
                let re = regex_lite::Regex::new(name)
                    .map_err(|e| ApiError::BadRequest(format!("invalid regex: {e}")))?;
                items.retain(|v| {
                    v.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| re.is_match(n))
                });
            } else {
                items.retain(|v| {
                    v.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.contains(name))
                });
            }
        }
        if let Some(key) = self.sort.as_deref().filter(|s| !s.is_empty()) {
            items.sort_by(|a, b| order(lookup(a, key), lookup(b, key)));
        }
        if flag(&self.sort_reverse) {
            items.reverse();
        }
        let filtered = items.len();
        let page = number("page", &self.page)?;
        let page_size = number("page_size", &self.page_size)?.unwrap_or(100);
        if page_size > MAX_PAGE_SIZE {
            return Err(ApiError::BadRequest(format!(
                "page_size must not exceed {MAX_PAGE_SIZE}"
            )));
        }
        if let Some(p) = page {
            let page_count = filtered.div_ceil(page_size).max(1);
            if p > page_count {
                return Err(ApiError::BadRequest(format!(
                    "page must be between 1 and {page_count}"
                )));
            }
            items = items
                .into_iter()
                .skip((p - 1) * page_size)
                .take(page_size)
                .collect();
        }
        if let Some(cols) = self.columns.as_deref().filter(|c| !c.is_empty()) {
            let cols: Vec<&str> = cols.split(',').map(str::trim).collect();
            items = items.iter().map(|v| project(v, &cols)).collect();
        }
        Ok(match page {
            None => Value::Array(items),
            Some(p) => serde_json::json!({
                "filtered_count": filtered,
                "item_count": items.len(),
                "items": items,
                "page": p,
                "page_count": filtered.div_ceil(page_size).max(1),
                "page_size": page_size,
                "total_count": total,
            }),
        })
    }

    /// Projects one object by `columns` (single-item endpoints).
    pub fn apply_one(&self, v: Value) -> Value {
        match self.columns.as_deref().filter(|c| !c.is_empty()) {
            Some(cols) => {
                let cols: Vec<&str> = cols.split(',').map(str::trim).collect();
                project(&v, &cols)
            }
            None => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn items() -> Vec<Value> {
        vec![
            json!({"name": "b", "messages": 2, "x": {"y": 1}}),
            json!({"name": "a", "messages": 10, "x": {"y": 2}}),
            json!({"name": "c", "messages": 1, "x": {"y": 3}}),
        ]
    }

    #[test]
    fn sort_columns_and_pages() {
        let p = ListParams {
            sort: Some("messages".into()),
            sort_reverse: Some("true".into()),
            columns: Some("name,x.y".into()),
            ..Default::default()
        };
        let v = p.apply(items()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            v,
            json!([{"name":"a","x":{"y":2}},{"name":"b","x":{"y":1}},{"name":"c","x":{"y":3}}])
        );
        let p = ListParams {
            page: Some("2".into()),
            page_size: Some("2".into()),
            sort: Some("name".into()),
            ..Default::default()
        };
        let v = p.apply(items()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["items"][0]["name"], "c");
        assert_eq!(v["page_count"], 2);
        assert_eq!(v["total_count"], 3);
        let bad = ListParams {
            page: Some("x".into()),
            ..Default::default()
        };
        assert!(bad.apply(items()).is_err());
        let re = ListParams {
            name: Some("^[ab]$".into()),
            use_regex: Some("true".into()),
            page: Some("1".into()),
            ..Default::default()
        };
        let v = re.apply(items()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["filtered_count"], 2);
    }
}
