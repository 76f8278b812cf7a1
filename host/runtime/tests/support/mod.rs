//! Test support: builds the guest plugins once per test process and lays out plugin
//! directories and runtimes for the tests.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::PathBuf;
use std::sync::Arc;

use everruns_runtime::{MemoryKv, MemorySecrets, Runtime, RuntimeConfig};

#[allow(unused_imports, reason = "each test binary uses a different part")]
pub use everruns_testkit::guests::{HOSTILE, WELL_BEHAVED, plugin_dir, target_dir, wasm};

pub fn well_behaved_v2_manifest() -> String {
    WELL_BEHAVED.replace("version = \"0.1.0\"", "version = \"0.2.0\"")
}

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
