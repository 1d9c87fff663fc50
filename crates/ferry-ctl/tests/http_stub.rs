//! `ferry ctl` against a one-shot HTTP stub: the exact requests it sends (method, percent-
//! encoded path, basic auth, JSON body) and how it maps answers to messages and exit codes.
//! The same commands run against the real broker and RabbitMQ in crates/ferry/tests/ctl.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;
use ferry_ctl::{CtlArgs, CtlError};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::thread::JoinHandle;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    ctl: CtlArgs,
}

/// What the stub received.
#[derive(Debug)]
struct Request {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Serves exactly one request with `status` and `body`; returns the base URL and the
/// request it saw.
fn stub(status: &'static str, body: &'static str) -> (String, JoinHandle<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(sock.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut req_body = vec![0; len];
        reader.read_exact(&mut req_body).unwrap();
        let mut sock = sock;
        write!(
            sock,
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        Request {
            line: line.trim_end().to_string(),
            headers,
            body: req_body,
        }
    });
    (url, handle)
}

fn run(url: &str, args: &[&str]) -> (Result<(), CtlError>, String) {
    let mut argv = vec!["ctl", "--url", url];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).unwrap();
    let mut out = Vec::new();
    let r = ferry_ctl::run(&cli.ctl, &mut std::io::empty(), &mut out);
    (r, String::from_utf8(out).unwrap())
}

#[test]
fn list_sends_basic_auth_and_renders_a_table() {
    let (url, seen) = stub(
        "200 OK",
        r#"[{"name":"q1","vhost":"/","durable":true,"auto_delete":false,"messages":3}]"#,
    );
    let (r, out) = run(
        &url,
        &["-u", "bob", "-p", "pw", "list", "queues", "--vhost", "/"],
    );
    r.unwrap();
    let req = seen.join().unwrap();
    assert_eq!(req.line, "GET /api/queues/%2F HTTP/1.1");
    assert_eq!(req.header("authorization"), Some("Basic Ym9iOnB3"));
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("vhost  name  durable"), "{out}");
    let row = lines.next().unwrap();
    assert!(row.starts_with("/      q1    true"), "{out}");
}

#[test]
fn declare_queue_puts_the_rabbitmq_body() {
    let (url, seen) = stub("201 Created", "");
    let (r, out) = run(
        &url,
        &[
            "declare",
            "queue",
            "a/b c",
            "--durable",
            "--arg",
            "x-max-length=5",
            "--vhost",
            "v1",
        ],
    );
    r.unwrap();
    assert_eq!(out, "declared queue 'a/b c' in vhost 'v1'\n");
    let req = seen.join().unwrap();
    assert_eq!(req.line, "PUT /api/queues/v1/a%2Fb%20c HTTP/1.1");
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        body,
        json!({"durable": true, "auto_delete": false, "arguments": {"x-max-length": 5}})
    );
}

#[test]
fn set_and_clear_limits_use_the_limit_paths() {
    let (url, seen) = stub("204 No Content", "");
    let (r, out) = run(
        &url,
        &["set", "vhost-limits", "max-queues", "-1", "--vhost", "v1"],
    );
    r.unwrap();
    assert_eq!(out, "set limit 'max-queues' of vhost 'v1' to -1\n");
    let req = seen.join().unwrap();
    assert_eq!(req.line, "PUT /api/vhost-limits/v1/max-queues HTTP/1.1");
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body, json!({"value": -1}));

    let (url, seen) = stub("204 No Content", "");
    let (r, _) = run(
        &url,
        &["set", "user-limits", "--user", "bob", "max-channels", "5"],
    );
    r.unwrap();
    let req = seen.join().unwrap();
    assert_eq!(req.line, "PUT /api/user-limits/bob/max-channels HTTP/1.1");

    let (url, seen) = stub("204 No Content", "");
    let (r, out) = run(&url, &["clear", "vhost-limits", "max-connections"]);
    r.unwrap();
    assert_eq!(out, "cleared limit 'max-connections' of vhost '/'\n");
    let req = seen.join().unwrap();
    assert_eq!(
        req.line,
        "DELETE /api/vhost-limits/%2F/max-connections HTTP/1.1"
    );
}

#[test]
fn list_vhost_limits_renders_the_values() {
    let (url, seen) = stub("200 OK", r#"[{"vhost":"/","value":{"max-queues":10}}]"#);
    let (r, out) = run(&url, &["list", "vhost-limits"]);
    r.unwrap();
    assert_eq!(seen.join().unwrap().line, "GET /api/vhost-limits HTTP/1.1");
    assert!(out.starts_with("vhost  limits"), "{out}");
    assert!(out.contains("max-queues"), "{out}");
}

#[test]
fn publish_to_the_default_exchange_uses_amq_default() {
    let (url, seen) = stub("200 OK", r#"{"routed":false}"#);
    let (r, out) = run(
        &url,
        &[
            "publish",
            "--routing-key",
            "k",
            "--payload",
            "hi",
            "--persistent",
        ],
    );
    r.unwrap();
    assert!(out.contains("NOT routed"), "{out}");
    let req = seen.join().unwrap();
    assert_eq!(
        req.line,
        "POST /api/exchanges/%2F/amq.default/publish HTTP/1.1"
    );
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["payload"], "hi");
    assert_eq!(body["payload_encoding"], "string");
    assert_eq!(body["properties"]["delivery_mode"], 2);
}

#[test]
fn http_401_is_an_authentication_failure_exit_1() {
    let (url, _seen) = stub(
        "401 Unauthorized",
        r#"{"error":"not_authorized","reason":"Login failed"}"#,
    );
    let (r, _) = run(&url, &["-u", "alice", "overview"]);
    let e = r.unwrap_err();
    assert_eq!(e.code(), 1);
    assert_eq!(
        e.to_string(),
        "authentication failed for user 'alice' (Login failed)"
    );
}

#[test]
fn http_404_names_the_object() {
    let (url, seen) = stub(
        "404 Not Found",
        r#"{"error":"Object Not Found","reason":"Not Found"}"#,
    );
    let (r, _) = run(&url, &["delete", "queue", "gone"]);
    let e = r.unwrap_err();
    assert_eq!(e.code(), 1);
    assert_eq!(e.to_string(), "not found: queue 'gone' in vhost '/'");
    assert_eq!(
        seen.join().unwrap().line,
        "DELETE /api/queues/%2F/gone HTTP/1.1"
    );
}

#[test]
fn http_400_carries_the_reason_even_when_not_a_string() {
    let (url, _seen) = stub(
        "400 Bad Request",
        r#"{"error":"bad_request","reason":["not_boolean","x"]}"#,
    );
    let (r, _) = run(&url, &["declare", "exchange", "x", "--type", "direct"]);
    let e = r.unwrap_err();
    assert_eq!(e.code(), 1);
    let msg = e.to_string();
    assert!(
        msg.contains("HTTP 400") && msg.contains("not_boolean"),
        "{msg}"
    );
}

#[test]
fn refused_connection_is_unreachable_exit_3() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let (r, _) = run(&url, &["list", "vhosts"]);
    let e = r.unwrap_err();
    assert_eq!(e.code(), 3);
    assert_eq!(
        e.to_string(),
        format!("cannot reach Ferry at {url}: connection refused")
    );
}
