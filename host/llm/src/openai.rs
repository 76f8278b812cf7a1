//! OpenAI-compatible Chat Completions: `POST {base}/chat/completions` with `stream: true`.
//!
//! Tool calls stream as `choices[0].delta.tool_calls[]` fragments keyed by `index` (several
//! indexes = parallel calls); the first fragment of a call carries its id and name, later ones
//! append to `function.arguments`. Usage arrives in a final chunk with empty `choices` because
//! the request sets `stream_options.include_usage`. The stream ends with `data: [DONE]`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::wire::{StreamDecoder, StreamFault, error_message};
use crate::{ChatMessage, ChatRequest, ChatResponse, StopReason, StreamEvent, ToolCall, Usage};

/// The endpoint below the base URL.
pub(crate) const PATH: &str = "/chat/completions";

/// Builds the request body: typed and borrowing from `req`, so serializing it copies each
/// string once (the conversation is resent on every step and grows with the run).
pub(crate) fn request_body<'a>(req: &'a ChatRequest, model: &'a str) -> Body<'a> {
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    if !req.system.is_empty() {
        messages.push(Message::System {
            content: &req.system,
        });
    }
    messages.extend(req.messages.iter().map(|m| {
        match m {
            ChatMessage::User { content } => Message::User { content },
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => Message::Assistant {
                // Chat Completions wants `null`, not "", next to tool calls.
                content: (!content.is_empty() || tool_calls.is_empty()).then_some(content),
                tool_calls: tool_calls
                    .iter()
                    .map(|c| CallOut {
                        id: &c.id,
                        kind: "function",
                        function: FunctionCall {
                            name: &c.name,
                            arguments: &c.arguments,
                        },
                    })
                    .collect(),
            },
            ChatMessage::Tool {
                tool_call_id,
                content,
                is_error,
            } => Message::Tool {
                tool_call_id,
                // Chat Completions has no error flag for tool results; say it in the text.
                content: if *is_error {
                    Cow::Owned(format!("Error: {content}"))
                } else {
                    Cow::Borrowed(content)
                },
            },
        }
    }));
    Body {
        model,
        messages,
        stream: true,
        stream_options: StreamOptions {
            include_usage: true,
        },
        tools: req
            .tools
            .iter()
            .map(|t| ToolOut {
                kind: "function",
                function: FunctionSpec {
                    name: &t.name,
                    description: &t.description,
                    parameters: &t.parameters,
                },
            })
            .collect(),
        temperature: req.temperature,
        // `max_tokens` rather than `max_completion_tokens`: the compatible servers (Ollama,
        // vLLM, llama.cpp) all accept it.
        max_tokens: req.max_tokens,
    }
}

/// The Chat Completions request.
#[derive(Debug, Serialize)]
pub(crate) struct Body<'a> {
    model: &'a str,
    messages: Vec<Message<'a>>,
    stream: bool,
    stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
}

#[derive(Debug, Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Debug, Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum Message<'a> {
    System {
        content: &'a str,
    },
    User {
        content: &'a str,
    },
    Assistant {
        content: Option<&'a str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<CallOut<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: Cow<'a, str>,
    },
}

#[derive(Debug, Serialize)]
struct CallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionCall<'a>,
}

#[derive(Debug, Serialize)]
struct FunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Debug, Serialize)]
struct ToolOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionSpec<'a>,
}

#[derive(Debug, Serialize)]
struct FunctionSpec<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a Value,
}

#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
    announced: bool,
}

/// Assembles a Chat Completions stream.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    text: String,
    calls: BTreeMap<u64, PartialCall>,
    usage: Usage,
    finish_reason: Option<String>,
    done: bool,
}

