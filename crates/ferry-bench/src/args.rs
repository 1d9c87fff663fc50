//! The `ferry bench` command line, and the validated [`Plan`] a run follows.
//!
//! The flag names are a contract with scripts (bench/compare): add flags,
//! never rename them.

use ferry_amqp::{AMQPValue, FieldTable, LongString};

use crate::error::BenchError;

/// Exchange types `--exchange-type` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExchangeType {
    /// Every queue bound with key `PREFIX`; published with key `PREFIX`.
    Direct,
    /// Every queue bound; the key is ignored.
    Fanout,
    /// Every queue bound with `PREFIX.#`; published with `PREFIX.bench`.
    Topic,
}

/// `ferry bench`: a PerfTest-like load generator for any AMQP 0-9-1 broker.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Broker URI (amqp://user:pass@host:port/vhost).
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub uri: String,
    /// Connect the consumers here instead (another node of a cluster; the
    /// producers and the topology use --uri).
    #[arg(long)]
    pub consumer_uri: Option<String>,
    /// Publishing connections.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Consuming connections.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Queues, named PREFIX.0 .. PREFIX.N-1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub queues: u32,
    /// Prefix of the queue names (and of the exchange, PREFIX.x).
    #[arg(long, default_value = "bench")]
    pub queue_prefix: String,
    /// Message body size in bytes (≥ 24 to measure latency).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Publish with delivery-mode 2.
    #[arg(long)]
    pub persistent: bool,
    /// Publisher confirms: max unconfirmed messages per producer (0 = off).
    #[arg(long, default_value_t = 0)]
    pub confirm: u32,
    /// basic.qos prefetch-count per consumer (0 = unlimited).
    #[arg(long, default_value_t = 500)]
    pub prefetch: u16,
    /// Ack every N deliveries with multiple=true (1 = one ack each).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub multi_ack_every: u32,
    /// Consume with no-ack.
    #[arg(long)]
    pub auto_ack: bool,
    /// Total publish rate across producers, msg/s (0 = unlimited).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Run time in seconds [default: 10; with --consume-only: until drained].
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Messages per producer, then stop once all are received (overrides --duration).
    #[arg(long)]
    pub count: Option<u64>,
    /// Publish to the exchange PREFIX.x of this type, to which every queue is bound
    /// [default: the default exchange, queue name as key].
    #[arg(long, value_enum)]
    pub exchange_type: Option<ExchangeType>,
    /// Queue argument KEY=VALUE (repeatable): integers become long, true/false booleans,
    /// anything else a string (e.g. x-queue-type=quorum, x-max-length=10).
    #[arg(long = "queue-arg", value_name = "KEY=VALUE")]
    pub queue_args: Vec<String>,
    /// Declare the queues (and exchange) non-durable.
    #[arg(long)]
    pub no_durable_queue: bool,
    /// Only publish, and keep the queues (fill a backlog for --consume-only).
    #[arg(long, conflicts_with = "consume_only")]
    pub publish_only: bool,
    /// Only consume: drain the messages found in the queues, then delete them.
    #[arg(long)]
    pub consume_only: bool,
    /// Leave the queues (and the exchange) in place after the run instead of deleting them.
    #[arg(long)]
    pub keep_queues: bool,
    /// Open N idle connections (one channel each), hold them for --duration, report the
    /// broker's RSS; no traffic.
    #[arg(long, value_name = "N")]
    pub idle_connections: Option<usize>,
    /// The broker's PID: report its CPU per message and RSS (its whole process tree).
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Print exactly one JSON object on stdout (progress lines go to stderr).
    #[arg(long)]
    pub json: bool,
    /// A progress line every second on stderr [default: on unless --json].
    #[arg(long, overrides_with = "no_progress")]
    pub progress: bool,
    /// No progress lines.
    #[arg(long)]
    pub no_progress: bool,
    /// Client threads (tokio workers); 1 keeps the client's CPU lowest.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,
}

/// What kind of run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Producers and consumers.
    Normal,
    /// Producers only; queues kept.
    PublishOnly,
    /// Consumers only, draining what is there.
    ConsumeOnly,
    /// Idle connections only.
    IdleConnections,
}

/// A validated run description.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The flags as given.
    pub args: BenchArgs,
    /// What kind of run.
    pub mode: Mode,
    /// Producers actually started.
    pub producers: usize,
    /// Consumers actually started.
    pub consumers: usize,
    /// Queue names.
    pub queues: Vec<String>,
    /// Exchange name and type, if not the default exchange.
    pub exchange: Option<(String, ExchangeType)>,
    /// Parsed --queue-arg values.
    pub queue_args: FieldTable,
    /// Time limit in seconds (None: until drained, for --consume-only).
    pub duration: Option<f64>,
    /// Progress lines on stderr.
    pub progress: bool,
}

