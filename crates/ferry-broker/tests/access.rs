//! Users, vhosts and permissions through the broker: the default user of a
//! fresh data directory, persistence across restarts (and a power cut),
//! vhost deletion, RabbitMQ definitions import/export, refusal texts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{config, durable_queue};
use ferry_auth::{Access, AccessDefs, PasswordSpec, Permissions, Resource};
use ferry_broker::Broker;
use ferry_log::SimIo;
use ferry_queue::ErrorKind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn perms(c: &str, w: &str, r: &str) -> Permissions {
    Permissions {
        configure: c.into(),
        write: w.into(),
        read: r.into(),
    }
}

#[test]
fn a_fresh_data_dir_has_guest_on_slash() {
    let io = SimIo::new();
    let b = Broker::open(config(), io.shared()).unwrap();
    {
        let users = b.users();
        let g = users.authenticate("guest", "guest", true).unwrap();
        assert!(g.has_tag("administrator"));
        assert!(g.loopback_only);
        assert!(users.authenticate("guest", "guest", false).is_err());
        assert_eq!(
            g.hashing_algorithm(),
            "rabbit_password_hashing_sha256",
            "RabbitMQ's default algorithm"
        );
    }
    assert_eq!(b.vhost_names(), vec!["/".to_string()]);
    assert_eq!(
        b.permissions(),
        vec![("guest".into(), "/".into(), Permissions::all())]
    );
    b.check_vhost_access("guest", "/").unwrap();
    b.shutdown();
}

#[test]
fn default_user_from_config_replaces_guest() {
    let io = SimIo::new();
    let mut c = config();
    c.default_user = "admin".into();
    c.default_pass = "s3cret".into();
    let b = Broker::open(c.clone(), io.shared()).unwrap();
    assert!(b.users().get("guest").is_none());
    let users = b.users();
    let admin = users.authenticate("admin", "s3cret", false).unwrap();
    assert!(!admin.loopback_only, "only names in loopback_users are");
    drop(users);
    b.shutdown();
    // Only on first boot: a later default_pass changes nothing.
    c.default_pass = "other".into();
    let b = Broker::open(c, io.shared()).unwrap();
    assert!(b.users().authenticate("admin", "s3cret", true).is_ok());
    assert!(b.users().authenticate("admin", "other", true).is_err());
    b.shutdown();
}

#[test]
fn users_vhosts_and_permissions_survive_restart_and_power_cut() {
    let io = SimIo::new();
    let b = Broker::open(config(), io.shared()).unwrap();
    b.add_vhost("prod").unwrap();
    b.put_user(
        "bob",
        PasswordSpec::Plain("bobpw".into()),
        vec!["monitoring".into(), "custom".into()],
    )
    .unwrap();
    b.set_permissions("bob", "prod", perms("^bob\\.", "^amq\\.topic$", ".*"))
        .unwrap();
    let hash = b.users().get("bob").unwrap().password_hash_b64();
    // A power cut right after: every change was synced before it returned.
    io.crash(7);
    let b2 = Broker::open(config(), io.shared()).unwrap();
    assert_eq!(b2.vhost_names(), vec!["/".to_string(), "prod".to_string()]);
    let users = b2.users();
    let bob = users.authenticate("bob", "bobpw", false).unwrap();
    assert_eq!(
        bob.tags,
        vec!["monitoring".to_string(), "custom".to_string()]
    );
    assert_eq!(bob.password_hash_b64(), hash);
    drop(users);
    b2.authorize("bob", "prod", Access::Configure, Resource::Queue("bob.q"))
        .unwrap();
    let e = b2
        .authorize("bob", "prod", Access::Configure, Resource::Queue("q"))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AccessRefused);
    assert_eq!(
        e.to_string(),
        "access to queue 'q' in vhost 'prod' refused for user 'bob'"
    );
    b2.shutdown();
    drop(b);
}

#[test]
fn permission_changes_and_errors() {
    let io = SimIo::new();
    let b = Broker::open(config(), io.shared()).unwrap();
    let kind = |r: ferry_queue::Result<()>| r.unwrap_err().kind();
    assert_eq!(
        kind(b.set_permissions("nobody", "/", Permissions::all())),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(b.set_permissions("guest", "nope", Permissions::all())),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(b.set_permissions("guest", "/", perms("(", "", ""))),
        ErrorKind::CommandInvalid
    );
    assert_eq!(kind(b.delete_user("nobody")), ErrorKind::NotFound);
    assert_eq!(
        kind(b.clear_permissions("guest", "nope")),
        ErrorKind::NotFound
    );
    let before = b.access_epoch();
    b.put_user("carol", PasswordSpec::Plain("pw".into()), vec![])
        .unwrap();
    assert!(
        b.access_epoch() > before,
        "connections must refresh their cache"
    );
    let e = b.check_vhost_access("carol", "/").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotAllowed);
    assert_eq!(
        e.to_string(),
        "access to vhost '/' refused for user 'carol'"
    );
    assert_eq!(
        b.check_vhost_access("carol", "nope")
            .unwrap_err()
            .to_string(),
        "vhost nope not found"
    );
    b.set_permissions("carol", "/", perms("", "", "")).unwrap();
    b.check_vhost_access("carol", "/").unwrap();
    // The default exchange is checked as amq.default.
    assert_eq!(
        b.authorize("carol", "/", Access::Write, Resource::Exchange(""))
            .unwrap_err()
            .to_string(),
        "access to exchange 'amq.default' in vhost '/' refused for user 'carol'"
    );
    b.clear_permissions("carol", "/").unwrap();
    assert!(b.check_vhost_access("carol", "/").is_err());
    // Updating a user keeps its permissions and changes its password.
    b.set_permissions("carol", "/", Permissions::all()).unwrap();
    b.put_user(
        "carol",
        PasswordSpec::Plain("new".into()),
        vec!["management".into()],
    )
    .unwrap();
    assert!(b.users().authenticate("carol", "pw", true).is_err());
    assert!(b.users().authenticate("carol", "new", true).is_ok());
    b.check_vhost_access("carol", "/").unwrap();
    b.delete_user("carol").unwrap();
    assert!(b.users().get("carol").is_none());
    assert!(b.permissions().iter().all(|(u, _, _)| u != "carol"));
    b.shutdown();
}

