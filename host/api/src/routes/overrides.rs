//! The `overrides` object sessions and messages accept (one shape for both), its validation
//! (the agent's rules, with errors naming `overrides.…`), and the configuration a run records
//! (`config` of `GET /v1/runs/{id}`).

use everruns_core::{CapabilityOverride, ModelSettings, Overrides, RunConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::routes::agents::{
    CapabilityBody, ModelSettingsBody, check_provider, valid_capability_id, validate_capabilities,
    validate_model, validate_prompt,
};
use crate::routes::approvals::{ToolApprovalBody, validate_policy};

/// Changes to the agent's configuration, for a session's runs or one message's run. Every
/// field is optional; precedence is message > session > agent > server default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "model": {"provider": "openai", "model": "gpt-4o", "temperature": 0.2, "max_tokens": 2048, "max_steps": 30},
    "system_prompt_append": "Answer in French.",
    "capabilities": [{"id": "web_fetch", "config": {}}, {"id": "current_time", "enabled": false}],
    "tool_approval": {"require": ["web_fetch__*"], "timeout_seconds": 600}
}))]
pub struct OverridesBody {
    /// Replaces the agent's model settings field by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSettingsBody>,
    /// Appended after the agent's prompt and the capabilities' fragments (up to 256 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt_append: Option<String>,
    /// Merged by id with the agent's capabilities: an entry adds the capability or replaces
    /// its config wholesale; `"enabled": false` removes it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<CapabilityOverrideBody>,
    /// Replaces the agent's tool approval policy wholesale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_approval: Option<ToolApprovalBody>,
}

/// One capability change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapabilityOverrideBody {
    /// Capability id, e.g. `web_fetch`: 1 to 64 letters, digits, `_`, `-` or `.`.
    #[schema(min_length = 1, max_length = 64)]
    pub id: String,
    /// Replaces the agent's config for it (absent: the agent's config is kept; `{}` for a
    /// capability the agent lacks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
    /// `false` removes the capability (default `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl From<Overrides> for OverridesBody {
    fn from(o: Overrides) -> Self {
        Self {
            model: o.model.map(ModelSettingsBody::from),
            system_prompt_append: o.system_prompt_append,
            capabilities: o
                .capabilities
                .into_iter()
                .map(|c| CapabilityOverrideBody {
                    id: c.id,
                    config: c.config,
                    enabled: (!c.enabled).then_some(false),
                })
                .collect(),
            tool_approval: o.tool_approval.map(ToolApprovalBody::from),
        }
    }
}

/// Most capability changes one overrides object may hold.
const MAX_CAPABILITY_OVERRIDES: usize = 64;

/// Validates `body` as the agent's fields are validated (model ranges, known provider,
/// installed capabilities, configs against their schemas); every error names its field under
/// `overrides.`. Returns the overrides to store: `None` when they change nothing (`{}`), so
/// an empty object and no object are the same request.
pub(crate) async fn validate(
    state: &AppState,
    body: &OverridesBody,
) -> ApiResult<Option<Overrides>> {
    let mut errors = Vec::new();
    let model = body.model.as_ref().map(|m| validate_model(m, &mut errors));
    if let Some(text) = &body.system_prompt_append {
        validate_prompt(text, &mut errors);
        if text.contains('\0') {
            errors.push(FieldError::new(
                "system_prompt",
                "must not contain NUL characters",
            ));
        }
    }
    for error in &mut errors {
        error.field = error.field.replace("system_prompt", "system_prompt_append");
    }
    let tool_approval = body
        .tool_approval
        .as_ref()
        .map(|p| validate_policy(p, "tool_approval", &mut errors));
    if body.capabilities.len() > MAX_CAPABILITY_OVERRIDES {
        // Not worth checking each of them (a schema compile apiece).
        return Err(ApiError::invalid_field(
            "overrides.capabilities",
            format!("at most {MAX_CAPABILITY_OVERRIDES} entries"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, entry) in body.capabilities.iter().enumerate() {
        // Each entry alone, as the agent's list would be checked: id, installed, and a given
        // config against the plugin's schema.
        let mut own = Vec::new();
        let checked = CapabilityBody {
            id: entry.id.clone(),
            config: entry
                .config
                .clone()
                .unwrap_or_else(|| serde_json::json!({})),
        };
        validate_capabilities(&state.runtime, std::slice::from_ref(&checked), &mut own);
        let disabled = entry.enabled == Some(false);
        for mut error in own {
            if entry.config.is_none() && error.field.starts_with("capabilities[0].config") {
                // No config given: the agent's (validated with the agent) or `{}` is used.
                continue;
            }
            if disabled && valid_capability_id(&entry.id) {
                // Removing a capability that is not installed (any more) is allowed: it is
                // what keeps an agent whose plugin is gone usable in this session.
                continue;
            }
            error.field = error
                .field
                .replacen("capabilities[0]", &format!("capabilities[{i}]"), 1);
            errors.push(error);
        }
        if !seen.insert(entry.id.as_str()) {
            errors.push(FieldError::new(
                format!("capabilities[{i}].id"),
                format!("capability `{}` is listed twice", entry.id),
            ));
        }
        if disabled && entry.config.is_some() {
            errors.push(FieldError::new(
                format!("capabilities[{i}].config"),
                "a disabled capability takes no config",
            ));
        }
    }
    if !errors.is_empty() {
        for error in &mut errors {
            error.field = format!("overrides.{}", error.field);
        }
        return Err(ApiError::invalid_fields(errors));
    }
    if let Some(model) = &model {
        check_provider(state, model, "overrides.model.provider").await?;
    }
    let overrides = Overrides {
        model: model.filter(|m| *m != ModelSettings::default()),
        system_prompt_append: body.system_prompt_append.clone(),
        capabilities: body
            .capabilities
            .iter()
            .map(|c| CapabilityOverride {
                id: c.id.clone(),
                config: c.config.clone(),
                enabled: c.enabled.unwrap_or(true),
            })
            .collect(),
        tool_approval,
    };
    Ok((overrides != Overrides::default()).then_some(overrides))
}

/// The configuration a run executes with, resolved when it was created.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunConfigResponse {
    /// Every model setting after the overrides (`null`: the provider's default).
    pub model: ModelSettingsBody,
    /// The capabilities, in order, with their configs.
    pub capabilities: Vec<CapabilityBody>,
    /// SHA-256 (hex) of the agent's system prompt and the appended text (the capabilities'
    /// fragments, which may change during the run, are not included).
    #[schema(example = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")]
    pub system_prompt_sha256: String,
    /// The namespaced tool names offered when the run was created.
    #[schema(example = json!(["current_time__now"]))]
    pub tools: Vec<String>,
    /// Which tool calls need a person's approval.
    pub tool_approval: Option<ToolApprovalBody>,
}

impl From<RunConfig> for RunConfigResponse {
    fn from(c: RunConfig) -> Self {
        let mut hash = Sha256::new();
        hash.update(c.system_prompt.as_bytes());
        if let Some(append) = &c.system_prompt_append {
            hash.update(b"\n\n");
            hash.update(append.as_bytes());
        }
        Self {
            model: ModelSettingsBody::from(c.model),
            capabilities: c
                .capabilities
                .into_iter()
                .map(|c| CapabilityBody {
                    id: c.id,
                    config: c.config,
                })
                .collect(),
            system_prompt_sha256: hex::encode(hash.finalize()),
            tools: c.tools,
            tool_approval: c.tool_approval.map(ToolApprovalBody::from),
        }
    }
}
