//! The web UI: a few static files (plain HTML, CSS and ES modules under
//! `crates/ferry-http/ui/`) compiled into the binary and served at `/` and
//! `/ui/...` without authentication; the page itself logs in to the
//! management API with basic auth, so these routes expose nothing but code.
//!
//! Every answer is `Cache-Control: no-cache` with a strong ETag (a hash of
//! the file): a browser revalidates each load and gets a 304 until a new
//! binary ships different files, so an upgrade never runs stale scripts.
//! A strict Content-Security-Policy (scripts, styles and fetches from this
//! origin only, no inline code) backs up the page's own escaping.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    etag: u64,
}

macro_rules! asset {
    ($name:literal, $ct:expr) => {{
        const BODY: &[u8] = include_bytes!(concat!("../ui/", $name));
        Asset {
            name: $name,
            content_type: $ct,
            body: BODY,
            etag: fnv1a(BODY),
        }
    }};
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: [Asset; 9] = [
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("chart.js", JS),
    asset!("views.js", JS),
    asset!("admin.js", JS),
    asset!("favicon.svg", "image/svg+xml"),
];

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; form-action 'none'; \
    frame-ancestors 'none'; base-uri 'none'";

/// 64-bit FNV-1a, at compile time: the ETag of an embedded file.
const fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < b.len() {
        h ^= b[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

fn serve(a: &'static Asset, req: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", a.etag);
    let fresh = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = a.body.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(a.content_type),
        );
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

async fn index(req: HeaderMap) -> Response {
    match find("index.html") {
        Some(a) => serve(a, &req),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn file(Path(name): Path<String>, req: HeaderMap) -> Response {
    match find(&name) {
        Some(a) => serve(a, &req),
        None => crate::ApiError::NotFound.into_response(),
    }
}

/// `/`, `/ui/` (the page) and `/ui/{file}` (its assets).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/{file}", get(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_embedded_and_named_once() {
        for a in &ASSETS {
            assert!(!a.body.is_empty(), "{} is empty", a.name);
            assert_eq!(ASSETS.iter().filter(|b| b.name == a.name).count(), 1);
        }
        assert!(find("index.html").is_some());
        assert!(find("../lib.rs").is_none());
    }

    #[test]
    fn etag_revalidation_answers_304() {
        let Some(a) = find("app.js") else {
            panic!("app.js is not embedded")
        };
        let first = serve(a, &HeaderMap::new());
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.headers()[header::CONTENT_TYPE], JS);
        assert_eq!(first.headers()[header::CACHE_CONTROL], "no-cache");
        let tag = first.headers()[header::ETAG].clone();
        let mut req = HeaderMap::new();
        req.insert(header::IF_NONE_MATCH, tag);
        assert_eq!(serve(a, &req).status(), StatusCode::NOT_MODIFIED);
        req.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"0\""));
        assert_eq!(serve(a, &req).status(), StatusCode::OK);
    }

    #[test]
    fn modules_import_only_embedded_modules() {
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let src = std::str::from_utf8(a.body).unwrap_or_default();
            for part in src.split("from './").skip(1) {
                let name = part.split('\'').next().unwrap_or_default();
                assert!(find(name).is_some(), "{} imports ./{name}", a.name);
            }
        }
    }

    #[test]
    fn index_references_only_embedded_files() {
        let html =
            std::str::from_utf8(find("index.html").map_or(&[][..], |a| a.body)).unwrap_or_default();
        for part in html.split("/ui/").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                .collect();
            assert!(find(&name).is_some(), "index.html links /ui/{name}");
        }
    }
}
