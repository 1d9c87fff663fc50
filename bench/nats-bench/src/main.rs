//! nats-bench: a small JetStream load generator for `bench/compare`.
//!
//! Scenario (S1 "durable" of the Ferry benchmark): a file-backed stream with
//! one subject, one publisher keeping up to `--inflight` publish acks
//! outstanding, one durable pull consumer acking (every message, or every Nth
//! message with AckPolicy::All, the JetStream analogue of AMQP's
//! `basic.ack multiple`). Prints one JSON object: sent, confirmed, received,
//! duration_s, send_rate, confirm_rate, recv_rate, mb_per_s,
//! latency_us {p50, p99, p999, max, samples} (null without deliveries),
//! client_cpu_us_per_msg, broker_cpu_us_per_msg, broker_rss_peak_kib.
//! `bench/tools.py` maps these and `ferry bench --json`'s names onto one
//! another. CPU per message divides by the messages received (by those
//! confirmed with --publish-only), as `ferry bench` does.
//!
//! Latency is publish→deliver, taken from a timestamp written into the first
//! 8 bytes of each body (same process, monotonic clock). Client CPU comes from
//! getrusage(RUSAGE_SELF); broker CPU and RSS from /proc of `--broker-pid` and
//! its descendants.

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const USAGE: &str = "\
nats-bench: JetStream load generator (1 publisher, 1 durable consumer)

USAGE: nats-bench [OPTIONS]
  --url URL            NATS server [nats://127.0.0.1:4222]
  --stream NAME        stream to create (deleted first, and at the end) [BENCH]
  --subject SUBJ       subject of the stream [bench.s1]
  --storage file|memory  stream storage [file]
  --retention limits|workqueue  limits: the stream keeps every message, the
                       consumer's ack floor moves (default; allows AckPolicy::All);
                       workqueue: acked messages are removed, like a queue
                       (JetStream then requires --ack-every 1)
  --size BYTES         body size, at least 8 [100]
  --inflight N         max publish acks in flight [256]
  --prefetch N         consumer max_ack_pending and pull batch size [500]
  --ack-every N        1 = ack each (AckPolicy::Explicit); N>1 = AckPolicy::All,
                       ack every Nth message [50]
  --duration SECS      publishing time [10]
  --count N            stop after N messages instead (0 = use --duration) [0]
  --rate N             publish at most N msg/s (0 = unlimited) [0]
  --publish-only       no consumer
  --threads N          client threads (tokio workers) [2]
  --broker-pid PID     report broker CPU/RSS from /proc of PID and its children
  --keep               keep the stream at the end
  --json               print one JSON object (otherwise a readable summary)
";

struct Args {
    url: String,
    stream: String,
    subject: String,
    storage: stream::StorageType,
    retention: stream::RetentionPolicy,
    size: usize,
    inflight: usize,
    prefetch: usize,
    ack_every: u64,
    duration: f64,
    count: u64,
    rate: f64,
    publish_only: bool,
    broker_pid: Option<i32>,
    keep: bool,
    json: bool,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        url: "nats://127.0.0.1:4222".into(),
        stream: "BENCH".into(),
        subject: "bench.s1".into(),
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        size: 100,
        inflight: 256,
        prefetch: 500,
        ack_every: 50,
        duration: 10.0,
        count: 0,
        rate: 0.0,
        publish_only: false,
        broker_pid: None,
        keep: false,
        json: false,
        threads: 2,
    };
    let mut it = std::env::args().skip(1);
    fn val(it: &mut impl Iterator<Item = String>, flag: &str) -> Result<String, String> {
        it.next().ok_or_else(|| format!("{flag} needs a value"))
    }
    fn num<T: std::str::FromStr>(s: String, flag: &str) -> Result<T, String> {
        s.parse().map_err(|_| format!("{flag}: not a number: {s}"))
    }
    while let Some(f) = it.next() {
        match f.as_str() {
            "--url" => a.url = val(&mut it, &f)?,
            "--stream" => a.stream = val(&mut it, &f)?,
            "--subject" => a.subject = val(&mut it, &f)?,
            "--storage" => {
                a.storage = match val(&mut it, &f)?.as_str() {
                    "file" => stream::StorageType::File,
                    "memory" => stream::StorageType::Memory,
                    o => return Err(format!("--storage: file or memory, not {o}")),
                }
            }
            "--retention" => {
                a.retention = match val(&mut it, &f)?.as_str() {
                    "workqueue" => stream::RetentionPolicy::WorkQueue,
                    "limits" => stream::RetentionPolicy::Limits,
                    o => return Err(format!("--retention: workqueue or limits, not {o}")),
                }
            }
            "--size" => a.size = num(val(&mut it, &f)?, &f)?,
            "--inflight" => a.inflight = num(val(&mut it, &f)?, &f)?,
            "--prefetch" => a.prefetch = num(val(&mut it, &f)?, &f)?,
            "--ack-every" => a.ack_every = num(val(&mut it, &f)?, &f)?,
            "--duration" => a.duration = num(val(&mut it, &f)?, &f)?,
            "--count" => a.count = num(val(&mut it, &f)?, &f)?,
            "--rate" => a.rate = num(val(&mut it, &f)?, &f)?,
            "--publish-only" => a.publish_only = true,
            "--broker-pid" => a.broker_pid = Some(num(val(&mut it, &f)?, &f)?),
            "--keep" => a.keep = true,
            "--threads" => a.threads = num(val(&mut it, &f)?, &f)?,
            "--json" => a.json = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            o => return Err(format!("unknown option {o}\n\n{USAGE}")),
        }
    }
    if a.size < 8 {
        return Err("--size must be at least 8 (the body carries a timestamp)".into());
    }
    if a.retention == stream::RetentionPolicy::WorkQueue && a.ack_every != 1 {
        return Err("--retention workqueue needs --ack-every 1 (explicit acks)".into());
    }
    if a.inflight == 0 || a.prefetch == 0 || a.ack_every == 0 || a.threads == 0 {
        return Err("--inflight, --prefetch, --ack-every and --threads must be at least 1".into());
    }
    Ok(a)
}

