//! Real `ferry` processes forming a cluster on loopback: three seeds form
//! it whatever order they start in, agree on one cluster id and one
//! metadata leader, survive a kill -9 of that leader (another takes over,
//! the dead one is reported down and in `partitions`), take the killed node
//! back, and let a fourth node join through the seeds (not one named like
//! a member). A node refuses to start without the secret or on another
//! node's data directory.
//!
//! (Network-namespace partitions come with the cluster fault tests.)

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::cluster::{
    free_ports, leader, node_env, skip_external, start_node, three_seeds, until,
};
use common::http::Http;
use common::Broker;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_seeds_form_a_cluster_and_survive_a_leader_kill() {
    if skip_external("three_seeds_form_a_cluster_and_survive_a_leader_kill") {
        return;
    }
    let ports = free_ports(3);
    let (mut nodes, _) = three_seeds(&ports).await;
    for b in &nodes {
        assert!(
            b.endpoint("cluster").is_some(),
            "READY names the cluster port"
        );
    }
    let all_up =
        |v: &[Value]| v.len() == 3 && v.iter().all(|n| n["running"] == true) && leader(v).is_some();
    let views: Vec<Vec<Value>> = {
        let mut out = Vec::new();
        for b in &nodes {
            out.push(until(b, "three running members and a leader", all_up).await);
        }
        out
    };
    let ids: Vec<&Value> = views.iter().flatten().map(|n| &n["cluster_id"]).collect();
    assert!(
        ids[0].is_string() && ids.iter().all(|i| *i == ids[0]),
        "one cluster id: {ids:?}"
    );
    let mut names: Vec<&str> = views[0].iter().filter_map(|n| n["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["n1", "n2", "n3"]);
    for n in &views[0] {
        assert_eq!(n["voter"], true);
        assert_eq!(n["partitions"], serde_json::json!([]));
    }

    let url = format!("http://{}", nodes[0].endpoint("http").expect("http"));
    let out = common::ctl::ctl(&url, &["cluster", "status"]);
    let text = common::ctl::text(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        common::ctl::text(&out.stderr)
    );
    for n in ["n1", "n2", "n3"] {
        assert!(text.contains(n), "{text}");
    }

    let first = leader(&views[0]).expect("leader");
    // Prometheus: the leader says so, with a lag sample per follower; everyone has a term.
    let k0 = first[1..].parse::<usize>().expect("n<i>") - 1;
    let metrics = |b: &Broker| Http::new(&b.endpoint("metrics").expect("metrics")).text("/metrics");
    let text = metrics(&nodes[k0]);
    assert!(
        text.contains("ferry_raft_leader{group=\"meta\"} 1"),
        "{text}"
    );
    assert_eq!(
        text.matches("ferry_raft_replication_lag_entries{group=\"meta\"")
            .count(),
        2,
        "{text}"
    );
    for b in &nodes {
        let t = metrics(b);
        let term = t
            .lines()
            .find_map(|l| l.strip_prefix("ferry_raft_term{group=\"meta\"} "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .expect("ferry_raft_term");
        assert!(term >= 1, "{t}");
    }
    // On the leader the commit index covers what it applied (the formation's
    // entries at least), and none is past its log.
    let figure = |t: &str, name: &str| {
        t.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{group=\"meta\"}} ")))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in {t}"))
    };
    let t = metrics(&nodes[k0]);
    let (commit, applied, last) = (
        figure(&t, "ferry_raft_commit_index"),
        figure(&t, "ferry_raft_last_applied_index"),
        figure(&t, "ferry_raft_last_log_index"),
    );
    assert!(commit >= 1 && commit >= applied && commit <= last, "{t}");
    let k = first[1..].parse::<usize>().expect("n<i>") - 1;
    nodes[k].kill9().await;
    let s = (k + 1) % 3;
    let after = until(&nodes[s], "a new leader, the old one reported down", |v| {
        let dead = v.iter().find(|n| n["name"] == first.as_str());
        leader(v).is_some_and(|l| l != first) && dead.is_some_and(|d| d["running"] == false)
    })
    .await;
    let me = after
        .iter()
        .find(|n| n["exchange_types"].is_array())
        .expect("this node in full");
    // The other running member's own figures came with its ping answer.
    let other = after
        .iter()
        .find(|n| n["running"] == true && n["exchange_types"].is_null())
        .expect("another running member");
    for k in ["mem_used", "mem_limit", "disk_free", "fd_used", "uptime"] {
        assert!(other[k].is_u64(), "{k} of {other}");
    }
    assert!(other["mem_alarm"].is_boolean(), "{other}");
    assert_eq!(
        me["partitions"],
        serde_json::json!([first]),
        "the lost node is in partitions"
    );
    let t = metrics(&nodes[s]);
    let changes = t
        .lines()
        .find_map(|l| l.strip_prefix("ferry_raft_leader_changes_total{group=\"meta\"} "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("leader changes");
    assert!(changes >= 2, "a first leader, then another: {t}");

    nodes[k].start_again().await;
    until(&nodes[k], "the killed node back as a member", all_up).await;
    until(&nodes[s], "everyone running again", all_up).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_joins_through_the_seeds() {
    if skip_external("a_fourth_node_joins_through_the_seeds") {
        return;
    }
    let ports = free_ports(4);
    let (nodes, seeds) = three_seeds(&ports[..3]).await;
    // A node named like a member is refused and does not start.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = node_env(4, &ports, &seeds, "s3cret");
    env[0].1 = "n2".into();
    let d = dir.path().to_str().expect("utf-8 path").to_owned();
    let out = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let args = [
            "server",
            "--data-dir",
            &d,
            "--amqp-listen",
            "127.0.0.1:0",
            "--http-listen",
            "off",
            "--metrics-listen",
            "off",
        ];
        ferry_exits(&args, &env, std::time::Duration::from_secs(60))
    })
    .await
    .expect("join");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node name taken: n2 is the name of node"),
        "{err}"
    );
    let fourth = start_node(node_env(4, &ports, &seeds, "s3cret")).await;
    let v = until(&fourth, "four voting members", |v| {
        v.len() == 4 && v.iter().all(|n| n["running"] == true && n["voter"] == true)
    })
    .await;
    assert!(v.iter().any(|n| n["name"] == "n4"));
    until(&nodes[0], "the seeds see the fourth", |v| v.len() == 4).await;

    // Forgetting: refused while the node runs, done once it is stopped.
    let url = format!("http://{}", nodes[0].endpoint("http").expect("http"));
    let out = common::ctl::ctl(&url, &["cluster", "forget", "n4"]);
    assert!(!out.status.success());
    assert!(
        common::ctl::text(&out.stderr).contains("is running"),
        "{}",
        common::ctl::text(&out.stderr)
    );
    let mut fourth = fourth;
    fourth.kill9().await;
    until(&nodes[0], "n4 reported down", |v| {
        v.iter().any(|n| n["name"] == "n4" && n["running"] == false)
    })
    .await;
    let out = common::ctl::ctl(&url, &["cluster", "forget", "n4"]);
    assert!(out.status.success(), "{}", common::ctl::text(&out.stderr));
    for b in &nodes {
        until(b, "three members, all running", |v| {
            v.len() == 3 && v.iter().all(|n| n["running"] == true)
        })
        .await;
    }
    let out = common::ctl::ctl(&url, &["cluster", "status"]);
    assert!(out.status.success(), "{}", common::ctl::text(&out.stderr));
    let out = common::ctl::ctl(&url, &["cluster", "forget", "n4"]);
    assert_eq!(out.status.code(), Some(1), "a second forget: not found");
}

/// The stopped node led the metadata group: the forget waits for the others
/// to elect a leader instead of failing on the dead one (seen in CI: 400
/// "peer unreachable").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_leader_is_forgotten_right_after_it_stops() {
    if skip_external("the_metadata_leader_is_forgotten_right_after_it_stops") {
        return;
    }
    let ports = free_ports(3);
    let (mut nodes, _) = three_seeds(&ports).await;
    let v = until(&nodes[0], "a metadata leader", |v| leader(v).is_some()).await;
    let name = leader(&v).expect("leader");
    let k = (1..=3)
        .position(|i| format!("n{i}") == name)
        .expect("the leader is a seed");
    let other = (k + 1) % 3;
    nodes[k].kill9().await;
    let url = format!("http://{}", nodes[other].endpoint("http").expect("http"));
    let out = common::ctl::ctl(&url, &["cluster", "forget", &name]);
    assert!(out.status.success(), "{}", common::ctl::text(&out.stderr));
    until(&nodes[other], "two members, both running", |v| {
        v.len() == 2 && v.iter().all(|n| n["running"] == true)
    })
    .await;
}

fn ferry(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(args).env_remove("FERRY_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run ferry")
}

/// Runs `ferry` until it exits; killed (and the test failed) if it still
/// runs after `within`.
fn ferry_exits(
    args: &[&str],
    env: &[(&str, &str)],
    within: std::time::Duration,
) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(args)
        .env_remove("FERRY_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run ferry");
    let deadline = std::time::Instant::now() + within;
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "ferry still ran after {within:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50)); // polling the exit
    }
    child.wait_with_output().expect("output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_to_start_without_a_secret_or_on_another_nodes_data() {
    if skip_external("a_node_refuses_to_start_without_a_secret_or_on_another_nodes_data") {
        return;
    }
    let port = free_ports(1)[0];
    let listen = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8 path");
    let base = [
        "server",
        "--data-dir",
        d,
        "--amqp-listen",
        "127.0.0.1:0",
        "--http-listen",
        "off",
        "--metrics-listen",
        "off",
        "--cluster-listen",
        &listen,
    ];
    let out = ferry(&base, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs the shared secret"), "{err}");

    // A single node is a cluster of one: node "a" forms it on its own.
    let mut a = start_node(vec![
        ("FERRY_NODE_NAME".into(), "a".into()),
        ("FERRY_CLUSTER_LISTEN".into(), listen.clone()),
        ("FERRY_CLUSTER_SECRET".into(), "x".into()),
    ])
    .await;
    let v = until(&a, "a cluster of one", |v| {
        v.len() == 1 && leader(v).as_deref() == Some("a")
    })
    .await;
    assert_eq!(v[0]["voter"], true);
    assert!(a.terminate().await.success());
    let d = a.data_dir().to_str().expect("utf-8 path").to_string();
    let mut args = base.to_vec();
    args[2] = &d;
    args.extend(["--node-name", "b"]);
    let out = ferry(&args, &[("FERRY_CLUSTER_SECRET", "x")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("belongs to node \"a\""), "{err}");
}

/// `cluster_tls`: three nodes form over mutual TLS with certificates of
/// the cluster's CA; a connection that does not speak TLS is refused
/// before the secret's handshake (and logged as such).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_over_tls_and_refuse_plain_connections() {
    const TEST: &str = "three_nodes_form_over_tls_and_refuse_plain_connections";
    if skip_external(TEST) {
        return;
    }
    let pki = tempfile::tempdir().unwrap();
    if !common::pki::make_pki(pki.path(), "serverAuth,clientAuth") {
        eprintln!("SKIP {TEST}: no openssl CLI");
        return;
    }
    let path = |f: &str| pki.path().join(f).to_str().unwrap().to_string();
    let ports = free_ports(3);
    let seeds = ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let env = |i: usize| {
        let mut e = node_env(i, &ports, &seeds, "s3cret");
        for (k, v) in [
            ("FERRY_CLUSTER_TLS", "true".to_string()),
            ("FERRY_TLS_CERT", path("server.pem")),
            ("FERRY_TLS_KEY", path("server.key")),
            ("FERRY_TLS_CA", path("ca.pem")),
            ("FERRY_AMQPS_LISTEN", "127.0.0.1:0".to_string()),
        ] {
            e.push((k.to_string(), v));
        }
        e
    };
    let (a, b, c) = tokio::join!(start_node(env(1)), start_node(env(2)), start_node(env(3)));
    let all_up =
        |v: &[Value]| v.len() == 3 && v.iter().all(|n| n["running"] == true) && leader(v).is_some();
    for n in [&a, &b, &c] {
        until(n, "three running members over TLS", all_up).await;
    }
    // A plain-text peer: the bytes of a handshake, no TLS.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", ports[0])).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let _ = s.write_all(b"FRYC\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    assert!(
        n == 0 || !buf[..n].starts_with(b"FRYC"),
        "a plain connection never gets a cluster handshake answer"
    );
    a.wait_stderr_line(|l| l.contains("cluster connection refused") && l.contains("TLS"))
        .await;
}

