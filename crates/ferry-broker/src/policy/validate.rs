//! Checks a policy the way RabbitMQ 3.10 does (`rabbit_policy`,
//! `rabbit_policies`, `rabbit_parameter_validation`), with its texts:
//! priority, pattern, apply-to, then the definition's known keys in
//! sorted order (the first error wins), then its unknown keys. Values
//! appear in the texts as Erlang's `~p` prints the decoded JSON
//! ([`erlang_term`]).

use super::{ApplyTo, PolicyDef, PolicyKind};
use serde_json::{Map, Value};

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A mandatory field is missing (RabbitMQ's management answer, e.g.
    /// `[{key_missing,pattern}]`).
    #[error("{0}")]
    KeyMissing(String),
    /// Validation failed: the text after "Validation failed\n\n".
    #[error("Validation failed\n\n{0}\n")]
    Invalid(String),
}

/// The largest `stream-max-segment-size-bytes` (RabbitMQ's 3 GB).
const MAX_SEGMENT: u64 = 3_000_000_000;

/// Keys a policy may set, with their checks. Ferry acts on some; the
/// others are accepted as RabbitMQ accepts them (`ha-*`, `queue-mode`,
/// ...) so definitions exported by RabbitMQ import.
fn check_key(kind: PolicyKind, key: &str, v: &Value) -> Option<Result<(), String>> {
    let int_min = |min: i64, what: &str| match v.as_i64().map_or(v.is_u64(), |n| n >= min) {
        true => Ok(()),
        false => Err(format!("{} is not a valid {what}", erlang_term(v))),
    };
    let string = |what: &str| match v {
        Value::String(_) => Ok(()),
        _ => Err(format!("{} is not a valid {what}", erlang_term(v))),
    };
    let one_of = |allowed: &[&str], what: &str| match v.as_str() {
        Some(s) if allowed.contains(&s) => Ok(()),
        _ => Err(format!("{} is not a valid {what}", erlang_term(v))),
    };
    let operator_ok = matches!(
        key,
        "expires"
            | "message-ttl"
            | "max-length"
            | "max-length-bytes"
            | "max-in-memory-length"
            | "max-in-memory-bytes"
            | "delivery-limit"
    );
    if kind == PolicyKind::Operator && !operator_ok {
        return None;
    }
    // Ferry refuses names a message record cannot hold (RabbitMQ 3.10
    // accepts them; see `ferry_queue::limits`).
    let short = |what: &str| match v {
        Value::String(s) if s.len() > ferry_queue::limits::SHORT_MAX => Err(format!(
            "{key} should be less than {} bytes, actually was {}",
            ferry_queue::limits::SHORT_MAX,
            s.len()
        )),
        _ => string(what),
    };
    Some(match key {
        "alternate-exchange" => short("alternate exchange name"),
        "dead-letter-exchange" => short("dead letter exchange name"),
        "dead-letter-routing-key" => short("dead letter routing key"),
        "message-ttl" => int_min(0, "message TTL"),
        "expires" => int_min(1, "queue expiry"),
        "max-length" => int_min(0, "maximum length"),
        "max-length-bytes" => int_min(0, "maximum length in bytes"),
        "max-in-memory-length" | "max-in-memory-bytes" => int_min(0, "maximum memory in bytes"),
        "queue-mode" => one_of(&["default", "lazy"], "queue-mode value"),
        "overflow" => one_of(
            &["drop-head", "reject-publish", "reject-publish-dlx"],
            "overflow value",
        ),
        "delivery-limit" => int_min(0, "delivery limit"),
        "max-age" => match v
            .as_str()
            .and_then(ferry_queue::stream::args::parse_duration)
        {
            Some(_) => Ok(()),
            None => Err(format!("{} is not a valid max age", erlang_term(v))),
        },
        "queue-leader-locator" => one_of(
            &["client-local", "random", "least-leaders"],
            "queue leader locator value",
        ),
        "initial-cluster-size" => int_min(0, "cluster size"),
        "stream-max-segment-size-bytes" => match v.as_u64() {
            Some(n) if n <= MAX_SEGMENT => Ok(()),
            _ => Err(format!("{} is not a valid segment size", erlang_term(v))),
        },
        // Classic mirroring: checked together (`mirroring.rs`), not acted
        // on (Ferry has no mirrors).
        k if super::mirroring::KEYS.contains(&k) => Ok(()),
        "queue-master-locator" => match v.as_str() {
            Some("min-masters" | "client-local" | "random") => Ok(()),
            _ => Err(format!(
                "{} invalid queue-master-locator value",
                erlang_term(v)
            )),
        },
        // Ferry's delayed retry (the x-retry-* arguments' policy keys).
        "retry-delay" => int_min(0, "retry delay"),
        "retry-max-delay" => int_min(0, "retry max delay"),
        "retry-multiplier" => int_min(1, "retry multiplier"),
        "retry-backoff" => one_of(&["fixed", "exponential"], "retry backoff"),
        _ => return None,
    })
}

