//! Per (user, vhost) permissions: three regular expressions over resource
//! names, with RabbitMQ's semantics: the expression is searched for in the
//! name (unanchored, like Erlang's `re:run/3`; write `^...$` to anchor), and
//! an empty expression allows nothing but the empty name (RabbitMQ turns it
//! into `^$`). Compiled once when set; checks never compile.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The three expressions as RabbitMQ stores and exports them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    /// Create, delete or change queues and exchanges.
    pub configure: String,
    /// Publish to exchanges, bind queues.
    pub write: String,
    /// Consume from queues, bind from exchanges.
    pub read: String,
}

impl Permissions {
    /// `.*` for all three.
    pub fn all() -> Self {
        Permissions {
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        }
    }
}

/// Which of the three permissions an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Declare or delete.
    Configure,
    /// Publish or bind to.
    Write,
    /// Consume, get, purge or bind from.
    Read,
}

/// What an operation touches: RabbitMQ names the kind in its refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    /// A queue by name.
    Queue(&'a str),
    /// An exchange by name ("" is the default exchange, checked as
    /// `amq.default` like RabbitMQ does).
    Exchange(&'a str),
}

impl Resource<'_> {
    /// The name permissions are matched against.
    pub fn name(&self) -> &str {
        match self {
            Resource::Queue(n) => n,
            Resource::Exchange("") => "amq.default",
            Resource::Exchange(n) => n,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Resource::Queue(_) => "queue",
            Resource::Exchange(_) => "exchange",
        }
    }
}

impl fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} '{}'", self.kind(), self.name())
    }
}

#[derive(Debug, Clone)]
enum Matcher {
    /// `.*` and friends: no regex run on the hot path.
    Any,
    /// No permissions at all (not even the empty name).
    Never,
    Re(regex_lite::Regex),
}

impl Matcher {
    fn compile(expr: &str) -> Result<Self, String> {
        match expr {
            ".*" | "^.*" | ".*$" | "^.*$" => Ok(Matcher::Any),
            "" => Self::compile("^$"),
            e => regex_lite::Regex::new(e)
                .map(Matcher::Re)
                .map_err(|err| format!("invalid regular expression '{e}': {err}")),
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Matcher::Any => true,
            Matcher::Never => false,
            Matcher::Re(re) => re.is_match(name),
        }
    }
}

/// A user's permissions in one vhost, compiled.
#[derive(Debug, Clone)]
pub struct CompiledPermissions {
    source: Permissions,
    configure: Matcher,
    write: Matcher,
    read: Matcher,
}

impl CompiledPermissions {
    /// Compiles the three expressions; the error names the bad one.
    pub fn compile(p: Permissions) -> Result<Self, String> {
        Ok(CompiledPermissions {
            configure: Matcher::compile(&p.configure)?,
            write: Matcher::compile(&p.write)?,
            read: Matcher::compile(&p.read)?,
            source: p,
        })
    }

    /// Allows nothing: what a connection holds once its user lost the
    /// permissions it logged in with.
    pub fn deny_all() -> Self {
        CompiledPermissions {
            source: Permissions {
                configure: String::new(),
                write: String::new(),
                read: String::new(),
            },
            configure: Matcher::Never,
            write: Matcher::Never,
            read: Matcher::Never,
        }
    }

    /// The expressions as set.
    pub fn source(&self) -> &Permissions {
        &self.source
    }

    /// Whether checking `access` runs a regular expression (worth caching
    /// the answer per resource) rather than answering at once.
    pub fn runs_regex(&self, access: Access) -> bool {
        matches!(self.matcher(access), Matcher::Re(_))
    }

    fn matcher(&self, access: Access) -> &Matcher {
        match access {
            Access::Configure => &self.configure,
            Access::Write => &self.write,
            Access::Read => &self.read,
        }
    }

    /// Whether `access` to `resource` is allowed.
    pub fn allows(&self, access: Access, resource: Resource<'_>) -> bool {
        self.matcher(access).matches(resource.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(c: &str, w: &str, r: &str) -> CompiledPermissions {
        CompiledPermissions::compile(Permissions {
            configure: c.into(),
            write: w.into(),
            read: r.into(),
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn rabbitmq_regex_semantics() {
        let p = perms("foo", "^amq\\.gen", "");
        // Unanchored search, as Erlang's re:run.
        assert!(p.allows(Access::Configure, Resource::Queue("xfoox")));
        assert!(!p.allows(Access::Configure, Resource::Queue("fo")));
        assert!(p.allows(Access::Write, Resource::Queue("amq.gen-abc")));
        assert!(!p.allows(Access::Write, Resource::Queue("x.amq.gen")));
        // Empty allows nothing (but the empty name).
        assert!(!p.allows(Access::Read, Resource::Queue("q")));
        // The default exchange is checked as amq.default.
        let d = perms("", "^amq\\.default$", "");
        assert!(d.allows(Access::Write, Resource::Exchange("")));
        assert!(!d.allows(Access::Write, Resource::Exchange("amq.direct")));
        let all = perms(".*", ".*", ".*");
        assert!(all.allows(Access::Read, Resource::Queue("")));
        assert!(CompiledPermissions::compile(Permissions {
            configure: "(".into(),
            write: String::new(),
            read: String::new(),
        })
        .is_err());
        assert_eq!(Resource::Exchange("").to_string(), "exchange 'amq.default'");
    }
}
