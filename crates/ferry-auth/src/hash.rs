//! Password hashes in RabbitMQ's internal format, so users move between
//! Ferry and RabbitMQ through definitions JSON unchanged:
//! `base64(salt[4] ‖ H(salt ‖ password))`, where H is SHA-256 for
//! `rabbit_password_hashing_sha256` (the default, and what Ferry writes) or
//! SHA-512 for `rabbit_password_hashing_sha512` (accepted on import).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::digest;

/// RabbitMQ's name of the default algorithm.
pub const SHA256: &str = "rabbit_password_hashing_sha256";
/// RabbitMQ's name of the SHA-512 algorithm.
pub const SHA512: &str = "rabbit_password_hashing_sha512";

/// A hashing algorithm RabbitMQ can name in definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    /// `rabbit_password_hashing_sha256`.
    Sha256,
    /// `rabbit_password_hashing_sha512`.
    Sha512,
}

impl HashAlgorithm {
    /// Parses RabbitMQ's module name (an empty one means the default).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            SHA256 | "" => Some(HashAlgorithm::Sha256),
            SHA512 => Some(HashAlgorithm::Sha512),
            _ => None,
        }
    }

    /// RabbitMQ's module name.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => SHA256,
            HashAlgorithm::Sha512 => SHA512,
        }
    }

    fn digest(self, salt: &[u8], password: &[u8]) -> digest::Digest {
        let alg = match self {
            HashAlgorithm::Sha256 => &digest::SHA256,
            HashAlgorithm::Sha512 => &digest::SHA512,
        };
        let mut ctx = digest::Context::new(alg);
        ctx.update(salt);
        ctx.update(password);
        ctx.finish()
    }

    fn hash_len(self) -> usize {
        match self {
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha512 => 64,
        }
    }
}

/// Salted hash bytes (`salt ‖ digest`), or nothing: a user without a
/// password cannot log in with one (RabbitMQ's empty `password_hash`).
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    algorithm: HashAlgorithm,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print hashes into logs.
        f.write_str("PasswordHash(..)")
    }
}

impl PasswordHash {
    /// Hashes a password with a fresh random 4-byte salt (SHA-256).
    pub fn new(password: &str) -> Self {
        Self::with_salt(rand::random::<[u8; 4]>(), password)
    }

    pub fn with_salt(salt: [u8; 4], password: &str) -> Self {
        let algorithm = HashAlgorithm::Sha256;
        let mut bytes = salt.to_vec();
        bytes.extend_from_slice(algorithm.digest(&salt, password.as_bytes()).as_ref());
        PasswordHash { algorithm, bytes }
    }

    /// No password: every password check fails.
    pub fn none() -> Self {
        PasswordHash {
            algorithm: HashAlgorithm::Sha256,
            bytes: Vec::new(),
        }
    }

    /// Decodes RabbitMQ's base64 form; an empty string is "no password".
    pub fn from_b64(b64: &str, algorithm: HashAlgorithm) -> Result<Self, String> {
        if b64.is_empty() {
            return Ok(PasswordHash {
                algorithm,
                bytes: Vec::new(),
            });
        }
        let bytes = STANDARD
            .decode(b64)
            .map_err(|e| format!("password_hash is not base64: {e}"))?;
        if bytes.len() != 4 + algorithm.hash_len() {
            return Err(format!(
                "password_hash has {} bytes, {} needs {}",
                bytes.len(),
                algorithm.name(),
                4 + algorithm.hash_len()
            ));
        }
        Ok(PasswordHash { algorithm, bytes })
    }

    /// RabbitMQ's base64 form ("" for no password).
    pub fn to_b64(&self) -> String {
        STANDARD.encode(&self.bytes)
    }

    pub fn algorithm(&self) -> HashAlgorithm {
        self.algorithm
    }

    /// Checks a password in constant time (for a given hash length).
    pub fn verify(&self, password: &str) -> bool {
        let Some((salt, expected)) = self.bytes.split_at_checked(4) else {
            return false;
        };
        if expected.is_empty() {
            return false;
        }
        let got = self.algorithm.digest(salt, password.as_bytes());
        constant_time_eq(got.as_ref(), expected)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_hashes_made_by_rabbitmq() {
        // `rabbitmqctl add_user bob bobpw` then `export_definitions` on
        // RabbitMQ 3.10.8.
        let h = PasswordHash::from_b64(
            "ZWL39wRyKV9y87LKOUTXD/T6LlDI6zY79hWaO+++9jx8QAL2",
            HashAlgorithm::Sha256,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(h.verify("bobpw"));
        assert!(!h.verify("bobpw2"));
        // And ours has the same layout: salt ‖ sha256(salt ‖ password).
        let ours = PasswordHash::with_salt([0x65, 0x62, 0xf7, 0xf7], "bobpw");
        let theirs = STANDARD.decode(ours.to_b64()).unwrap_or_default();
        let mut input = vec![0x65u8, 0x62, 0xf7, 0xf7];
        input.extend_from_slice(b"bobpw");
        assert_eq!(&theirs[..4], &input[..4]);
        assert_eq!(
            &theirs[4..],
            digest::digest(&digest::SHA256, &input).as_ref()
        );
    }

    #[test]
    fn verify_round_trip() {
        let h = PasswordHash::new("s3cret");
        assert!(h.verify("s3cret"));
        assert!(!h.verify("s3cret "));
        let back = PasswordHash::from_b64(&h.to_b64(), HashAlgorithm::Sha256)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(back.verify("s3cret"));
        assert!(!PasswordHash::none().verify(""));
        assert!(PasswordHash::from_b64("!!", HashAlgorithm::Sha256).is_err());
        assert!(PasswordHash::from_b64("AAAA", HashAlgorithm::Sha256).is_err());
    }
}
