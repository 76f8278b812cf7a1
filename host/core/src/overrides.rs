//! Configuration overrides (one shape on sessions and on single messages) and the run's
//! configuration snapshot: what a run executes with, resolved once when the run is created
//! (message > session > agent) and stored with it, so editing the agent or the session later
//! never changes a run that already exists.

use serde::{Deserialize, Serialize};

use crate::{Agent, AgentId, CapabilityRef, ModelSettings, ToolApproval};

/// Changes to an agent's configuration for one session or one message. Every field is
/// optional. Serialized as JSON in the store (persisted shape).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overrides {
    /// Replaces the agent's model settings field by field (absent fields keep the agent's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSettings>,
    /// Appended after the agent's prompt and the capabilities' fragments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt_append: Option<String>,
    /// Merged by id with the agent's capabilities, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<CapabilityOverride>,
    /// Replaces the agent's tool approval policy wholesale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_approval: Option<ToolApproval>,
}

/// One entry of [`Overrides::capabilities`]: adds the capability (at the end), replaces its
/// config wholesale (when `config` is given; otherwise the agent's config stays), or removes
/// it (`enabled: false`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapabilityOverride {
    /// Capability id.
    pub id: String,
    /// The configuration to use instead of the agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// `false` removes the capability.
    #[serde(default = "enabled", skip_serializing_if = "is_enabled")]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

fn is_enabled(enabled: &bool) -> bool {
    *enabled
}

/// The configuration one run executes with (persisted shape: stored as JSON with the run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// The agent the run belongs to.
    pub agent_id: AgentId,
    /// The model settings after every override; fields still absent use the provider's
    /// defaults (`max_steps` is always set).
    pub model: ModelSettings,
    /// The agent's system prompt.
    pub system_prompt: String,
    /// Appended after the capabilities' fragments (the session's, then the message's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt_append: Option<String>,
    /// The capabilities, in order, with their configs.
    pub capabilities: Vec<CapabilityRef>,
    /// The namespaced tool names offered to the model, as listed when the run was created.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Which tool calls need a person's approval (the agent's, or an override's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_approval: Option<ToolApproval>,
    /// The message's own overrides, kept to tell a retried request (same idempotency key)
    /// from a different one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_overrides: Option<Overrides>,
}

impl ModelSettings {
    /// These settings with every field `over` sets replacing this one's.
    pub fn overridden_by(&self, over: &ModelSettings) -> ModelSettings {
        ModelSettings {
            provider: over.provider.clone().or_else(|| self.provider.clone()),
            model: over.model.clone().or_else(|| self.model.clone()),
            temperature: over.temperature.or(self.temperature),
            max_tokens: over.max_tokens.or(self.max_tokens),
            max_steps: over.max_steps.or(self.max_steps),
            max_tokens_per_run: over.max_tokens_per_run.or(self.max_tokens_per_run),
            max_duration_seconds: over.max_duration_seconds.or(self.max_duration_seconds),
            max_tool_calls_per_run: over.max_tool_calls_per_run.or(self.max_tool_calls_per_run),
        }
    }
}

