//! Direct reply-to (`amq.rabbitmq.reply-to`), as in RabbitMQ 3.10: RPC
//! without a reply queue.
//!
//! 1. A client consumes from the pseudo-queue [`PSEUDO_QUEUE`] in no-ack
//!    mode. Nothing is declared: the channel registers here and gets an
//!    opaque name, `amq.rabbitmq.reply-to.<node+id>.<secret>`.
//! 2. It publishes a request with `reply_to: amq.rabbitmq.reply-to` on that
//!    channel; the channel rewrites `reply_to` to its opaque name.
//! 3. Whoever publishes to the default exchange with that name as a routing
//!    key has the message handed straight to that channel's reply consumer
//!    (never stored; like RabbitMQ, the publish itself counts as unroutable:
//!    a mandatory one comes back with 312 NO_ROUTE, a confirm is an ack).
//!
//! The name encodes the node (a random tag per boot, so a name from a
//! previous run never matches), a registration id (unique for the life of
//! the process: names never collide) and 128 random bits (unguessable: a
//! client cannot reach a channel whose name it was not given). The registry
//! is shared by every connection and vhost, as RabbitMQ's channel pids are.

use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// The pseudo-queue a reply consumer consumes from, and the value of
/// `reply_to` a request carries to ask for the rewrite.
pub const PSEUDO_QUEUE: &str = "amq.rabbitmq.reply-to";
/// The prefix of the names replies are published to.
pub const REPLY_PREFIX: &str = "amq.rabbitmq.reply-to.";

/// What a registration hands back to its channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The id to unregister with.
    pub id: u64,
    /// The full name requests get as `reply_to`
    /// (`amq.rabbitmq.reply-to.<opaque>`).
    pub name: String,
}

#[derive(Debug)]
struct Entry<T> {
    /// The name's suffix, compared whole: one name per registration.
    suffix: String,
    target: T,
}

/// The live reply consumers, by the id in their names. `T` is what a reply
/// is handed to (the server's channel and consumer tag).
#[derive(Debug)]
pub struct ReplyRegistry<T> {
    node: u32,
    next: AtomicU64,
    entries: RwLock<HashMap<u64, Entry<T>>>,
}

impl<T: Clone> Default for ReplyRegistry<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone> ReplyRegistry<T> {
    /// An empty registry with a fresh node tag.
    #[must_use]
    pub fn new() -> Self {
        ReplyRegistry {
            node: rand::random(),
            next: AtomicU64::new(1),
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// Registers a reply consumer and names it.
    pub fn register(&self, target: T) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let secret: u128 = rand::random();
        let suffix = format!("{:08x}{id:016x}.{secret:032x}", self.node);
        let name = format!("{REPLY_PREFIX}{suffix}");
        self.entries.write().insert(id, Entry { suffix, target });
        Registration { id, name }
    }

    /// Forgets a reply consumer (cancelled, or its channel closed).
    pub fn unregister(&self, id: u64) {
        self.entries.write().remove(&id);
    }

    /// The reply consumer a queue name (`amq.rabbitmq.reply-to.<opaque>`)
    /// designates, if it is live.
    pub fn find(&self, name: &str) -> Option<T> {
        let (id, suffix) = self.parse(name)?;
        let entries = self.entries.read();
        let e = entries.get(&id)?;
        (e.suffix == suffix).then(|| e.target.clone())
    }

    /// `find` for each of `names` under one read lock (a publish may carry
    /// thousands of CC keys): the targets found, in order.
    pub fn find_many<'k>(&self, names: impl IntoIterator<Item = &'k str>) -> Vec<T> {
        let entries = self.entries.read();
        names
            .into_iter()
            .filter_map(|name| {
                let (id, suffix) = self.parse(name)?;
                let e = entries.get(&id)?;
                (e.suffix == suffix).then(|| e.target.clone())
            })
            .collect()
    }

    /// A reply name of this node: its registration id and the suffix to
    /// compare.
    fn parse<'n>(&self, name: &'n str) -> Option<(u64, &'n str)> {
        let suffix = name.strip_prefix(REPLY_PREFIX)?;
        let (head, _secret) = suffix.split_once('.')?;
        if head.len() != 24 || !head.is_ascii() {
            return None;
        }
        let node = u32::from_str_radix(head.get(..8)?, 16).ok()?;
        let id = u64::from_str_radix(head.get(8..)?, 16).ok()?;
        (node == self.node).then_some((id, suffix))
    }

    /// How many reply consumers are registered.
    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_finds_its_consumer_until_unregistered() {
        let r: ReplyRegistry<&str> = ReplyRegistry::new();
        let a = r.register("a");
        let b = r.register("b");
        assert!(a.name.starts_with(REPLY_PREFIX), "{}", a.name);
        assert_ne!(a.name, b.name);
        assert_eq!(r.find(&a.name), Some("a"));
        assert_eq!(r.find(&b.name), Some("b"));
        r.unregister(a.id);
        assert_eq!(r.find(&a.name), None);
        assert_eq!(r.find(&b.name), Some("b"));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn guessed_or_mangled_names_find_nothing() {
        let r: ReplyRegistry<u8> = ReplyRegistry::new();
        let reg = r.register(1);
        let (head, secret) = reg
            .name
            .rsplit_once('.')
            .unwrap_or_else(|| panic!("no dot"));
        // Same id, another secret.
        let other = if secret.starts_with('0') { "1" } else { "0" };
        assert_eq!(r.find(&format!("{head}.{other}{}", &secret[1..])), None);
        // Upper case is another name.
        assert_eq!(r.find(&format!("{head}.{}", secret.to_uppercase())), None);
        assert_eq!(r.find(&format!("{}x", reg.name)), None);
        for bad in [
            "",
            PSEUDO_QUEUE,
            REPLY_PREFIX,
            "amq.rabbitmq.reply-to.abc",
            "amq.rabbitmq.reply-to.é",
            "amq.rabbitmq.reply-to.ééééééééééééé.x",
            "amq.rabbitmq.reply-to.zzzzzzzzzzzzzzzzzzzzzzzz.x",
        ] {
            assert_eq!(r.find(bad), None, "{bad}");
        }
        // Another node (another boot) with the same id.
        let r2: ReplyRegistry<u8> = ReplyRegistry::new();
        let reg2 = r2.register(2);
        if r2.node != r.node {
            assert_eq!(r.find(&reg2.name), None);
        }
    }
}
