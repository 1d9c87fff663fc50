//! The policy file `DATA/policies`: every vhost's policies and operator
//! policies, framed like the access file (magic "FRYPOL01", see
//! `docs/storage.md` for the byte layout) with a JSON body in RabbitMQ's
//! definitions shape. Written atomically (temporary file, fsync, rename)
//! before a change is visible; absent on a data directory that never had
//! a policy.

use super::{Policy, PolicyDef, PolicyKind, PolicySet};
use ferry_log::FileIo;
use ferry_queue::error::{CoreError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

const MAGIC: &[u8; 8] = b"FRYPOL01";
const NAME: &str = "policies";
/// The body's format version.
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct PolicyFile {
    version: u32,
    policies: Vec<PolicyDef>,
    operator_policies: Vec<PolicyDef>,
}

/// Writes the policy file atomically.
pub(crate) fn save(io: &dyn FileIo, dir: &Path, set: &PolicySet) -> Result<()> {
    let file = PolicyFile {
        version: VERSION,
        policies: set.list(PolicyKind::Policy),
        operator_policies: set.list(PolicyKind::Operator),
    };
    let json = serde_json::to_vec(&file).map_err(|e| CoreError::Corrupt(e.to_string()))?;
    Ok(ferry_log::framed::save(io, dir, NAME, MAGIC, &json)?)
}

/// Reads the policy file (an empty set if there is none).
pub(crate) fn load(io: &dyn FileIo, dir: &Path) -> Result<PolicySet> {
    let path = dir.join(NAME);
    let Some(body) = ferry_log::framed::load(io, &path, MAGIC)? else {
        return Ok(PolicySet::default());
    };
    let bad = |e: String| CoreError::Corrupt(format!("policy file {}: {e}", path.display()));
    let file: PolicyFile = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
    if file.version != VERSION {
        return Err(bad(format!("unknown version {}", file.version)));
    }
    let mut set = PolicySet::default();
    for (kind, list) in [
        (PolicyKind::Policy, file.policies),
        (PolicyKind::Operator, file.operator_policies),
    ] {
        for d in list {
            let vhost = d.vhost.clone();
            let p = Policy::compile(d).map_err(bad)?;
            set.update(&vhost, |v| v.put(kind, p));
        }
    }
    Ok(set)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let io = ferry_log::StdIo;
        assert!(load(&io, dir.path())
            .unwrap()
            .list(PolicyKind::Policy)
            .is_empty());
        let mut set = PolicySet::default();
        let body = json!({"pattern": "^q", "definition": {"max-length": 3}, "priority": 2});
        for (kind, vhost) in [(PolicyKind::Policy, "/"), (PolicyKind::Operator, "v")] {
            let d = super::super::validate(kind, vhost, "p", &body).unwrap();
            set.update(vhost, |v| v.put(kind, Policy::compile(d).unwrap()));
        }
        save(&io, dir.path(), &set).unwrap();
        let back = load(&io, dir.path()).unwrap();
        assert_eq!(back.list(PolicyKind::Policy), set.list(PolicyKind::Policy));
        assert_eq!(back.list(PolicyKind::Operator)[0].vhost, "v");
    }

    /// A version-1 file built byte by byte as `docs/storage.md` draws it
    /// (what an older Ferry wrote) loads, and a damaged or newer one stops
    /// the broker instead of losing policies.
    #[test]
    fn the_documented_v1_layout_loads() {
        let json = br#"{"version":1,"policies":[{"vhost":"/","name":"ttl","pattern":"^q\\.","apply-to":"queues","definition":{"message-ttl":60000},"priority":1}],"operator_policies":[{"vhost":"/","name":"cap","pattern":".*","apply-to":"queues","definition":{"max-length":100000},"priority":0}]}"#;
        let frame = |body: &[u8], crc: u32| {
            let mut b = b"FRYPOL01".to_vec();
            b.extend((body.len() as u32).to_le_bytes());
            b.extend(crc.to_le_bytes());
            b.extend(body);
            b
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policies");
        std::fs::write(&path, frame(json, crc32c::crc32c(json))).unwrap();
        let set = load(&ferry_log::StdIo, dir.path()).unwrap();
        let p = &set.list(PolicyKind::Policy)[0];
        assert_eq!((p.name.as_str(), p.pattern.as_str()), ("ttl", "^q\\."));
        let vp = set.vhost("/");
        let e = vp.effective("q.1", super::super::Target::ClassicQueue);
        assert_eq!(
            (e.policy.as_deref(), e.operator_policy.as_deref()),
            (Some("ttl"), Some("cap"))
        );
        std::fs::write(&path, frame(json, 0)).unwrap();
        assert!(load(&ferry_log::StdIo, dir.path()).is_err(), "checksum");
        let v2 = br#"{"version":2,"policies":[],"operator_policies":[]}"#;
        std::fs::write(&path, frame(v2, crc32c::crc32c(v2))).unwrap();
        assert!(
            load(&ferry_log::StdIo, dir.path()).is_err(),
            "a newer format"
        );
    }
}