/// Which of RabbitMQ's validator modules checks `key` (their order).
fn module_of(key: &str) -> usize {
    match key {
        k if super::mirroring::KEYS.contains(&k) => 1,
        "queue-master-locator" => 2,
        "stream-max-segment-size-bytes" => 3,
        k if k.starts_with("retry-") => 4,
        _ => 0,
    }
}

/// Checks a definition (its keys by kind).
pub fn validate_definition(kind: PolicyKind, def: &Value) -> Result<(), String> {
    let Value::Object(map) = def else {
        return Err(format!(
            "parse error while reading policy: {}",
            erlang_term(def)
        ));
    };
    if map.is_empty() {
        return Err("no policy provided".into());
    }
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    // RabbitMQ runs its validator modules in turn, each on its own keys:
    // rabbit_policies, classic mirroring, the queue master locator,
    // streams (then Ferry's retry keys); unknown keys are reported last.
    let mut unknown = Vec::new();
    let mut groups: [Vec<Result<(), String>>; 5] = Default::default();
    for k in keys {
        let Some(v) = map.get(k) else { continue };
        match check_key(kind, k, v) {
            Some(r) => groups[module_of(k)].push(r),
            None => unknown.push(format!("{{{},{}}}", binary(k), erlang_term(v))),
        }
    }
    for (i, results) in groups.into_iter().enumerate() {
        if i == 1 && !results.is_empty() {
            super::mirroring::validate(map)?;
        }
        results.into_iter().collect::<Result<Vec<()>, String>>()?;
    }
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "[{}] are not recognised policy settings",
            unknown.join(",")
        ))
    }
}

/// What PCRE would say about a pattern Rust's regex refuses, in the
/// common cases (unbalanced parentheses or brackets); the regex error
/// otherwise. `~p` breaks a tuple that would reach column 80 after its
/// first element, indenting the rest under it.
fn regex_error(pattern: &str, e: &regex_lite::Error) -> String {
    const PREFIX: &str = "pattern should be regular expression but is invalid: ";
    let count = |c: &str, esc: &str| pattern.matches(c).count() - pattern.matches(esc).count();
    let (opens, closes) = (count("(", "\\("), count(")", "\\)"));
    let (why, at) = if count("[", "\\[") > count("]", "\\]") {
        (
            "missing terminating ] for character class".to_string(),
            pattern.len(),
        )
    } else if opens > closes {
        ("missing )".to_string(), pattern.len())
    } else if closes > opens {
        (
            "unmatched parentheses".to_string(),
            pattern.find(')').unwrap_or(0),
        )
    } else {
        (e.to_string(), 0)
    };
    let first = format!("{{{why:?},");
    let tuple = if PREFIX.len() + first.len() + at.to_string().len() + 1 >= 80 {
        format!("{first}\n{}{at}}}", " ".repeat(PREFIX.len() + 1))
    } else {
        format!("{first}{at}}}")
    };
    format!("{PREFIX}{tuple}")
}

