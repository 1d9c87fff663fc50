//! What every handler reaches: the broker, the connection registry, the
//! alarm state, node facts, and the rate sampler.
//!
//! Rates: a task samples every queue's counters each `SAMPLE_PERIOD` and
//! keeps, per queue, the rate over the last period (RabbitMQ's
//! `*_details.rate`, messages per second). Counters that went backwards (a
//! queue deleted and declared again) count as a restart from zero.

use ferry_broker::Broker;
use ferry_queue::queue::StatsSnapshot;
use ferry_server::alarms::Alarms;
use ferry_server::registry::Registry;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often counters are sampled for rates.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(5);

/// Node facts fixed at start.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Node name, "ferry@HOST".
    pub name: String,
    /// Memory high watermark, bytes.
    pub mem_limit: u64,
    /// Free-disk low watermark, bytes.
    pub disk_free_limit: u64,
    /// AMQP listener.
    pub amqp_listen: std::net::SocketAddr,
}

/// Shared state of the HTTP listeners.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The broker core.
    pub broker: Arc<Broker>,
    /// Live connections.
    pub registry: Arc<Registry>,
    /// Memory / disk alarms.
    pub alarms: watch::Receiver<Alarms>,
    /// Node facts.
    pub node: Arc<NodeInfo>,
    /// When the node started.
    pub started: Instant,
    /// Message rates.
    pub rates: Arc<RateTable>,
    /// Direct reply-to consumers (the AMQP front end's), for publishes.
    pub replies: Option<Arc<ferry_server::channel::reply_to::Replies>>,
    /// The cluster this node belongs to (None: a single node).
    pub cluster: Option<ferry_cluster::node::ClusterNode>,
}

/// Per-second rates of one queue's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    /// publish.
    pub publish: f64,
    /// deliver (manual ack).
    pub deliver: f64,
    /// deliver_no_ack.
    pub deliver_no_ack: f64,
    /// get (manual ack).
    pub get: f64,
    /// get_no_ack.
    pub get_no_ack: f64,
    /// redeliver.
    pub redeliver: f64,
    /// ack.
    pub ack: f64,
    /// Change of ready messages per second (negative when draining).
    pub ready: f64,
    /// Change of unacknowledged messages per second.
    pub unacked: f64,
    /// Change of messages waiting for a delayed retry per second.
    pub delayed: f64,
}

impl Rates {
    /// deliver + deliver_no_ack + get + get_no_ack.
    pub fn deliver_get(&self) -> f64 {
        self.deliver + self.deliver_no_ack + self.get + self.get_no_ack
    }

    /// Change of `messages` per second: the same sum as the depth's
    /// (ready + unacknowledged + delayed), so the two never disagree.
    pub fn messages(&self) -> f64 {
        self.ready + self.unacked + self.delayed
    }

    /// Sums (vhost and node totals).
    pub fn add(&mut self, o: &Rates) {
        self.publish += o.publish;
        self.deliver += o.deliver;
        self.deliver_no_ack += o.deliver_no_ack;
        self.get += o.get;
        self.get_no_ack += o.get_no_ack;
        self.redeliver += o.redeliver;
        self.ack += o.ack;
        self.ready += o.ready;
        self.unacked += o.unacked;
        self.delayed += o.delayed;
    }

    fn between(old: &Counts, new: &Counts, secs: f64) -> Rates {
        let (old_d, new_d) = (&old.1, &new.1);
        let (old, new) = (&old.0, &new.0);
        let gauge = |a: u64, b: u64| (((b as f64 - a as f64) / secs) * 10.0).round() / 10.0;
        let r = |a: u64, b: u64| {
            // Backwards: a new queue with the same name; it started at 0.
            let d = if b >= a { b - a } else { b };
            ((d as f64 / secs) * 10.0).round() / 10.0
        };
        Rates {
            publish: r(old.publish, new.publish),
            deliver: r(old.deliver, new.deliver),
            deliver_no_ack: r(old.deliver_no_ack, new.deliver_no_ack),
            get: r(old.get, new.get),
            get_no_ack: r(old.get_no_ack, new.get_no_ack),
            redeliver: r(old.redeliver, new.redeliver),
            ack: r(old.ack, new.ack),
            ready: gauge(old_d.ready, new_d.ready),
            unacked: gauge(old_d.unacked, new_d.unacked),
            delayed: gauge(old_d.delayed, new_d.delayed),
        }
    }
}

/// Counters and depth of a queue at one sample.
type Counts = (StatsSnapshot, ferry_queue::queue::Depth);

/// (vhost, queue).
type QueueKey = (String, String);

/// When a queue was last sampled, its counters then, and its rate.
type Sample = (Instant, Counts, Rates);

/// Last sample and rate of every queue.
#[derive(Debug, Default)]
pub struct RateTable {
    inner: Mutex<HashMap<QueueKey, Sample>>,
    /// The previous sampling pass (None before the first).
    last_pass: Mutex<Option<Instant>>,
}

impl RateTable {
    /// The rate of one queue (zero before two samples).
    pub fn get(&self, vhost: &str, queue: &str) -> Rates {
        self.inner
            .lock()
            .get(&(vhost.to_string(), queue.to_string()))
            .map(|e| e.2)
            .unwrap_or_default()
    }

    /// Takes one sample of every queue of the broker.
    pub fn sample(&self, broker: &Broker) {
        let now = Instant::now();
        let mut seen: Vec<(QueueKey, Counts)> = Vec::new();
        for vname in broker.vhost_names() {
            let Ok(v) = broker.vhost(&vname) else {
                continue;
            };
            for q in crate::sources::of_vhost(&v) {
                seen.push(((vname.clone(), q.name().to_string()), (q.stats, q.depth)));
            }
        }
        let mut t = self.inner.lock();
        let prev_pass = self.last_pass.lock().replace(now);
        let mut next = HashMap::with_capacity(seen.len());
        for (k, snap) in seen {
            let rates = match (t.remove(&k), prev_pass) {
                (Some((at, old, _)), _) => {
                    let secs = now.duration_since(at).as_secs_f64().max(0.001);
                    Rates::between(&old, &snap, secs)
                }
                // Declared since the last pass: it started from zero then.
                (None, Some(at)) => {
                    let secs = now.duration_since(at).as_secs_f64().max(0.001);
                    Rates::between(&Counts::default(), &snap, secs)
                }
                // The first pass: queues recovered at start have no history.
                (None, None) => Rates::default(),
            };
            next.insert(k, (now, snap, rates));
        }
        *t = next;
    }
}

/// Samples rates until `stop` flips.
pub async fn sampler(ctx: Ctx, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SAMPLE_PERIOD);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let c = ctx.clone();
                let _ = tokio::task::spawn_blocking(move || c.rates.sample(&c.broker)).await;
            }
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_delta_over_time_and_survives_resets() {
        let old = StatsSnapshot {
            publish: 10,
            ack: 50,
            ..Default::default()
        };
        let new = StatsSnapshot {
            publish: 60,
            ack: 5,
            ..Default::default()
        };
        let d = |ready, delayed| ferry_queue::queue::Depth {
            ready,
            delayed,
            ..Default::default()
        };
        let r = Rates::between(&(old, d(20, 0)), &(new, d(10, 25)), 5.0);
        assert_eq!(r.publish, 10.0);
        assert_eq!(r.ack, 1.0);
        assert_eq!(r.ready, -2.0);
        assert_eq!(r.delayed, 5.0);
        // Ten ready messages went to wait for a retry, 15 more arrived
        // waiting: `messages` grew by 15, so its rate is +3/s.
        assert_eq!(r.messages(), 3.0);
    }
}
