//! Provider configuration and client tuning.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

/// The wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// OpenAI-compatible Chat Completions (OpenAI, Ollama, vLLM, llama.cpp, OpenRouter, ...).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl ProviderKind {
    /// The stable lowercase name (`openai`, `anthropic`) used in configuration.
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

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "openai" => Ok(Self::OpenAi),
            "anthropic" => Ok(Self::Anthropic),
            other => Err(format!(
                "unknown LLM provider kind `{other}` (expected `openai` or `anthropic`)"
            )),
        }
    }
}

/// Where a provider lives and how to authenticate.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Wire format.
    pub kind: ProviderKind,
    /// API base including the version prefix, without the endpoint:
    /// `https://api.openai.com/v1`, `http://localhost:11434/v1`, `https://api.anthropic.com/v1`.
    /// The client appends `/chat/completions` or `/messages`.
    pub base_url: String,
    /// API key: sent as `Authorization: Bearer` (OpenAI) or `x-api-key` (Anthropic); an empty
    /// key sends no auth header (local servers).
    pub api_key: SecretString,
    /// Model used when a request names none.
    pub default_model: Option<String>,
}

/// Timeouts and retries of an [`crate::LlmClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Retries of failed attempts.
    pub retry: RetryPolicy,
    /// Limit on establishing a TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Limit on waiting for response headers after sending the request.
    pub response_timeout: Duration,
    /// Limit on silence between two chunks of a streaming response (a stalled stream).
    pub idle_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// Exponential backoff with jitter for failures that happen before any output.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total attempts including the first (1 = never retry).
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each retry, plus up to 100% random jitter.
    pub initial_delay: Duration,
    /// Cap on the computed backoff. A `Retry-After` longer than this makes the client give up
    /// instead of waiting (the error says so).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}
