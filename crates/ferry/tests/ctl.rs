//! `ferry ctl` (crates/ferry-ctl) as a subprocess of the real binary, against the real
//! broker's management API, checked from the AMQP side with lapin.
//!
//! Tests that need the API skip (with a notice on stderr) while the broker prints no
//! `http=` endpoint. Differential run against RabbitMQ with the management plugin:
//!
//! ```sh
//! FERRY_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5800/%2f \
//! FERRY_TEST_HTTP_URL=http://127.0.0.1:15800 cargo test -p ferry --test ctl
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::ctl::{api, ctl, ctl_with_stdin, text};
use common::{connect_channel, unique, Broker};
use futures_lite::StreamExt;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::Value;
use std::io::Write;
use std::time::{Duration, Instant};

/// Runs a ctl command that must exit 0; returns stdout.
fn ok(url: &str, args: &[&str]) -> String {
    let out = ctl(url, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "ferry ctl {args:?} failed\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs a ctl command with `--json` that must exit 0; returns its JSON.
fn ok_json(url: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let stdout = ok(url, &all);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}"))
}

/// Runs a ctl command that must fail with `code`; returns stderr.
fn fails(url: &str, args: &[&str], code: i32) -> String {
    let out = ctl(url, args);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "ferry ctl {args:?}: expected exit {code}\nstdout: {}\nstderr: {stderr}",
        text(&out.stdout)
    );
    stderr
}

/// Row of a `--json` listing whose `name` is `name`.
fn row<'a>(rows: &'a Value, name: &str) -> Option<&'a Value> {
    rows.as_array()?.iter().find(|r| r["name"] == name)
}

