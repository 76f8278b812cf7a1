//! LLM providers configured through the API: where a provider lives, which models it offers
//! and its API key, sealed (only a short hint of the key is kept in the clear).

use std::fmt;
use std::str::FromStr;

use crate::{ProviderId, Sealed, Timestamp};

/// Longest accepted provider name, in characters.
pub const PROVIDER_NAME_MAX: usize = 100;

/// The wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// OpenAI-compatible Chat Completions (OpenAI, Ollama, vLLM, OpenRouter, ...).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl ProviderKind {
    /// The stored and wire name: `openai` or `anthropic`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "openai" => Ok(Self::OpenAi),
            "anthropic" => Ok(Self::Anthropic),
            other => Err(format!(
                "unknown provider kind `{other}` (expected `openai` or `anthropic`)"
            )),
        }
    }
}

/// A stored provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub id: ProviderId,
    /// Unique; agents name a provider by name or id.
    pub name: String,
    pub kind: ProviderKind,
    /// API base including the version, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub default_model: Option<String>,
    pub models: Vec<String>,
    /// The API key, sealed with the provider's id as owner.
    pub api_key: Sealed,
    /// The last characters of the key (`…abcd`), or `…` for short keys.
    pub api_key_hint: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What is needed to store a provider. The id is chosen by the caller because the key must be
/// sealed for it before the row exists.
#[derive(Debug, Clone, PartialEq)]
pub struct NewProvider {
    pub id: ProviderId,
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    pub default_model: Option<String>,
    pub models: Vec<String>,
    pub api_key: Sealed,
    pub api_key_hint: String,
}

/// A partial update of a provider; `None` leaves the field unchanged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProviderPatch {
    pub name: Option<String>,
    pub kind: Option<ProviderKind>,
    pub base_url: Option<String>,
    /// `Some(None)` clears the default model.
    pub default_model: Option<Option<String>>,
    pub models: Option<Vec<String>>,
    /// A new sealed key and its hint.
    pub api_key: Option<(Sealed, String)>,
}
