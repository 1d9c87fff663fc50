//! `ferry-ctl`: `ferry ctl`, a command-line client for the management HTTP
//! API, spoken exactly as RabbitMQ 3.10's management plugin defines it
//! (paths such as `/api/queues/%2F/NAME`, JSON bodies, basic auth), so the
//! same commands work against Ferry and against a real RabbitMQ.
//!
//! # What it owns
//!
//! - The command line ([`CtlArgs`]): `list`, `overview`, `declare`,
//!   `delete`, `purge`, `publish`, `get`, `add`, `set`/`clear permissions`,
//!   `set`/`clear vhost-limits|user-limits`, `export`, `import`.
//! - A blocking HTTP client (ureq, rustls with ring for `https://`), and
//!   the rendering of answers as aligned tables or, with `--json`, the
//!   API's JSON.
//! - Error messages and exit codes: 0 ok; 1 the API refused (any 4xx/5xx:
//!   401 → "authentication failed for user 'x'", 404 → "not found: queue
//!   'q' in vhost '/'", others with the API's `reason`) or a local file /
//!   stdin problem; 2 usage (clap's own errors also exit 2); 3 the node
//!   cannot be reached ("cannot reach Ferry at URL: connection refused").
//!
//! # What it must not touch
//!
//! The broker's crates: this is a client of a public HTTP API, nothing
//! else. It keeps no state and never retries a request that changes
//! something.

mod args;
mod client;
mod cluster;
mod error;
mod limits;
mod list;
mod ops;
mod table;

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

pub use args::{CtlArgs, CtlCommand, ListWhat};
pub use client::{api_path, Client, ClientConfig};
pub use error::CtlError;

/// Runs `ferry ctl` with parsed flags on the process's stdin/stdout;
/// errors go to stderr. Returns the exit code.
#[must_use]
pub fn run_cli(args: CtlArgs) -> ExitCode {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let result = run(&args, &mut std::io::stdin().lock(), &mut lock);
    let _ = lock.flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry ctl: {e}");
            e.exit_code()
        }
    }
}

/// Runs one command, reading payloads from `stdin` and writing results to `stdout`.
pub fn run(args: &CtlArgs, stdin: &mut dyn Read, stdout: &mut dyn Write) -> Result<(), CtlError> {
    let client = Client::new(&ClientConfig {
        url: args.url.clone(),
        user: args.user.clone(),
        password: args.password.clone(),
        timeout: Duration::from_secs(args.timeout.max(1)),
        cacert: args.cacert.clone(),
        insecure: args.insecure,
    })?;
    let out = &mut Output {
        w: stdout,
        json: args.json,
    };
    match &args.command {
        CtlCommand::List { what } => list::list(&client, args, *what, out),
        CtlCommand::Overview => list::overview(&client, args, out),
        CtlCommand::Health { check } => list::health(&client, check, out),
        CtlCommand::Cluster(args::ClusterCmd::Status) => cluster::status(&client, args, out),
        CtlCommand::Cluster(args::ClusterCmd::Rebalance) => cluster::rebalance(&client, out),
        CtlCommand::Cluster(args::ClusterCmd::Forget { node }) => {
            cluster::forget(&client, node, out)
        }
        CtlCommand::Cluster(args::ClusterCmd::Leave) => cluster::leave(&client, out),
        CtlCommand::Cluster(args::ClusterCmd::Join { node, timeout }) => {
            cluster::join(&client, node, *timeout, out)
        }
        CtlCommand::Queues(args::QueuesCmd::Grow { node, even }) => {
            cluster::grow(&client, node, *even, out)
        }
        CtlCommand::Queues(args::QueuesCmd::Shrink { node }) => cluster::shrink(&client, node, out),
        CtlCommand::Declare(d) => ops::declare(&client, args, d, out),
        CtlCommand::Delete(d) => ops::delete(&client, args, d, out),
        CtlCommand::Purge(args::Purge::Queue { name }) => ops::purge(&client, args, name, out),
        CtlCommand::Publish(p) => ops::publish(&client, args, p, stdin, out),
        CtlCommand::Get(g) => ops::get(&client, args, g, out),
        CtlCommand::Add(a) => ops::add(&client, a, out),
        CtlCommand::Set(s) => ops::set(&client, args, s, out),
        CtlCommand::Clear(c) => ops::clear(&client, args, c, out),
        CtlCommand::Export { file } => ops::export(&client, args, file, out),
        CtlCommand::Import { file } => ops::import(&client, args, file, stdin, out),
    }
}

/// Where results go: text, or JSON with `--json`.
pub(crate) struct Output<'a> {
    w: &'a mut dyn Write,
    json: bool,
}

impl Output<'_> {
    fn write(&mut self, s: &str) -> Result<(), CtlError> {
        self.w
            .write_all(s.as_bytes())
            .map_err(|e| CtlError::io("writing to stdout", e))
    }

    /// Text as is (tables, exported JSON).
    pub(crate) fn text(&mut self, s: &str) -> Result<(), CtlError> {
        self.write(s)
    }

    /// An API answer, pretty-printed.
    pub(crate) fn json(&mut self, v: &serde_json::Value) -> Result<(), CtlError> {
        let mut s = serde_json::to_string_pretty(v)
            .map_err(|e| CtlError::Input(format!("cannot encode JSON: {e}")))?;
        s.push('\n');
        self.write(&s)
    }

    /// The one-line outcome of a command that changes something
    /// (`{"ok": true, "message": ...}` with `--json`).
    pub(crate) fn done(&mut self, message: &str) -> Result<(), CtlError> {
        if self.json {
            self.json(&serde_json::json!({"ok": true, "message": message}))
        } else {
            self.write(&format!("{message}\n"))
        }
    }
}
