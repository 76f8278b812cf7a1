//! Agents: a name, a system prompt, model settings and an ordered list of capabilities.

use serde::{Deserialize, Serialize};

use crate::{AgentId, Timestamp, ToolApproval};

/// Longest accepted agent name, in characters.
pub const AGENT_NAME_MAX: usize = 200;
/// Longest accepted system prompt, in bytes.
pub const SYSTEM_PROMPT_MAX: usize = 256 * 1024;

/// Which model an agent talks to. Every field is optional: what is missing falls back to the
/// server's default provider and model.
///
/// Serialized as JSON in the store (this is the persisted shape, keep it backward compatible).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelSettings {
    /// Provider name or id; `None` means the server default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Model name as the provider knows it; `None` means the provider's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Upper bound on tokens generated per LLM call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Upper bound on steps per run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
    /// Budget: tokens (input and output, all model calls) one run may spend; `None`: no
    /// budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens_per_run: Option<u64>,
    /// Budget: seconds from a run's first start (waiting for approval included) after which
    /// it takes no further step; `None`: no budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_seconds: Option<u64>,
    /// Budget: tool calls one run may make; `None`: no budget (the step limit still applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tool_calls_per_run: Option<u32>,
}

/// One capability enabled on an agent, with the agent's config for it.
///
/// Serialized as JSON in the store (persisted shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapabilityRef {
    /// Capability (plugin) id, e.g. `current_time`.
    pub id: String,
    /// Per-agent configuration, validated against the plugin's schema when the plugin is known.
    #[serde(default)]
    pub config: serde_json::Value,
}

/// A stored agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    pub id: AgentId,
    pub name: String,
    pub system_prompt: String,
    pub model: ModelSettings,
    /// Ordered: prompt fragments are assembled in this order.
    pub capabilities: Vec<CapabilityRef>,
    pub archived: bool,
    /// Which tool calls need a person's approval; `None`: none do (unless a hook asks).
    pub tool_approval: Option<ToolApproval>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What is needed to create an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAgent {
    pub name: String,
    pub system_prompt: String,
    pub model: ModelSettings,
    pub capabilities: Vec<CapabilityRef>,
    pub tool_approval: Option<ToolApproval>,
}

/// A partial update of an agent; `None` leaves the field unchanged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentPatch {
    pub name: Option<String>,
    pub system_prompt: Option<String>,
    pub model: Option<ModelSettings>,
    pub capabilities: Option<Vec<CapabilityRef>>,
    pub archived: Option<bool>,
    /// `Some(None)` removes the policy.
    pub tool_approval: Option<Option<ToolApproval>>,
}
