//! `everruns plugin check|install|list|new|remove|usage`: managing the plugins of a data
//! directory, and what state they keep.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use everruns_runtime::{CapabilityId, InstallStep, MemoryKv, PluginReport};

use crate::cli::{Lang, PluginCommand};
use crate::config::Config;
use crate::{builtins, plugins, templates};

pub async fn run(config: &Config, command: PluginCommand) -> anyhow::Result<()> {
    let plugins_dir = config.data_dir.join("plugins");
    match command {
        PluginCommand::Check { path } => {
            let report = everruns_runtime::check(&path)
                .await
                .with_context(|| format!("{} is not a valid plugin", path.display()))?;
            print_report(&report);
            println!("ok: {} {} is valid", report.info.id, report.info.version);
        }
        PluginCommand::Install { path } => {
            let report = everruns_runtime::install(&path, &plugins_dir, |step| match step {
                InstallStep::Checking(dir) => println!("checking {}", dir.display()),
                InstallStep::Copying(dir) => println!("copying to {}", dir.display()),
                InstallStep::Replacing(dir) => println!("replacing {}", dir.display()),
                InstallStep::Installed(dir) => println!("installed into {}", dir.display()),
            })
            .await
            .with_context(|| format!("cannot install {}", path.display()))?;
            println!("compiling {} for this machine...", report.info.id);
            let started = Instant::now();
            let runtime = plugins::build_runtime(
                config,
                Arc::new(MemoryKv::default()),
                Arc::new(plugins::configured_secrets(config)),
            )?;
            runtime
                .check(&report.dir)
                .await
                .context("compiling the installed plugin")?;
            println!("compiled in {:.1?}", started.elapsed());
            print_report(&report);
            println!(
                "installed {} {}; a running server picks it up within seconds",
                report.info.id, report.info.version
            );
            let id = report.info.id.as_str();
            if config.builtin_plugins
                && builtins::IDS.contains(&id)
                && !config.disabled_builtin_plugins.iter().any(|d| d == id)
            {
                println!(
                    "note: `{id}` is also a built-in capability, which loads first; set \
                     disabled_builtin_plugins = [\"{id}\"] to use this one instead"
                );
            }
        }
        PluginCommand::List => list(config, &plugins_dir).await?,
        PluginCommand::New { name, lang, dir } => new(&name, lang, dir)?,
        PluginCommand::Remove { id } => {
            let dir = everruns_runtime::remove(&plugins_dir, &id)
                .with_context(|| format!("cannot remove plugin `{id}`"))?;
            println!("removed {id} ({})", dir.display());
        }
        PluginCommand::Usage { id } => usage(config, &id).await?,
    }
    Ok(())
}

fn print_report(report: &PluginReport) {
    println!("  id:          {}", report.info.id);
    println!("  version:     {}", report.info.version);
    println!("  description: {}", report.info.description);
    println!("  digest:      sha256:{}", report.digest);
    println!("  interface:   everruns:capability@{}", report.wit_version);
    if !report.hooks.is_empty() {
        let hooks: Vec<&str> = report.hooks.iter().map(|h| h.as_str()).collect();
        println!("  hooks:       {}", hooks.join(", "));
    }
    println!("  tools:");
    for tool in &report.tools {
        println!("    - {}: {}", tool.name, tool.description);
    }
}

/// One line per plugin directory: id, version, status (loaded, or failed with the reason).
async fn list(config: &Config, plugins_dir: &Path) -> anyhow::Result<()> {
    plugins::prepare_builtins(config)?;
    let runtime = plugins::build_runtime(
        config,
        Arc::new(MemoryKv::default()),
        Arc::new(plugins::configured_secrets(config)),
    )?;
    let mut any = false;
    for dir in plugins::plugin_dirs(config) {
        if !dir.exists() {
            continue;
        }
        runtime.sync_dir(&dir).await;
    }
    for plugin in runtime.plugins() {
        any = true;
        println!("{}\t{}\tloaded", plugin.info().id, plugin.info().version);
    }
    for failure in runtime.failures() {
        any = true;
        let name = failure
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        println!("{name}\t-\tfailed: {}", failure.error);
    }
    if !any {
        println!("no plugins in {}", plugins_dir.display());
    }
    Ok(())
}

/// `plugin usage`: each owner's keys and bytes, largest first.
async fn usage(config: &Config, id: &str) -> anyhow::Result<()> {
    let id = CapabilityId::parse(id).with_context(|| format!("`{id}` is not a capability id"))?;
    let store = crate::server::open_store(config).await?;
    let owners = store.kv_usage_by_owner(id.as_str()).await?;
    println!(
        "quota per owner: {} keys, {} bytes (plugin_kv_max_keys, plugin_kv_max_bytes; the \
         plugin's manifest may ask for less)",
        config.plugin_kv_max_keys, config.plugin_kv_max_bytes
    );
    if owners.is_empty() {
        println!("`{id}` keeps no state");
        return Ok(());
    }
    println!("{:<40}  {:>10}  {:>14}", "OWNER", "KEYS", "BYTES");
    for (owner, used) in &owners {
        println!("{owner:<40}  {:>10}  {:>14}", used.keys, used.bytes);
    }
    if owners.len() as u32 == everruns_store::KV_USAGE_OWNERS {
        println!("(the {} largest owners)", owners.len());
    }
    Ok(())
}

/// `plugin new`: copies the language's template with the placeholders filled in (the Rust
/// one carries the SDK crate: nothing refers back to where this binary was built).
fn new(name: &str, lang: Lang, dir: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let id =
        CapabilityId::parse(name).with_context(|| format!("`{name}` is not a capability id"))?;
    let target = dir.unwrap_or_else(|| std::path::PathBuf::from(id.as_str()));
    let vars = templates::Vars { id: id.to_string() };
    let files = templates::scaffold(lang.dir_name(), &target, &vars)?;
    println!("created {} ({:?} plugin `{id}`):", target.display(), lang);
    for file in &files {
        println!("  {}", file.display());
    }
    println!(
        "next: cd {} and follow README.md to build it, then `everruns plugin install {}`",
        target.display(),
        target.display()
    );
    Ok(())
}
