//! Messages of a conversation.

use crate::{MessageId, SessionId, Timestamp};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageRole {
    User,
    Assistant,
    Tool,
}

impl MessageRole {
    /// The stored / wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
        }
    }

    /// Parses the stored name.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "user" => Some(Self::User),
            "assistant" => Some(Self::Assistant),
            "tool" => Some(Self::Tool),
            _ => None,
        }
    }
}

/// A stored message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: MessageId,
    pub session_id: SessionId,
    pub role: MessageRole,
    /// Text content.
    pub content: String,
    /// Structured extras (tool calls, tool call id, ...), `Null` when none.
    pub metadata: serde_json::Value,
    pub created_at: Timestamp,
}

/// What is needed to append a message.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub session_id: SessionId,
    pub role: MessageRole,
    pub content: String,
    pub metadata: serde_json::Value,
}
