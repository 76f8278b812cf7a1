//! Which LLM client serves an agent: the stored provider the agent names (by name or id), its
//! key opened with the keyring, or the server-config provider when the agent names none.
//! Clients are cached per provider and rebuilt when the provider's row changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use everruns_core::{Agent, Provider, ProviderId, ProviderKind, SealedOwner};
use everruns_llm::{LlmClient, ProviderConfig};
use everruns_secrets::Keyring;
use everruns_store::{Store, StoreError};

/// A built client and the provider row it was built from.
type Cached = (Provider, Arc<LlmClient>);

/// The LLM clients the executor may use.
#[derive(Debug, Clone, Default)]
pub struct Providers {
    default: Option<Arc<LlmClient>>,
    keyring: Option<Arc<Keyring>>,
    cache: Arc<Mutex<HashMap<ProviderId, Cached>>>,
}

impl Providers {
    /// Providers from the store, opened with `keyring`; `default` (the server's configured
    /// provider) serves agents that name none.
    pub fn new(default: Option<LlmClient>, keyring: Option<Arc<Keyring>>) -> Self {
        Self {
            default: default.map(Arc::new),
            keyring,
            cache: Arc::default(),
        }
    }

    /// The client for `agent`. The outer error is a store failure (worth a retry); the inner
    /// one says why this agent has no usable provider (the run fails with it).
    pub async fn client_for(
        &self,
        store: &dyn Store,
        agent: &Agent,
    ) -> Result<Result<Arc<LlmClient>, String>, StoreError> {
        let Some(name) = &agent.model.provider else {
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
                    "the agent's provider `{name}` does not exist (was it deleted?); set the \
                     agent's model.provider to one of /v1/providers"
                )));
            }
            Err(e) => return Err(e),
        };
        Ok(self.client_of(provider))
    }

    fn client_of(&self, provider: Provider) -> Result<Arc<LlmClient>, String> {
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
        let client = Arc::new(
            LlmClient::new(config).map_err(|e| format!("cannot use provider `{name}`: {e}"))?,
        );
        cache.insert(provider.id.clone(), (provider, client.clone()));
        Ok(client)
    }
}
