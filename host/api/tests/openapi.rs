//! The OpenAPI document is complete: every route is in it, every operation in it is routed,
//! and every operation documents its errors.

mod support;

use std::path::Path;

use serde_json::Value;
use support::{Backend, Harness, expect_json};

#[tokio::test]
async fn spec_is_openapi_3_1_and_matches_the_router() {
    let h = Harness::start(Backend::Sqlite).await;
    let spec = expect_json(
        h.app
            .client
            .get(h.app.url("/api-doc/openapi.json"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        spec["openapi"]
    );
    assert_eq!(spec, serde_json::to_value(everruns_api::openapi()).unwrap());

    let paths = spec["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            operations += 1;
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path} documents no success response"
            );
            if path.starts_with("/v1/") {
                assert!(responses.contains_key("401"), "{method} {path} lacks 401");
                // `/v1/me` names no resource: nothing there can be missing.
                if path != "/v1/me" {
                    assert!(responses.contains_key("404"), "{method} {path} lacks 404");
                }
                let problem = &responses["401"]["content"]["application/problem+json"];
                assert!(
                    problem.is_object(),
                    "{method} {path}: 401 is not problem+json"
                );
            }
            // The route exists in the router: the server answers with anything but
            // "no such route" or "method not allowed".
            let concrete = path.replace("{id}", "zzz");
            let request = h
                .app
                .client
                .request(method.to_uppercase().parse().unwrap(), h.app.url(&concrete))
                .bearer_auth(&h.app.api_key)
                .header("content-type", "application/json")
                .body("{}");
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_ne!(status, 405, "{method} {path} is in the spec but not routed");
            assert_ne!(
                body["type"], "https://everruns.dev/problems/no-such-route",
                "{method} {path} is in the spec but not routed"
            );
        }
    }
    assert!(operations >= 13, "only {operations} operations documented");

    let swagger = h
        .app
        .client
        .get(h.app.url("/swagger-ui/"))
        .send()
        .await
        .unwrap();
    assert_eq!(swagger.status(), 200);
    assert!(swagger.text().await.unwrap().contains("swagger"));
    h.finish().await;
}

/// Routes registered with plain axum (`.route(...)`) would be missing from the spec; every
/// route must go through utoipa-axum's `routes!`, which registers it in both.
#[test]
fn no_route_bypasses_the_spec() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offenders = Vec::new();
    visit(&src, &mut |file, text| {
        // `/mcp` speaks JSON-RPC (MCP), described by its own specification, not OpenAPI.
        if file.ends_with("mcp.rs") {
            return;
        }
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for needle in [".route(", ".route_service(", ".nest(", ".nest_service("] {
                if code.contains(needle) {
                    offenders.push(format!("{}:{}: {}", file.display(), n + 1, code));
                }
            }
        }
    });
    assert!(
        offenders.is_empty(),
        "undocumented routes:\n{}",
        offenders.join("\n")
    );
}

fn visit(dir: &Path, f: &mut dyn FnMut(&Path, &str)) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            visit(&path, f);
        } else if path.extension().is_some_and(|e| e == "rs") {
            f(&path, &std::fs::read_to_string(&path).unwrap());
        }
    }
}
