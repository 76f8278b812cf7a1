//! Provider-neutral request, response and streaming types.

use std::sync::Arc;
use std::time::Duration;

/// One call to a model: the whole conversation so far plus the tools it may call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    /// Model name as the provider knows it; empty means the provider's default model.
    pub model: String,
    /// System prompt; empty means none.
    pub system: String,
    /// The conversation, oldest first. Shared, so that a caller keeping the conversation
    /// between calls lends it without a copy (and extends it with `Arc::make_mut` once the
    /// request is gone).
    pub messages: Arc<Vec<ChatMessage>>,
    /// Tools the model may call.
    pub tools: Vec<ToolSpec>,
    /// Sampling temperature; `None` leaves the provider's default.
    pub temperature: Option<f64>,
    /// Cap on output tokens; `None` leaves the provider's default (Anthropic requires one, so
    /// the client sends 4096 there).
    pub max_tokens: Option<u32>,
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatMessage {
    /// What the user said.
    User {
        /// Text.
        content: String,
    },
    /// What the model answered: text, tool calls, or both.
    Assistant {
        /// Text (may be empty when the model only called tools).
        content: String,
        /// Tool calls, in the order the model made them.
        tool_calls: Vec<ToolCall>,
    },
    /// The result of one tool call.
    Tool {
        /// The [`ToolCall::id`] this answers.
        tool_call_id: String,
        /// The tool's output (or error message).
        content: String,
        /// Whether the tool failed; the model sees the content either way.
        is_error: bool,
    },
}

impl ChatMessage {
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::User {
            content: content.into(),
        }
    }

    /// A successful tool result.
    pub fn tool_result(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self::Tool {
            tool_call_id: tool_call_id.into(),
            content: content.into(),
            is_error: false,
        }
    }
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// Name, unique within the request.
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: serde_json::Value,
}

/// A tool call made by the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// Provider-assigned id, echoed back in the matching [`ChatMessage::Tool`].
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments as the raw JSON text the model produced (`{}` when it produced none). Kept raw
    /// because models do emit invalid JSON, and the caller should report that to the model
    /// rather than lose it here.
    pub arguments: String,
}

impl ToolCall {
    /// Parses [`ToolCall::arguments`].
    pub fn arguments_json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::from_str(&self.arguments)
    }
}

/// A complete model response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChatResponse {
    /// All text, concatenated.
    pub text: String,
    /// Tool calls, in the model's order.
    pub tool_calls: Vec<ToolCall>,
    /// Token usage as the provider reported it (zero where it reported none).
    pub usage: Usage,
    /// Why the model stopped.
    pub stop_reason: StopReason,
}

/// Token counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
}

/// Why the model stopped generating.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StopReason {
    /// The model finished its answer.
    #[default]
    EndTurn,
    /// The model wants tool results.
    ToolUse,
    /// The output token cap was reached.
    MaxTokens,
    /// The provider filtered or refused the output.
    ContentFilter,
    /// A reason this crate does not know, as the provider named it.
    Other(String),
}

/// Something that happened while a response streamed, delivered as it happens.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// More text of the answer. Deltas arrive in order; their concatenation is
    /// [`ChatResponse::text`].
    TextDelta(String),
    /// The model began a tool call (its arguments are still streaming).
    ToolCallStarted {
        /// Tool call id.
        id: String,
        /// Tool name.
        name: String,
    },
    /// An attempt failed before any output and the client will try again after `delay`.
    Retrying {
        /// The attempt that failed (1-based).
        attempt: u32,
        /// How long the client waits before the next attempt.
        delay: Duration,
        /// Why the attempt failed.
        reason: String,
    },
}

impl StreamEvent {
    /// Whether this event is model output (after which the call is never retried).
    pub fn is_output(&self) -> bool {
        matches!(self, Self::TextDelta(_) | Self::ToolCallStarted { .. })
    }
}
