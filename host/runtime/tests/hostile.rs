//! Hostile plugins are contained: each attack ends with a clear, typed error (or a
//! denied capability), while well-behaved calls running at the same time succeed.

mod support;

use std::time::{Duration, Instant};

use everruns_runtime::{CallContext, Error, Runtime, ToolCall, ToolError, ToolFailure, ToolOutput};
use serde_json::{Value, json};
use support::*;

async fn setup() -> (tempfile::TempDir, Runtime) {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    plugin_dir(&plugins, "wb", "well-behaved", WELL_BEHAVED);
    plugin_dir(&plugins, "hostile", "hostile", HOSTILE);
    let runtime = runtime();
    let report = runtime.sync_dir(&plugins).await;
    assert_eq!(report.added.len(), 2, "{report:?} {:?}", runtime.failures());
    (tmp, runtime)
}

fn ctx() -> CallContext {
    CallContext {
        agent_id: "agt_h".into(),
        session_id: "ses_h".into(),
        run_id: "run_h".into(),
        idempotency_key: None,
        config: None,
    }
}

async fn hostile(runtime: &Runtime, tool: &str, args: Value) -> Result<ToolOutput, ToolFailure> {
    let call = ToolCall {
        name: tool.into(),
        arguments: args,
    };
    runtime
        .call_tool("hostile", &ctx(), &call)
        .await
        .unwrap()
        .result
}

