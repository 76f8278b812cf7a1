//! Anthropic Messages: `POST {base}/messages` with `stream: true`.
//!
//! The response streams as typed events: `message_start` (input usage), per content block
//! `content_block_start` (text or `tool_use` with id and name), `content_block_delta`
//! (`text_delta` or `input_json_delta` fragments of the tool input), `content_block_stop`,
//! then `message_delta` (stop reason, output usage) and `message_stop`; `ping` keeps the
//! connection alive and `error` reports a failure mid-stream. Tool results go back as
//! `tool_result` blocks inside a user message; consecutive messages of one role are merged
//! because the API requires alternating roles.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use crate::wire::{StreamDecoder, StreamFault, error_message};
use crate::{ChatMessage, ChatRequest, ChatResponse, StopReason, StreamEvent, ToolCall, Usage};

/// The endpoint below the base URL.
pub(crate) const PATH: &str = "/messages";

/// The API version header value this module speaks.
pub(crate) const API_VERSION: &str = "2023-06-01";

/// `max_tokens` is required by the API; used when the request sets none.
const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Builds the request body: typed and borrowing from `req`, so serializing it copies each
/// string once (the conversation is resent on every step and grows with the run).
pub(crate) fn request_body<'a>(req: &'a ChatRequest, model: &'a str) -> Body<'a> {
    let mut messages: Vec<Message<'a>> = Vec::new();
    for m in req.messages.iter() {
        let (role, blocks) = match m {
            ChatMessage::User { content } => ("user", vec![ContentBlock::Text { text: content }]),
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                let mut blocks = Vec::with_capacity(tool_calls.len() + 1);
                // The API rejects empty text blocks.
                if !content.is_empty() {
                    blocks.push(ContentBlock::Text { text: content });
                }
                blocks.extend(tool_calls.iter().map(|c| ContentBlock::ToolUse {
                    id: &c.id,
                    name: &c.name,
                    input: tool_input(&c.arguments),
                }));
                ("assistant", blocks)
            }
            ChatMessage::Tool {
                tool_call_id,
                content,
                is_error,
            } => (
                "user",
                vec![ContentBlock::ToolResult {
                    tool_use_id: tool_call_id,
                    content,
                    is_error: *is_error,
                }],
            ),
        };
        match messages.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => messages.push(Message {
                role,
                content: blocks,
            }),
        }
    }
    Body {
        model,
        max_tokens: req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        messages,
        stream: true,
        system: (!req.system.is_empty()).then_some(req.system.as_str()),
        tools: req
            .tools
            .iter()
            .map(|t| ToolOut {
                name: &t.name,
                description: &t.description,
                input_schema: &t.parameters,
            })
            .collect(),
        temperature: req.temperature,
    }
}

/// The Messages request.
#[derive(Debug, Serialize)]
pub(crate) struct Body<'a> {
    model: &'a str,
    max_tokens: u32,
    messages: Vec<Message<'a>>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Vec<ContentBlock<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentBlock<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
}

#[derive(Debug, Serialize)]
struct ToolOut<'a> {
    name: &'a str,
    description: &'a str,
    input_schema: &'a Value,
}

/// A tool call's raw arguments as the `input` object the API requires. Arguments that are not
/// a JSON object (the model's mistake, already reported to it) are wrapped so the conversation
/// can still be sent.
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        Ok(other) => json!({"value": other}),
        Err(_) => json!({"raw_arguments": arguments}),
    }
}

#[derive(Debug)]
enum Block {
    Text,
    Tool {
        id: String,
        name: String,
        json: String,
        /// The input given whole in `content_block_start` (non-empty when no deltas follow).
        initial: Value,
    },
    Other,
}

/// Assembles a Messages stream.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    text: String,
    blocks: BTreeMap<u64, Block>,
    usage: Usage,
    stop_reason: Option<String>,
    started: bool,
    done: bool,
}

fn protocol(what: &str, data: &str) -> StreamFault {
    StreamFault::Protocol(format!(
        "{what} in event {}",
        crate::wire::truncate(data, 200)
    ))
}

