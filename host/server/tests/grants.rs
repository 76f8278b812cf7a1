//! Operator grants from the server configuration (`[plugin_grants.<id>]`) narrow what a
//! plugin's manifest asks for, as `GET /v1/capabilities/{id}` reports.

use everruns_server::PluginGrant;
use everruns_testkit::TestApp;
use serde_json::Value;

async fn capability(app: &TestApp, id: &str) -> Value {
    let response = app
        .get(&format!("/v1/capabilities/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_configured_grant_narrows_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_configured(dir.path(), None, |config| {
        config.builtin_plugins = true;
        // web_fetch asks for any host; the operator allows one site.
        config.plugin_grants.insert(
            "web_fetch".to_owned(),
            PluginGrant {
                allowed_hosts: Some(vec!["https://docs.rs".to_owned()]),
                ..PluginGrant::default()
            },
        );
        // todo asks for key-value state; the operator refuses it.
        config.plugin_grants.insert(
            "todo".to_owned(),
            PluginGrant {
                kv: Some(false),
                ..PluginGrant::default()
            },
        );
    })
    .await;

    let narrowed = capability(&app, "web_fetch").await;
    assert_eq!(narrowed["status"], "loaded", "{narrowed}");
    assert_eq!(
        narrowed["permissions"]["allowed_hosts"],
        serde_json::json!(["https://docs.rs"]),
        "{narrowed}"
    );
    let todo = capability(&app, "todo").await;
    assert!(todo["permissions"]["kv"].is_null(), "{todo}");
    // A plugin without an entry gets what its manifest asks for.
    let memory = capability(&app, "memory").await;
    assert_eq!(memory["status"], "loaded", "{memory}");
    assert!(!memory["permissions"]["kv"].is_null(), "{memory}");
    app.stop().await;
}
