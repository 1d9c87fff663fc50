//! The API's error type: every failure becomes a status code and RabbitMQ's
//! JSON body, `{"error": "...", "reason": "..."}`. User input never yields
//! a 500; only broker faults (I/O, a corrupt log) do.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_queue::{CoreError, ErrorKind};

/// An HTTP API error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 400: malformed JSON, bad field values, refused by the broker's rules.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 400 for a declaration a definitions import makes and the broker
    /// refuses with an AMQP error: RabbitMQ reports the `#amqp_error{}`
    /// record as an Erlang term in JSON (tuples as lists, atoms as
    /// strings, the text's charlist as a list of its bytes):
    /// `["amqp_error", "precondition_failed", [105, 110, …], "none"]`.
    #[error("bad request: {name} - {text}")]
    AmqpError {
        /// The AMQP error's name, e.g. `precondition_failed`.
        name: &'static str,
        /// The reply text (without the `PRECONDITION_FAILED - ` prefix).
        text: String,
    },
    /// 401: no or wrong credentials (asks for basic auth).
    #[error("not authorized: {0}")]
    Unauthorized(String),
    /// Authenticated, but lacking a tag, vhost access or a permission.
    /// RabbitMQ answers these with 401 too (`not_authorised`), never 403.
    #[error("not authorised: {0}")]
    NotAuthorised(String),
    /// 404: no such vhost, queue, exchange, user, ...
    #[error("not found")]
    NotFound,
    /// 405: the path exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 503: the cluster cannot act now (no leader elected: lost majority).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// 500: the broker failed (I/O); never caused by input alone.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// Status code.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::AmqpError { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) | ApiError::NotAuthorised(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// RabbitMQ's (error, reason) pair.
    fn body(&self) -> (&'static str, serde_json::Value) {
        let s = |r: &str| serde_json::Value::String(r.to_owned());
        match self {
            ApiError::BadRequest(r) => ("bad_request", s(r)),
            ApiError::AmqpError { name, text } => (
                "bad_request",
                serde_json::json!(["amqp_error", name, text.as_bytes(), "none"]),
            ),
            ApiError::Unauthorized(r) => ("not_authorized", s(r)),
            ApiError::NotAuthorised(r) => ("not_authorised", s(r)),
            ApiError::NotFound => ("Object Not Found", s("Not Found")),
            ApiError::MethodNotAllowed => ("method_not_allowed", s("Method Not Allowed")),
            ApiError::Unavailable(r) => ("service_unavailable", s(r)),
            ApiError::Internal(r) => ("internal_error", s(r)),
        }
    }

    /// A body that does not parse as JSON of the expected shape.
    pub fn bad_json(e: impl std::fmt::Display) -> Self {
        ApiError::BadRequest(format!("failed to decode JSON: {e}"))
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        let text = e.to_string();
        match e.kind() {
            ErrorKind::NotFound => ApiError::NotFound,
            ErrorKind::AccessRefused => ApiError::NotAuthorised(text),
            ErrorKind::PreconditionFailed
            | ErrorKind::ResourceError
            | ErrorKind::ResourceLocked
            | ErrorKind::CommandInvalid
            | ErrorKind::NotAllowed
            | ErrorKind::NotImplemented => ApiError::BadRequest(text),
            // Input the AMQP side answers with 541 as RabbitMQ does (a
            // consistent-hash exchange with a non-string hash-header);
            // RabbitMQ's API says 400 there.
            ErrorKind::InputCrash => ApiError::BadRequest(if text.is_empty() {
                "internal_error".into()
            } else {
                text
            }),
            _ => ApiError::Internal(text),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "management API request failed");
        }
        let (error, reason) = self.body();
        let body = serde_json::json!({ "error": error, "reason": reason });
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"RabbitMQ Management\""),
            );
        }
        resp
    }
}

/// Middleware: axum's own extractor rejections (a path segment that is
/// not UTF-8 after percent-decoding, a malformed query string) are plain
/// text; they become the API's JSON error with the same status.
pub async fn json_rejections(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let resp = next.run(req).await;
    let plain = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !plain || !resp.status().is_client_error() {
        return resp;
    }
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let reason = String::from_utf8_lossy(&body).into_owned();
    let json = serde_json::json!({ "error": "bad_request", "reason": reason });
    (status, axum::Json(json)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_errors_map_to_client_errors() {
        let nf = CoreError::request(ErrorKind::NotFound, "no queue 'q'".to_string());
        assert_eq!(ApiError::from(nf).status(), StatusCode::NOT_FOUND);
        let pf = CoreError::request(ErrorKind::PreconditionFailed, "x".to_string());
        assert_eq!(ApiError::from(pf).status(), StatusCode::BAD_REQUEST);
        let ar = CoreError::request(ErrorKind::AccessRefused, "x".to_string());
        assert_eq!(ApiError::from(ar).status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn amqp_errors_are_erlang_terms_with_the_text_as_bytes() {
        let e = ApiError::AmqpError {
            name: "precondition_failed",
            text: "a 'é'".into(),
        };
        assert_eq!(e.to_string(), "bad request: precondition_failed - a 'é'");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            e.body(),
            (
                "bad_request",
                serde_json::json!([
                    "amqp_error",
                    "precondition_failed",
                    [97, 32, 39, 195, 169, 39],
                    "none"
                ])
            )
        );
    }

    #[test]
    fn input_crashes_are_client_errors_internal_faults_are_not() {
        let crash = ApiError::from(CoreError::request(ErrorKind::InputCrash, String::new()));
        assert_eq!(crash.status(), StatusCode::BAD_REQUEST);
        assert_eq!(crash.body().1, "internal_error");
        // An internal fault stays a 500, request-scoped or not.
        let internal = CoreError::request(ErrorKind::Internal, "disk".to_string());
        assert_eq!(
            ApiError::from(internal).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let io = CoreError::Io(std::io::Error::other("disk"));
        assert_eq!(
            ApiError::from(io).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