/// Polls a listing until `pred` holds (the management API's statistics are eventually
/// consistent: RabbitMQ emits them every few seconds).
fn wait_listing(url: &str, args: &[&str], pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = ok_json(url, args);
        if pred(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "ferry ctl {args:?} never matched: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn unreachable_node_exits_3() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let stderr = fails(&url, &["list", "queues"], 3);
    assert!(
        stderr.contains(&format!("cannot reach Ferry at {url}: connection refused")),
        "{stderr}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let url = format!("http://127.0.0.1:{}", free_port());
    fails(&url, &["list", "nonsense"], 2);
    fails(&url, &["declare", "queue"], 2);
    let stderr = fails(&url, &["declare", "queue", "q", "--arg", "no-equals"], 2);
    assert!(stderr.contains("expected KEY=VALUE"), "{stderr}");
    let stderr = fails("ftp://127.0.0.1", &["list", "queues"], 2);
    assert!(stderr.contains("--url must start with http://"), "{stderr}");
}

#[tokio::test]
async fn wrong_password_is_a_401_exit_1() {
    let broker = Broker::start().await;
    let Some(url) = api(&broker, "wrong_password_is_a_401_exit_1") else {
        return;
    };
    let out = ctl(
        &url,
        &["-u", "guest", "-p", "not-the-password", "list", "queues"],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("authentication failed for user 'guest'"),
        "{stderr}"
    );
    let stderr = fails(&url, &["-u", "nobody", "-p", "x", "overview"], 1);
    assert!(
        stderr.contains("authentication failed for user 'nobody'"),
        "{stderr}"
    );
}

#[tokio::test]
async fn queue_exchange_binding_publish_get_purge_delete() {
    let broker = Broker::start().await;
    let Some(url) = api(&broker, "queue_exchange_binding_publish_get_purge_delete") else {
        return;
    };
    let (_conn, ch) = connect_channel(&broker.amqp_url()).await;
    let q = unique("ctl-q");
    let x = unique("ctl-x");

    let said = ok(
        &url,
        &[
            "declare",
            "queue",
            &q,
            "--durable",
            "--arg",
            "x-max-length=10",
        ],
    );
    assert_eq!(said.trim(), format!("declared queue '{q}' in vhost '/'"));
    ok(&url, &["declare", "exchange", &x, "--type", "topic"]);
    ok(
        &url,
        &[
            "declare",
            "binding",
            "--source",
            &x,
            "--destination",
            &q,
            "--routing-key",
            "a.#",
        ],
    );

    // The AMQP side sees the same objects: a passive declare of the queue works, and an
    // active one with other properties is refused as inequivalent.
    let declared = ch
        .queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert!(declared.is_ok(), "{declared:?}");

    let queues = ok_json(&url, &["list", "queues"]);
    let qrow = row(&queues, &q).unwrap_or_else(|| panic!("{q} not listed: {queues}"));
    assert_eq!(qrow["durable"], true);
    assert_eq!(qrow["vhost"], "/");
    assert_eq!(qrow["arguments"]["x-max-length"], 10);
    let table = ok(&url, &["list", "queues", "--vhost", "/"]);
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("vhost") && header.contains("name"),
        "{table}"
    );
    assert!(table.lines().any(|l| l.contains(&q)), "{table}");
    let bindings = ok_json(&url, &["list", "bindings"]);
    assert!(
        bindings
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["source"] == x.as_str()
                && b["destination"] == q.as_str()
                && b["routing_key"] == "a.#"),
        "{bindings}"
    );

    // Publish through the topic exchange (routed) and with a non-matching key (not routed),
    // then one from stdin through the default exchange.
    let routed = ok_json(
        &url,
        &[
            "publish",
            "--exchange",
            &x,
            "--routing-key",
            "a.b",
            "--payload",
            "one",
        ],
    );
    assert_eq!(routed["routed"], true, "{routed}");
    let said = ok(
        &url,
        &[
            "publish",
            "--exchange",
            &x,
            "--routing-key",
            "zzz",
            "--payload",
            "lost",
        ],
    );
    assert!(said.contains("NOT routed"), "{said}");
    let out = ctl_with_stdin(&url, &["publish", "--routing-key", &q], b"two\nlines");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(common::message_count(&ch, &q).await, 2);

    // get --requeue leaves both; get without it takes one.
    let got = ok_json(&url, &["get", "--queue", &q, "--count", "5", "--requeue"]);
    let payloads: Vec<&str> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, ["one", "two\nlines"], "{got}");
    assert_eq!(common::message_count(&ch, &q).await, 2);
    let table = ok(&url, &["get", "--queue", &q]);
    assert!(
        table.lines().count() == 2 && table.contains("one"),
        "{table}"
    );
    assert_eq!(common::message_count(&ch, &q).await, 1);

    let stderr = fails(&url, &["delete", "queue", &q, "--if-empty"], 1);
    assert!(stderr.contains("not empty"), "{stderr}");

    let said = ok(&url, &["purge", "queue", &q]);
    assert_eq!(said.trim(), format!("purged queue '{q}' in vhost '/'"));
    assert_eq!(common::message_count(&ch, &q).await, 0);

    ok(
        &url,
        &[
            "delete",
            "binding",
            "--source",
            &x,
            "--destination",
            &q,
            "--routing-key",
            "a.#",
        ],
    );
    let routed = ok_json(
        &url,
        &[
            "publish",
            "--exchange",
            &x,
            "--routing-key",
            "a.b",
            "--payload",
            "x",
        ],
    );
    assert_eq!(routed["routed"], false, "binding still routes: {routed}");
    ok(&url, &["delete", "exchange", &x]);
    ok(&url, &["delete", "queue", &q]);
    let listed = ok_json(&url, &["list", "queues"]);
    assert!(row(&listed, &q).is_none(), "{listed}");
}

#[tokio::test]
async fn missing_objects_are_404_exit_1() {
    let broker = Broker::start().await;
    let Some(url) = api(&broker, "missing_objects_are_404_exit_1") else {
        return;
    };
    let q = unique("ctl-missing");
    for args in [
        vec!["delete", "queue", q.as_str()],
        vec!["purge", "queue", q.as_str()],
        vec!["get", "--queue", q.as_str()],
    ] {
        let stderr = fails(&url, &args, 1);
        assert!(
            stderr.contains(&format!("not found: queue '{q}' in vhost '/'")),
            "{args:?}: {stderr}"
        );
    }
    let stderr = fails(&url, &["list", "queues", "--vhost", &q], 1);
    assert!(
        stderr.contains(&format!("not found: vhost '{q}'")),
        "{stderr}"
    );
    let stderr = fails(&url, &["delete", "user", &q], 1);
    assert!(
        stderr.contains(&format!("not found: user '{q}'")),
        "{stderr}"
    );
    // A 400 carries the API's reason.
    let stderr = fails(
        &url,
        &["declare", "exchange", &q, "--type", "no-such-type"],
        1,
    );
    assert!(stderr.contains("HTTP 400"), "{stderr}");
}

