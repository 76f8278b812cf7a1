//! A scripted LLM provider over real HTTP, speaking the OpenAI Chat Completions and Anthropic
//! Messages streaming wire formats, so the real provider clients are exercised end to end.
//!
//! - `server`: [`FakeLlm`], scripted per test with [`Reply`]s (text, tool calls, errors, 429
//!   with `Retry-After`, stalls, disconnects), recording every request unless told not to.
//! - `demo`: [`demo_reply`], the deterministic model `everruns dev fake-llm` serves, so a
//!   newcomer can watch a run with tool calls without an API key.

mod demo;
mod server;

pub use demo::demo_reply;
pub use server::{FAKE_LLM_API_KEY, FakeLlm, FakeToolCall, RecordedRequest, Reply, WireFormat};
