//! The classic mirroring keys (`ha-*`), checked together as RabbitMQ
//! 3.10's `rabbit_mirror_queue_misc:validate_policy/1` does, with its
//! texts. Ferry accepts them so definitions from RabbitMQ import, and does
//! not act on them (it has no mirrors).

use super::validate::erlang_term;
use serde_json::{Map, Value};

/// The keys of this validator.
pub(super) const KEYS: [&str; 6] = [
    "ha-mode",
    "ha-params",
    "ha-sync-mode",
    "ha-sync-batch-size",
    "ha-promote-on-shutdown",
    "ha-promote-on-failure",
];

fn mode(mode: &Value, params: Option<&Value>) -> Result<(), String> {
    let shown = |p: Option<&Value>| p.map_or_else(|| "none".to_string(), erlang_term);
    match mode.as_str() {
        Some("all") => match params {
            None => Ok(()),
            Some(_) => Err("ha-mode=\"all\" does not take parameters".into()),
        },
        Some("exactly") => match params.and_then(Value::as_i64) {
            Some(n) if n > 0 => Ok(()),
            _ => Err(format!(
                "ha-mode=\"exactly\" takes an integer, {} given",
                shown(params)
            )),
        },
        Some("nodes") => match params {
            Some(Value::Array(a)) if a.is_empty() => {
                Err("ha-mode=\"nodes\" list must be non-empty".into())
            }
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => Ok(()),
            Some(Value::Array(_)) => Err(format!(
                "ha-mode=\"nodes\" takes a list of strings, {} given",
                shown(params)
            )),
            _ => Err(format!(
                "ha-mode=\"nodes\" takes a list, {} given",
                shown(params)
            )),
        },
        _ => Err(format!(
            "{} is not a valid ha-mode value",
            erlang_term(mode)
        )),
    }
}

fn one_of(key: &str, v: Option<&Value>, a: &str, b: &str) -> Result<(), String> {
    match v {
        None => Ok(()),
        Some(Value::String(s)) if s == a || s == b => Ok(()),
        Some(other) => Err(format!(
            "{key} must be \"{a}\" or \"{b}\", got {}",
            erlang_term(other)
        )),
    }
}

/// Checks the `ha-*` keys of a definition.
pub(super) fn validate(def: &Map<String, Value>) -> Result<(), String> {
    let get = |k: &str| def.get(k);
    let Some(m) = get("ha-mode") else {
        if KEYS.iter().any(|k| def.contains_key(*k)) {
            return Err(
                "ha-mode must be specified to specify ha-params, ha-sync-mode or \
                        ha-promote-on-shutdown"
                    .into(),
            );
        }
        return Ok(());
    };
    mode(m, get("ha-params"))?;
    one_of("ha-sync-mode", get("ha-sync-mode"), "manual", "automatic")?;
    match get("ha-sync-batch-size") {
        None => {}
        Some(v) if v.as_i64().is_some_and(|n| n > 0) => {}
        Some(v) => {
            return Err(format!(
                "ha-sync-batch-size takes an integer greater than 0, {} given",
                erlang_term(v)
            ))
        }
    }
    one_of(
        "ha-promote-on-shutdown",
        get("ha-promote-on-shutdown"),
        "always",
        "when-synced",
    )?;
    one_of(
        "ha-promote-on-failure",
        get("ha-promote-on-failure"),
        "always",
        "when-synced",
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Result<(), String> {
        validate(v.as_object().unwrap())
    }

    // Texts as RabbitMQ 3.10.8 answered them.
    #[test]
    fn texts_match_rabbitmq() {
        assert!(check(json!({"ha-mode": "all"})).is_ok());
        assert!(check(json!({"ha-mode": "exactly", "ha-params": 2})).is_ok());
        assert!(check(json!({"ha-mode": "nodes", "ha-params": ["a"]})).is_ok());
        let e = |v| check(v).unwrap_err();
        assert_eq!(
            e(json!({"ha-mode": "bogus"})),
            "<<\"bogus\">> is not a valid ha-mode value"
        );
        assert_eq!(
            e(json!({"ha-mode": "exactly"})),
            "ha-mode=\"exactly\" takes an integer, none given"
        );
        assert_eq!(
            e(json!({"ha-mode": "exactly", "ha-params": "x"})),
            "ha-mode=\"exactly\" takes an integer, <<\"x\">> given"
        );
        assert_eq!(
            e(json!({"ha-mode": "exactly", "ha-params": 0})),
            "ha-mode=\"exactly\" takes an integer, 0 given"
        );
        assert_eq!(
            e(json!({"ha-mode": "all", "ha-params": 1})),
            "ha-mode=\"all\" does not take parameters"
        );
        assert_eq!(
            e(json!({"ha-mode": "nodes", "ha-params": 5})),
            "ha-mode=\"nodes\" takes a list, 5 given"
        );
        assert_eq!(
            e(json!({"ha-mode": "nodes"})),
            "ha-mode=\"nodes\" takes a list, none given"
        );
        assert_eq!(
            e(json!({"ha-sync-mode": "automatic"})),
            "ha-mode must be specified to specify ha-params, ha-sync-mode or ha-promote-on-shutdown"
        );
        assert_eq!(
            e(json!({"ha-mode": "all", "ha-sync-mode": "x"})),
            "ha-sync-mode must be \"manual\" or \"automatic\", got <<\"x\">>"
        );
        assert_eq!(
            e(json!({"ha-mode": "all", "ha-sync-batch-size": 0})),
            "ha-sync-batch-size takes an integer greater than 0, 0 given"
        );
        assert_eq!(
            e(json!({"ha-mode": "all", "ha-promote-on-failure": "x"})),
            "ha-promote-on-failure must be \"always\" or \"when-synced\", got <<\"x\">>"
        );
    }
}
