//! Routing publishes and dead letters to their queues and streams.
//!
//! Dead letters (`DeadLetterRouter`) arrive from queues that have released
//! their lock; they are routed like publishes (exchanges, then queues, both
//! released before any queue is called), and what their delivery pushes
//! out of a full queue joins the same work list instead of recursing.

use super::registry::{Names, Slot};
use super::{refused, VHost};
use bytes::Bytes;
use ferry_model::message::Message;
use ferry_model::Table;
use ferry_queue::error::{CoreError, Result};
use ferry_queue::queue::dead_letter::{self, Death};
use ferry_queue::queue::{DeadLetter, DeadLetterRouter, Queue, Reason};
use ferry_queue::source::Source;
use ferry_route::consistent_hash::HashProperty;
use ferry_route::{delay_of, route_all_message, sender_selected_keys, Exchange, ExchangeKind};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

impl VHost {
    /// Routes a message published to `exchange` and returns the queues it
    /// goes to (deduplicated). `headers` are the parsed message headers,
    /// needed only by headers exchanges. A message whose exchange or
    /// routing key could not be stored is refused here (`ferry_queue::limits`).
    pub fn route(
        &self,
        exchange: &str,
        msg: &Message,
        headers: Option<&Table>,
        out: &mut Vec<Arc<dyn Source>>,
    ) -> Result<()> {
        ferry_queue::queue::record::check_fields(msg)?;
        if exchange.is_empty() {
            let extra = sender_selected(headers)?;
            let names = self.registry.read();
            // Distinct keys name distinct queues: past a few keys (a CC
            // header may hold thousands) repeats are skipped by key in
            // O(1) instead of by scanning what was found.
            let mut seen = (extra.len() > 16).then(ferry_route::NameSet::default);
            for key in std::iter::once(&*msg.routing_key).chain(extra) {
                if let Some(seen) = &mut seen {
                    if !seen.first(key) {
                        continue;
                    }
                }
                let Some(found) = names.get(key).and_then(Slot::source) else {
                    continue;
                };
                if seen.is_some() || !out.iter().any(|o| Arc::ptr_eq(o, &found)) {
                    out.push(found);
                }
            }
            return Ok(());
        }
        // The documented order (exchanges, then the registry): a reader
        // holding `registry` while waiting for `exchanges` could deadlock
        // with `binding` (exchanges → registry) once a writer queues up on
        // either.
        let exchanges = self.exchanges.read();
        let names = self.registry.read();
        let Some(x) = exchanges.get(exchange) else {
            return Err(CoreError::not_found("exchange", exchange, &self.name));
        };
        if x.internal {
            return Err(refused(format!(
                "cannot publish to internal exchange '{exchange}' in vhost '{}'",
                self.name
            )));
        }
        let extra = sender_selected(headers)?;
        if x.kind == ExchangeKind::DelayedMessage {
            if let Some(q) = self.hold_target(exchange, headers) {
                out.push(q);
                return Ok(());
            }
        }
        let key = [&*msg.routing_key];
        let all: Vec<&str>;
        // No allocation for the common publish without CC / BCC.
        let keys: &[&str] = if extra.is_empty() {
            &key
        } else {
            all = key.into_iter().chain(extra).collect();
            &all
        };
        self.route_through(
            &exchanges,
            &names,
            exchange,
            (keys, &msg.properties),
            headers,
            out,
        );
        Ok(())
    }

