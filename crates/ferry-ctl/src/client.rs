//! A blocking client for the RabbitMQ management API (ureq): basic auth,
//! JSON in and out, and the mapping of transport failures and HTTP error
//! statuses to [`CtlError`].

use crate::error::CtlError;
use serde_json::Value;
use std::io::Read;
use std::path::Path;
use std::time::Duration;
use ureq::http::Response;
use ureq::Body;

/// How to reach the API.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL, e.g. `http://127.0.0.1:15672` (a path prefix is kept).
    pub url: String,
    pub user: String,
    pub password: String,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// PEM file of CA certificates to trust for `https://` (instead of the web PKI roots).
    pub cacert: Option<std::path::PathBuf>,
    /// Skip TLS certificate verification.
    pub insecure: bool,
}

/// One management API endpoint, with a name for the object it addresses so
/// that a 404 reads "not found: queue 'q' in vhost '/'".
pub struct Client {
    agent: ureq::Agent,
    base: String,
    auth: String,
    user: String,
}

/// A request method and, for PUT/POST, its JSON body.
#[derive(Clone, Copy)]
enum Method<'a> {
    Get,
    Delete,
    Put(&'a Value),
    Post(&'a Value),
}

impl Method<'_> {
    fn name(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Delete => "DELETE",
            Method::Put(_) => "PUT",
            Method::Post(_) => "POST",
        }
    }
}

/// Percent-encodes one path segment: everything but RFC 3986 unreserved
/// characters, so "/" becomes "%2F" as the API expects for the default vhost.
#[must_use]
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `/api/a/b/...` from raw (unencoded) segments.
#[must_use]
pub fn api_path(segments: &[&str]) -> String {
    let mut p = String::from("/api");
    for s in segments {
        p.push('/');
        p.push_str(&seg(s));
    }
    p
}

impl Client {
    pub fn new(cfg: &ClientConfig) -> Result<Client, CtlError> {
        let base = cfg.url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CtlError::Usage(format!(
                "--url must start with http:// or https://, got {:?}",
                cfg.url
            )));
        }
        let mut tls = ureq::tls::TlsConfig::builder().disable_verification(cfg.insecure);
        if let Some(path) = &cfg.cacert {
            tls = tls.root_certs(load_roots(path)?);
        }
        let config = ureq::Agent::config_builder()
            // Error statuses come back as responses: their JSON reason is the message.
            .http_status_as_error(false)
            .timeout_global(Some(cfg.timeout))
            .timeout_connect(Some(cfg.timeout.min(Duration::from_secs(10))))
            .user_agent(concat!("ferry-ctl/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls.build())
            .build();
        let token = base64(format!("{}:{}", cfg.user, cfg.password).as_bytes());
        Ok(Client {
            agent: config.new_agent(),
            base,
            auth: format!("Basic {token}"),
            user: cfg.user.clone(),
        })
    }

    /// GET a JSON document.
    pub fn get(&self, path: &str, what: &str) -> Result<Value, CtlError> {
        let resp = self.send(Method::Get, path, what)?;
        json_body(path, resp)?.ok_or_else(|| CtlError::BadResponse {
            path: path.to_string(),
            detail: "empty body".into(),
        })
    }

    /// PUT a JSON body (create or update); the answer's body, if any.
    pub fn put(&self, path: &str, body: &Value, what: &str) -> Result<Option<Value>, CtlError> {
        let resp = self.send(Method::Put(body), path, what)?;
        json_body(path, resp)
    }

    /// POST a JSON body; the answer's body, if any.
    pub fn post(&self, path: &str, body: &Value, what: &str) -> Result<Option<Value>, CtlError> {
        let resp = self.send(Method::Post(body), path, what)?;
        json_body(path, resp)
    }

    /// DELETE.
    pub fn delete(&self, path: &str, what: &str) -> Result<(), CtlError> {
        self.send(Method::Delete, path, what).map(|_| ())
    }

    fn send(&self, method: Method<'_>, path: &str, what: &str) -> Result<Response<Body>, CtlError> {
        let url = format!("{}{}", self.base, path);
        let auth = ("authorization", self.auth.as_str());
        let result = match method {
            Method::Get => self.agent.get(&url).header(auth.0, auth.1).call(),
            Method::Delete => self.agent.delete(&url).header(auth.0, auth.1).call(),
            Method::Put(b) => self.agent.put(&url).header(auth.0, auth.1).send_json(b),
            Method::Post(b) => self.agent.post(&url).header(auth.0, auth.1).send_json(b),
        };
        let mut resp = result.map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        if status < 400 {
            return Ok(resp);
        }
        let reason = error_reason(&mut resp);
        Err(match status {
            // RabbitMQ also answers 401 to a logged-in user who lacks a
            // permission ("Access refused."): only a failed login is an
            // authentication failure.
            401 if reason == "Login failed" || reason == "Unauthorized" => CtlError::Unauthorized {
                user: self.user.clone(),
                reason,
            },
            401 | 403 => CtlError::Forbidden {
                user: self.user.clone(),
                reason,
            },
            404 => CtlError::NotFound { what: what.into() },
            _ => CtlError::Http {
                status,
                method: method.name(),
                path: path.to_string(),
                reason,
            },
        })
    }

    fn transport_error(&self, e: ureq::Error) -> CtlError {
        let cause = match e {
            ureq::Error::Io(io) => match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                _ => io.to_string(),
            },
            ureq::Error::HostNotFound => "host not found".to_string(),
            ureq::Error::Timeout(t) => format!("timed out ({t})"),
            ureq::Error::BadUri(u) => {
                return CtlError::Usage(format!("invalid --url {:?}: {u}", self.base))
            }
            other => other.to_string(),
        };
        CtlError::Unreachable {
            url: self.base.clone(),
            cause,
        }
    }
}