// ---------------------------------------------------------------- clocks, CPU

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// user + system CPU of this process, in microseconds.
fn self_cpu_us() -> u64 {
    // getrusage through libc with a zeroed struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return 0;
    }
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn clk_tck() -> u64 {
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// (ppid, utime+stime+cutime+cstime in ticks) from /proc/PID/stat.
fn proc_stat(pid: i32) -> Option<(i32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces/parens: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] = state (field 3); ppid = field 4; utime..cstime = fields 14..17.
    let ppid = f.get(1)?.parse().ok()?;
    let mut t = 0u64;
    for i in 11..15 {
        t += f.get(i)?.parse::<u64>().ok()?;
    }
    Some((ppid, t))
}

fn proc_rss_kib(pid: i32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

fn proc_status_kib(pid: i32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The pid and all its descendants.
fn tree(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) {
                if let Some((ppid, _)) = proc_stat(pid) {
                    children.entry(ppid).or_default().push(pid);
                }
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(c);
        }
        i += 1;
    }
    out
}

/// (CPU µs, RSS KiB) of the broker's process tree.
fn broker_sample(root: i32) -> (u64, u64) {
    let tck = clk_tck();
    let mut cpu = 0;
    let mut rss = 0;
    for p in tree(root) {
        if let Some((_, t)) = proc_stat(p) {
            cpu += t * 1_000_000 / tck;
            rss += proc_rss_kib(p);
        }
    }
    (cpu, rss)
}

// ---------------------------------------------------------------- histogram

/// Log-linear histogram of microseconds: 128 buckets per power of two, so
/// a reported percentile is at most 1/128 (< 0.8 %) below the true value.
struct Hist {
    counts: Vec<u64>,
    n: u64,
    max: u64,
}

const SUB: u64 = 128; // buckets per power of two

impl Hist {
    fn new() -> Self {
        Hist {
            counts: vec![0; 64 * SUB as usize],
            n: 0,
            max: 0,
        }
    }
    fn idx(v: u64) -> usize {
        if v < SUB {
            return v as usize;
        }
        let p = 63 - v.leading_zeros() as u64; // v in [2^p, 2^(p+1))
        let shift = p - 7; // SUB = 2^7
        let sub = (v >> shift) - SUB; // 0..SUB
        ((p - 6) * SUB + sub) as usize
    }
    fn lower(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            return i;
        }
        let p = i / SUB + 6;
        let sub = i % SUB;
        (SUB + sub) << (p - 7)
    }
    fn record(&mut self, v: u64) {
        let i = Self::idx(v).min(self.counts.len() - 1);
        self.counts[i] += 1;
        self.n += 1;
        self.max = self.max.max(v);
    }
    fn merge(&mut self, o: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.n += o.n;
        self.max = self.max.max(o.max);
    }
    fn quantile(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let target = ((q * self.n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Self::lower(i).min(self.max);
            }
        }
        self.max
    }
}

// ---------------------------------------------------------------- run

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("nats-bench: {e}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nats-bench: tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("nats-bench: {e}");
        std::process::exit(1);
    }
}

