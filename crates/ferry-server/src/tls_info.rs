//! What the management API shows of a TLS connection, in RabbitMQ's terms:
//! `ssl_protocol` ("tlsv1.3"), `ssl_key_exchange`, `ssl_cipher`
//! ("aes_256_gcm"), `ssl_hash` ("sha384") and, when the client presented a
//! certificate, `peer_cert_subject` / `peer_cert_issuer` as RFC 4514
//! strings ("CN=client,O=Ferry"), as `rabbit_ssl` formats them.
//!
//! The certificate is already verified by rustls; reading its names needs
//! only a small DER walk (no X.509 crate for two strings). A certificate
//! whose names cannot be read shows `None`, never an error.

use rustls::ServerConnection;

/// TLS facts of one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// "tlsv1.2" or "tlsv1.3".
    pub protocol: String,
    /// "ecdhe_rsa", "ecdhe_ecdsa", or "any" (TLS 1.3).
    pub key_exchange: String,
    /// Bulk cipher, "aes_256_gcm".
    pub cipher: String,
    /// MAC / PRF hash, "sha384".
    pub hash: String,
    /// Subject of the client's certificate.
    pub peer_cert_subject: Option<String>,
    /// Issuer of the client's certificate.
    pub peer_cert_issuer: Option<String>,
}

impl TlsInfo {
    /// Reads a finished handshake.
    pub fn of(c: &ServerConnection) -> TlsInfo {
        let protocol = match c.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "tlsv1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "tlsv1.2".to_string(),
            Some(other) => format!("{other:?}").to_lowercase(),
            None => String::new(),
        };
        let suite = c
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default();
        let (key_exchange, cipher, hash) = split_suite(&suite);
        let cert = c.peer_certificates().and_then(|certs| certs.first());
        let names = cert.and_then(|der| names(der.as_ref()));
        TlsInfo {
            protocol,
            key_exchange,
            cipher,
            hash,
            peer_cert_subject: names.as_ref().map(|n| n.1.clone()),
            peer_cert_issuer: names.map(|n| n.0),
        }
    }
}

/// "TLS13_AES_256_GCM_SHA384" → ("any", "aes_256_gcm", "sha384");
/// "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" → ("ecdhe_rsa", "aes_128_gcm",
/// "sha256").
fn split_suite(suite: &str) -> (String, String, String) {
    let lower = suite.to_lowercase();
    let (kx, rest) = match lower.strip_prefix("tls13_") {
        Some(rest) => ("any".to_string(), rest.to_string()),
        None => match lower
            .strip_prefix("tls_")
            .and_then(|r| r.split_once("_with_"))
        {
            Some((kx, rest)) => (kx.to_string(), rest.to_string()),
            None => (String::new(), lower.clone()),
        },
    };
    match rest.rsplit_once('_') {
        Some((cipher, hash)) => (kx, cipher.to_string(), hash.to_string()),
        None => (kx, rest, String::new()),
    }
}

/// One DER element: (tag, contents, rest).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let (bytes, rest) = b.split_at(n);
        b = rest;
        bytes.iter().fold(0usize, |a, &x| (a << 8) | usize::from(x))
    };
    if b.len() < len {
        return None;
    }
    let (body, rest) = b.split_at(len);
    Some((tag, body, rest))
}

/// (issuer, subject) of a DER certificate.
fn names(der: &[u8]) -> Option<(String, String)> {
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    // Optional [0] version, then serial, signature algorithm.
    let (tag, _, r) = tlv(rest)?;
    rest = r;
    if tag == 0xa0 {
        rest = tlv(rest)?.2;
    }
    rest = tlv(rest)?.2;
    let (_, issuer, r) = tlv(rest)?;
    let (_, _validity, r) = tlv(r)?;
    let (_, subject, _) = tlv(r)?;
    Some((rdn_string(issuer)?, rdn_string(subject)?))
}

/// RFC 4514: the last RDN first, "CN=x,O=y".
fn rdn_string(mut name: &[u8]) -> Option<String> {
    let mut parts = Vec::new();
    while !name.is_empty() {
        let (_, set, r) = tlv(name)?;
        name = r;
        let (_, atv, _) = tlv(set)?;
        let (_, oid, r) = tlv(atv)?;
        let (_, value, _) = tlv(r)?;
        let key = match oid {
            [0x55, 0x04, 0x03] => "CN".to_string(),
            [0x55, 0x04, 0x06] => "C".to_string(),
            [0x55, 0x04, 0x07] => "L".to_string(),
            [0x55, 0x04, 0x08] => "ST".to_string(),
            [0x55, 0x04, 0x0a] => "O".to_string(),
            [0x55, 0x04, 0x0b] => "OU".to_string(),
            other => other.iter().map(|b| format!("{b:02x}")).collect(),
        };
        parts.push(format!("{key}={}", String::from_utf8_lossy(value)));
    }
    parts.reverse();
    Some(parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_split_as_rabbitmq_names_them() {
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            split_suite("TLS13_AES_256_GCM_SHA384"),
            s("any", "aes_256_gcm", "sha384")
        );
        assert_eq!(
            split_suite("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
            s("ecdhe_rsa", "chacha20_poly1305", "sha256")
        );
    }

    #[test]
    fn names_of_a_truncated_certificate_are_none() {
        assert_eq!(names(&[0x30, 0x82, 0x01]), None);
        assert_eq!(names(&[]), None);
    }
}
