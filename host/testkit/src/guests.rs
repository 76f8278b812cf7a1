//! Real WASM plugins for tests: builds the test guests (`host/runtime/tests/guests`, their own
//! cargo workspace) once per test process for `wasm32-wasip2`, and lays out plugin directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Manifest of the `well-behaved` guest: tools `greet`, `count` (a KV counter), `ping` and
/// `echo`; a `greeting` config string.
pub const WELL_BEHAVED: &str = r#"
id = "well-behaved"
version = "0.1.0"
description = "A plugin that behaves"
component = "plugin.wasm"

[permissions]
kv = true

[limits]
memory_mib = 16
timeout_ms = 5000

[config]
schema = { type = "object", properties = { greeting = { type = "string" } } }
defaults = { greeting = "hello" }
"#;

/// Manifest of the `hostile` guest: one tool per attack (`spin` loops forever, `memory-bomb`,
/// `recurse`, `huge-output`, `http-get`, `secret`, `sandbox-probe`, `kv-flood`: key-value
/// writes until one fails, which needs `kv = true` added); calls time out after 1 s.
pub const HOSTILE: &str = r#"
id = "hostile"
version = "0.1.0"
description = "Misbehaves on request"
component = "plugin.wasm"

[permissions]
allowed_hosts = ["http://localhost:9", "http://127.0.0.1:9"]
secrets = ["GRANTED"]

[limits]
memory_mib = 16
timeout_ms = 1000
"#;

/// Manifest of the `hooks` guest (WIT 0.2.0): all three hooks, answered as the config says
/// (`before_model`, `before_tool`, `after_tool`; see the guest's `src/lib.rs`), each call
/// counted in kv under `calls/<hook-name>`; tools `echo`, `bump` and `slow_bump` (a kv
/// `counter`). `on_error` and `hook_timeout_ms` are spelled out so tests can `replace` them.
pub const HOOKS: &str = r#"
id = "hooks"
version = "0.1.0"
description = "Answers hooks as its config says"
component = "plugin.wasm"
hooks = ["before-model", "before-tool", "after-tool"]
on_error = "block"

[permissions]
kv = true
kv_scope = "session"

[limits]
memory_mib = 16
timeout_ms = 2000
hook_timeout_ms = 250

[config]
schema = { type = "object", additionalProperties = false, properties = { before_model = { type = "string" }, before_tool = { type = "string" }, after_tool = { type = "string" } } }
defaults = {}
"#;

/// The workspace's target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// Builds the guests once per process (a file lock keeps parallel test processes from
/// building at the same time) and returns the directory holding the `.wasm` files.
pub fn guests() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let guests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/tests/guests");
        let target = target_dir().join("guests");
        std::fs::create_dir_all(&target).expect("create the guest target directory");
        let lock = std::fs::File::create(target.join(".build.lock")).expect("guest build lock");
        lock.lock().expect("lock the guest build");
        // A no-op when the target is installed; rustup fetches it otherwise.
        let _ = Command::new("rustup")
            .args(["target", "add", "wasm32-wasip2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(&cargo)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--target-dir",
            ])
            .arg(&target)
            .current_dir(&guests)
            // Flags meant for the host build must not leak into the guest build.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .status()
            .expect("cannot run cargo to build the guest plugins");
        assert!(
            status.success(),
            "building the guest plugins failed; is the target installed? \
             run `rustup target add wasm32-wasip2`"
        );
        let _ = lock.unlock();
        target.join("wasm32-wasip2/release")
    })
}

/// The compiled guest `name` (crate name).
pub fn wasm(name: &str) -> PathBuf {
    guests().join(format!("{}.wasm", name.replace('-', "_")))
}

/// Creates `root/<dir_name>` with `capability.toml` (`manifest`) and `plugin.wasm` (a copy
/// of guest `guest`).
pub fn plugin_dir(root: &Path, dir_name: &str, guest: &str, manifest: &str) -> PathBuf {
    let dir = root.join(dir_name);
    std::fs::create_dir_all(&dir).expect("create the plugin directory");
    std::fs::copy(wasm(guest), dir.join("plugin.wasm")).expect("copy the guest component");
    std::fs::write(dir.join("capability.toml"), manifest).expect("write the manifest");
    dir
}
