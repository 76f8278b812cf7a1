//! The web UI's files over HTTP: served at `/` and `/ui/...` without a key, with the right
//! content types, ETags (304 on revalidation) and security headers; other methods get 405 and
//! unknown paths still get the `no-such-route` problem. (What the UI does is tested in a real
//! browser: `host/server/tests/browser.rs`.)

mod support;

use support::{Backend, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_files_are_served_with_security_and_cache_headers() {
    let h = Harness::start(Backend::Sqlite).await;
    let client = &h.app.client;

    let page = client.get(h.app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "require-trusted-types-for 'script'",
    ] {
        assert!(csp.contains(directive), "CSP lacks {directive}: {csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-cache");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/ui/js/app.js"></script>"#));
    // No inline script or style for the CSP to refuse.
    assert!(!html.contains("<script>") && !html.contains("<style") && !html.contains("style="));

    for (path, content_type) in [
        ("/ui/js/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let response = client.get(h.app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], content_type, "{path}");
        let etag = response.headers()["etag"].clone();
        assert!(!response.bytes().await.unwrap().is_empty());
        let again = client
            .get(h.app.url(path))
            .header("if-none-match", etag.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(again.headers()["etag"], etag);
        assert!(again.bytes().await.unwrap().is_empty());
    }

    let head = client
        .head(h.app.url("/ui/js/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert!(head.headers()["content-length"].to_str().unwrap() != "0");

    let post = client.post(h.app.url("/")).send().await.unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    assert_eq!(post.headers()["content-type"], "application/problem+json");

    for missing in ["/ui/nope.js", "/ui/", "/ui/../Cargo.toml", "/elsewhere"] {
        let response = client.get(h.app.url(missing)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{missing}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body["type"], "https://everruns.dev/problems/no-such-route",
            "{missing}"
        );
    }
    h.finish().await;
}
