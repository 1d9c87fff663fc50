//! Dead letters (RabbitMQ's `rabbit_dead_letter`): what queues hand the
//! vhost's `DeadLetterRouter` after releasing their lock. Each letter is
//! rewritten (x-death recorded, `expiration` removed, the dead-letter
//! routing key or the message's own keys), routed like a publish (the
//! caller's `route` takes the vhost's exchanges, then its registry, both
//! released before any queue is called) and stored; what its delivery
//! pushes out of a full queue joins the same work list instead of
//! recursing.
//!
//! Owns the cycle log (queues a letter already died in are skipped and
//! reported once); holds no lock of its own.

use bytes::Bytes;
use ferry_model::message::Message;
use ferry_model::Table;
use ferry_queue::clock::Clock;
use ferry_queue::queue::dead_letter::{self, CycleLog, Death};
use ferry_queue::queue::{DeadLetter, Queue, Reason};
use std::collections::VecDeque;
use std::sync::Arc;

/// The queues a dead letter published to `exchange` with `keys`, headers
/// and properties reaches; None if the exchange does not exist.
pub(super) type Targets<'a> =
    dyn Fn(&str, &[&str], Option<&Table>, &Bytes) -> Option<Vec<Arc<Queue>>> + 'a;

/// The vhost's dead-lettering.
#[derive(Debug, Default)]
pub(super) struct DeadLetters {
    cycles: CycleLog,
}

impl DeadLetters {
    /// Routes and stores `letters` and everything their deliveries push
    /// out, at the time `clock` tells.
    pub(super) fn run(&self, letters: Vec<DeadLetter>, clock: &dyn Clock, route: &Targets<'_>) {
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
            self.one(&dl, clock, route, &mut work);
        }
    }

    /// Republishes one dead letter (RabbitMQ's `rabbit_dead_letter:publish`):
    /// the original properties with x-death recorded and `expiration`
    /// removed, to the dead-letter exchange with the dead-letter routing
    /// key (dropping `CC`) or the message's own keys; queues the message
    /// already died in without a rejection since are skipped (cycles).
    fn one(
        &self,
        dl: &DeadLetter,
        clock: &dyn Clock,
        route: &Targets<'_>,
        work: &mut VecDeque<DeadLetter>,
    ) {
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
                    time: clock.now_ms() / 1000,
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
        let Some(targets) = route(&dl.exchange, &keys, Some(&table), &msg.properties) else {
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
