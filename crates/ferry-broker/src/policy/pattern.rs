//! A policy's pattern. RabbitMQ matches with PCRE (`re:run`); Ferry's
//! regex engine has no look-around, so the one PCRE construct policies
//! use all the time, a leading negative or positive look-ahead such as
//! RabbitMQ's documented `^(?!amq\.).*`, is split off and matched on its
//! own at the start of the name. Other look-arounds are refused with the
//! engine's error.

use regex_lite::Regex;

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// `(?!X)` (false) or `(?=X)` (true) right after `^`, anchored.
    ahead: Option<(bool, Regex)>,
    rest: Regex,
}

/// The index of the `)` closing the group opened just before `s`.
fn group_end(s: &str) -> Option<usize> {
    let mut depth = 1usize;
    let mut escaped = false;
    let mut in_class = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '[' => in_class = true,
            ']' => in_class = false,
            '(' if !in_class => depth += 1,
            ')' if !in_class => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

impl Pattern {
    /// Compiles a pattern; the error is the regex engine's.
    pub fn new(pattern: &str) -> Result<Pattern, regex_lite::Error> {
        for (prefix, positive) in [("^(?!", false), ("^(?=", true)] {
            let Some(tail) = pattern.strip_prefix(prefix) else {
                continue;
            };
            let Some(end) = group_end(tail) else {
                break; // unbalanced: let the engine say so below
            };
            let inner = &tail[..end];
            let rest = &tail[end + 1..];
            return Ok(Pattern {
                ahead: Some((positive, Regex::new(&format!("^(?:{inner})"))?)),
                rest: Regex::new(&format!("^(?:{rest})"))?,
            });
        }
        Ok(Pattern {
            ahead: None,
            rest: Regex::new(pattern)?,
        })
    }

    /// Whether `name` matches (anywhere, as `re:run` does, unless anchored).
    pub fn is_match(&self, name: &str) -> bool {
        match &self.ahead {
            Some((positive, ahead)) => {
                ahead.is_match(name) == *positive && self.rest.is_match(name)
            }
            None => self.rest.is_match(name),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_leading_lookahead_works_like_pcre() {
        let p = Pattern::new(r"^(?!amq\.).*").unwrap();
        assert!(p.is_match("orders") && p.is_match("amqx") && !p.is_match("amq.gen-1"));
        let p = Pattern::new(r"^(?=a(b|c)).*x$").unwrap();
        assert!(p.is_match("abx") && p.is_match("acx") && !p.is_match("adx") && !p.is_match("ab"));
        let p = Pattern::new(r"^(?![(\)])q").unwrap();
        assert!(p.is_match("q") && !p.is_match("(q"));
        assert!(
            Pattern::new("q").unwrap().is_match("a-q-b"),
            "unanchored matches anywhere"
        );
        assert!(
            Pattern::new("a(?!b)").is_err(),
            "other look-arounds are refused"
        );
        assert!(Pattern::new("^(?!a").is_err());
    }
}