/// Checks the body of `PUT /api/policies/{vhost}/{name}` (or an
/// operator policy) and returns the policy it defines.
pub fn validate(
    kind: PolicyKind,
    vhost: &str,
    name: &str,
    body: &Value,
) -> Result<PolicyDef, PolicyError> {
    let empty = Map::new();
    let obj = body.as_object().unwrap_or(&empty);
    for key in ["pattern", "definition"] {
        if !obj.contains_key(key) {
            return Err(PolicyError::KeyMissing(format!("[{{key_missing,{key}}}]")));
        }
    }
    let invalid = PolicyError::Invalid;
    let priority = match obj.get("priority") {
        None => serde_json::Number::from(0),
        Some(Value::Number(n)) => n.clone(),
        Some(v) => {
            return Err(invalid(format!(
                "priority should be a number, actually was {}",
                erlang_term(v)
            )))
        }
    };
    let pattern = match obj.get("pattern") {
        Some(Value::String(p)) => p.clone(),
        Some(v) => {
            return Err(invalid(format!(
                "pattern should be a binary but was {}",
                erlang_term(v)
            )))
        }
        None => String::new(),
    };
    if let Err(e) = super::Pattern::new(&pattern) {
        return Err(invalid(regex_error(&pattern, &e)));
    }
    let apply_to = match obj.get("apply-to") {
        None => "all".to_string(),
        Some(Value::String(s)) if ApplyTo::parse(s).is_some() => s.clone(),
        Some(v) => {
            let shown = v.as_str().map_or_else(|| erlang_term(v), String::from);
            return Err(invalid(format!(
                "apply-to '{shown}' unrecognised; should be 'queues', 'exchanges' or 'all'"
            )));
        }
    };
    let definition = obj.get("definition").unwrap_or(&Value::Null);
    validate_definition(kind, definition).map_err(invalid)?;
    Ok(PolicyDef {
        vhost: vhost.to_string(),
        name: name.to_string(),
        pattern,
        apply_to,
        definition: definition.as_object().cloned().unwrap_or_default(),
        priority,
    })
}

/// A binary as Erlang's `~p` prints a string: `<<"...">>` with `"`, `\`
/// and control characters escaped (shared with the HTTP layer's import
/// errors).
pub fn erlang_binary(s: &str) -> String {
    format!("<<\"{}\">>", ferry_model::args::erlang_escaped(s))
}

/// [`erlang_binary`], marked `/utf8` when not ASCII.
fn binary(s: &str) -> String {
    let mut out = erlang_binary(s);
    if !s.is_ascii() {
        out.insert_str(out.len() - 2, "/utf8");
    }
    out
}

fn float(f: f64) -> String {
    let s = format!("{f:?}");
    match s.split_once('e') {
        Some((m, e)) if !m.contains('.') => format!("{m}.0e{e}"),
        _ => s,
    }
}