/// A node whose data directory is wiped comes back as the same node with
/// a new incarnation: the others refuse it any part in Raft until the
/// leader has rebuilt it (out of the voters, caught up as a learner, a
/// voter again); then it holds the cluster's definitions again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_is_rebuilt_from_the_others() {
    if skip_external("a_wiped_node_is_rebuilt_from_the_others") {
        return;
    }
    let ports = free_ports(3);
    let (mut nodes, _) = three_seeds(&ports).await;
    let http = |b: &Broker| Http::new(&b.endpoint("http").expect("http"));
    let (st, v) = http(&nodes[0]).req(
        "PUT",
        "/api/users/keeper",
        Some(serde_json::json!({"password": "pw", "tags": ""})),
    );
    assert_eq!(st, 201, "{v}");
    let all_up = |v: &[Value]| {
        v.len() == 3
            && v.iter().all(|n| n["running"] == true && n["voter"] == true)
            && leader(v).is_some()
    };
    let before = until(&nodes[2], "three voters", all_up).await;
    nodes[2].kill9().await;
    nodes[2].wipe_data_dir();
    nodes[2].start_again().await;
    let after = until(&nodes[2], "the wiped node a voter again", all_up).await;
    let ids = |v: &[Value]| {
        v.iter()
            .map(|n| n["cluster_id"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&after), ids(&before), "the same cluster, not a new one");
    let (st, v) = http(&nodes[2]).req("GET", "/api/users/keeper", None);
    assert_eq!(st, 200, "the definitions came back with the log: {v}");
    until(&nodes[0], "everyone running", all_up).await;
    let rebuilt = |b: &Broker| b.stderr().contains("came back with a new data directory");
    assert!(
        rebuilt(&nodes[0]) || rebuilt(&nodes[1]),
        "the leader said why it rebuilt the node"
    );
}