impl StreamDecoder for Decoder {
    fn feed(
        &mut self,
        _event: &str,
        data: &str,
        emit: &mut dyn FnMut(StreamEvent),
    ) -> Result<(), StreamFault> {
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        let chunk: Value = serde_json::from_str(data)
            .map_err(|e| StreamFault::Protocol(format!("chunk is not JSON ({e})")))?;
        if let Some(err) = chunk.get("error") {
            let status = err
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| (400..600).contains(c))
                .unwrap_or(500);
            return Err(StreamFault::Provider {
                status,
                message: error_message(data),
            });
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage.input_tokens = u["prompt_tokens"].as_u64().unwrap_or(0);
            self.usage.output_tokens = u["completion_tokens"].as_u64().unwrap_or(0);
        }
        let Some(choice) = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        else {
            return Ok(());
        };
        let delta = &choice["delta"];
        if let Some(text) = delta.get("content").and_then(Value::as_str)
            && !text.is_empty()
        {
            self.text.push_str(text);
            emit(StreamEvent::TextDelta(text.to_owned()));
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for (pos, c) in calls.iter().enumerate() {
                // Some servers omit `index` when they send whole calls; position is the index then.
                let index = c["index"].as_u64().unwrap_or(pos as u64);
                let call = self.calls.entry(index).or_default();
                if let Some(id) = c.get("id").and_then(Value::as_str)
                    && !id.is_empty()
                {
                    call.id = id.to_owned();
                }
                let f = &c["function"];
                if let Some(name) = f.get("name").and_then(Value::as_str) {
                    call.name.push_str(name);
                }
                if let Some(args) = f.get("arguments") {
                    match args {
                        Value::String(s) => call.arguments.push_str(s),
                        // Some servers send the arguments as an object.
                        Value::Object(_) => call.arguments.push_str(&args.to_string()),
                        _ => {}
                    }
                }
                if !call.announced && !call.name.is_empty() {
                    call.announced = true;
                    if call.id.is_empty() {
                        call.id = format!("call_{index}");
                    }
                    emit(StreamEvent::ToolCallStarted {
                        id: call.id.clone(),
                        name: call.name.clone(),
                    });
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
        }
        Ok(())
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn finish(&mut self) -> Result<ChatResponse, StreamFault> {
        if !self.done && self.finish_reason.is_none() {
            return Err(StreamFault::Protocol(
                "stream ended before the response was complete".to_owned(),
            ));
        }
        let mut tool_calls = Vec::with_capacity(self.calls.len());
        for (index, c) in std::mem::take(&mut self.calls) {
            if c.name.is_empty() {
                return Err(StreamFault::Protocol(format!(
                    "tool call #{index} has no function name"
                )));
            }
            let arguments = if c.arguments.trim().is_empty() {
                "{}".to_owned()
            } else {
                c.arguments
            };
            tool_calls.push(ToolCall {
                id: if c.id.is_empty() {
                    format!("call_{index}")
                } else {
                    c.id
                },
                name: c.name,
                arguments,
            });
        }
        let stop_reason = match self.finish_reason.as_deref() {
            Some("stop") | None => {
                if tool_calls.is_empty() {
                    StopReason::EndTurn
                } else {
                    StopReason::ToolUse
                }
            }
            Some("tool_calls" | "function_call") => StopReason::ToolUse,
            Some("length") => StopReason::MaxTokens,
            Some("content_filter") => StopReason::ContentFilter,
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
    use crate::ToolSpec;
    use serde_json::json;

    fn run(events: &[&str]) -> (Vec<StreamEvent>, Result<ChatResponse, StreamFault>) {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for e in events {
            if let Err(f) = d.feed("", e, &mut |ev| out.push(ev)) {
                return (out, Err(f));
            }
        }
        let res = d.finish();
        (out, res)
    }

    #[test]
    fn text_and_usage() {
        let (events, res) = run(&[
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3}}"#,
            "[DONE]",
        ]);
        let res = res.expect("valid stream");
        assert_eq!(
            events,
            vec![
                StreamEvent::TextDelta("Hel".into()),
                StreamEvent::TextDelta("lo".into())
            ]
        );
        assert_eq!(res.text, "Hello");
        assert_eq!(res.stop_reason, StopReason::EndTurn);
        assert_eq!(
            res.usage,
            Usage {
                input_tokens: 12,
                output_tokens: 3
            }
        );
    }

    #[test]
    fn parallel_tool_calls_assembled_by_index() {
        let (events, res) = run(&[
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get","arguments":""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"put","arguments":"{\"k\":"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"x\":1}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"2}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            "[DONE]",
        ]);
        let res = res.expect("valid stream");
        assert_eq!(events.len(), 2);
        assert_eq!(res.stop_reason, StopReason::ToolUse);
        assert_eq!(
            res.tool_calls,
            vec![
                ToolCall {
                    id: "call_a".into(),
                    name: "get".into(),
                    arguments: r#"{"x":1}"#.into()
                },
                ToolCall {
                    id: "call_b".into(),
                    name: "put".into(),
                    arguments: r#"{"k":2}"#.into()
                },
            ]
        );
    }

    #[test]
    fn truncated_stream_and_error_chunk() {
        let (_, res) = run(&[r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#]);
        assert!(matches!(res, Err(StreamFault::Protocol(_))));
        let (_, res) = run(&[r#"{"error":{"message":"overloaded","code":503}}"#]);
        assert_eq!(
            res,
            Err(StreamFault::Provider {
                status: 503,
                message: "overloaded".into()
            })
        );
        let (_, res) = run(&["not json"]);
        assert!(matches!(res, Err(StreamFault::Protocol(_))));
    }

    #[test]
    fn body_encodes_tools_and_tool_results() {
        let req = ChatRequest {
            model: String::new(),
            system: "be brief".into(),
            messages: vec![
                ChatMessage::user("hi"),
                ChatMessage::Assistant {
                    content: String::new(),
                    tool_calls: vec![ToolCall {
                        id: "c1".into(),
                        name: "get".into(),
                        arguments: "{}".into(),
                    }],
                },
                ChatMessage::Tool {
                    tool_call_id: "c1".into(),
                    content: "boom".into(),
                    is_error: true,
                },
            ]
            .into(),
            tools: vec![ToolSpec {
                name: "get".into(),
                description: "gets".into(),
                parameters: json!({"type": "object"}),
            }],
            temperature: Some(0.5),
            max_tokens: Some(100),
        };
        let body = serde_json::to_value(request_body(&req, "m")).unwrap();
        assert_eq!(body["model"], "m");
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(body["messages"][2]["content"], Value::Null);
        assert_eq!(
            body["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{}"
        );
        assert_eq!(
            body["messages"][3],
            json!({"role": "tool", "tool_call_id": "c1", "content": "Error: boom"})
        );
        assert_eq!(body["tools"][0]["function"]["name"], "get");
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["max_tokens"], 100);
    }
}
