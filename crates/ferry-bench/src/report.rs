//! The result of a run: one flat struct, printed as a human summary or as
//! one JSON object (field names documented in the crate doc; scripts
//! depend on them, so add fields, never rename).

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::args::{ExchangeType, Mode};

/// Publish→deliver latency percentiles, microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Deliveries that carried a stamp from this run.
    pub samples: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
}

/// Summarises a histogram of nanoseconds; None if it is empty.
#[must_use]
pub fn latency(hist: &Histogram<u64>) -> Option<Latency> {
    if hist.is_empty() {
        return None;
    }
    // One decimal is below the histogram's own precision (3 digits).
    let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
    Some(Latency {
        samples: hist.len(),
        p50_us: us(hist.value_at_quantile(0.50)),
        p99_us: us(hist.value_at_quantile(0.99)),
        p999_us: us(hist.value_at_quantile(0.999)),
        max_us: us(hist.max()),
    })
}

/// Everything a run reports. Options are `null` in JSON when not measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// normal, publish_only, consume_only, idle_connections.
    pub mode: Option<Mode>,
    /// Producers started.
    pub producers: usize,
    /// Consumers started.
    pub consumers: usize,
    /// Queues used.
    pub queues: usize,
    /// Body size, bytes.
    pub size: usize,
    /// delivery-mode 2.
    pub persistent: bool,
    /// Confirm window per producer (0 = no confirms).
    pub confirm: u32,
    /// Consumer prefetch.
    pub prefetch: u16,
    /// Ack every N.
    pub multi_ack_every: u32,
    /// no-ack consumers.
    pub auto_ack: bool,
    /// Publish rate limit, msg/s (0 = none).
    pub rate_limit: f64,
    /// Exchange type, or null for the default exchange.
    pub exchange_type: Option<ExchangeType>,
    /// Measured time, seconds.
    pub elapsed_secs: f64,
    /// Messages written to sockets.
    pub sent: u64,
    /// Messages confirmed with basic.ack.
    pub confirmed: u64,
    /// Messages nacked.
    pub nacked: u64,
    /// basic.ack / basic.nack frames the producers received.
    pub confirm_frames: u64,
    /// confirm_frames / (confirmed + nacked): 1.0 = one frame per
    /// message, lower = the broker coalesced with `multiple`.
    pub confirm_frames_per_msg: Option<f64>,
    /// Deliveries received.
    pub received: u64,
    /// sent / elapsed.
    pub sent_msgs_per_sec: f64,
    /// confirmed / elapsed.
    pub confirmed_msgs_per_sec: f64,
    /// received / elapsed.
    pub received_msgs_per_sec: f64,
    /// Body megabytes (10^6) sent per second.
    pub sent_mb_per_sec: f64,
    /// Body megabytes (10^6) received per second.
    pub received_mb_per_sec: f64,
    /// Samples in the latency figures (0: none measured).
    pub latency_samples: u64,
    /// Publishes in the confirm latency figures (0: no confirms).
    pub confirm_latency_samples: u64,
    /// Publish→confirm latency, median, µs.
    pub confirm_latency_p50_us: Option<f64>,
    /// 99th percentile, µs.
    pub confirm_latency_p99_us: Option<f64>,
    /// Largest, µs.
    pub confirm_latency_max_us: Option<f64>,
    /// Publish→deliver latency, median, µs.
    pub latency_p50_us: Option<f64>,
    /// 99th percentile, µs.
    pub latency_p99_us: Option<f64>,
    /// 99.9th percentile, µs.
    pub latency_p999_us: Option<f64>,
    /// Largest, µs.
    pub latency_max_us: Option<f64>,
    /// What CPU per message divides by: received, confirmed or sent.
    pub cpu_basis: &'static str,
    /// Messages in that basis.
    pub cpu_basis_msgs: u64,
    /// This client's user+system CPU seconds during the run.
    pub client_cpu_secs: f64,
    /// Client CPU µs per basis message.
    pub client_cpu_us_per_msg: Option<f64>,
    /// The broker tree's CPU seconds during the run (--broker-pid).
    pub broker_cpu_secs: Option<f64>,
    /// Broker CPU µs per basis message.
    pub broker_cpu_us_per_msg: Option<f64>,
    /// Largest VmHWM in the broker's process tree at the end, KiB.
    pub broker_peak_rss_kib: Option<u64>,
    /// Sum of VmRSS over the broker's tree at the end, KiB.
    pub broker_rss_kib: Option<u64>,
    /// Same, before the run's connections were opened, KiB.
    pub broker_rss_before_kib: Option<u64>,
    /// Idle connections held (--idle-connections).
    pub idle_connections: Option<usize>,
    /// (broker_rss_kib - broker_rss_before_kib) / idle_connections.
    pub broker_rss_per_connection_kib: Option<f64>,
    /// False if a --count run gave up waiting for confirms or deliveries.
    pub complete: bool,
}

