//! Connects the capability runtime to the rest of the server: plugin key-value state stored
//! through the `Store` (so it is durable on both backends), secrets from `/v1/secrets` (opened
//! with the keyring) with the configuration's `[plugin_secrets]` as the fallback, and the
//! plugin directories loaded at start and watched afterwards.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use everruns_core::{KvUsage, SealedOwner, is_valid_secret_name};
use everruns_executor::store_scope;
use everruns_runtime::{
    BackendError, CapabilityId, Grant, Grants, HostPattern, KvBackend, KvQuota, KvScope,
    MemorySecrets, Runtime, RuntimeConfig, SecretSource,
};
use everruns_secrets::Keyring;
use everruns_store::{Store, StoreError};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::builtins;
use crate::config::Config;

/// How often the plugin directories are checked for added, changed and removed plugins.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Plugin state through the store.
#[derive(Debug)]
struct StoreKv(Arc<dyn Store>);

fn backend_error(e: everruns_store::StoreError) -> BackendError {
    BackendError(e.to_string())
}

#[async_trait]
impl KvBackend for StoreKv {
    async fn get(&self, scope: &KvScope, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        self.0
            .kv_get(&store_scope(scope), key)
            .await
            .map_err(backend_error)
    }

    async fn set(&self, scope: &KvScope, key: &str, value: Vec<u8>) -> Result<(), BackendError> {
        self.0
            .kv_set(&store_scope(scope), key, &value)
            .await
            .map_err(|e| match e {
                // Not a failure worth retrying: the owner is gone, and its state with it.
                StoreError::NotFound { entity, id } => BackendError(format!(
                    "the {entity} `{id}` was deleted; its plugin state is no longer kept"
                )),
                e => backend_error(e),
            })
    }

    async fn delete(&self, scope: &KvScope, key: &str) -> Result<bool, BackendError> {
        self.0
            .kv_delete(&store_scope(scope), key)
            .await
            .map_err(backend_error)
    }

    async fn list_keys(
        &self,
        scope: &KvScope,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, BackendError> {
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        self.0
            .kv_list(&store_scope(scope), prefix, limit)
            .await
            .map_err(backend_error)
    }

    async fn usage(&self, scope: &KvScope, excluding: &[&str]) -> Result<KvUsage, BackendError> {
        self.0
            .kv_usage(&store_scope(scope), excluding)
            .await
            .map_err(backend_error)
    }
}

/// Secret values for plugins: the store's secrets, opened with the keyring, else the ones
/// configured in `[plugin_secrets]`. The runtime asks only for secrets the plugin was granted.
#[derive(Debug)]
struct StoreSecrets {
    store: Arc<dyn Store>,
    keyring: Option<Arc<Keyring>>,
    configured: MemorySecrets,
}

#[async_trait]
impl SecretSource for StoreSecrets {
    async fn get(&self, plugin: &CapabilityId, name: &str) -> Result<Option<String>, BackendError> {
        if !is_valid_secret_name(name) {
            return self.configured.get(plugin, name).await;
        }
        let secret = match self.store.get_secret(name).await {
            Ok(secret) => secret,
            Err(StoreError::NotFound { .. }) => return self.configured.get(plugin, name).await,
            Err(e) => return Err(backend_error(e)),
        };
        let keyring = self.keyring.as_deref().ok_or_else(|| {
            BackendError(format!(
                "secret `{name}` is encrypted and this process has no EVERRUNS_SECRET_KEY"
            ))
        })?;
        let value = keyring
            .open_string(&SealedOwner::Secret(name.to_owned()), &secret.value)
            .map_err(|e| BackendError(format!("secret `{name}`: {e}")))?;
        Ok(Some(value.expose_secret().to_owned()))
    }
}

/// Plugin secrets from `store` (sealed with `keyring`), falling back to the configured ones.
pub fn store_secrets(
    config: &Config,
    store: Arc<dyn Store>,
    keyring: Option<Arc<Keyring>>,
) -> Arc<dyn SecretSource> {
    Arc::new(StoreSecrets {
        store,
        keyring,
        configured: configured_secrets(config),
    })
}

/// The secrets of the configuration's `[plugin_secrets]` table.
pub fn configured_secrets(config: &Config) -> MemorySecrets {
    MemorySecrets::new(
        config
            .plugin_secrets
            .iter()
            .map(|(name, value)| (name.clone(), value.expose_secret().to_owned())),
    )
}

/// The directories plugins are loaded from: the built-ins (`<data-dir>/builtin-plugins`,
/// unless turned off), `<data-dir>/plugins`, then extra ones. The built-ins come first, so
/// an installed plugin with a built-in's id fails to load as a duplicate: disable the
/// built-in (`disabled_builtin_plugins`) to replace it.
pub fn plugin_dirs(config: &Config) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if config.builtin_plugins {
        dirs.push(builtin_dir(config));
    }
    dirs.push(config.data_dir.join("plugins"));
    dirs.extend(config.plugin_dirs.iter().cloned());
    dirs
}

