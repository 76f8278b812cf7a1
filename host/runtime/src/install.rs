//! The operations behind `everruns plugin check | install | list | remove`: validate a
//! plugin directory against the world, copy it atomically into the plugins directory,
//! list what is installed, and remove a plugin by id.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::RuntimeConfig;
use crate::error::{Error, Result};
use crate::host::{MemoryKv, MemorySecrets};
use crate::manifest::{Hook, Limits, MANIFEST_FILE, Manifest};
use crate::permissions::{Grants, Permissions};
use crate::plugin::{CapabilityInfo, Plugin, ToolSpec};
use crate::registry;
use crate::runtime::Runtime;

/// What `check` found: a plugin that loads, links and answers `info`/`tools`.
#[derive(Debug, Clone)]
pub struct PluginReport {
    /// The plugin's directory.
    pub dir: PathBuf,
    /// What the plugin says about itself.
    pub info: CapabilityInfo,
    /// sha256 of the component.
    pub digest: String,
    /// Its tools (default config).
    pub tools: Vec<ToolSpec>,
    /// The component's imports (WASI and Everruns interfaces it uses).
    pub imports: Vec<String>,
    /// What the manifest requests (before operator grants).
    pub requested: Permissions,
    /// Requested limits.
    pub limits: Limits,
    /// The `everruns:capability` version the component targets (`0.1.0`, `0.2.0`).
    pub wit_version: &'static str,
    /// The hooks the host calls (0.2.0).
    pub hooks: Vec<Hook>,
}

impl PluginReport {
    pub(crate) fn from_plugin(plugin: &Plugin) -> Self {
        let m = plugin.manifest();
        Self {
            dir: plugin.dir().to_path_buf(),
            info: plugin.info().clone(),
            digest: plugin.digest().to_owned(),
            tools: plugin.tools().to_vec(),
            imports: plugin.imports().to_vec(),
            requested: Permissions::effective(m, &Grants::default()),
            limits: m.limits,
            wit_version: plugin.wit_version(),
            hooks: plugin.hooks().to_vec(),
        }
    }
}

/// Install progress, for the CLI to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallStep {
    /// Validating the plugin at this path.
    Checking(PathBuf),
    /// Valid; copying into this directory.
    Copying(PathBuf),
    /// An older install of the same id is being replaced.
    Replacing(PathBuf),
    /// Installed here; a running server picks it up on its next scan.
    Installed(PathBuf),
}

/// One entry of `list`.
#[derive(Debug, Clone)]
pub struct InstalledPlugin {
    /// The plugin's directory.
    pub dir: PathBuf,
    /// The manifest, or why it is invalid.
    pub manifest: Result<Manifest, String>,
}

/// The plugin directory for `path` (a directory, or its `capability.toml`).
fn plugin_dir(path: &Path) -> Result<PathBuf> {
    let dir = if path.is_file() {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    } else {
        path.to_path_buf()
    };
    if !dir.join(MANIFEST_FILE).is_file() {
        return Err(Error::Invalid(format!(
            "{} has no {MANIFEST_FILE}",
            dir.display()
        )));
    }
    Ok(dir)
}

impl Runtime {
    /// Validates a plugin with this runtime's engine (so its compile cache warms up).
    pub async fn check(&self, path: &Path) -> Result<PluginReport> {
        let dir = plugin_dir(path)?;
        let plugin = self.load_plugin(&dir).await?;
        Ok(PluginReport::from_plugin(&plugin))
    }
}

/// A small runtime for one-off validation (CLI use): 4 slots, no cache, no backends.
fn scratch_runtime() -> Result<Runtime> {
    Runtime::new(
        RuntimeConfig {
            max_concurrent_calls: 4,
            ..RuntimeConfig::default()
        },
        Arc::new(MemoryKv::default()),
        Arc::new(MemorySecrets::default()),
    )
}

/// Validates the plugin at `path`: manifest, digest, component exports the
/// `everruns:capability/capability@0.1.0` interface and imports only what the host
/// offers, `info()` matches the manifest, `tools()` returns valid schemas.
pub async fn check(path: &Path) -> Result<PluginReport> {
    scratch_runtime()?.check(path).await
}

/// Checks the plugin at `path`, then copies its directory (top-level files) into
/// `plugins_dir/<id>`, replacing an older install atomically (a scanner sees either the
/// old or the new directory, never a half-copied one).
pub async fn install(
    path: &Path,
    plugins_dir: &Path,
    mut progress: impl FnMut(InstallStep),
) -> Result<PluginReport> {
    let src = plugin_dir(path)?;
    progress(InstallStep::Checking(src.clone()));
    let report = check(&src).await?;
    let id = report.info.id.clone();
    let target = plugins_dir.join(&id);
    progress(InstallStep::Copying(target.clone()));

    let io = |what: &str, e| Error::io(what.to_owned(), e);
    std::fs::create_dir_all(plugins_dir).map_err(|e| io("cannot create plugins directory", e))?;
    let staging = plugins_dir.join(format!(".installing-{id}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| io("cannot create staging directory", e))?;
    let copy = || -> std::io::Result<()> {
        for entry in std::fs::read_dir(&src)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::copy(entry.path(), staging.join(entry.file_name()))?;
            }
        }
        Ok(())
    };
    if let Err(e) = copy() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(io("cannot copy plugin", e));
    }
    if target.exists() {
        progress(InstallStep::Replacing(target.clone()));
        let old = plugins_dir.join(format!(".removing-{id}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(&target, &old).map_err(|e| io("cannot move old install aside", e))?;
        std::fs::rename(&staging, &target)
            .map_err(|e| io("cannot move new install in place", e))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&staging, &target).map_err(|e| io("cannot move install in place", e))?;
    }
    progress(InstallStep::Installed(target.clone()));
    Ok(PluginReport {
        dir: target,
        ..report
    })
}

/// The plugin directories under `plugins_dir` with their manifests (no compilation).
pub fn list(plugins_dir: &Path) -> Result<Vec<InstalledPlugin>> {
    let dirs = registry::plugin_dirs(plugins_dir)
        .map_err(|e| Error::io(format!("cannot read {}", plugins_dir.display()), e))?;
    Ok(dirs
        .into_iter()
        .map(|dir| {
            let manifest = Manifest::from_file(&dir.join(MANIFEST_FILE)).map_err(|e| e.to_string());
            InstalledPlugin { dir, manifest }
        })
        .collect())
}

/// Removes the installed plugin with this id; returns the directory removed.
pub fn remove(plugins_dir: &Path, id: &str) -> Result<PathBuf> {
    for entry in list(plugins_dir)? {
        if matches!(&entry.manifest, Ok(m) if m.id.as_str() == id) {
            std::fs::remove_dir_all(&entry.dir)
                .map_err(|e| Error::io(format!("cannot remove {}", entry.dir.display()), e))?;
            return Ok(entry.dir);
        }
    }
    Err(Error::NotInstalled(id.to_owned()))
}