#[test]
fn deleting_a_vhost_removes_its_data_and_permissions() {
    let io = SimIo::new();
    let b = Broker::open(config(), io.shared()).unwrap();
    let v = b.add_vhost("tmp").unwrap();
    v.declare_queue(durable_queue("q"), false, 1).unwrap();
    b.set_permissions("guest", "tmp", Permissions::all())
        .unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    {
        let seen = seen.clone();
        b.on_vhost_deleted(Arc::new(move |name| {
            assert_eq!(name, "tmp");
            seen.fetch_add(1, Ordering::SeqCst);
        }));
    }
    b.delete_vhost("tmp").unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert_eq!(
        b.delete_vhost("tmp").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(b.vhost("tmp").is_err());
    assert!(b.permissions().iter().all(|(_, v, _)| v != "tmp"));
    // A connection still holding the vhost fails cleanly and writes nothing.
    let e = v.declare_queue(durable_queue("q2"), false, 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotAllowed);
    // Its directory (hex of "tmp") and the queue log in it are gone.
    let io_dyn = io.shared();
    assert!(!io_dyn.exists(std::path::Path::new("/data/vhosts/746d70")));
    assert!(io_dyn.exists(std::path::Path::new("/data/vhosts/2f")));
    b.shutdown();
    // Gone after a restart too, and "/" can be deleted for good as well.
    let b = Broker::open(config(), io.shared()).unwrap();
    assert_eq!(b.vhost_names(), vec!["/".to_string()]);
    b.delete_vhost("/").unwrap();
    b.shutdown();
    let b = Broker::open(config(), io.shared()).unwrap();
    assert!(b.vhost_names().is_empty());
    b.add_vhost("/").unwrap();
    let q = b
        .vhost("/")
        .unwrap()
        .declare_queue(durable_queue("q"), false, 1)
        .unwrap();
    assert_eq!((q.1, q.2), (0, 0), "a recreated vhost starts empty");
    b.shutdown();
}

#[test]
fn imports_and_exports_rabbitmq_definitions() {
    // `rabbitmqctl export_definitions` of RabbitMQ 3.10.8 (trimmed), plus
    // a plain-password user as RabbitMQ's import accepts.
    let json = r#"{"rabbit_version":"3.10.8",
      "users":[{"hashing_algorithm":"rabbit_password_hashing_sha256","limits":{},"name":"bob",
                "password_hash":"ZWL39wRyKV9y87LKOUTXD/T6LlDI6zY79hWaO+++9jx8QAL2","tags":[]},
               {"name":"ann","password":"annpw","tags":"administrator,policymaker"}],
      "vhosts":[{"limits":[],"metadata":{"description":"","tags":""},"name":"v2"}],
      "permissions":[{"configure":"foo","read":"foo","user":"bob","vhost":"v2","write":"foo"}],
      "queues":[],"exchanges":[],"bindings":[]}"#;
    let defs: AccessDefs = serde_json::from_str(json).unwrap();
    let io = SimIo::new();
    let b = Broker::open(config(), io.shared()).unwrap();
    b.import_access(&defs).unwrap();
    assert!(b.users().authenticate("bob", "bobpw", false).is_ok());
    assert!(b.users().get("ann").unwrap().has_tag("policymaker"));
    b.check_vhost_access("bob", "v2").unwrap();
    let out = b.export_access();
    let bob = out.users.iter().find(|u| u.name == "bob").unwrap();
    assert_eq!(
        bob.password_hash,
        "ZWL39wRyKV9y87LKOUTXD/T6LlDI6zY79hWaO+++9jx8QAL2"
    );
    assert!(out.users.iter().all(|u| u.password.is_none()));
    assert_eq!(out.vhosts.len(), 2);
    assert_eq!(out.permissions.len(), 2);
    // A bad entry changes nothing.
    let bad: AccessDefs =
        serde_json::from_str(r#"{"users":[{"name":"zed","password_hash":"!!"}],"permissions":[]}"#)
            .unwrap();
    assert_eq!(
        b.import_access(&bad).unwrap_err().kind(),
        ErrorKind::CommandInvalid
    );
    assert!(b.users().get("zed").is_none());
    let unknown_vhost: AccessDefs = serde_json::from_str(
        r#"{"permissions":[{"user":"bob","vhost":"nope","configure":"","write":"","read":""}]}"#,
    )
    .unwrap();
    assert_eq!(
        b.import_access(&unknown_vhost).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    b.shutdown();
}

#[test]
fn a_corrupt_access_file_refuses_to_open() {
    let io = SimIo::new();
    let b = Broker::open(config(), io.shared()).unwrap();
    b.shutdown();
    drop(b);
    io.flip_bit(std::path::Path::new("/data/access"), 20, 3)
        .unwrap();
    let e = Broker::open(config(), io.shared()).unwrap_err();
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
}
