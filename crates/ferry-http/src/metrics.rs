//! GET /metrics: Prometheus text exposition (format 0.0.4), written by
//! hand. Names follow rabbitmq_prometheus where one exists, with the
//! `ferry_` prefix; every family has HELP and TYPE lines; label values are
//! escaped. The list is documented in docs/metrics.md.
//!
//! Served on its own listener (`metrics_listen`, default :15692 like
//! RabbitMQ's plugin) without authentication, as RabbitMQ does.

use crate::state::Ctx;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use ferry_queue::metrics::HistogramSnapshot;
use std::fmt::Write;

/// Escapes a label value (backslash, quote, newline).
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, v: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {v}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {v}");
        }
    }

    /// A histogram family; bucket bounds and sum are divided by `scale`
    /// (1e6: µs to seconds).
    fn histogram(&mut self, name: &str, help: &str, h: &HistogramSnapshot, scale: f64) {
        self.family(name, "histogram", help);
        for (le, n) in &h.buckets {
            let le = *le as f64 / scale;
            self.sample(&format!("{name}_bucket"), &format!("le=\"{le}\""), n);
        }
        self.sample(&format!("{name}_bucket"), "le=\"+Inf\"", h.count);
        self.sample(&format!("{name}_sum"), "", h.sum_us as f64 / scale);
        self.sample(&format!("{name}_count"), "", h.count);
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, v: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, "", v);
    }
}

/// Per-queue values gathered once, then written family by family.
struct QueueRow {
    labels: String,
    d: ferry_queue::queue::Depth,
    s: ferry_queue::queue::StatsSnapshot,
}

type Field = fn(&QueueRow) -> u64;

/// `(name, type, help, value)` rows, one line each: the exposition is data,
/// written by one loop.
macro_rules! families {
    ($($name:literal $kind:ident $help:literal $f:expr;)*) => {
        &[$(($name, stringify!($kind), $help, $f),)*]
    };
}

const QUEUE_FAMILIES: &[(&str, &str, &str, Field)] = families! {
    "ferry_queue_messages_ready" gauge "Messages ready to be delivered to consumers." |r| r.d.ready;
    "ferry_queue_messages_unacked" gauge "Messages delivered to consumers but not yet acknowledged." |r| r.d.unacked;
    "ferry_queue_messages_delayed" gauge "Messages waiting for a delayed retry (x-retry-delay): neither ready nor unacknowledged." |r| r.d.delayed;
    "ferry_queue_messages" gauge "Messages in the queue: ready, unacknowledged and waiting for a delayed retry." |r| r.d.ready + r.d.unacked + r.d.delayed;
    "ferry_queue_messages_ready_bytes" gauge "Stored size in bytes of ready messages." |r| r.d.ready_bytes;
    "ferry_queue_messages_unacked_bytes" gauge "Stored size in bytes of unacknowledged messages." |r| r.d.unacked_bytes;
    "ferry_queue_messages_bytes" gauge "Stored size in bytes of ready and unacknowledged messages." |r| r.d.ready_bytes + r.d.unacked_bytes;
    "ferry_queue_consumers" gauge "Consumers on the queue." |r| r.d.consumers;
    "ferry_queue_messages_published_total" counter "Messages stored in the queue (publishes and dead letters)." |r| r.s.publish;
    "ferry_queue_messages_delivered_ack_total" counter "Messages delivered to consumers in manual acknowledgement mode." |r| r.s.deliver;
    "ferry_queue_messages_delivered_total" counter "Messages delivered to consumers in automatic acknowledgement mode." |r| r.s.deliver_no_ack;
    "ferry_queue_get_ack_total" counter "Messages fetched with basic.get in manual acknowledgement mode." |r| r.s.get;
    "ferry_queue_get_total" counter "Messages fetched with basic.get in automatic acknowledgement mode." |r| r.s.get_no_ack;
    "ferry_queue_messages_redelivered_total" counter "Messages delivered or fetched again after a requeue." |r| r.s.redeliver;
    "ferry_queue_messages_acked_total" counter "Messages acknowledged by consumers." |r| r.s.ack;
};