impl RunConfig {
    /// The configuration of a run of `agent`: the session's overrides on the agent, then the
    /// message's on that (without tool names; `max_steps` defaults to `default_max_steps`).
    pub fn resolve(
        agent: &Agent,
        session: Option<&Overrides>,
        message: Option<&Overrides>,
        default_max_steps: u32,
    ) -> RunConfig {
        let mut model = agent.model.clone();
        let mut capabilities = agent.capabilities.clone();
        let mut appended: Vec<&str> = Vec::new();
        let mut tool_approval = agent.tool_approval.clone();
        for over in [session, message].into_iter().flatten() {
            if let Some(policy) = &over.tool_approval {
                tool_approval = Some(policy.clone());
            }
            if let Some(m) = &over.model {
                model = model.overridden_by(m);
            }
            if let Some(text) = over.system_prompt_append.as_deref()
                && !text.trim().is_empty()
            {
                appended.push(text);
            }
            for entry in &over.capabilities {
                let at = capabilities.iter().position(|c| c.id == entry.id);
                match (entry.enabled, at) {
                    (false, Some(i)) => {
                        capabilities.remove(i);
                    }
                    (false, None) => {}
                    (true, Some(i)) => {
                        if let Some(config) = &entry.config {
                            capabilities[i].config = config.clone();
                        }
                    }
                    // Added, or enabled again after an earlier override removed it: without a
                    // config of its own, the agent's (if the agent has it) or `{}`.
                    (true, None) => capabilities.push(CapabilityRef {
                        id: entry.id.clone(),
                        config: entry.config.clone().unwrap_or_else(|| {
                            agent
                                .capabilities
                                .iter()
                                .find(|c| c.id == entry.id)
                                .map_or_else(|| serde_json::json!({}), |c| c.config.clone())
                        }),
                    }),
                }
            }
        }
        model.max_steps = Some(model.max_steps.unwrap_or(default_max_steps));
        RunConfig {
            agent_id: agent.id.clone(),
            model,
            system_prompt: agent.system_prompt.clone(),
            system_prompt_append: (!appended.is_empty()).then(|| appended.join("\n\n")),
            capabilities,
            tools: Vec::new(),
            tool_approval,
            message_overrides: message.cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AgentId;
    use serde_json::json;

    fn agent() -> Agent {
        Agent {
            id: AgentId::new(),
            name: "a".into(),
            system_prompt: "You help.".into(),
            model: ModelSettings {
                provider: Some("openai".into()),
                model: Some("small".into()),
                temperature: Some(0.7),
                max_tokens: None,
                max_steps: None,
                max_tool_calls_per_run: Some(20),
                ..ModelSettings::default()
            },
            capabilities: vec![
                CapabilityRef {
                    id: "current_time".into(),
                    config: json!({}),
                },
                CapabilityRef {
                    id: "memory".into(),
                    config: json!({"limit": 5}),
                },
            ],
            archived: false,
            tool_approval: None,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    fn parse(value: serde_json::Value) -> Overrides {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_agent_alone_gets_the_server_default_step_limit() {
        let config = RunConfig::resolve(&agent(), None, None, 50);
        assert_eq!(config.model.max_steps, Some(50));
        assert_eq!(config.model.model.as_deref(), Some("small"));
        assert_eq!(config.capabilities, agent().capabilities);
        assert_eq!(config.system_prompt_append, None);
    }

    #[test]
    fn message_beats_session_beats_agent_on_every_field() {
        let session = parse(json!({
            "model": {"model": "big", "temperature": 0.2, "max_tokens": 100,
                      "max_tokens_per_run": 5000, "max_duration_seconds": 60},
            "system_prompt_append": "Answer in French.",
            "capabilities": [
                {"id": "current_time", "enabled": false},
                {"id": "memory", "config": {"limit": 9}},
                {"id": "web_fetch"},
            ],
        }));
        let message = parse(json!({
            "model": {"temperature": 0.0, "max_steps": 3, "max_duration_seconds": 30},
            "system_prompt_append": "Be brief.",
            "capabilities": [{"id": "current_time"}, {"id": "web_fetch", "enabled": false}],
        }));
        let config = RunConfig::resolve(&agent(), Some(&session), Some(&message), 50);
        assert_eq!(
            config.model,
            ModelSettings {
                provider: Some("openai".into()),
                model: Some("big".into()),
                temperature: Some(0.0),
                max_tokens: Some(100),
                max_steps: Some(3),
                max_tokens_per_run: Some(5000),
                max_duration_seconds: Some(30),
                // The agent's, untouched by either override.
                max_tool_calls_per_run: Some(20),
            }
        );
        assert_eq!(
            config.system_prompt_append.as_deref(),
            Some("Answer in French.\n\nBe brief.")
        );
        let ids: Vec<(&str, &serde_json::Value)> = config
            .capabilities
            .iter()
            .map(|c| (c.id.as_str(), &c.config))
            .collect();
        assert_eq!(
            ids,
            [
                ("memory", &json!({"limit": 9})),
                ("current_time", &json!({}))
            ]
        );
        assert_eq!(config.message_overrides, Some(message));
    }

    #[test]
    fn a_capability_enabled_again_gets_the_agents_config_back() {
        let session = parse(json!({"capabilities": [{"id": "memory", "enabled": false}]}));
        let message = parse(json!({"capabilities": [{"id": "memory"}]}));
        let config = RunConfig::resolve(&agent(), Some(&session), Some(&message), 50);
        let memory = config
            .capabilities
            .iter()
            .find(|c| c.id == "memory")
            .unwrap();
        assert_eq!(memory.config, json!({"limit": 5}));
    }

    #[test]
    fn the_shape_round_trips_and_omits_what_is_unset() {
        let over = parse(json!({"capabilities": [{"id": "x", "enabled": false}, {"id": "y"}]}));
        assert_eq!(
            serde_json::to_value(&over).unwrap(),
            json!({"capabilities": [{"id": "x", "enabled": false}, {"id": "y"}]})
        );
        assert_eq!(
            serde_json::to_value(Overrides::default()).unwrap(),
            json!({})
        );
    }

    #[test]
    fn tool_approval_policies_are_replaced_wholesale() {
        let mut with_policy = agent();
        with_policy.tool_approval = Some(ToolApproval {
            require: vec!["memory__*".into()],
            timeout_seconds: 60,
        });
        let config = RunConfig::resolve(&with_policy, None, None, 50);
        assert_eq!(config.tool_approval, with_policy.tool_approval);
        let session = parse(json!({"tool_approval": {"require": ["*"]}}));
        let config = RunConfig::resolve(&with_policy, Some(&session), None, 50);
        assert_eq!(
            config.tool_approval,
            Some(ToolApproval {
                require: vec!["*".into()],
                timeout_seconds: crate::APPROVAL_TIMEOUT_DEFAULT,
            })
        );
        let message = parse(json!({"tool_approval": {"require": [], "timeout_seconds": 5}}));
        let config = RunConfig::resolve(&with_policy, Some(&session), Some(&message), 50);
        assert_eq!(config.tool_approval.unwrap().require, Vec::<String>::new());
    }
}