/// A node whose data directory belongs to another cluster never links
/// with this one, and both sides say why: three seeds form a cluster and
/// stop; two of them are wiped and form a new cluster at the same
/// addresses (same secret); the third comes back with the old cluster's
/// data and dials them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_is_refused_at_the_link() {
    if skip_external("a_node_of_another_cluster_is_refused_at_the_link") {
        return;
    }
    let ports = free_ports(3);
    let (mut nodes, seeds) = three_seeds(&ports).await;
    let recorded = |v: &[Value]| {
        v.len() == 3
            && leader(v).is_some()
            && v.iter()
                .all(|n| n["running"] == true && n["cluster_id"].is_string())
    };
    let old = until(&nodes[0], "the first cluster with its id", recorded).await;
    for n in nodes.iter_mut() {
        assert!(n.terminate().await.success());
    }
    for n in &mut nodes[1..] {
        n.wipe_data_dir();
    }
    let (b, c) = nodes.split_at_mut(2);
    tokio::join!(b[1].start_again(), c[0].start_again());
    // Formed by the two (a majority of the seeds): all three seeds are its
    // voters, the first one down.
    let id_of = |v: &[Value]| {
        v.iter()
            .find(|n| n["name"] == "n2")
            .map(|n| n["cluster_id"].clone())
            .unwrap_or_default()
    };
    let new = until(&nodes[1], "a second cluster", |v| {
        leader(v).is_some() && id_of(v).is_string()
    })
    .await;
    assert_ne!(id_of(&new), id_of(&old), "a new cluster");
    // The first node, on its old data (its own cluster has no majority
    // now: it never says READY, so it is started by hand).
    let d = nodes[0].data_dir().to_str().expect("utf-8 path").to_owned();
    let env = node_env(1, &ports, &seeds, "s3cret");
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
    first
        .args(["server", "--data-dir", &d, "--amqp-listen", "127.0.0.1:0"])
        .args(["--http-listen", "off", "--metrics-listen", "off"])
        .env_remove("FERRY_CONFIG")
        .envs(env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut first = first.spawn().expect("run ferry");
    let refused = |b: &Broker| b.stderr().contains("the peer belongs to another cluster");
    common::cluster::poll_until("the second cluster refuses the first node's links", || {
        refused(&nodes[1]) || refused(&nodes[2])
    })
    .await;
    // Its pings are refused too: the second cluster never sees it running.
    let v = common::cluster::nodes_of(&nodes[1]);
    let _ = first.kill();
    let _ = first.wait();
    let up: Vec<&Value> = v.iter().filter(|n| n["running"] == true).collect();
    assert_eq!(
        up.len(),
        2,
        "only n2 and n3 run in the second cluster: {v:#?}"
    );
    assert!(up.iter().all(|n| n["name"] != "n1"), "{v:#?}");
}

