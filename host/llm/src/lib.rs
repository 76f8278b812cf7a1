//! LLM provider clients: the only crate that knows provider wire formats.
//!
//! Modules:
//! - `types`: the provider-neutral conversation ([`ChatRequest`], [`ChatMessage`], [`ToolSpec`],
//!   [`ToolCall`]), the result ([`ChatResponse`], [`Usage`], [`StopReason`]) and the
//!   [`StreamEvent`]s delivered while a response streams.
//! - `config`: [`ProviderKind`], [`ProviderConfig`] (base URL, API key, default model) and the
//!   client's [`ClientOptions`] / [`RetryPolicy`].
//! - `error`: [`LlmError`], the one error type; messages never contain the API key.
//! - `client`: [`LlmClient`], one streaming call with retries (backoff with jitter, `Retry-After`),
//!   never retrying once output reached the caller.
//! - `retry`: which failures are retried and how long to wait.
//! - `wire`: the stream decoder contract shared by the two providers.
//! - `openai`: OpenAI-compatible Chat Completions (`POST {base}/chat/completions`).
//! - `anthropic`: Anthropic Messages (`POST {base}/messages`).
//!
//! Base URLs include the API version prefix and no trailing endpoint: `https://api.openai.com/v1`,
//! `http://localhost:11434/v1` (Ollama), `https://api.anthropic.com/v1`.
//!
//! Cancellation is dropping the future returned by [`LlmClient::stream`]: the HTTP response and
//! its connection are owned by that future, so the request is aborted at once.

mod anthropic;
mod client;
mod config;
mod error;
mod openai;
mod retry;
mod types;
mod wire;

pub use client::LlmClient;
pub use config::{ClientOptions, ProviderConfig, ProviderKind, RetryPolicy};
pub use error::{LlmError, Result};
pub use types::{
    ChatMessage, ChatRequest, ChatResponse, StopReason, StreamEvent, ToolCall, ToolSpec, Usage,
};
