//! What the two provider modules share: the stream decoder contract and error-body parsing.

use crate::{ChatResponse, StreamEvent};

/// Turns one provider's server-sent events into [`StreamEvent`]s and, at the end, a
/// [`ChatResponse`]. Pure: no I/O, so it is unit-tested on literal event sequences.
pub(crate) trait StreamDecoder: Send {
    /// Handles one SSE event (`event:` name, possibly empty, and `data:`).
    fn feed(
        &mut self,
        event: &str,
        data: &str,
        emit: &mut dyn FnMut(StreamEvent),
    ) -> Result<(), StreamFault>;

    /// Whether the provider signalled the end of the stream.
    fn is_done(&self) -> bool;

    /// The assembled response once the byte stream ended.
    fn finish(&mut self) -> Result<ChatResponse, StreamFault>;
}

/// A stream that went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamFault {
    /// Malformed or incomplete stream.
    Protocol(String),
    /// The provider reported an error inside the stream; `status` is the HTTP status it
    /// corresponds to (529 overloaded, 500 server error, ...).
    Provider { status: u16, message: String },
}

/// Extracts a human message from a provider error body: `{"error": {"message": ...}}` (OpenAI
/// and Anthropic both), `{"error": "..."}`, `{"message": ...}`, else the start of the body.
pub(crate) fn error_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        let candidates = [
            v.pointer("/error/message"),
            v.get("error").filter(|e| e.is_string()),
            v.get("message"),
            v.get("detail"),
        ];
        if let Some(msg) = candidates.into_iter().flatten().find_map(|m| m.as_str())
            && !msg.trim().is_empty()
        {
            return msg.trim().to_owned();
        }
    }
    let body = body.trim();
    if body.is_empty() {
        return "empty error body".to_owned();
    }
    truncate(body, 500)
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    format!("{}...", &s[..s.floor_char_boundary(max)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_from_both_providers() {
        assert_eq!(
            error_message(r#"{"error":{"message":"bad model","type":"invalid_request_error"}}"#),
            "bad model"
        );
        assert_eq!(
            error_message(
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            "Overloaded"
        );
        assert_eq!(
            error_message(r#"{"error":"model not found"}"#),
            "model not found"
        );
        assert_eq!(
            error_message("<html>502 Bad Gateway</html>"),
            "<html>502 Bad Gateway</html>"
        );
        assert_eq!(error_message(""), "empty error body");
        assert_eq!(truncate("héllo", 2), "h...");
    }
}