/// Two seeds started with the same node name: they form the cluster with
/// the third (no join checks them), then the one with the higher id stops
/// with the reason; the other keeps the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_seeds_named_alike_one_stops() {
    if skip_external("of_two_seeds_named_alike_one_stops") {
        return;
    }
    let ports = free_ports(3);
    let seeds = ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut twins = Vec::new();
    for i in [2, 3] {
        let data = dir.path().join(format!("d{i}"));
        let log = std::fs::File::create(dir.path().join(format!("log{i}"))).expect("log");
        let mut env = node_env(i, &ports, &seeds, "s3cret");
        env[0].1 = "n2".into();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["server", "--data-dir", data.to_str().expect("utf-8 path")])
            .args(["--amqp-listen", "127.0.0.1:0", "--http-listen", "off"])
            .args(["--metrics-listen", "off"])
            .env_remove("FERRY_CONFIG")
            .envs(env)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run ferry");
        twins.push(child);
    }
    let first = start_node(node_env(1, &ports, &seeds, "s3cret")).await;
    let mut exited = Vec::new();
    common::cluster::poll_until("one of the two named n2 stops", || {
        for (k, c) in twins.iter_mut().enumerate() {
            if let Ok(Some(st)) = c.try_wait() {
                exited.push((k, st));
            }
        }
        !exited.is_empty()
    })
    .await;
    let (k, status) = exited[0];
    assert!(!status.success());
    let log = std::fs::read_to_string(dir.path().join(format!("log{}", k + 2))).expect("log");
    assert!(
        log.contains("node name taken: n2 is the name of node"),
        "{log}"
    );
    let v = until(&first, "n1 and one n2 running", |v| {
        let mut up: Vec<&str> = v
            .iter()
            .filter(|n| n["running"] == true)
            .filter_map(|n| n["name"].as_str())
            .collect();
        up.sort_unstable();
        up == ["n1", "n2"]
    })
    .await;
    let other = &mut twins[1 - k];
    assert!(other.try_wait().expect("wait").is_none(), "{v:#?}");
    let _ = other.kill();
    let _ = other.wait();
}
