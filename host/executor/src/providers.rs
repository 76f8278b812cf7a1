//! Which LLM client serves a run: the stored provider its model settings name (by name or id),
//! its key opened with the keyring, or the server-config provider when they name none.
//! Clients are cached per provider and rebuilt when the provider's row changes; the cache holds
//! at most [`MAX_CACHED`] clients (a new one past that evicts another), so deleted providers
//! cannot pile up in it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use everruns_core::metrics::OTHER_MODEL;
use everruns_core::{ModelSettings, Provider, ProviderId, ProviderKind, SealedOwner};
use everruns_llm::{LlmClient, ProviderConfig};
use everruns_secrets::Keyring;
use everruns_store::{Store, StoreError};

/// Most clients kept; past it a new client evicts another (which is cheap to build again).
const MAX_CACHED: usize = 64;

/// A built client and the provider row it was built from.
type Cached = (Provider, Arc<Llm>);

/// A provider's client and the label values of its metrics.
#[derive(Debug)]
pub(crate) struct Llm {
    pub client: LlmClient,
    /// The models the provider is configured with (its list and default): only these name
    /// a series; other models are counted as [`OTHER_MODEL`], so labels stay bounded.
    models: Vec<String>,
}

impl Llm {
    fn new(client: LlmClient, models: Vec<String>) -> Self {
        Self { client, models }
    }

    /// The `provider` label: the wire format's name.
    pub fn provider_label(&self) -> &'static str {
        self.client.kind().as_str()
    }

    /// The `model` label of a request for `model` (empty: the provider's default model).
    pub fn model_label<'a>(&'a self, model: &'a str) -> &'a str {
        let model = match model {
            "" => self.client.default_model().unwrap_or_default(),
            named => named,
        };
        if self.models.iter().any(|m| m == model) {
            model
        } else {
            OTHER_MODEL
        }
    }
}

/// The LLM clients the executor may use.
#[derive(Debug, Clone, Default)]
pub struct Providers {
    default: Option<Arc<Llm>>,
    keyring: Option<Arc<Keyring>>,
    cache: Arc<Mutex<HashMap<ProviderId, Cached>>>,
}

impl Providers {
    /// Providers from the store, opened with `keyring`; `default` (the server's configured
    /// provider) serves agents that name none.
    pub fn new(default: Option<LlmClient>, keyring: Option<Arc<Keyring>>) -> Self {
        Self {
            default: default.map(|client| {
                let models = client
                    .default_model()
                    .map(str::to_owned)
                    .into_iter()
                    .collect();
                Arc::new(Llm::new(client, models))
            }),
            keyring,
            cache: Arc::default(),
        }
    }

    /// The client for a run's `model` settings. The outer error is a store failure (worth a
    /// retry); the inner one says why there is no usable provider (the run fails with it).
    pub(crate) async fn client_for(
        &self,
        store: &dyn Store,
        model: &ModelSettings,
    ) -> Result<Result<Arc<Llm>, String>, StoreError> {
        let Some(name) = &model.provider else {
            return Ok(self.default.clone().ok_or_else(|| {
                "no LLM provider is configured: name one of /v1/providers in the agent's \
                 model.provider, or set EVERRUNS_LLM_KIND, EVERRUNS_LLM_BASE_URL, \
                 EVERRUNS_LLM_API_KEY and EVERRUNS_LLM_MODEL"
                    .to_owned()
            }));
        };
        let provider = match store.find_provider(name).await {
            Ok(provider) => provider,
            Err(StoreError::NotFound { .. }) => {
                return Ok(Err(format!(
                    "the provider `{name}` does not exist (was it deleted?); set the agent's \
                     (or the session's) model.provider to one of /v1/providers"
                )));
            }
            Err(e) => return Err(e),
        };
        Ok(self.client_of(provider))
    }

    fn client_of(&self, provider: Provider) -> Result<Arc<Llm>, String> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((built_from, client)) = cache.get(&provider.id)
            && *built_from == provider
        {
            return Ok(client.clone());
        }
        let name = &provider.name;
        let keyring = self.keyring.as_deref().ok_or_else(|| {
            format!(
                "cannot use provider `{name}`: its API key is encrypted and this process has no \
                 EVERRUNS_SECRET_KEY"
            )
        })?;
        let api_key = keyring
            .open_string(
                &SealedOwner::ProviderKey(provider.id.clone()),
                &provider.api_key,
            )
            .map_err(|e| format!("cannot use provider `{name}`: its API key: {e}"))?;
        let config = ProviderConfig {
            kind: match provider.kind {
                ProviderKind::OpenAi => everruns_llm::ProviderKind::OpenAi,
                ProviderKind::Anthropic => everruns_llm::ProviderKind::Anthropic,
            },
            base_url: provider.base_url.clone(),
            api_key,
            default_model: provider.default_model.clone(),
        };
        let client =
            LlmClient::new(config).map_err(|e| format!("cannot use provider `{name}`: {e}"))?;
        let mut models = provider.models.clone();
        models.extend(provider.default_model.clone());
        let client = Arc::new(Llm::new(client, models));
        if cache.len() >= MAX_CACHED && !cache.contains_key(&provider.id) {
            // Any one other client makes room (a deleted provider's, most likely).
            if let Some(evicted) = cache.keys().next().cloned() {
                cache.remove(&evicted);
            }
        }
        cache.insert(provider.id.clone(), (provider, client.clone()));
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use everruns_secrets::MasterKey;

    use super::*;

    fn provider(keyring: &Keyring, name: String) -> Provider {
        let id = ProviderId::new();
        let now = chrono::Utc::now();
        Provider {
            api_key: keyring.seal(&SealedOwner::ProviderKey(id.clone()), b"sk-test"),
            id,
            name,
            kind: ProviderKind::OpenAi,
            base_url: "http://127.0.0.1:9/v1".to_owned(),
            default_model: Some("m".to_owned()),
            models: Vec::new(),
            api_key_hint: "…test".to_owned(),
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn clients_are_reused_rebuilt_on_change_and_the_cache_stays_bounded() {
        let keyring = Arc::new(Keyring::new(MasterKey::generate("test").unwrap(), None).unwrap());
        let providers = Providers::new(None, Some(keyring.clone()));
        let cached = || providers.cache.lock().unwrap().len();

        let first = provider(&keyring, "first".to_owned());
        let a = providers.client_of(first.clone()).unwrap();
        let b = providers.client_of(first.clone()).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "the same row reuses its client");
        let changed = Provider {
            base_url: "http://127.0.0.1:10/v1".to_owned(),
            ..first
        };
        let c = providers.client_of(changed).unwrap();
        assert!(!Arc::ptr_eq(&a, &c), "a changed row builds a new client");
        assert_eq!(cached(), 1);

        // Providers created and deleted over a server's life never grow it past the bound.
        for i in 0..3 * MAX_CACHED {
            providers
                .client_of(provider(&keyring, format!("p{i}")))
                .unwrap();
            assert!(cached() <= MAX_CACHED);
        }
        // A full cache rebuilding a client it holds evicts nothing else.
        let held = providers
            .cache
            .lock()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .0
            .clone();
        let rebuilt = Provider {
            base_url: "http://127.0.0.1:11/v1".to_owned(),
            ..held.clone()
        };
        providers.client_of(rebuilt).unwrap();
        assert_eq!(cached(), MAX_CACHED);
    }
}