async fn connect(url: &str) -> Result<async_nats::Client, BoxErr> {
    let c = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    Ok(c)
}

async fn run(a: Args) -> Result<(), BoxErr> {
    let _ = epoch();
    let pub_client = connect(&a.url).await?;
    let js = jetstream::ContextBuilder::new()
        .max_ack_inflight(a.inflight + 16)
        .backpressure_on_inflight(true)
        .timeout(Duration::from_secs(30))
        .build(pub_client.clone());

    let _ = js.delete_stream(&a.stream).await;
    let st = js
        .create_stream(stream::Config {
            name: a.stream.clone(),
            subjects: vec![a.subject.clone()],
            storage: a.storage,
            retention: a.retention,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("create stream {}: {e}", a.stream))?;

    let ack_policy = if a.ack_every > 1 {
        consumer::AckPolicy::All
    } else {
        consumer::AckPolicy::Explicit
    };
    let _: consumer::PullConsumer = st
        .create_consumer(consumer::pull::Config {
            durable_name: Some("bench".into()),
            ack_policy,
            max_ack_pending: a.prefetch as i64,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("create consumer: {e}"))?;

    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Mutex::new(Hist::new()));

    // Consumer on its own connection (as the AMQP benches use one per client).
    let cons_task = if a.publish_only {
        None
    } else {
        let sub_client = connect(&a.url).await?;
        let js2 = jetstream::new(sub_client);
        let cons: consumer::PullConsumer = js2
            .get_stream(&a.stream)
            .await?
            .get_consumer("bench")
            .await?;
        let stop = stop.clone();
        let received = received.clone();
        let hist = hist.clone();
        let prefetch = a.prefetch;
        let ack_every = a.ack_every;
        let mut msgs = cons
            .stream()
            .max_messages_per_batch(prefetch)
            .heartbeat(Duration::from_secs(1))
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .map_err(|e| format!("consumer stream: {e}"))?;
        Some(tokio::spawn(async move {
            let mut h = Hist::new();
            let mut n: u64 = 0;
            let mut last: Option<jetstream::Message> = None;
            loop {
                let next = tokio::time::timeout(Duration::from_millis(200), msgs.next()).await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let m = match next {
                    Err(_) => continue,
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        eprintln!("nats-bench: consumer: {e}");
                        continue;
                    }
                    Ok(Some(Ok(m))) => m,
                };
                let t = now_ns();
                if m.payload.len() >= 8 {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&m.payload[..8]);
                    let sent = u64::from_le_bytes(b);
                    h.record(t.saturating_sub(sent) / 1000);
                }
                n += 1;
                received.store(n, Ordering::Relaxed);
                if n.is_multiple_of(ack_every) {
                    if let Err(e) = m.ack().await {
                        eprintln!("nats-bench: ack: {e}");
                    }
                    last = None;
                } else {
                    last = Some(m);
                }
            }
            if let Some(m) = last {
                let _ = m.ack().await;
            }
            hist.lock().map(|mut g| g.merge(&h)).ok();
        }))
    };

    // Broker sampler.
    let broker_peak = Arc::new(AtomicU64::new(0));
    let sampler_stop = Arc::new(AtomicBool::new(false));
    let sampler = a.broker_pid.map(|pid| {
        let peak = broker_peak.clone();
        let stop = sampler_stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (_, rss) = broker_sample(pid);
                peak.fetch_max(rss, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    });

    let body_len = a.size;
    let client_cpu0 = self_cpu_us();
    let broker_cpu0 = a.broker_pid.map(|p| broker_sample(p).0);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(a.duration);

    // Publisher: a window of `inflight` outstanding acks, awaited in order.
    let mut window: VecDeque<jetstream::context::PublishAckFuture> = VecDeque::new();
    let mut sent: u64 = 0;
    let mut confirmed: u64 = 0;
    let mut failed: u64 = 0;
    let mut body = vec![0u8; body_len];
    let interval = if a.rate > 0.0 {
        Some(1.0 / a.rate)
    } else {
        None
    };
    loop {
        if a.count > 0 {
            if sent >= a.count {
                break;
            }
        } else if sent.is_multiple_of(64) && Instant::now() >= deadline {
            break;
        }
        if let Some(iv) = interval {
            let due = t0 + Duration::from_secs_f64(sent as f64 * iv);
            let now = Instant::now();
            if due > now {
                tokio::time::sleep(due - now).await;
            }
        }
        while window.len() >= a.inflight {
            if let Some(f) = window.pop_front() {
                match f.await {
                    Ok(_) => confirmed += 1,
                    Err(_) => failed += 1,
                }
            }
        }
        body[..8].copy_from_slice(&now_ns().to_le_bytes());
        let f = js
            .publish(a.subject.clone(), Bytes::copy_from_slice(&body))
            .await
            .map_err(|e| format!("publish: {e}"))?;
        window.push_back(f);
        sent += 1;
    }
    for f in window.drain(..) {
        match f.await {
            Ok(_) => confirmed += 1,
            Err(_) => failed += 1,
        }
    }
    let pub_elapsed = t0.elapsed().as_secs_f64();

    // Let the consumer catch up with what was confirmed (bounded wait).
    if cons_task.is_some() {
        let until = Instant::now() + Duration::from_secs(30);
        while received.load(Ordering::Relaxed) < confirmed && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let client_cpu = self_cpu_us() - client_cpu0;
    let broker_cpu = broker_cpu0.and_then(|c0| a.broker_pid.map(|p| broker_sample(p).0 - c0));
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = cons_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    sampler_stop.store(true, Ordering::Relaxed);
    if let Some(s) = sampler {
        let _ = s.join();
    }
    // The kernel's high-water mark catches peaks between samples.
    if let Some(pid) = a.broker_pid {
        for p in tree(pid) {
            broker_peak.fetch_max(proc_status_kib(p, "VmHWM:"), Ordering::Relaxed);
        }
    }
    if !a.keep {
        let _ = js.delete_stream(&a.stream).await;
    }
    let rcvd = received.load(Ordering::Relaxed);
    let h = hist.lock().map_err(|_| "histogram lock poisoned")?;
    // CPU per message: per message received, or per message confirmed when
    // nothing consumes (as `ferry bench` does).
    let msgs = if a.publish_only { confirmed } else { rcvd }.max(1) as f64;
    let per = |us: u64| us as f64 / msgs;

    // Rates: sent and confirmed over the publishing time; received over the
    // time until the consumer caught up (the whole run).
    let send_rate = sent as f64 / pub_elapsed;
    let confirm_rate = confirmed as f64 / pub_elapsed;
    let recv_rate = if rcvd > 0 { rcvd as f64 / elapsed } else { 0.0 };
    let mb_per_s = send_rate * body_len as f64 / 1e6;
    let opt = |v: Option<String>| v.unwrap_or_else(|| "null".into());
    let json = format!(
        concat!(
            "{{\"tool\":\"nats-bench\",\"broker\":\"nats-jetstream\",\"size\":{},\"inflight\":{},",
            "\"sent\":{},\"confirmed\":{},\"nacked\":{},\"received\":{},\"duration_s\":{:.3},",
            "\"send_rate\":{:.1},\"confirm_rate\":{:.1},\"recv_rate\":{:.1},\"mb_per_s\":{:.3},",
            "\"latency_us\":{},",
            "\"client_cpu_us_per_msg\":{:.3},\"broker_cpu_us_per_msg\":{},",
            "\"broker_rss_peak_kib\":{}}}"
        ),
        body_len,
        a.inflight,
        sent,
        confirmed,
        failed,
        rcvd,
        elapsed,
        send_rate,
        confirm_rate,
        recv_rate,
        mb_per_s,
        if h.n == 0 {
            "null".to_string()
        } else {
            format!(
                "{{\"p50\":{},\"p99\":{},\"p999\":{},\"max\":{},\"samples\":{}}}",
                h.quantile(0.50),
                h.quantile(0.99),
                h.quantile(0.999),
                h.max,
                h.n
            )
        },
        per(client_cpu),
        opt(broker_cpu.map(|c| format!("{:.3}", per(c)))),
        opt(a
            .broker_pid
            .map(|_| broker_peak.load(Ordering::Relaxed).to_string())),
    );
    if a.json {
        println!("{json}");
    } else {
        println!(
            "sent {sent} ({send_rate:.0}/s), confirmed {confirmed} ({confirm_rate:.0}/s), \
             received {rcvd} ({recv_rate:.0}/s), {mb_per_s:.1} MB/s\n\
             latency µs p50 {} p99 {} p99.9 {} max {}\n\
             client CPU {:.2} µs/msg{}",
            h.quantile(0.5),
            h.quantile(0.99),
            h.quantile(0.999),
            h.max,
            per(client_cpu),
            broker_cpu
                .map(|c| format!(
                    ", broker CPU {:.2} µs/msg, broker peak RSS {} KiB",
                    per(c),
                    broker_peak.load(Ordering::Relaxed)
                ))
                .unwrap_or_default()
        );
    }
    Ok(())
}
