//! The set of loaded plugins keyed by id, and the plugins-directory scanner that keeps
//! it in sync: added, changed and removed plugin directories are noticed by polling
//! (file sizes, mtimes and inodes), so it works on every filesystem, including network
//! mounts and bind mounts where inotify is unreliable.
//!
//! Replacing a plugin swaps an `Arc`: in-flight calls finish on the version they started
//! with. A plugin that fails to load is recorded with the reason; if an older version
//! from the same directory is loaded, it keeps serving until the directory is removed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use crate::id::CapabilityId;
use crate::manifest::MANIFEST_FILE;
use crate::plugin::Plugin;

/// A plugin directory that failed to load.
#[derive(Debug, Clone)]
pub struct LoadFailure {
    /// The plugin directory.
    pub dir: PathBuf,
    /// The error, with its causes, on one line.
    pub error: String,
    /// When it failed.
    pub at: SystemTime,
}

/// What one scan changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// Newly loaded ids.
    pub added: Vec<CapabilityId>,
    /// Ids whose plugin was replaced by a new load.
    pub replaced: Vec<CapabilityId>,
    /// Ids no longer loaded.
    pub removed: Vec<CapabilityId>,
    /// Directories that failed to load in this scan.
    pub failed: Vec<PathBuf>,
}

type PluginMap = BTreeMap<CapabilityId, Arc<Plugin>>;

/// Loaded plugins plus scan bookkeeping.
#[derive(Default)]
pub(crate) struct Registry {
    plugins: RwLock<Arc<PluginMap>>,
    failures: RwLock<BTreeMap<PathBuf, LoadFailure>>,
    fingerprints: Mutex<HashMap<PathBuf, Fingerprint>>,
    /// Serializes scans.
    pub(crate) scan_lock: tokio::sync::Mutex<()>,
}

/// (file name, length, mtime, inode) of every file in a plugin directory.
pub(crate) type Fingerprint = Vec<(String, u64, Option<SystemTime>, u64)>;

impl Registry {
    pub(crate) fn snapshot(&self) -> Arc<PluginMap> {
        // Writers never panic while holding the lock (they only swap an Arc), so a
        // poisoned lock still holds a consistent map.
        self.plugins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Plugin>> {
        let id = CapabilityId::parse(id).ok()?;
        self.snapshot().get(&id).cloned()
    }

    fn update(&self, f: impl FnOnce(&mut PluginMap)) {
        let mut guard = self.plugins.write().unwrap_or_else(|p| p.into_inner());
        let mut map = (**guard).clone();
        f(&mut map);
        *guard = Arc::new(map);
    }

    /// Inserts or replaces; returns the previous plugin with that id.
    pub(crate) fn insert(&self, plugin: Arc<Plugin>) -> Option<Arc<Plugin>> {
        let mut old = None;
        self.update(|map| old = map.insert(plugin.id().clone(), plugin));
        old
    }

    pub(crate) fn remove(&self, id: &CapabilityId) -> Option<Arc<Plugin>> {
        let mut old = None;
        self.update(|map| old = map.remove(id));
        old
    }

    pub(crate) fn failures(&self) -> Vec<LoadFailure> {
        self.failures
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub(crate) fn set_failure(&self, dir: &Path, error: String) {
        self.failures
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                dir.to_path_buf(),
                LoadFailure {
                    dir: dir.to_path_buf(),
                    error,
                    at: SystemTime::now(),
                },
            );
    }

    pub(crate) fn clear_failure(&self, dir: &Path) {
        self.failures
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(dir);
    }

    /// Records `fp` for `dir`; returns whether it differs from the last one seen.
    pub(crate) fn fingerprint_changed(&self, dir: &Path, fp: Fingerprint) -> bool {
        let mut map = self.fingerprints.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(dir) == Some(&fp) {
            return false;
        }
        map.insert(dir.to_path_buf(), fp);
        true
    }

    /// Forgets the plugin directories of `root` not in `present` (those of other roots are
    /// left alone: several plugins directories share one registry); returns them.
    pub(crate) fn forget_missing(&self, root: &Path, present: &[PathBuf]) -> Vec<PathBuf> {
        let mut map = self.fingerprints.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<PathBuf> = map
            .keys()
            .filter(|d| d.parent() == Some(root) && !present.contains(d))
            .cloned()
            .collect();
        for d in &gone {
            map.remove(d);
        }
        gone
    }
}

/// Plugin directories under `root`: non-hidden subdirectories holding a manifest.
pub(crate) fn plugin_dirs(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() && path.join(MANIFEST_FILE).is_file() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// The fingerprint of a plugin directory (top-level files only).
pub(crate) fn fingerprint(dir: &Path) -> std::io::Result<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let mut fp = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_file() {
            fp.push((
                entry.file_name().to_string_lossy().into_owned(),
                meta.len(),
                meta.modified().ok(),
                meta.ino(),
            ));
        }
    }
    fp.sort();
    Ok(fp)
}