/// A decoded JSON value as Erlang's `~p` prints it (RabbitMQ 3.10 decodes
/// objects to maps, strings to binaries, null to the atom `null`).
pub fn erlang_term(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => float(f),
            _ => n.to_string(),
        },
        Value::String(s) => binary(s),
        Value::Array(a) => {
            // A list of printable character codes prints as a string.
            let printable = !a.is_empty()
                && a.iter()
                    .all(|x| x.as_u64().is_some_and(|c| (32..127).contains(&c)));
            if printable {
                let s: String = a
                    .iter()
                    .filter_map(|x| x.as_u64().and_then(|c| char::from_u32(c as u32)))
                    .collect();
                return format!("{s:?}");
            }
            let items: Vec<String> = a.iter().map(erlang_term).collect();
            format!("[{}]", items.join(","))
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let items: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{} => {}",
                        binary(k),
                        m.get(k).map_or_else(String::new, erlang_term)
                    )
                })
                .collect();
            format!("#{{{}}}", items.join(","))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(kind: PolicyKind, body: Value) -> String {
        validate(kind, "/", "p", &body).unwrap_err().to_string()
    }

    fn failed(msg: &str) -> String {
        format!("Validation failed\n\n{msg}\n")
    }

    // RabbitMQ 3.10 accepts these; Ferry refuses what a record cannot hold.
    #[test]
    fn names_longer_than_a_short_string_are_refused() {
        let p = PolicyKind::Policy;
        for key in [
            "dead-letter-exchange",
            "dead-letter-routing-key",
            "alternate-exchange",
        ] {
            let body = |v: String| json!({"pattern": "^a", "definition": {key: v}});
            assert_eq!(
                err(p, body("é".repeat(128))),
                failed(&format!(
                    "{key} should be less than 255 bytes, actually was 256"
                ))
            );
            assert!(validate(p, "/", "p", &body("k".repeat(255))).is_ok());
        }
    }

    // Texts as RabbitMQ 3.10.8 answered them (before HTML escaping).
    #[test]
    fn texts_match_rabbitmq() {
        let p = PolicyKind::Policy;
        let d = |def: Value| json!({"pattern": "^a", "definition": def});
        assert_eq!(
            err(p, d(json!({"message-ttl": -1}))),
            failed("-1 is not a valid message TTL")
        );
        assert_eq!(
            err(p, d(json!({"message-ttl": "x"}))),
            failed("<<\"x\">> is not a valid message TTL")
        );
        assert_eq!(
            err(p, d(json!({"message-ttl": 1.5}))),
            failed("1.5 is not a valid message TTL")
        );
        assert_eq!(
            err(p, d(json!({"message-ttl": null}))),
            failed("null is not a valid message TTL")
        );
        assert_eq!(
            err(p, d(json!({"message-ttl": [1, "a"]}))),
            failed("[1,<<\"a\">>] is not a valid message TTL")
        );
        assert_eq!(
            err(p, d(json!({"message-ttl": {"a": 1}}))),
            failed("#{<<\"a\">> => 1} is not a valid message TTL")
        );
        assert_eq!(
            err(p, d(json!({"foo": 1, "bar": 2}))),
            failed("[{<<\"bar\">>,2},{<<\"foo\">>,1}] are not recognised policy settings")
        );
        assert_eq!(
            err(p, d(json!({"expires": 0}))),
            failed("0 is not a valid queue expiry")
        );
        assert_eq!(
            err(p, d(json!({"message-ttl": -1, "max-length": "z"}))),
            failed("<<\"z\">> is not a valid maximum length")
        );
        assert_eq!(err(p, d(json!({}))), failed("no policy provided"));
        assert_eq!(
            err(p, d(json!({"max-age": "1X"}))),
            failed("<<\"1X\">> is not a valid max age")
        );
        assert_eq!(
            err(p, json!({"pattern": "(", "definition": {"message-ttl": 1}})),
            failed("pattern should be regular expression but is invalid: {\"missing )\",1}")
        );
        let wrapped = |why: &str, at: usize| {
            failed(&format!(
                "pattern should be regular expression but is invalid: {{\"{why}\",\n{}{at}}}",
                " ".repeat(54)
            ))
        };
        assert_eq!(
            err(
                p,
                json!({"pattern": "a)", "definition": {"message-ttl": 1}})
            ),
            wrapped("unmatched parentheses", 1)
        );
        assert_eq!(
            err(
                p,
                json!({"pattern": "[a", "definition": {"message-ttl": 1}})
            ),
            wrapped("missing terminating ] for character class", 2)
        );
        assert_eq!(
            err(p, d(json!({"ha-mode": "bogus", "message-ttl": -1}))),
            failed("-1 is not a valid message TTL"),
            "rabbit_policies' keys are checked before mirroring's"
        );
        assert_eq!(
            err(p, d(json!({"queue-master-locator": "x"}))),
            failed("<<\"x\">> invalid queue-master-locator value")
        );
        assert_eq!(
            err(
                p,
                d(json!({"stream-max-segment-size-bytes": 4_000_000_000u64}))
            ),
            failed("4000000000 is not a valid segment size")
        );
        assert_eq!(
            err(p, json!({"pattern": 5, "definition": {"message-ttl": 1}})),
            failed("pattern should be a binary but was 5")
        );
        assert_eq!(
            err(
                p,
                json!({"pattern": "a", "definition": {"message-ttl": 1}, "priority": "5"})
            ),
            failed("priority should be a number, actually was <<\"5\">>")
        );
        assert_eq!(
            err(
                p,
                json!({"pattern": "a", "definition": {"message-ttl": 1}, "apply-to": "bogus"})
            ),
            failed("apply-to 'bogus' unrecognised; should be 'queues', 'exchanges' or 'all'")
        );
        assert_eq!(err(p, json!({"definition": {}})), "[{key_missing,pattern}]");
        assert_eq!(
            err(p, json!({"pattern": "a"})),
            "[{key_missing,definition}]"
        );
        assert_eq!(
            err(
                PolicyKind::Operator,
                d(json!({"message-ttl": 1, "overflow": "drop-head"}))
            ),
            failed("[{<<\"overflow\">>,<<\"drop-head\">>}] are not recognised policy settings")
        );
    }

    #[test]
    fn accepted_policies_keep_their_fields() {
        let body = json!({"pattern": "^a", "definition": {"max-age": "1D",
            "stream-max-segment-size-bytes": 1, "retry-delay": 10}, "priority": 1.5,
            "apply-to": "streams"});
        let d = validate(PolicyKind::Policy, "v", "n", &body).unwrap();
        assert_eq!(
            (d.vhost.as_str(), d.name.as_str(), d.apply_to.as_str()),
            ("v", "n", "streams")
        );
        assert_eq!(d.priority.as_f64(), Some(1.5));
        assert_eq!(erlang_term(&json!(1e20)), "1.0e20");
        assert_eq!(erlang_term(&json!("é")), "<<\"é\"/utf8>>");
    }
}