#[tokio::test]
async fn users_vhosts_permissions() {
    let broker = Broker::start().await;
    let Some(url) = api(&broker, "users_vhosts_permissions") else {
        return;
    };
    let vhost = unique("ctl-vh");
    let user = unique("ctl-user");
    ok(&url, &["add", "vhost", &vhost]);
    ok(
        &url,
        &[
            "add",
            "user",
            &user,
            "--password",
            "s3cret",
            "--tags",
            "management",
        ],
    );
    ok(
        &url,
        &[
            "set",
            "permissions",
            "--vhost",
            &vhost,
            "--user",
            &user,
            "--configure",
            "^own\\.",
            "--write",
            ".*",
            "--read",
            ".*",
        ],
    );
    let users = ok_json(&url, &["list", "users"]);
    let urow = row(&users, &user).unwrap_or_else(|| panic!("{user} not listed: {users}"));
    assert_eq!(urow["tags"], serde_json::json!(["management"]), "{urow}");
    assert!(row(&ok_json(&url, &["list", "vhosts"]), &vhost).is_some());
    let perms = ok_json(&url, &["list", "permissions", "--vhost", &vhost]);
    assert!(
        perms
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["user"] == user.as_str()
                && p["vhost"] == vhost.as_str()
                && p["configure"] == "^own\\."),
        "{perms}"
    );

    // The new user logs in over AMQP to the new vhost (from loopback, like the test).
    // (unique() names need no percent-encoding in the URL.)
    let amqp = broker.amqp_addr();
    let conn = common::connect(&format!("amqp://{user}:s3cret@{amqp}/{vhost}")).await;
    conn.close(200, "bye".into()).await.unwrap();

    // As that user, the API refuses what the permissions do not allow.
    let stderr = fails(
        &url,
        &[
            "-u", &user, "-p", "s3cret", "declare", "queue", "other", "--vhost", &vhost,
        ],
        1,
    );
    assert!(
        stderr.contains(&format!("access refused for user '{user}'")),
        "{stderr}"
    );

    ok(
        &url,
        &["clear", "permissions", "--vhost", &vhost, "--user", &user],
    );
    let perms = ok_json(&url, &["list", "permissions", "--vhost", &vhost]);
    assert!(
        !perms
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["user"] == user.as_str()),
        "{perms}"
    );
    ok(&url, &["delete", "user", &user]);
    ok(&url, &["delete", "vhost", &vhost]);
    assert!(row(&ok_json(&url, &["list", "users"]), &user).is_none());
    assert!(row(&ok_json(&url, &["list", "vhosts"]), &vhost).is_none());
}