fn builtin_dir(config: &Config) -> PathBuf {
    config.data_dir.join("builtin-plugins")
}

/// Writes the built-in plugins into the data directory (when enabled), or removes them
/// (when turned off), so the registry loads exactly the configured set.
pub fn prepare_builtins(config: &Config) -> anyhow::Result<()> {
    let dir = builtin_dir(config);
    if config.builtin_plugins {
        builtins::materialize(&dir, &config.disabled_builtin_plugins)
    } else {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("removing {}: {e}", dir.display()))?;
        }
        Ok(())
    }
}

/// Plugin key-value state kept in `store`.
pub fn store_kv(store: Arc<dyn Store>) -> Arc<dyn KvBackend> {
    Arc::new(StoreKv(store))
}

/// Builds the runtime (compile cache under the data directory) with plugin state in `kv` and
/// secret values from `secrets`.
pub fn build_runtime(
    config: &Config,
    kv: Arc<dyn KvBackend>,
    secrets: Arc<dyn SecretSource>,
) -> anyhow::Result<Runtime> {
    let runtime_config = RuntimeConfig {
        cache_dir: Some(config.data_dir.join("cache").join("components")),
        grants: Grants {
            allow_private_networks: config.allow_private_networks,
            plugins: plugin_grants(config)?,
            kv_quota: KvQuota {
                max_keys: config.plugin_kv_max_keys,
                max_bytes: config.plugin_kv_max_bytes,
            },
            ..Grants::default()
        },
        ..RuntimeConfig::default()
    };
    Runtime::new(runtime_config, kv, secrets)
        .map_err(|e| anyhow::anyhow!("starting the plugin runtime: {e}"))
}

/// The configuration's `[plugin_grants]` as the runtime's grants; a host pattern that does not
/// parse is an error naming the plugin and the pattern.
fn plugin_grants(config: &Config) -> anyhow::Result<HashMap<String, Grant>> {
    config
        .plugin_grants
        .iter()
        .map(|(id, grant)| {
            let allowed_hosts = grant
                .allowed_hosts
                .as_ref()
                .map(|hosts| {
                    hosts
                        .iter()
                        .map(|h| {
                            h.parse::<HostPattern>().map_err(|e| {
                                anyhow::anyhow!("plugin_grants.{id}.allowed_hosts: `{h}`: {e}")
                            })
                        })
                        .collect::<anyhow::Result<Vec<_>>>()
                })
                .transpose()?;
            let grant = Grant {
                allowed_hosts,
                secrets: grant.secrets.clone(),
                kv: grant.kv.unwrap_or(true),
            };
            Ok((id.clone(), grant))
        })
        .collect()
}

/// Loads every plugin directory now, logging what loaded and what failed, then watches them.
pub async fn load_and_watch(runtime: &Runtime, config: &Config, shutdown: &CancellationToken) {
    if let Err(e) = prepare_builtins(config) {
        tracing::error!(
            error = format!("{e:#}"),
            "cannot write the built-in plugins"
        );
    }
    for dir in plugin_dirs(config) {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot create the plugin directory");
            continue;
        }
        let report = runtime.sync_dir(&dir).await;
        tracing::info!(
            dir = %dir.display(),
            loaded = report.added.len(),
            failed = report.failed.len(),
            "plugins loaded"
        );
        runtime.spawn_watcher(dir, WATCH_INTERVAL, shutdown.clone());
    }
    for failure in runtime.failures() {
        tracing::warn!(dir = %failure.dir.display(), error = %failure.error, "plugin failed to load");
    }
}

#[cfg(test)]
mod tests {
    use everruns_core::{ModelSettings, NewAgent, NewSession};
    use everruns_runtime::KvOwner;
    use everruns_store::StoreConfig;

    use super::*;

    /// A tool writing the state of a session deleted under it is told so, in words that do not
    /// invite a retry.
    #[tokio::test]
    async fn state_of_a_deleted_session_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let store = everruns_store::connect(&StoreConfig {
            url: format!("sqlite://{}", dir.path().join("kv.db").display()),
            max_connections: 2,
        })
        .await
        .unwrap();
        let agent = store
            .create_agent(NewAgent {
                name: "a".to_owned(),
                system_prompt: String::new(),
                model: ModelSettings::default(),
                capabilities: Vec::new(),
                tool_approval: None,
            })
            .await
            .unwrap();
        let session = store
            .create_session(NewSession {
                agent_id: agent.id,
                title: None,
                overrides: None,
            })
            .await
            .unwrap();
        let kv = StoreKv(store.clone());
        let scope = KvScope {
            plugin: CapabilityId::parse("todo").unwrap(),
            owner: KvOwner::Session(session.id.to_string()),
        };
        kv.set(&scope, "k", b"v".to_vec()).await.unwrap();
        store.delete_session(&session.id).await.unwrap();
        let err = kv.set(&scope, "k", b"v".to_vec()).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the session `{}` was deleted; its plugin state is no longer kept",
                session.id
            )
        );
    }
}
