//! An HTTP client for the management API (`http=`) and the Prometheus endpoint (`metrics=`)
//! of a spawned broker: plain `ureq`, statuses returned rather than raised, JSON decoded.

use serde_json::Value;
use std::time::Duration;

/// A management / metrics HTTP client for one listener of a spawned broker.
pub struct Http {
    pub base: String,
    pub agent: ureq::Agent,
}

impl Http {
    pub fn new(addr: &str) -> Http {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Http {
            base: format!("http://{addr}"),
            agent,
        }
    }

    /// (status, JSON body or Null) with guest's credentials, or `auth`.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        auth: Option<&str>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let token = auth.map(|a| {
            use base64::Engine;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(a)
            )
        });
        let resp = match method {
            "GET" | "DELETE" => {
                let mut r = if method == "GET" {
                    self.agent.get(&url)
                } else {
                    self.agent.delete(&url)
                };
                if let Some(t) = &token {
                    r = r.header("Authorization", t);
                }
                r.call()
            }
            _ => {
                let mut r = if method == "PUT" {
                    self.agent.put(&url)
                } else {
                    self.agent.post(&url)
                };
                r = r.header("content-type", "application/json");
                if let Some(t) = &token {
                    r = r.header("Authorization", t);
                }
                r.send(body.unwrap_or(b""))
            }
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let v = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
        };
        (status, v)
    }

    /// `call` with a JSON body (or none) and guest's credentials.
    pub fn req(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let raw = body.map(|b| b.to_string().into_bytes());
        self.call(method, path, raw.as_deref(), Some("guest:guest"))
    }

    /// The body of an unauthenticated GET (the metrics listener).
    pub fn text(&self, path: &str) -> String {
        let mut resp = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .unwrap();
        resp.body_mut().read_to_string().unwrap()
    }
}
