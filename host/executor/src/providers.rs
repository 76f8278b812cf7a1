//! Which LLM client serves an agent. Until providers are managed through the API, there is
//! one default provider from the server's configuration.

use std::sync::Arc;

use everruns_core::Agent;
use everruns_llm::LlmClient;

/// The LLM clients the executor may use.
#[derive(Debug, Clone, Default)]
pub struct Providers {
    default: Option<Arc<LlmClient>>,
}

impl Providers {
    /// Providers with `default` serving every agent.
    pub fn with_default(default: LlmClient) -> Self {
        Self {
            default: Some(Arc::new(default)),
        }
    }

    /// No provider at all: every run fails with an error saying how to configure one.
    pub fn none() -> Self {
        Self::default()
    }

    /// The client for `agent`, or why there is none.
    pub fn client_for(&self, agent: &Agent) -> Result<Arc<LlmClient>, String> {
        if let Some(name) = &agent.model.provider {
            // Named providers arrive with the providers API; until then only the default one.
            tracing::debug!(provider = %name, "agent names a provider; using the default one");
        }
        self.default.clone().ok_or_else(|| {
            "no LLM provider is configured: set EVERRUNS_LLM_KIND, EVERRUNS_LLM_BASE_URL, \
             EVERRUNS_LLM_API_KEY and EVERRUNS_LLM_MODEL"
                .to_owned()
        })
    }
}