impl Plan {
    /// Checks the flags and resolves defaults.
    pub fn new(args: BenchArgs) -> Result<Plan, BenchError> {
        let usage = |m: &str| Err(BenchError::Usage(m.to_string()));
        let mode = if args.idle_connections.is_some() {
            Mode::IdleConnections
        } else if args.consume_only || (args.producers == 0 && args.consumers > 0) {
            Mode::ConsumeOnly
        } else if args.publish_only || args.consumers == 0 {
            Mode::PublishOnly
        } else {
            Mode::Normal
        };
        let (producers, consumers) = match mode {
            Mode::Normal => (args.producers, args.consumers),
            Mode::PublishOnly => (args.producers, 0),
            Mode::ConsumeOnly => (0, args.consumers),
            Mode::IdleConnections => (0, 0),
        };
        if mode == Mode::PublishOnly && producers == 0 {
            return usage("nothing to do: --producers 0 and --consumers 0");
        }
        if mode == Mode::ConsumeOnly && consumers == 0 {
            return usage("--consume-only needs --consumers ≥ 1");
        }
        if !args.auto_ack && args.prefetch > 0 && args.multi_ack_every > u32::from(args.prefetch) {
            return usage(
                "--multi-ack-every must not exceed --prefetch (the consumer would stall)",
            );
        }
        if !(args.rate >= 0.0 && args.rate.is_finite()) {
            return usage("--rate must be a number ≥ 0");
        }
        if let Some(d) = args.duration {
            if !(d > 0.0 && d.is_finite()) {
                return usage("--duration must be > 0");
            }
        }
        if args.count == Some(0) {
            return usage("--count must be ≥ 1");
        }
        if args.size > 128 * 1024 * 1024 {
            return usage("--size must be ≤ 128 MiB");
        }
        if args.queue_prefix.is_empty() || args.queue_prefix.len() > 200 {
            return usage("--queue-prefix must be 1 to 200 bytes");
        }
        let queues = (0..args.queues)
            .map(|i| format!("{}.{i}", args.queue_prefix))
            .collect();
        let exchange = args
            .exchange_type
            .map(|t| (format!("{}.x", args.queue_prefix), t));
        let queue_args = parse_queue_args(&args.queue_args)?;
        let duration = match (mode, args.duration) {
            (_, Some(d)) => Some(d),
            (Mode::ConsumeOnly, None) => None,
            (_, None) => Some(10.0),
        };
        let progress = !args.no_progress && (args.progress || !args.json);
        Ok(Plan {
            mode,
            producers,
            consumers,
            queues,
            exchange,
            queue_args,
            duration,
            progress,
            args,
        })
    }

    /// The exchange and routing key producer `i` publishes with.
    #[must_use]
    pub fn route(&self, producer: usize) -> (String, String) {
        let prefix = &self.args.queue_prefix;
        match &self.exchange {
            None => (
                String::new(),
                self.queues[producer % self.queues.len()].clone(),
            ),
            Some((x, ExchangeType::Direct)) => (x.clone(), prefix.clone()),
            Some((x, ExchangeType::Fanout)) => (x.clone(), String::new()),
            Some((x, ExchangeType::Topic)) => (x.clone(), format!("{prefix}.bench")),
        }
    }

    /// The key every queue is bound to the exchange with.
    #[must_use]
    pub fn binding_key(&self) -> String {
        let prefix = &self.args.queue_prefix;
        match self.exchange {
            Some((_, ExchangeType::Topic)) => format!("{prefix}.#"),
            Some((_, ExchangeType::Direct)) => prefix.clone(),
            _ => String::new(),
        }
    }

    /// The queue consumer `j` consumes.
    #[must_use]
    pub fn consumer_queue(&self, consumer: usize) -> &str {
        &self.queues[consumer % self.queues.len()]
    }

    /// Whether some consumer consumes queue `q`.
    #[must_use]
    pub fn is_consumed(&self, q: usize) -> bool {
        q < self.consumers
    }

    /// With --count: how many deliveries the consumers should get in all.
    #[must_use]
    pub fn expected_received(&self, per_producer: u64) -> u64 {
        let n = self.queues.len();
        (0..n)
            .filter(|&q| self.is_consumed(q))
            .map(|q| match self.exchange {
                // Every queue gets every message.
                Some(_) => per_producer * self.producers as u64,
                None => {
                    let publishers = (0..self.producers).filter(|i| i % n == q).count();
                    per_producer * publishers as u64
                }
            })
            .sum()
    }
}

/// `KEY=VALUE` pairs into a queue-declare argument table.
pub fn parse_queue_args(pairs: &[String]) -> Result<FieldTable, BenchError> {
    let mut table = FieldTable::default();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(BenchError::Usage(format!(
                "--queue-arg {pair}: expected KEY=VALUE"
            )));
        };
        if key.is_empty() || key.len() > 255 {
            return Err(BenchError::Usage(format!("--queue-arg {pair}: bad key")));
        }
        let v = if let Ok(n) = value.parse::<i64>() {
            AMQPValue::LongLongInt(n)
        } else if value == "true" || value == "false" {
            AMQPValue::Boolean(value == "true")
        } else {
            AMQPValue::LongString(LongString::from(value))
        };
        table.insert(key.into(), v);
    }
    Ok(table)
}

#[cfg(test)]
mod tests;