impl Report {
    /// Fills the rates and per-message CPU from the totals.
    pub fn derive(&mut self, client_ticks: u64, broker_ticks: Option<u64>) {
        let secs = self.elapsed_secs.max(1e-9);
        self.sent_msgs_per_sec = self.sent as f64 / secs;
        self.confirmed_msgs_per_sec = self.confirmed as f64 / secs;
        self.received_msgs_per_sec = self.received as f64 / secs;
        let settled = self.confirmed + self.nacked;
        self.confirm_frames_per_msg =
            (settled > 0).then(|| self.confirm_frames as f64 / settled as f64);
        self.sent_mb_per_sec = self.sent_msgs_per_sec * self.size as f64 / 1e6;
        self.received_mb_per_sec = self.received_msgs_per_sec * self.size as f64 / 1e6;
        (self.cpu_basis, self.cpu_basis_msgs) = if self.consumers > 0 {
            ("received", self.received)
        } else if self.confirm > 0 {
            ("confirmed", self.confirmed)
        } else {
            ("sent", self.sent)
        };
        let per_msg = |ticks: u64| {
            (self.cpu_basis_msgs > 0)
                .then(|| crate::cpu::ticks_to_secs(ticks) * 1e6 / self.cpu_basis_msgs as f64)
        };
        self.client_cpu_secs = crate::cpu::ticks_to_secs(client_ticks);
        self.client_cpu_us_per_msg = per_msg(client_ticks);
        self.broker_cpu_secs = broker_ticks.map(crate::cpu::ticks_to_secs);
        self.broker_cpu_us_per_msg = broker_ticks.and_then(per_msg);
    }

    /// Copies confirm latency figures in.
    pub fn set_confirm_latency(&mut self, l: Option<Latency>) {
        let l = l.unwrap_or_default();
        let some = l.samples > 0;
        self.confirm_latency_samples = l.samples;
        self.confirm_latency_p50_us = some.then_some(l.p50_us);
        self.confirm_latency_p99_us = some.then_some(l.p99_us);
        self.confirm_latency_max_us = some.then_some(l.max_us);
    }

    /// Copies latency figures in.
    pub fn set_latency(&mut self, l: Option<Latency>) {
        let l = l.unwrap_or_default();
        let some = l.samples > 0;
        self.latency_samples = l.samples;
        self.latency_p50_us = some.then_some(l.p50_us);
        self.latency_p99_us = some.then_some(l.p99_us);
        self.latency_p999_us = some.then_some(l.p999_us);
        self.latency_max_us = some.then_some(l.max_us);
    }