    /// Where `exchange`'s bindings send a message with routing `keys`
    /// (its publish key, then its `CC` / `BCC` keys) and raw `properties`
    /// (which a consistent-hash exchange may hash on): queues and streams, given
    /// the vhost's exchanges and registry, read-locked by the caller in that
    /// order.
    ///
    /// A delayed exchange reached through an exchange-to-exchange binding
    /// holds a message with a valid `x-delay` as a publish to it would (the
    /// plugin's type `route` runs for every exchange on the way): its
    /// hidden queue is the destination and its bindings wait for the due
    /// time. `exchange` itself is routed through (the caller decided).
    pub(super) fn route_through(
        &self,
        exchanges: &HashMap<Arc<str>, Exchange>,
        names: &Names,
        exchange: &str,
        (keys, properties): (&[&str], &Bytes),
        headers: Option<&Table>,
        out: &mut Vec<Arc<dyn Source>>,
    ) {
        let mut found: Vec<Arc<str>> = Vec::new();
        let holdable = headers.and_then(delay_of).is_some();
        let held: RefCell<Vec<Arc<str>>> = RefCell::new(Vec::new());
        let props = |p: HashProperty| self.hash_property(properties, p);
        route_all_message(
            |n| {
                let x = exchanges.get(n)?;
                if holdable && x.kind == ExchangeKind::DelayedMessage && n != exchange {
                    let mut h = held.borrow_mut();
                    if !h.contains(&x.name) {
                        h.push(x.name.clone());
                    }
                    return None;
                }
                Some(x)
            },
            exchange,
            keys,
            headers,
            Some(&props),
            &mut found,
        );
        out.extend(found.iter().filter_map(|n| names.get(n)?.source()));
        for x in held.into_inner() {
            if let Some(q) = self.delayed.queue(&x) {
                out.push(q);
            }
        }
    }

    /// The queues a dead letter published to `exchange` with `keys` reaches;
    /// None if the exchange does not exist (the letter is then dropped, as
    /// in RabbitMQ). Internal exchanges may be dead-letter exchanges.
    fn route_dead_letter(
        &self,
        exchange: &str,
        keys: &[&str],
        headers: Option<&Table>,
        properties: &Bytes,
    ) -> Option<Vec<Arc<Queue>>> {
        let exchanges = self.exchanges.read();
        let names = self.registry.read();
        let queue = |n: &str| names.get(n).and_then(Slot::queue);
        let mut out: Vec<Arc<Queue>> = Vec::new();
        if exchange.is_empty() {
            let mut seen = (keys.len() > 16).then(ferry_route::NameSet::default);
            for k in keys {
                if let Some(seen) = &mut seen {
                    if !seen.first(k) {
                        continue;
                    }
                }
                if let Some(q) = queue(k) {
                    if seen.is_some() || !out.iter().any(|o| Arc::ptr_eq(o, q)) {
                        out.push(q.clone());
                    }
                }
            }
            return Some(out);
        }
        exchanges.get(exchange)?;
        let mut found: Vec<Arc<str>> = Vec::new();
        let props = |p: HashProperty| self.hash_property(properties, p);
        route_all_message(
            |n| exchanges.get(n),
            exchange,
            keys,
            headers,
            Some(&props),
            &mut found,
        );
        out.extend(found.iter().filter_map(|n| queue(n).cloned()));
        Some(out)
    }

    /// A property of a message, for consistent-hash exchanges.
    fn hash_property(&self, blob: &Bytes, p: HashProperty) -> Option<Vec<u8>> {
        ferry_queue::props::hash_property(blob, p)
    }