/// Runs `attack` while 20 well-behaved calls run alongside; all of those must succeed.
async fn contained<F, T>(runtime: &Runtime, attack: F) -> T
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let attack = tokio::spawn(attack);
    let mut calls = Vec::new();
    for i in 0..20 {
        let runtime = runtime.clone();
        calls.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 10)).await;
            let call = ToolCall {
                name: "echo".into(),
                arguments: json!({"i": i}),
            };
            let started = Instant::now();
            let out = runtime
                .call_tool("well-behaved", &ctx(), &call)
                .await
                .unwrap();
            match out.result {
                Ok(ToolOutput::Json(v)) => assert_eq!(v["args"]["i"], json!(i)),
                other => panic!("well-behaved call failed during attack: {other:?}"),
            }
            started.elapsed()
        }));
    }
    for call in calls {
        let took = call.await.unwrap();
        assert!(
            took < Duration::from_secs(2),
            "well-behaved call took {took:?}"
        );
    }
    attack.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_times_out() {
    let (_tmp, runtime) = setup().await;
    let rt = runtime.clone();
    let started = Instant::now();
    let result = contained(
        &runtime,
        async move { hostile(&rt, "spin", json!({})).await },
    )
    .await;
    assert!(
        matches!(result, Err(ToolFailure::Runtime(Error::Timeout(1000)))),
        "{result:?}"
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "timeout took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_hits_the_limit() {
    let (_tmp, runtime) = setup().await;
    let rt = runtime.clone();
    let result = contained(&runtime, async move {
        hostile(&rt, "memory-bomb", json!({})).await
    })
    .await;
    assert!(
        matches!(
            result,
            Err(ToolFailure::Runtime(Error::MemoryLimit { limit_mib: 16 }))
        ),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_overflows_the_stack() {
    let (_tmp, runtime) = setup().await;
    let rt = runtime.clone();
    let result = contained(
        &runtime,
        async move { hostile(&rt, "recurse", json!({})).await },
    )
    .await;
    assert!(
        matches!(result, Err(ToolFailure::Runtime(Error::StackOverflow))),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_output_is_refused() {
    let (_tmp, runtime) = setup().await;
    let rt = runtime.clone();
    let result = contained(&runtime, async move {
        hostile(&rt, "huge-output", json!({"mib": 8})).await
    })
    .await;
    assert!(
        matches!(
            result,
            Err(ToolFailure::Runtime(Error::OutputTooLarge { size, limit }))
                if size == 8 << 20 && limit == 1 << 20
        ),
        "{result:?}"
    );
    // Just under the limit is fine.
    let ok = hostile(&runtime, "huge-output", json!({"mib": 0}))
        .await
        .unwrap();
    assert_eq!(ok, ToolOutput::Text(String::new()));
}

fn http_error(result: Result<ToolOutput, ToolFailure>) -> String {
    match result {
        Ok(ToolOutput::Json(v)) => v["error"].as_str().unwrap_or_default().to_owned(),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_to_a_host_not_allowed_is_denied() {
    let (_tmp, runtime) = setup().await;
    let rt = runtime.clone();
    let result = contained(&runtime, async move {
        hostile(&rt, "http-get", json!({"url": "http://example.com/"})).await
    })
    .await;
    assert_eq!(http_error(result), "ErrorCode::HttpRequestDenied");
    // Same host, other port: also denied.
    let result = hostile(
        &runtime,
        "http-get",
        json!({"url": "http://localhost:8080/"}),
    )
    .await;
    assert_eq!(http_error(result), "ErrorCode::HttpRequestDenied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_to_an_allowed_name_resolving_to_a_private_address_is_refused() {
    let (_tmp, runtime) = setup().await;
    let rt = runtime.clone();
    let result = contained(&runtime, async move {
        hostile(&rt, "http-get", json!({"url": "http://localhost:9/"})).await
    })
    .await;
    assert_eq!(http_error(result), "ErrorCode::DestinationIpProhibited");
    let result = hostile(&runtime, "http-get", json!({"url": "http://127.0.0.1:9/"})).await;
    assert_eq!(http_error(result), "ErrorCode::DestinationIpProhibited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_granted_by_name_only() {
    let (_tmp, runtime) = setup().await;
    let rt = runtime.clone();
    let result = contained(&runtime, async move {
        hostile(&rt, "secret", json!({"name": "OTHER"})).await
    })
    .await;
    assert!(
        matches!(&result, Err(ToolFailure::Plugin(ToolError::Denied(m))) if m == "SecretError::NotGranted"),
        "{result:?}"
    );
    let granted = hostile(&runtime, "secret", json!({"name": "GRANTED"}))
        .await
        .unwrap();
    assert_eq!(granted, ToolOutput::Text("len=6".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_files_env_sockets_or_stdin() {
    let (_tmp, runtime) = setup().await;
    let rt = runtime.clone();
    let result = contained(&runtime, async move {
        hostile(&rt, "sandbox-probe", json!({})).await
    })
    .await;
    let Ok(ToolOutput::Json(v)) = result else {
        panic!("unexpected {result:?}")
    };
    for (path, outcome) in v["files"].as_object().unwrap() {
        assert!(
            outcome.as_str().unwrap().starts_with("error"),
            "{path}: {outcome}"
        );
    }
    assert!(v["read_dir"].as_str().unwrap().starts_with("error"), "{v}");
    assert!(v["write"].as_str().unwrap().starts_with("error"), "{v}");
    assert_eq!(v["env"], json!(0));
    assert!(v["tcp"].as_str().unwrap().starts_with("error"), "{v}");
    assert!(v["dns"].as_str().unwrap().starts_with("error"), "{v}");
    assert_eq!(v["stdin"], json!("read 0 bytes"));
    assert_eq!(v["clock_ok"], json!(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_stays_healthy_after_every_attack() {
    let (_tmp, runtime) = setup().await;
    let attacks = [
        ("spin", json!({})),
        ("memory-bomb", json!({})),
        ("recurse", json!({})),
        ("huge-output", json!({"mib": 4})),
    ];
    let mut tasks = Vec::new();
    for _ in 0..3 {
        for (tool, args) in attacks.clone() {
            let runtime = runtime.clone();
            tasks.push(tokio::spawn(
                async move { hostile(&runtime, tool, args).await },
            ));
        }
    }
    for t in tasks {
        let result = t.await.unwrap();
        assert!(
            matches!(&result, Err(ToolFailure::Runtime(e)) if e.is_call_failure()),
            "{result:?}"
        );
    }
    assert_eq!(
        runtime.available_slots(),
        runtime.config().max_concurrent_calls as usize
    );
    let call = ToolCall {
        name: "echo".into(),
        arguments: json!({}),
    };
    let out = runtime
        .call_tool("well-behaved", &ctx(), &call)
        .await
        .unwrap();
    assert!(out.result.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_budget_stops_a_spinning_plugin() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = HOSTILE.replace("timeout_ms = 1000", "timeout_ms = 5000\nfuel = 5000000");
    let dir = plugin_dir(tmp.path(), "fuel", "hostile", &manifest);
    let runtime = runtime();
    let plugin = runtime.load_plugin(&dir).await.unwrap();
    let call = ToolCall {
        name: "spin".into(),
        arguments: json!({}),
    };
    let started = Instant::now();
    let out = plugin.call_tool(&ctx(), &call).await;
    assert!(
        matches!(out.result, Err(ToolFailure::Runtime(Error::FuelExhausted))),
        "{:?}",
        out.result
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_grants_narrow_what_the_manifest_asks_for() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = plugin_dir(tmp.path(), "hostile", "hostile", HOSTILE);
    let mut config = config(8);
    config
        .grants
        .plugins
        .insert("hostile".into(), everruns_runtime::Grant::nothing());
    let runtime = runtime_with(config, everruns_runtime::MemoryKv::default());
    let plugin = runtime.load_plugin(&dir).await.unwrap();
    assert!(plugin.permissions().allowed_hosts.is_empty());
    assert!(plugin.permissions().secrets.is_empty());
    runtime.insert(plugin);

    let result = hostile(&runtime, "secret", json!({"name": "GRANTED"})).await;
    assert!(
        matches!(&result, Err(ToolFailure::Plugin(ToolError::Denied(m))) if m == "SecretError::NotGranted"),
        "{result:?}"
    );
    let result = hostile(&runtime, "http-get", json!({"url": "http://localhost:9/"})).await;
    assert_eq!(http_error(result), "ErrorCode::HttpRequestDenied");
}

/// A one-shot HTTP server on loopback answering 200 to every request.
async fn local_http_server() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        // Bounded: the test makes two requests.
        for _ in 0..2 {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_http_reaches_the_checked_address_when_private_networks_are_allowed() {
    let port = local_http_server().await;
    let tmp = tempfile::tempdir().unwrap();
    let manifest = HOSTILE.replace(
        "allowed_hosts = [\"http://localhost:9\", \"http://127.0.0.1:9\"]",
        &format!("allowed_hosts = [\"http://localhost:{port}\", \"http://127.0.0.1:{port}\"]"),
    );
    let dir = plugin_dir(tmp.path(), "hostile", "hostile", &manifest);
    let mut config = config(8);
    config.grants.allow_private_networks = true;
    let runtime = runtime_with(config, everruns_runtime::MemoryKv::default());
    runtime.insert(runtime.load_plugin(&dir).await.unwrap());

    for host in ["127.0.0.1", "localhost"] {
        let url = format!("http://{host}:{port}/hello");
        let result = hostile(&runtime, "http-get", json!({"url": url})).await;
        assert!(
            matches!(&result, Ok(ToolOutput::Json(v)) if v["status"] == 200),
            "{host}: {result:?}"
        );
    }
}
