//! Test support: builds the guest plugins once per test process and lays out plugin
//! directories and runtimes for the tests.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use everruns_runtime::{MemoryKv, MemorySecrets, Runtime, RuntimeConfig};

/// The workspace's target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// Builds the guests (`tests/guests`, its own cargo workspace) once per process, with a
/// file lock so parallel test processes do not build at the same time. Returns the
/// directory holding the `.wasm` files.
pub fn guests() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let guests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guests");
        let target = target_dir().join("guests");
        std::fs::create_dir_all(&target).unwrap();
        let lock = std::fs::File::create(target.join(".build.lock")).unwrap();
        lock.lock().unwrap();
        // Make sure the target is there (a no-op when it is; needs rustup otherwise).
        let _ = Command::new("rustup")
            .args(["target", "add", "wasm32-wasip2"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
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
        lock.unlock().unwrap();
        target.join("wasm32-wasip2/release")
    })
}

/// The compiled guest `name` (crate name with `-` as `_`).
pub fn wasm(name: &str) -> PathBuf {
    guests().join(format!("{}.wasm", name.replace('-', "_")))
}

/// Creates `root/<dir_name>` holding `capability.toml` (`manifest`) and `plugin.wasm`
/// (a copy of guest `guest`).
pub fn plugin_dir(root: &Path, dir_name: &str, guest: &str, manifest: &str) -> PathBuf {
    let dir = root.join(dir_name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(wasm(guest), dir.join("plugin.wasm")).unwrap();
    std::fs::write(dir.join("capability.toml"), manifest).unwrap();
    dir
}

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

pub fn well_behaved_v2_manifest() -> String {
    WELL_BEHAVED.replace("version = \"0.1.0\"", "version = \"0.2.0\"")
}

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

/// A compile cache shared by all tests (compiling in the dev profile is slow).
pub fn shared_cache() -> PathBuf {
    target_dir().join("everruns-test-cache")
}

pub fn config(max_concurrent_calls: u32) -> RuntimeConfig {
    RuntimeConfig {
        max_concurrent_calls,
        cache_dir: Some(shared_cache()),
        ..RuntimeConfig::default()
    }
}

pub fn runtime_with(config: RuntimeConfig, kv: MemoryKv) -> Runtime {
    Runtime::new(
        config,
        Arc::new(kv),
        Arc::new(MemorySecrets::new([
            ("GRANTED", "s3cret"),
            ("OTHER", "nope"),
        ])),
    )
    .unwrap()
}

pub fn runtime() -> Runtime {
    runtime_with(config(64), MemoryKv::default())
}