/// Node-wide single-sample families.
fn node_families(ctx: &Ctx, queues: usize) -> Vec<(&'static str, &'static str, &'static str, u64)> {
    let conns = ctx.registry.snapshot();
    let channels: usize = conns.iter().map(|c| c.channels.len()).sum();
    let consumers: usize = conns
        .iter()
        .flat_map(|c| c.channels.iter())
        .map(|ch| ch.consumers.len())
        .sum();
    let alarms = *ctx.alarms.borrow();
    let n = |x: usize| x as u64;
    families! {
        "ferry_queues" gauge "Queues (and streams) on the node." n(queues);
        "ferry_connections" gauge "Open AMQP connections." n(conns.len());
        "ferry_channels" gauge "Open AMQP channels." n(channels);
        "ferry_consumers" gauge "Consumers on the node." n(consumers);
        "ferry_connection_incoming_bytes" gauge "Bytes received on the open connections." conns.iter().map(|c| c.recv_oct).sum::<u64>();
        "ferry_connection_outgoing_bytes" gauge "Bytes sent on the open connections." conns.iter().map(|c| c.send_oct).sum::<u64>();
        "ferry_alarms_memory_used_watermark" gauge "1 while the memory alarm is raised (publishers blocked)." u64::from(alarms.memory);
        "ferry_alarms_free_disk_space_watermark" gauge "1 while the free disk space alarm is raised (publishers blocked)." u64::from(alarms.disk);
        "ferry_direct_replies_dropped_total" counter "Direct replies dropped because the reply consumer's socket buffer was full." ferry_server::channel::delivery::dropped_replies();
        "ferry_memory_used_bytes" gauge "Memory the memory alarm compares with its limit (fixed footprint plus bytes held for clients)." ferry_server::memory::used_bytes();
        "ferry_process_resident_memory_bytes" gauge "Resident set size of the broker process." ferry_server::alarms::rss_bytes().unwrap_or(0);
        "ferry_resident_memory_limit_bytes" gauge "Memory high watermark (the memory alarm's limit)." ctx.node.mem_limit;
        "ferry_disk_space_available_bytes" gauge "Free bytes on the data directory's file system." crate::overview::disk_free(ctx);
        "ferry_disk_space_available_limit_bytes" gauge "Free disk space low watermark." ctx.node.disk_free_limit;
    }
    .to_vec()
}

/// The whole exposition.
pub fn render(ctx: &Ctx) -> String {
    let mut o = Out(String::with_capacity(8192));
    let mut rows = Vec::new();
    let mut crashed = 0usize;
    for vname in ctx.broker.vhost_names() {
        let Ok(v) = ctx.broker.vhost(&vname) else {
            continue;
        };
        crashed += v.crashed_queues().len();
        for q in crate::sources::of_vhost(&v) {
            rows.push(QueueRow {
                labels: format!("vhost=\"{}\",queue=\"{}\"", esc(&vname), esc(q.name())),
                d: q.depth,
                s: q.stats,
            });
        }
    }
    for (name, kind, help, f) in QUEUE_FAMILIES {
        o.family(name, kind, help);
        for r in &rows {
            o.sample(name, &r.labels, f(r));
        }
    }
    for (name, kind, help, v) in node_families(ctx, rows.len()) {
        o.single(name, kind, help, v);
    }
    o.single(
        "ferry_queues_crashed",
        "gauge",
        "Stored queues and streams whose log could not be opened or read (state crashed; not counted in ferry_queues).",
        crashed,
    );
    use ferry_queue::metrics as m;
    o.histogram(
        "ferry_fsync_duration_seconds",
        "Duration of each durability round's device flush (one syncfs, or the fdatasyncs of a small round; sync_now's fdatasyncs).",
        &m::FSYNC.snapshot(),
        1e6,
    );
    o.single(
        "ferry_durability_rounds_total",
        "counter",
        "Durability rounds run (group commits of every dirty queue and stream log at once).",
        m::ROUNDS.load(std::sync::atomic::Ordering::Relaxed),
    );
    o.histogram(
        "ferry_durability_round_logs",
        "Queue and stream logs per durability round.",
        &m::ROUND_LOGS.snapshot(),
        1.0,
    );
    o.histogram(
        "ferry_durability_round_duration_seconds",
        "Duration of each durability round: flush every member, device flush, confirms.",
        &m::ROUND_DURATION.snapshot(),
        1e6,
    );
    if let Some(c) = &ctx.cluster {
        raft_families(&mut o, &c.group_stats());
    }
    o.family("ferry_build_info", "gauge", "Ferry version.");
    o.sample(
        "ferry_build_info",
        &format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
        1,
    );
    o.0
}