    /// Republishes one dead letter (RabbitMQ's `rabbit_dead_letter:publish`):
    /// the original properties with x-death recorded and `expiration`
    /// removed, to the dead-letter exchange with the dead-letter routing
    /// key (dropping `CC`) or the message's own keys; queues the message
    /// already died in without a rejection since are skipped (cycles).
    fn dead_letter_one(&self, dl: &DeadLetter, work: &mut VecDeque<DeadLetter>) {
        let props = &dl.message.properties;
        let old = ferry_queue::props::headers(props)
            .and_then(|h| Ok((h, ferry_queue::props::expiration(props)?)));
        let (old_headers, old_expiration) = match old {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(queue = %dl.queue, error = %e, "dead letter with unreadable properties dropped");
                return;
            }
        };
        let old_expiration = old_expiration.map(|e| String::from_utf8_lossy(&e).into_owned());
        // Re-encoded as RabbitMQ does: keys in order, one entry each.
        let mut headers = old_headers
            .as_ref()
            .map(ferry_queue::props::sorted)
            .unwrap_or_default();
        // The publish key, then CC (BCC left the headers at the publish):
        // the routing keys x-death records, as RabbitMQ's `header_routes`.
        let own_keys: Vec<String> = std::iter::once(dl.message.routing_key.to_string())
            .chain(
                dead_letter::header_routes(&headers)
                    .into_iter()
                    .map(String::from),
            )
            .collect();
        {
            let keys: Vec<&str> = own_keys.iter().map(String::as_str).collect();
            dead_letter::add_death(
                &mut headers,
                &Death {
                    reason: dl.reason,
                    queue: &dl.queue,
                    time: self.env.clock.now_ms() / 1000,
                    exchange: &dl.message.exchange,
                    routing_keys: &keys,
                    original_expiration: old_expiration.as_deref(),
                },
            );
        }
        // Without a dead-letter routing key the letter goes by all the
        // message's keys, its BCC keys too (RabbitMQ's `routing_keys`),
        // and keeps them for a next death; x-death above leaves them out.
        let (route_keys, bcc) = match &dl.routing_key {
            Some(rk) => {
                headers.remove("CC");
                (vec![rk.to_string()], Vec::new())
            }
            None => {
                let mut keys = own_keys;
                keys.extend(dl.message.bcc.iter().map(|k| k.to_string()));
                (keys, dl.message.bcc.clone())
            }
        };
        // A dead-letter routing key a record cannot hold (only from a policy
        // stored before such keys were refused) drops the letter: records
        // never truncate.
        if let Err(e) = ferry_queue::limits::check_short("routing_key", &route_keys[0]) {
            tracing::warn!(queue = %dl.queue, error = %e.to_string().trim_end(), "dead letter with an over-long routing key dropped");
            return;
        }
        let table = ferry_queue::props::sorted(&headers);
        let properties = match ferry_queue::props::with_headers(props, Some(&table), true) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(queue = %dl.queue, error = %e, "dead letter not re-encodable, dropped");
                return;
            }
        };
        let msg = Arc::new(Message {
            exchange: dl.exchange.clone(),
            routing_key: Arc::from(route_keys[0].as_str()),
            properties,
            body: dl.message.body.clone(),
            persistent: dl.message.persistent,
            expiration_ms: None,
            bcc,
        });
        let keys: Vec<&str> = route_keys.iter().map(String::as_str).collect();
        let Some(targets) =
            self.route_dead_letter(&dl.exchange, &keys, Some(&table), &msg.properties)
        else {
            tracing::debug!(
                queue = %dl.queue, exchange = %dl.exchange,
                "dead-letter exchange does not exist: message dropped"
            );
            return;
        };
        let deaths = dead_letter::deaths(&table);
        for q in targets {
            if dl.reason != Reason::Rejected && dead_letter::is_cycle(q.name(), deaths) {
                self.cycles.report(q.name(), deaths);
                continue;
            }
            let mut more = Vec::new();
            if let Err(e) = q.publish_collect(&msg, None, &mut more) {
                tracing::debug!(queue = %q.name(), error = %e, "dead letter not stored");
            }
            work.extend(more);
        }
    }
}

impl DeadLetterRouter for VHost {
    fn stream_crashed(&self, name: &str, reason: String) {
        self.stream_crashed_at_runtime(name, reason);
    }

    fn dead_letter(&self, letters: Vec<DeadLetter>) {
        let mut work: VecDeque<DeadLetter> = letters.into();
        // Each step either ends or stores a message that pushes out an
        // older one (reason maxlen, so cycles are cut): the list drains.
        // The bound only guards against a bug turning that into a hang.
        let mut steps = 0u64;
        while let Some(dl) = work.pop_front() {
            steps += 1;
            if steps > 10_000_000 {
                tracing::error!(
                    left = work.len() + 1,
                    "dead-letter loop did not end; dropping the rest"
                );
                return;
            }
            self.dead_letter_one(&dl, &mut work);
        }
    }
}

/// The `CC` and `BCC` keys of a publish; a header of another type than an
/// array is RabbitMQ's 406 (`rabbit_basic:header_routes/1` throwing, the
/// channel answering "invalid message: ~p").
fn sender_selected(headers: Option<&Table>) -> Result<Vec<&str>> {
    sender_selected_keys(headers).map_err(|e| super::precondition(e.to_string()))
}