impl StreamDecoder for Decoder {
    fn feed(
        &mut self,
        event: &str,
        data: &str,
        emit: &mut dyn FnMut(StreamEvent),
    ) -> Result<(), StreamFault> {
        if data.trim().is_empty() {
            return Ok(());
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| StreamFault::Protocol(format!("event data is not JSON ({e})")))?;
        // The `type` field repeats the SSE event name; prefer it, it is always there.
        let kind = v.get("type").and_then(Value::as_str).unwrap_or(event);
        match kind {
            "message_start" => {
                self.started = true;
                let u = &v["message"]["usage"];
                self.usage.input_tokens = u["input_tokens"].as_u64().unwrap_or(0);
                self.usage.output_tokens = u["output_tokens"].as_u64().unwrap_or(0);
            }
            "content_block_start" => {
                let index = v["index"]
                    .as_u64()
                    .ok_or_else(|| protocol("missing index", data))?;
                let cb = &v["content_block"];
                let block = match cb["type"].as_str() {
                    Some("text") => {
                        if let Some(t) = cb["text"].as_str().filter(|t| !t.is_empty()) {
                            self.text.push_str(t);
                            emit(StreamEvent::TextDelta(t.to_owned()));
                        }
                        Block::Text
                    }
                    Some("tool_use") => {
                        let id = cb["id"].as_str().unwrap_or_default().to_owned();
                        let name = cb["name"]
                            .as_str()
                            .filter(|n| !n.is_empty())
                            .ok_or_else(|| protocol("tool_use block without a name", data))?
                            .to_owned();
                        emit(StreamEvent::ToolCallStarted {
                            id: id.clone(),
                            name: name.clone(),
                        });
                        Block::Tool {
                            id,
                            name,
                            json: String::new(),
                            initial: cb["input"].clone(),
                        }
                    }
                    // Thinking and future block types are not part of the answer.
                    _ => Block::Other,
                };
                self.blocks.insert(index, block);
            }
            "content_block_delta" => {
                let index = v["index"]
                    .as_u64()
                    .ok_or_else(|| protocol("missing index", data))?;
                let delta = &v["delta"];
                match (self.blocks.get_mut(&index), delta["type"].as_str()) {
                    (Some(Block::Text), Some("text_delta")) => {
                        if let Some(t) = delta["text"].as_str().filter(|t| !t.is_empty()) {
                            self.text.push_str(t);
                            emit(StreamEvent::TextDelta(t.to_owned()));
                        }
                    }
                    (Some(Block::Tool { json, .. }), Some("input_json_delta")) => {
                        json.push_str(delta["partial_json"].as_str().unwrap_or_default());
                    }
                    (None, _) => return Err(protocol("delta for a block never started", data)),
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = v["delta"]["stop_reason"].as_str() {
                    self.stop_reason = Some(r.to_owned());
                }
                let u = &v["usage"];
                if let Some(n) = u["output_tokens"].as_u64() {
                    self.usage.output_tokens = n;
                }
                if let Some(n) = u["input_tokens"].as_u64() {
                    self.usage.input_tokens = n;
                }
            }
            "message_stop" => self.done = true,
            "error" => {
                let status = match v["error"]["type"].as_str() {
                    Some("overloaded_error") => 529,
                    Some("rate_limit_error") => 429,
                    Some("invalid_request_error") => 400,
                    Some("authentication_error") => 401,
                    Some("permission_error") => 403,
                    Some("not_found_error") => 404,
                    Some("request_too_large") => 413,
                    _ => 500,
                };
                return Err(StreamFault::Provider {
                    status,
                    message: error_message(data),
                });
            }
            // `ping`, `content_block_stop` and unknown future events carry nothing we need.
            _ => {}
        }
        Ok(())
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn finish(&mut self) -> Result<ChatResponse, StreamFault> {
        if !self.done {
            return Err(StreamFault::Protocol(
                "stream ended before `message_stop`".to_owned(),
            ));
        }
        let mut tool_calls = Vec::new();
        for block in std::mem::take(&mut self.blocks).into_values() {
            if let Block::Tool {
                id,
                name,
                json,
                initial,
            } = block
            {
                let arguments = if !json.trim().is_empty() {
                    json
                } else if initial.is_object() {
                    initial.to_string()
                } else {
                    "{}".to_owned()
                };
                tool_calls.push(ToolCall {
                    id,
                    name,
                    arguments,
                });
            }
        }
        let stop_reason = match self.stop_reason.as_deref() {
            Some("end_turn" | "stop_sequence") | None => StopReason::EndTurn,
            Some("tool_use") => StopReason::ToolUse,
            Some("max_tokens") => StopReason::MaxTokens,
            Some("refusal") => StopReason::ContentFilter,
            Some(other) => StopReason::Other(other.to_owned()),
        };
        Ok(ChatResponse {
            text: std::mem::take(&mut self.text),
            tool_calls,
            usage: self.usage,
            stop_reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(events: &[(&str, &str)]) -> (Vec<StreamEvent>, Result<ChatResponse, StreamFault>) {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for (name, data) in events {
            if let Err(f) = d.feed(name, data, &mut |ev| out.push(ev)) {
                return (out, Err(f));
            }
        }
        let res = d.finish();
        (out, res)
    }

    #[test]
    fn text_tool_use_and_usage() {
        let (events, res) = run(&[
            (
                "message_start",
                r#"{"type":"message_start","message":{"usage":{"input_tokens":25,"output_tokens":1}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            ("ping", r#"{"type":"ping"}"#),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me"}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" check."}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"get","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": "}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":1}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_2","name":"now","input":{}}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":2}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":40}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ]);
        let res = res.expect("valid stream");
        assert_eq!(events.len(), 4);
        assert_eq!(res.text, "Let me check.");
        assert_eq!(res.stop_reason, StopReason::ToolUse);
        assert_eq!(
            res.usage,
            Usage {
                input_tokens: 25,
                output_tokens: 40
            }
        );
        assert_eq!(res.tool_calls[0].arguments, r#"{"city": "Paris"}"#);
        assert_eq!(res.tool_calls[1].arguments, "{}");
        assert_eq!(res.tool_calls[1].id, "toolu_2");
    }

    #[test]
    fn error_event_and_truncation() {
        let (_, res) = run(&[(
            "error",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )]);
        assert_eq!(
            res,
            Err(StreamFault::Provider {
                status: 529,
                message: "Overloaded".into()
            })
        );
        let (_, res) = run(&[(
            "message_start",
            r#"{"type":"message_start","message":{"usage":{"input_tokens":1}}}"#,
        )]);
        assert!(matches!(res, Err(StreamFault::Protocol(_))));
    }

    #[test]
    fn body_merges_tool_results_into_one_user_message() {
        let req = ChatRequest {
            system: "sys".into(),
            messages: vec![
                ChatMessage::user("hi"),
                ChatMessage::Assistant {
                    content: String::new(),
                    tool_calls: vec![
                        ToolCall {
                            id: "a".into(),
                            name: "x".into(),
                            arguments: r#"{"n":1}"#.into(),
                        },
                        ToolCall {
                            id: "b".into(),
                            name: "y".into(),
                            arguments: "oops".into(),
                        },
                    ],
                },
                ChatMessage::tool_result("a", "one"),
                ChatMessage::Tool {
                    tool_call_id: "b".into(),
                    content: "bad".into(),
                    is_error: true,
                },
            ]
            .into(),
            ..ChatRequest::default()
        };
        let body = serde_json::to_value(request_body(&req, "claude")).unwrap();
        assert_eq!(body["system"], "sys");
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        let msgs = body["messages"].as_array().expect("messages array");
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[1]["content"][0]["input"], json!({"n": 1}));
        assert_eq!(
            msgs[1]["content"][1]["input"],
            json!({"raw_arguments": "oops"})
        );
        assert_eq!(msgs[2]["role"], "user");
        assert_eq!(
            msgs[2]["content"],
            json!([
                {"type": "tool_result", "tool_use_id": "a", "content": "one"},
                {"type": "tool_result", "tool_use_id": "b", "content": "bad", "is_error": true},
            ])
        );
        assert!(body.get("tools").is_none());
    }
}