/// Per Raft group of a clustered node (label `group`; "meta" is the
/// metadata group).
fn raft_families(o: &mut Out, groups: &[ferry_cluster::node::GroupStats]) {
    type Get = fn(&ferry_cluster::node::GroupStats) -> u64;
    const FAMILIES: &[(&str, &str, &str, Get)] = &[
        ("ferry_raft_term", "gauge", "Current Raft term.", |g| g.term),
        (
            "ferry_raft_last_log_index",
            "gauge",
            "Index of the last entry in this node's log.",
            |g| g.last_log_index,
        ),
        (
            "ferry_raft_commit_index",
            "gauge",
            "Index of the last entry this node knows committed.",
            |g| g.commit_index,
        ),
        (
            "ferry_raft_last_applied_index",
            "gauge",
            "Index of the last entry applied on this node.",
            |g| g.last_applied_index,
        ),
        (
            "ferry_raft_snapshot_index",
            "gauge",
            "Index of the last entry this node's current snapshot covers.",
            |g| g.snapshot_index,
        ),
        (
            "ferry_raft_purged_index",
            "gauge",
            "Index up to which this node's log was cut (after a snapshot).",
            |g| g.purged_index,
        ),
        (
            "ferry_raft_leader",
            "gauge",
            "1 if this node leads the group.",
            |g| u64::from(g.leader),
        ),
        (
            "ferry_raft_awake",
            "gauge",
            "1 if the group's Raft instance runs on this node, 0 while it hibernates (idle).",
            |g| u64::from(g.awake),
        ),
        (
            "ferry_raft_hibernations_total",
            "counter",
            "Times the group's Raft instance hibernated on this node.",
            |g| g.hibernations,
        ),
        (
            "ferry_raft_leader_changes_total",
            "counter",
            "Leader changes this node saw.",
            |g| g.leader_changes,
        ),
        (
            "ferry_raft_elections_total",
            "counter",
            "Terms this node saw begin (elections).",
            |g| g.elections,
        ),
    ];
    let labels = |g: &ferry_cluster::node::GroupStats| match &g.queue {
        Some((vhost, queue)) => format!(
            "group=\"{}\",vhost=\"{}\",queue=\"{}\"",
            esc(&g.group),
            esc(vhost),
            esc(queue)
        ),
        None => format!("group=\"{}\"", esc(&g.group)),
    };
    for (name, kind, help, f) in FAMILIES {
        o.family(name, kind, help);
        for g in groups {
            o.sample(name, &labels(g), f(g));
        }
    }
    o.family(
        "ferry_raft_replication_lag_entries",
        "gauge",
        "On the leader: entries a follower's log lacks.",
    );
    for g in groups {
        for (peer, lag) in &g.lag {
            o.sample(
                "ferry_raft_replication_lag_entries",
                &format!("{},peer=\"{peer}\"", labels(g)),
                *lag,
            );
        }
    }
}

/// GET /metrics
pub async fn metrics(State(ctx): State<Ctx>) -> impl IntoResponse {
    let body = tokio::task::spawn_blocking(move || render(&ctx))
        .await
        .unwrap_or_default();
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