#[tokio::test]
async fn export_then_import_restores_definitions() {
    let broker = Broker::start().await;
    let Some(url) = api(&broker, "export_then_import_restores_definitions") else {
        return;
    };
    let q = unique("ctl-defs");
    ok(&url, &["declare", "queue", &q, "--durable"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("defs.json");
    let file = file.to_str().unwrap();
    ok(&url, &["export", file]);
    let defs: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert!(
        defs["queues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == q.as_str()),
        "{defs}"
    );
    // "-" writes the same document to stdout.
    let stdout: Value = serde_json::from_str(&ok(&url, &["export", "-"])).unwrap();
    assert_eq!(stdout["queues"], defs["queues"]);

    ok(&url, &["delete", "queue", &q]);
    assert!(row(&ok_json(&url, &["list", "queues"]), &q).is_none());
    let said = ok(&url, &["import", file]);
    assert!(said.contains("imported"), "{said}");
    let queues = ok_json(&url, &["list", "queues"]);
    let qrow = row(&queues, &q).unwrap_or_else(|| panic!("{q} not restored: {queues}"));
    assert_eq!(qrow["durable"], true);

    // Bad input is refused locally, before any request.
    std::fs::write(file, "not json").unwrap();
    let stderr = fails(&url, &["import", file], 1);
    assert!(stderr.contains("not valid JSON"), "{stderr}");
    ok(&url, &["delete", "queue", &q]);
}

#[tokio::test]
async fn connections_channels_consumers_are_listed() {
    let broker = Broker::start().await;
    let Some(url) = api(&broker, "connections_channels_consumers_are_listed") else {
        return;
    };
    // A named connection, so that the test closes its own one even on a shared broker.
    let conn_name = unique("ctl-conn");
    let props =
        lapin::ConnectionProperties::default().with_connection_name(conn_name.clone().into());
    let conn = lapin::Connection::connect(&broker.amqp_url(), props)
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let q = common::declare_queue(&ch, "ctl-consumers").await;
    let mut consumer = common::consume(&ch, &q, Default::default()).await;
    let consumers = wait_listing(&url, &["list", "consumers"], |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|c| c["queue"]["name"] == q.as_str()))
    });
    let c = consumers
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["queue"]["name"] == q.as_str())
        .unwrap();
    assert_eq!(c["ack_required"], true, "{c}");
    let table = ok(&url, &["list", "consumers"]);
    assert!(table.lines().any(|l| l.contains(&q)), "{table}");

    let is_mine = |c: &Value| {
        c["client_properties"]["connection_name"] == conn_name.as_str()
            || c["user_provided_name"] == conn_name.as_str()
    };
    let connections = wait_listing(&url, &["list", "connections"], |v| {
        v.as_array().is_some_and(|a| a.iter().any(is_mine))
    });
    let mine = connections
        .as_array()
        .unwrap()
        .iter()
        .find(|c| is_mine(c))
        .unwrap()
        .clone();
    assert_eq!(mine["user"], "guest", "{mine}");
    assert_eq!(mine["vhost"], "/", "{mine}");
    wait_listing(&url, &["list", "channels"], |v| {
        v.as_array().is_some_and(|a| !a.is_empty())
    });

    // Closing it through the API ends the AMQP connection, and so the consumer.
    let name = mine["name"].as_str().unwrap();
    ok(&url, &["delete", "connection", name]);
    match tokio::time::timeout(Duration::from_secs(10), consumer.next()).await {
        Ok(None | Some(Err(_))) => {}
        Ok(Some(Ok(d))) => panic!("unexpected delivery {}", d.delivery_tag),
        Err(_) => panic!("the consumer still runs after its connection was closed"),
    }
    ok(&url, &["delete", "queue", &q]);
}

#[tokio::test]
async fn overview_names_the_node() {
    let broker = Broker::start().await;
    let Some(url) = api(&broker, "overview_names_the_node") else {
        return;
    };
    let v = ok_json(&url, &["overview"]);
    assert!(v["management_version"].is_string(), "{v}");
    let table = ok(&url, &["overview"]);
    assert!(table.contains("management_version"), "{table}");
}

/// Against Ferry's HTTPS management listener (`http_tls`): `--cacert` with
/// the CA that signed the server's certificate works; without it the
/// server's certificate is not trusted and ctl exits 3 saying why.
#[tokio::test]
async fn https_with_cacert_and_an_untrusted_certificate() {
    const TEST: &str = "https_with_cacert_and_an_untrusted_certificate";
    let pki = tempfile::tempdir().unwrap();
    if !common::pki::make_pki(pki.path(), "serverAuth") {
        let _ = writeln!(std::io::stderr(), "SKIP {TEST}: no openssl CLI");
        return;
    }
    let (cert, key) = (pki.path().join("server.pem"), pki.path().join("server.key"));
    let Some(broker) = Broker::start_with_env(
        TEST,
        &[
            ("FERRY_TLS_CERT", cert.to_str().unwrap()),
            ("FERRY_TLS_KEY", key.to_str().unwrap()),
            ("FERRY_AMQPS_LISTEN", "127.0.0.1:0"),
            ("FERRY_HTTP_TLS", "true"),
        ],
    )
    .await
    else {
        return;
    };
    let addr = broker.endpoint("http").expect("an http= endpoint");
    let url = format!("https://{addr}");
    let ca = pki.path().join("ca.pem");
    let v = ok_json(&url, &["--cacert", ca.to_str().unwrap(), "overview"]);
    assert!(v["management_version"].is_string(), "{v}");
    let q = unique("tls");
    ok(
        &url,
        &["--cacert", ca.to_str().unwrap(), "declare", "queue", &q],
    );
    let rows = ok_json(&url, &["--cacert", ca.to_str().unwrap(), "list", "queues"]);
    assert!(row(&rows, &q).is_some(), "{rows}");
    let stderr = fails(&url, &["list", "queues"], 3);
    assert!(
        stderr.contains(&format!("cannot reach Ferry at {url}"))
            && stderr.contains("UnknownIssuer"),
        "{stderr}"
    );
    // Plain HTTP to the TLS listener is not an answer either.
    fails(&format!("http://{addr}"), &["list", "queues"], 3);
}
