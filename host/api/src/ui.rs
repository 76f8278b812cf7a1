//! The web UI: static HTML/CSS/ES-module files from `host/api/ui/`, embedded in the binary and
//! served at `/` (the page) and `/ui/...` (its assets) with a strict Content-Security-Policy.
//!
//! These are not API operations, so they are not in the OpenAPI document: the router's fallback
//! calls [`serve`], which answers the UI paths and turns every other unknown path into the
//! usual `no-such-route` problem. No `.route(` is needed, so every route that *is* registered
//! still comes from utoipa-axum's `routes!` (see `tests/openapi.rs`).

use std::sync::LazyLock;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Every UI response carries it. Scripts and styles come only from this origin (no inline code,
/// no `eval`), the page talks only to this origin, cannot be framed, and the DOM refuses HTML
/// strings altogether (Trusted Types with no policy: `innerHTML = "..."` throws).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
    manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
    require-trusted-types-for 'script'; trusted-types 'none'";

/// One embedded file.
struct Asset {
    /// Path under `/ui/`, or `""` for the page at `/`.
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

macro_rules! asset {
    ($path:literal, $file:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            bytes: include_bytes!(concat!("../ui/", $file)),
        }
    };
}

/// The UI's files; a test checks that this list and the `ui/` directory agree.
const ASSETS: &[Asset] = &[
    asset!("", "index.html", HTML),
    asset!("app.css", "app.css", CSS),
    asset!("icon.svg", "icon.svg", SVG),
    asset!("js/app.js", "js/app.js", JS),
    asset!("js/api.js", "js/api.js", JS),
    asset!("js/dom.js", "js/dom.js", JS),
    asset!("js/markdown.js", "js/markdown.js", JS),
    asset!("js/sse.js", "js/sse.js", JS),
    asset!("js/schema_form.js", "js/schema_form.js", JS),
    asset!("js/views/signin.js", "js/views/signin.js", JS),
    asset!("js/views/chat.js", "js/views/chat.js", JS),
    asset!("js/views/agents.js", "js/views/agents.js", JS),
    asset!("js/views/capabilities.js", "js/views/capabilities.js", JS),
    asset!("js/views/settings.js", "js/views/settings.js", JS),
];

/// Strong ETags (SHA-256 of the content), computed once.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let digest = hex::encode(Sha256::digest(a.bytes));
            // Hex digits and quotes are always a valid header value.
            HeaderValue::from_str(&format!("\"{}\"", &digest[..32])).expect("hex is ASCII")
        })
        .collect()
});

/// The asset at a request path: `/` or `/index.html` is the page, `/ui/x` is asset `x`.
fn find(path: &str) -> Option<usize> {
    let key = match path {
        "/" | "/index.html" => "",
        _ => path.strip_prefix("/ui/").filter(|p| !p.is_empty())?,
    };
    ASSETS.iter().position(|a| a.path == key)
}

/// The router's fallback: serves the UI's paths, and a `no-such-route` problem for the rest.
pub(crate) async fn serve(request: Request) -> Response {
    let Some(index) = find(request.uri().path()) else {
        return ApiError::no_route(request.uri().path()).into_response();
    };
    let method = request.method();
    if method != Method::GET && method != Method::HEAD {
        return ApiError::method_not_allowed(
            method.as_str(),
            Some(HeaderValue::from_static("GET, HEAD")),
        )
        .into_response();
    }
    let asset = &ASSETS[index];
    let etag = &ETAGS[index];
    let fresh = if_none_match(request.headers(), etag);
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else if method == Method::HEAD {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(asset.bytes))
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    if !fresh {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(asset.bytes.len()));
    }
    headers.insert(header::ETAG, etag.clone());
    // Revalidate every time (cheap: 304 on a matching ETag), so an upgraded server is never
    // mixed with stale modules of the old one.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// Whether the client's `If-None-Match` names `etag` (or `*`).
fn if_none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Some(value) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let etag = etag.to_str().unwrap_or_default();
    value
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Every file under `ui/` is embedded, and every embedded path exists.
    #[test]
    fn assets_match_the_ui_directory() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
        let mut on_disk = Vec::new();
        collect(&root, &root, &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS
            .iter()
            .map(|a| {
                if a.path.is_empty() {
                    "index.html".to_owned()
                } else {
                    a.path.to_owned()
                }
            })
            .collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                collect(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap();
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }

    #[test]
    fn paths_resolve_to_assets() {
        assert_eq!(find("/"), Some(0));
        assert_eq!(find("/index.html"), Some(0));
        assert!(find("/ui/js/app.js").is_some());
        assert_eq!(find("/ui/"), None);
        assert_eq!(find("/ui/../Cargo.toml"), None);
        assert_eq!(find("/v1/agents"), None);
    }

    #[test]
    fn if_none_match_compares_strong_and_weak_tags() {
        let etag = HeaderValue::from_static("\"abc\"");
        let mut headers = HeaderMap::new();
        assert!(!if_none_match(&headers, &etag));
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"abc\""),
        );
        assert!(if_none_match(&headers, &etag));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"x\""));
        assert!(!if_none_match(&headers, &etag));
    }
}
