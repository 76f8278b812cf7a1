//! The plugin workflow through the `everruns` binary: a fresh data directory lists the
//! built-ins as loaded; `plugin new` scaffolds, in a directory outside the source tree, a
//! Rust plugin that carries its SDK (nothing refers back to the checkout) and builds for
//! wasm32-wasip2, and Python and JavaScript plugins that build with their own scripts; each
//! passes `plugin check`, installs, loads and answers.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use everruns_runtime::{
    CallContext, MemoryKv, MemorySecrets, Runtime, RuntimeConfig, ToolCall, ToolError, ToolFailure,
    ToolOutput,
};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_everruns");

fn everruns(data_dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir")
        .arg(data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("EVERRUNS_DATABASE_URL")
        .env_remove("EVERRUNS_DATA_DIR")
        .env_remove("EVERRUNS_BUILTIN_PLUGINS")
        .env_remove("EVERRUNS_DISABLED_BUILTIN_PLUGINS")
        .current_dir(data_dir);
    cmd
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run everruns");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn a_fresh_data_directory_lists_the_builtins_as_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let text = run_ok(everruns(dir.path()).args(["plugin", "list"]));
    for id in [
        "current_time",
        "web_fetch",
        "session_files",
        "todo",
        "memory",
    ] {
        assert!(
            text.lines().any(|l| l == format!("{id}\t0.1.0\tloaded")),
            "{id} not loaded:\n{text}"
        );
    }
    assert!(!text.contains("failed"), "{text}");

    // An operator can turn one off (to install a replacement) or all of them.
    let text = run_ok(
        everruns(dir.path())
            .args(["plugin", "list"])
            .env("EVERRUNS_DISABLED_BUILTIN_PLUGINS", "[web_fetch]"),
    );
    assert!(!text.contains("web_fetch"), "{text}");
    assert!(text.contains("memory\t0.1.0\tloaded"), "{text}");
    let text = run_ok(
        everruns(dir.path())
            .args(["plugin", "list"])
            .env("EVERRUNS_BUILTIN_PLUGINS", "false"),
    );
    assert!(text.starts_with("no plugins"), "{text}");
    let out = everruns(dir.path())
        .args(["plugin", "list"])
        .env("EVERRUNS_DISABLED_BUILTIN_PLUGINS", "[wbe_fetch]")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("disabled_builtin_plugins") && stderr.contains("wbe_fetch"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaffolded_rust_plugin_builds_installs_and_answers() {
    let work = tempfile::tempdir().unwrap();
    let project = work.path().join("hello-tool");
    let data = work.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let text = run_ok(
        everruns(&data)
            .args(["plugin", "new", "hello-tool", "--lang", "rust", "--dir"])
            .arg(&project),
    );
    assert!(
        text.contains("capability.toml") && text.contains("src/lib.rs"),
        "{text}"
    );
    // Self-contained: the SDK is in the project, and no path leads back to this checkout.
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap();
    assert!(project.join("everruns-sdk/wit/capability.wit").is_file());
    for file in ["Cargo.toml", "README.md", "build.sh"] {
        let text = std::fs::read_to_string(project.join(file)).unwrap();
        assert!(
            !text.contains(checkout.to_str().unwrap()) && !text.contains("{{"),
            "{file}: {text}"
        );
    }
    let out = everruns(&data)
        .args(["plugin", "new", "Bad Name", "--lang", "rust"])
        .output()
        .unwrap();
    assert!(!out.status.success());

    // The template's own build script, as a user runs it (a shared target directory keeps
    // the SDK's dependencies compiled between test runs).
    let status = Command::new("bash")
        .arg("build.sh")
        .current_dir(&project)
        .env(
            "CARGO_TARGET_DIR",
            everruns_testkit::guests::target_dir().join("scaffolded-plugins"),
        )
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("run build.sh");
    assert!(status.success(), "the scaffolded plugin does not build");
    assert!(project.join("hello_tool.wasm").is_file());

    let text = run_ok(everruns(&data).args(["plugin", "check"]).arg(&project));
    assert!(text.contains("greet: Greets someone by name"), "{text}");
    // A scaffolded plugin targets the current interface.
    assert!(
        text.contains("interface:   everruns:capability@0.2.0"),
        "{text}"
    );
    run_ok(everruns(&data).args(["plugin", "install"]).arg(&project));
    let text = run_ok(everruns(&data).args(["plugin", "list"]));
    assert!(text.contains("hello-tool\t0.1.0\tloaded"), "{text}");

    let runtime = Runtime::new(
        RuntimeConfig {
            max_concurrent_calls: 4,
            ..RuntimeConfig::default()
        },
        Arc::new(MemoryKv::default()),
        Arc::new(MemorySecrets::default()),
    )
    .unwrap();
    let plugin = runtime
        .load_plugin(&data.join("plugins/hello-tool"))
        .await
        .unwrap();
    let ctx = CallContext {
        agent_id: "agt_1".into(),
        session_id: "ses_1".into(),
        run_id: "run_1".into(),
        ..CallContext::default()
    };
    let greet = |arguments| ToolCall {
        name: "greet".into(),
        arguments,
    };
    for n in 1..=2 {
        let out = plugin.call_tool(&ctx, &greet(json!({"name": "Ada"}))).await;
        match out.result {
            Ok(ToolOutput::Text(t)) => {
                assert_eq!(t, format!("Hello, Ada! (greeting #{n} in this session)"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let out = plugin.call_tool(&ctx, &greet(json!({"name": 7}))).await;
    match out.result {
        Err(ToolFailure::Plugin(ToolError::InvalidArguments(m))) => {
            assert!(m.starts_with("name: invalid type"), "{m}")
        }
        other => panic!("unexpected {other:?}"),
    }
    let prompt = plugin.system_prompt(&ctx).await.unwrap().unwrap();
    assert!(prompt.contains("hello-tool__greet"), "{prompt}");
}

/// `plugin new --lang python|js` through the binary, built with the scaffold's own script
/// (which installs its toolchain into the project), checked, installed and called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaffolded_python_and_js_plugins_build_install_and_answer() {
    use everruns_testkit::polyglot::{self, Lang};
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for (lang, flag, id) in [
        (Lang::Python, "python", "hello-py"),
        (Lang::Js, "js", "hello-js"),
    ] {
        let project = work.path().join(id);
        run_ok(
            everruns(&data)
                .args(["plugin", "new", id, "--lang", flag, "--dir"])
                .arg(&project),
        );
        let dir = project.clone();
        tokio::task::spawn_blocking(move || polyglot::build_scaffold(lang, &dir))
            .await
            .unwrap();
        let text = run_ok(everruns(&data).args(["plugin", "check"]).arg(&project));
        assert!(text.contains("greet"), "{text}");
        assert!(
            text.contains("interface:   everruns:capability@0.2.0"),
            "{text}"
        );
        run_ok(everruns(&data).args(["plugin", "install"]).arg(&project));
        let text = run_ok(everruns(&data).args(["plugin", "list"]));
        assert!(text.contains(&format!("{id}\t0.1.0\tloaded")), "{text}");
    }
    let runtime = Runtime::new(
        RuntimeConfig {
            max_concurrent_calls: 4,
            ..RuntimeConfig::default()
        },
        Arc::new(MemoryKv::default()),
        Arc::new(MemorySecrets::default()),
    )
    .unwrap();
    let ctx = CallContext {
        agent_id: "agt_1".into(),
        session_id: "ses_1".into(),
        run_id: "run_1".into(),
        ..CallContext::default()
    };
    for id in ["hello-py", "hello-js"] {
        let plugin = runtime
            .load_plugin(&data.join("plugins").join(id))
            .await
            .unwrap();
        assert_eq!(plugin.wit_version(), "0.2.0");
        assert!(plugin.hooks().is_empty(), "{:?}", plugin.hooks());
        let prompt = plugin.system_prompt(&ctx).await.unwrap().unwrap();
        assert!(prompt.contains("`greet`"), "{prompt}");
        let greet = |arguments| ToolCall {
            name: "greet".into(),
            arguments,
        };
        for n in 1..=2 {
            match plugin
                .call_tool(&ctx, &greet(json!({"name": "Ada"})))
                .await
                .result
            {
                Ok(ToolOutput::Text(t)) => {
                    assert_eq!(t, format!("Hello, Ada! (greeting number {n})"), "{id}")
                }
                other => panic!("{id}: unexpected {other:?}"),
            }
        }
        match plugin
            .call_tool(&ctx, &greet(json!({"name": 7})))
            .await
            .result
        {
            Err(ToolFailure::Plugin(ToolError::InvalidArguments(m))) => {
                assert_eq!(m, "`name`: expected string, got integer", "{id}")
            }
            other => panic!("{id}: unexpected {other:?}"),
        }
    }
}