fn load_roots(path: &Path) -> Result<ureq::tls::RootCerts, CtlError> {
    let pem =
        std::fs::read(path).map_err(|e| CtlError::io(format!("--cacert {}", path.display()), e))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(CtlError::Usage(format!("--cacert {}: {e}", path.display()))),
        }
    }
    if certs.is_empty() {
        return Err(CtlError::Usage(format!(
            "--cacert {}: no certificate in the file",
            path.display()
        )));
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

/// The body of a 2xx answer as JSON; `None` when empty (201/204).
fn json_body(path: &str, mut resp: Response<Body>) -> Result<Option<Value>, CtlError> {
    let mut bytes = Vec::new();
    resp.body_mut()
        .as_reader()
        .read_to_end(&mut bytes)
        .map_err(|e| CtlError::BadResponse {
            path: path.to_string(),
            detail: format!("reading the body: {e}"),
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| CtlError::BadResponse {
            path: path.to_string(),
            detail: format!("not JSON ({e})"),
        })
}

/// RabbitMQ answers errors as `{"error": "...", "reason": "..."}`; `reason`
/// may be a string or any term (e.g. `["not_boolean","x"]`).
fn error_reason(resp: &mut Response<Body>) -> String {
    let mut bytes = Vec::new();
    // Cap: an error body is a sentence, not a document.
    let _ = resp
        .body_mut()
        .as_reader()
        .take(64 * 1024)
        .read_to_end(&mut bytes);
    if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
        for key in ["reason", "error"] {
            match v.get(key) {
                Some(Value::String(s)) if !s.is_empty() => return s.clone(),
                Some(Value::Null) | None => {}
                Some(other) => return other.to_string(),
            }
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    if text.is_empty() {
        let canonical = resp.status().canonical_reason();
        return canonical.unwrap_or("no reason given").to_string();
    }
    text.chars()
        .take(300)
        .collect::<String>()
        .replace('\n', " ")
}

/// Standard base64 with padding (for the basic-auth header; not worth a crate).
pub(crate) fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("guest:guest", "Z3Vlc3Q6Z3Vlc3Q="),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(
            api_path(&["queues", "/", "a b/c"]),
            "/api/queues/%2F/a%20b%2Fc"
        );
        assert_eq!(seg("amq.topic"), "amq.topic");
        assert_eq!(seg("é"), "%C3%A9");
    }
}
