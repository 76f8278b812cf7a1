//! Rebuilds the model's view of a session from stored messages: every earlier run's trigger
//! message and the messages that run produced, in queue order, up to the run being executed.
//! [`History`] reads them once per claim and then follows the run's own writes.
//!
//! Messages a run produces carry `metadata.run_id`, so a message queued behind an active run
//! never leaks into that run's conversation.

use std::collections::HashMap;
use std::sync::Arc;

use everruns_core::{Message, MessageRole, Run};
use everruns_llm::{ChatMessage, ToolCall};
use everruns_store::{Store, StoreError};
use serde_json::{Value, json};

/// Metadata of an assistant message with tool calls.
pub fn assistant_metadata(run: &Run, tool_calls: &[ToolCall]) -> Value {
    json!({
        "run_id": run.id.as_str(),
        "tool_calls": tool_calls
            .iter()
            .map(|c| json!({"id": c.id, "name": c.name, "arguments": c.arguments}))
            .collect::<Vec<_>>(),
    })
}

/// Metadata of a tool result message.
pub fn tool_metadata(run: &Run, call: &ToolCall, is_error: bool) -> Value {
    json!({
        "run_id": run.id.as_str(),
        "tool_call_id": call.id,
        "tool_name": call.name,
        "is_error": is_error,
    })
}

/// The conversation of `run`: what came before it, read once when the run's first model call
/// is made and kept as built, and the run's own messages, extended with those its steps store
/// (its worker holds the lease, so nobody else adds to what the run sees). Each model call
/// lends the conversation to the request (no copy) and rebuilds only the run's own part.
#[derive(Debug)]
pub struct History {
    /// Earlier runs' trigger messages and what they produced, in queue order, then the run's
    /// trigger message; after a call, also the run's own part as that call saw it.
    chat: Arc<Vec<ChatMessage>>,
    /// How many messages of `chat` come before the run's own part.
    before: usize,
    /// The messages the run produced, in id order.
    produced: Vec<Message>,
    /// The text of the user message that started the run.
    trigger: String,
}

impl History {
    /// Reads the session's runs and messages.
    pub async fn load(store: &dyn Store, run: &Run) -> Result<Self, StoreError> {
        let (runs, messages) = store.session_history(&run.session_id).await?;
        let by_id: HashMap<&str, &Message> = messages.iter().map(|m| (m.id.as_str(), m)).collect();
        let mut produced: HashMap<&str, Vec<&Message>> = HashMap::new();
        for message in &messages {
            if let Some(run_id) = message.metadata.get("run_id").and_then(Value::as_str) {
                produced.entry(run_id).or_default().push(message);
            }
        }
        let mut earlier = Vec::new();
        for before in runs.iter().filter(|r| r.id < run.id) {
            if let Some(trigger) = by_id.get(before.trigger_message_id.as_str()) {
                earlier.push(ChatMessage::user(trigger.content.clone()));
            }
            if let Some(list) = produced.get(before.id.as_str()) {
                push_run_messages(&mut earlier, list);
            }
        }
        let trigger = by_id
            .get(run.trigger_message_id.as_str())
            .map(|m| m.content.clone())
            .unwrap_or_default();
        if by_id.contains_key(run.trigger_message_id.as_str()) {
            earlier.push(ChatMessage::user(trigger.clone()));
        }
        let own = produced
            .remove(run.id.as_str())
            .unwrap_or_default()
            .into_iter()
            .cloned()
            .collect();
        Ok(Self {
            before: earlier.len(),
            chat: Arc::new(earlier),
            produced: own,
            trigger,
        })
    }

    /// Adds a message the run stored (in id order, as a fresh read would return it).
    /// The user message that started the run (empty if it is gone).
    pub fn trigger(&self) -> &str {
        &self.trigger
    }

    pub fn push(&mut self, message: Message) {
        let at = self.produced.partition_point(|m| m.id <= message.id);
        self.produced.insert(at, message);
    }

    /// The conversation the model sees. Copied only if the previous call's request still
    /// holds it.
    pub fn chat(&mut self) -> Arc<Vec<ChatMessage>> {
        let chat = Arc::make_mut(&mut self.chat);
        chat.truncate(self.before);
        let own: Vec<&Message> = self.produced.iter().collect();
        push_run_messages(chat, &own);
        self.chat.clone()
    }
}

fn push_run_messages(out: &mut Vec<ChatMessage>, list: &[&Message]) {
    let mut open: Vec<ToolCall> = Vec::new();
    for message in list {
        match message.role {
            MessageRole::Assistant => {
                close_open_calls(out, &mut open);
                let tool_calls = tool_calls_of(&message.metadata);
                open = tool_calls.clone();
                out.push(ChatMessage::Assistant {
                    content: message.content.clone(),
                    tool_calls,
                });
            }
            MessageRole::Tool => {
                let id = message
                    .metadata
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                open.retain(|c| c.id != id);
                out.push(ChatMessage::Tool {
                    tool_call_id: id,
                    content: message.content.clone(),
                    is_error: message
                        .metadata
                        .get("is_error")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                });
            }
            MessageRole::User => {}
        }
    }
    close_open_calls(out, &mut open);
}

fn close_open_calls(out: &mut Vec<ChatMessage>, open: &mut Vec<ToolCall>) {
    for call in open.drain(..) {
        out.push(ChatMessage::Tool {
            tool_call_id: call.id,
            content: "error: this tool call did not finish (the run was stopped)".to_owned(),
            is_error: true,
        });
    }
}

/// Tool calls stored in an assistant message's metadata.
pub fn tool_calls_of(metadata: &Value) -> Vec<ToolCall> {
    metadata
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|calls| {
            calls
                .iter()
                .map(|c| ToolCall {
                    id: c["id"].as_str().unwrap_or_default().to_owned(),
                    name: c["name"].as_str().unwrap_or_default().to_owned(),
                    arguments: c["arguments"].as_str().unwrap_or("{}").to_owned(),
                })
                .collect()
        })
        .unwrap_or_default()
}
