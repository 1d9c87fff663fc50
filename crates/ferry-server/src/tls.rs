//! TLS for AMQPS (and the management API's HTTPS): a rustls server
//! configuration built from PEM files, with the `ring` provider only.
//!
//! Client certificates follow RabbitMQ's `verify_peer` settings:
//! `verify_peer` with a CA bundle requires a certificate signed by it
//! (`fail_if_no_peer_cert = true`); a CA bundle without `verify_peer`
//! verifies a certificate a client offers but accepts clients without one;
//! no CA bundle asks for none.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a TLS configuration could not be built (reported at startup).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which setting names the file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file holds no usable PEM section of the kind needed.
    #[error("invalid {what} {path}: {detail}")]
    Pem {
        /// Which setting names the file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// `tls_verify_peer` without `tls_ca` to verify against.
    #[error(
        "tls_verify_peer needs tls_ca (the CA bundle client certificates are checked against)"
    )]
    VerifyWithoutCa,
    /// rustls refused the combination (e.g. a key that does not match).
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

/// The rustls server configuration (named here so users of this crate
/// need no rustls dependency of their own).
pub type TlsConfig = ServerConfig;

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn pem_error(what: &'static str, path: &Path, detail: impl ToString) -> TlsError {
    TlsError::Pem {
        what,
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

/// Every certificate of a PEM file (at least one).
fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, path, e))?;
    if certs.is_empty() {
        return Err(pem_error(what, path, "no CERTIFICATE section"));
    }
    Ok(certs)
}

/// A server configuration for `cert_pem` (the chain, leaf first) and
/// `key_pem` (PKCS#8, PKCS#1 or SEC1), optionally verifying clients
/// against `client_ca`.
pub fn server_config(
    cert_pem: &Path,
    key_pem: &Path,
    client_ca: Option<&Path>,
    verify_peer: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates("tls_cert", cert_pem)?;
    let key_bytes = read("tls_key", key_pem)?;
    let key =
        PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| pem_error("tls_key", key_pem, e))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match client_ca {
        None if verify_peer => return Err(TlsError::VerifyWithoutCa),
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certificates("tls_ca", ca)? {
                roots.add(c).map_err(|e| pem_error("tls_ca", ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match verify_peer {
                true => verifier,
                false => verifier.allow_unauthenticated(),
            }
            .build()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(format!("{}: {e}", key_pem.display())))?;
    Ok(Arc::new(config))
}

/// The rustls client configuration (see [`TlsConfig`]).
pub type TlsClientConfig = rustls::ClientConfig;

/// The two configurations of a node's cluster links (`cluster_tls`):
/// mutual TLS within the cluster's CA. The server side requires a client
/// certificate signed by `ca`; the client side checks the server's
/// certificate against `ca` and offers `cert_pem` (which must allow both
/// server and client authentication).
pub fn cluster_configs(
    cert_pem: &Path,
    key_pem: &Path,
    ca: &Path,
) -> Result<(Arc<ServerConfig>, Arc<TlsClientConfig>), TlsError> {
    let server = server_config(cert_pem, key_pem, Some(ca), true)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in certificates("tls_ca", ca)? {
        roots.add(c).map_err(|e| pem_error("tls_ca", ca, e))?;
    }
    let chain = certificates("tls_cert", cert_pem)?;
    let key_bytes = read("tls_key", key_pem)?;
    let key =
        PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| pem_error("tls_key", key_pem, e))?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError::Rustls(format!("{}: {e}", key_pem.display())))?;
    Ok((server, Arc::new(client)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_and_bad_pem_are_named() {
        let dir = std::env::temp_dir().join(format!("ferry-tls-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let missing = dir.join("missing.pem");
        let e = server_config(&missing, &missing, None, false)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("cannot read tls_cert") && e.contains("missing.pem"),
            "{e}"
        );
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, b"not pem at all").unwrap_or_else(|e| panic!("{e}"));
        let e = server_config(&junk, &junk, None, false)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("invalid tls_cert") && e.contains("no CERTIFICATE"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
