//! On-disk cache of compiled components, keyed by the wasm's sha256 and the engine's
//! compatibility (wasmtime version + `Engine::precompile_compatibility_hash`).
//!
//! Files are written to a temporary name and renamed into place, so a reader never sees
//! a partial file. The directory must be trusted: loading a cache file runs its code.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::{Error, Result};

/// Where a component came from on load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Loaded from the cache, no compilation.
    Hit,
    /// Compiled now (and written to the cache if one is configured).
    Miss,
    /// No cache directory configured: compiled now.
    Disabled,
}

/// The compile cache; `dir: None` disables it.
#[derive(Debug, Clone)]
pub(crate) struct CompileCache {
    dir: Option<PathBuf>,
    engine_key: String,
}

/// Feeds `Hash` output into sha256, giving a hash that is stable across processes
/// (unlike `DefaultHasher`, whose algorithm may change between Rust releases).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        // Only `write` is used; the digest is read with `finalize`.
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl CompileCache {
    pub(crate) fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = ShaHasher(Sha256::new());
        hasher.write(b"wasmtime-48.0.8\0");
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        Self { dir, engine_key }
    }

    /// The cache file a component with this digest would use.
    pub(crate) fn path_for(&self, digest: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{digest}-{}.cwasm", self.engine_key)))
    }

    /// Loads the compiled form of `wasm` (whose sha256 is `digest`), compiling and caching
    /// it on a miss. `source` only names the file in errors.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
        digest: &str,
        source: &Path,
    ) -> Result<(Component, CacheStatus)> {
        let invalid = |e: wasmtime::Error| Error::InvalidComponent {
            path: source.to_path_buf(),
            message: crate::error::chain(&e),
        };
        let Some(path) = self.path_for(digest) else {
            return Ok((
                Component::new(engine, wasm).map_err(invalid)?,
                CacheStatus::Disabled,
            ));
        };
        if let Ok(bytes) = std::fs::read(&path) {
            // Read rather than `deserialize_file`: that one maps the file, and anyone
            // truncating it in place later (a careless copy over it) would crash the
            // process with SIGBUS. A private copy costs a few ms for the largest guests.
            match deserialize_bytes(engine, &bytes) {
                Ok(component) => return Ok((component, CacheStatus::Hit)),
                Err(e) => {
                    // Wasmtime checks the header and version; a stale or truncated file
                    // is recompiled and replaced.
                    tracing::warn!(path = %path.display(), error = %crate::error::chain(&e),
                        "discarding unusable compile cache entry");
                }
            }
        }
        let compiled = engine.precompile_component(wasm).map_err(invalid)?;
        if let Err(e) = write_atomically(&path, &compiled) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write compile cache");
        }
        let component = deserialize_bytes(engine, &compiled).map_err(invalid)?;
        Ok((component, CacheStatus::Miss))
    }
}

#[allow(unsafe_code)]
fn deserialize_bytes(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `bytes` was produced by `Engine::precompile_component` with an engine of
    // the same compatibility hash (it is in the cache key): either a moment ago, or
    // earlier into the cache directory, which only this runtime writes (atomically, via
    // rename) and which is documented as trusted. Wasmtime also validates the header
    // and engine compatibility before using the code.
    unsafe { Component::deserialize(engine, bytes) }
}

/// Writes `bytes` to `path` via a temporary file in the same directory and a rename.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), uniq_suffix()));
    let result = (|| {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn uniq_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Lowercase hex sha256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