    /// The human summary.
    #[must_use]
    pub fn text(&self) -> String {
        let mut s = String::new();
        let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
        let _ = writeln!(s, "ferry bench summary ({:.2} s)", self.elapsed_secs);
        if let Some(n) = self.idle_connections {
            let kib = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
            let _ = writeln!(s, "  idle connections   {n}");
            let _ = writeln!(
                s,
                "  broker RSS         {} KiB (before {} KiB, {} KiB per connection, peak {} KiB)",
                kib(self.broker_rss_kib),
                kib(self.broker_rss_before_kib),
                opt(self.broker_rss_per_connection_kib),
                kib(self.broker_peak_rss_kib),
            );
            return s;
        }
        let _ = writeln!(
            s,
            "  sent      {:>12} msgs  {:>10.0} msg/s  {:>8.2} MB/s",
            self.sent, self.sent_msgs_per_sec, self.sent_mb_per_sec
        );
        let _ = writeln!(
            s,
            "  confirmed {:>12} msgs  {:>10.0} msg/s  (nacked {}; {} ack/nack frames, {} per msg)",
            self.confirmed,
            self.confirmed_msgs_per_sec,
            self.nacked,
            self.confirm_frames,
            self.confirm_frames_per_msg
                .map_or_else(|| "-".to_string(), |v| format!("{v:.3}"))
        );
        let _ = writeln!(
            s,
            "  received  {:>12} msgs  {:>10.0} msg/s  {:>8.2} MB/s",
            self.received, self.received_msgs_per_sec, self.received_mb_per_sec
        );
        let _ = writeln!(
            s,
            "  latency µs  p50 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
            opt(self.latency_p50_us),
            opt(self.latency_p99_us),
            opt(self.latency_p999_us),
            opt(self.latency_max_us),
            self.latency_samples
        );
        if self.confirm_latency_samples > 0 {
            let _ = writeln!(
                s,
                "  confirm latency µs  p50 {}  p99 {}  max {}  ({} samples)",
                opt(self.confirm_latency_p50_us),
                opt(self.confirm_latency_p99_us),
                opt(self.confirm_latency_max_us),
                self.confirm_latency_samples
            );
        }
        let _ = writeln!(
            s,
            "  CPU µs/msg ({} basis)  client {}  broker {}",
            self.cpu_basis,
            opt(self.client_cpu_us_per_msg),
            opt(self.broker_cpu_us_per_msg)
        );
        if let Some(kib) = self.broker_peak_rss_kib {
            let _ = writeln!(s, "  broker peak RSS    {kib} KiB");
        }
        if !self.complete {
            let _ = writeln!(
                s,
                "  INCOMPLETE: gave up waiting for confirms or deliveries"
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn summarises_a_histogram() {
        let mut h = crate::consumer::new_histogram().unwrap();
        assert!(latency(&h).is_none());
        // 1..=1000 µs, one sample each, plus one 50 ms outlier.
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        h.record(50_000_000).unwrap();
        let l = latency(&h).unwrap();
        assert_eq!(l.samples, 1001);
        assert!((l.p50_us - 501.0).abs() <= 1.0, "{l:?}");
        assert!((l.p99_us - 991.0).abs() <= 1.5, "{l:?}");
        assert!((l.p999_us - 1000.0).abs() <= 1.5, "{l:?}");
        assert!((l.max_us - 50_000.0).abs() <= 50.0, "{l:?}");
    }

    #[test]
    fn derives_rates_and_cpu_per_message() {
        let mut r = Report {
            consumers: 1,
            confirm: 256,
            size: 100,
            elapsed_secs: 2.0,
            sent: 200_000,
            confirmed: 200_000,
            received: 100_000,
            confirm_frames: 5_000,
            ..Report::default()
        };
        r.derive(50, Some(300));
        assert_eq!(r.received_msgs_per_sec, 50_000.0);
        assert_eq!(r.confirm_frames_per_msg, Some(0.025));
        assert!((r.received_mb_per_sec - 5.0).abs() < 1e-9);
        assert_eq!((r.cpu_basis, r.cpu_basis_msgs), ("received", 100_000));
        // 0.5 s / 100k = 5 µs; 3 s / 100k = 30 µs.
        assert!((r.client_cpu_us_per_msg.unwrap() - 5.0).abs() < 1e-9);
        assert!((r.broker_cpu_us_per_msg.unwrap() - 30.0).abs() < 1e-9);
        r.consumers = 0;
        r.derive(50, None);
        assert_eq!(r.cpu_basis, "confirmed");
        assert_eq!(r.broker_cpu_us_per_msg, None);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["cpu_basis"], "confirmed");
        assert!(json["latency_p99_us"].is_null());
        assert_eq!(json["confirm_frames"], 5_000);
        r.confirmed = 0;
        r.derive(50, None);
        assert_eq!(r.confirm_frames_per_msg, None);
    }
}
