//! [`FakeLlm`]: a real HTTP server speaking the OpenAI Chat Completions and Anthropic Messages
//! streaming wire formats, scripted per test, recording every request (unless
//! [`FakeLlm::set_recording`] turns that off).
//!
//! `GET /v1/models` lists [`FakeLlm::set_models`] (both providers' shape) after the same key
//! check, for provider connection tests. Each chat request takes the next [`Reply`] from a
//! FIFO; when the FIFO is empty, the fallback closure (if set) decides from the
//! [`RecordedRequest`]; otherwise the server answers 500 "no scripted reply", which fails the
//! test with a clear message.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The API key the fake accepts (as `Authorization: Bearer` for OpenAI, `x-api-key` for
/// Anthropic). Requests with another key get a provider-shaped 401.
pub const FAKE_LLM_API_KEY: &str = "sk-fake-llm-test-key-0123456789";

/// Which wire format a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// `POST /v1/chat/completions`.
    OpenAi,
    /// `POST /v1/messages`.
    Anthropic,
}

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Which endpoint.
    pub wire: WireFormat,
    /// Request path.
    pub path: String,
    /// Headers, lowercase names, without `authorization` and `x-api-key`.
    pub headers: Vec<(String, String)>,
    /// Whether the request carried [`FAKE_LLM_API_KEY`] the provider's way.
    pub auth_ok: bool,
    /// The body as received.
    raw: Bytes,
    /// The body as a JSON tree, parsed on first use: a fallback that looks at a few fields
    /// (with [`RecordedRequest::parse`]) does not pay for a tree of the whole conversation.
    tree: OnceLock<Value>,
}

impl RecordedRequest {
    /// The JSON body (`Null` if it was not JSON), parsed on first use.
    pub fn body(&self) -> &Value {
        self.tree
            .get_or_init(|| serde_json::from_slice(&self.raw).unwrap_or(Value::Null))
    }

    /// The body read as `T` (which may borrow from it and name only the fields it needs);
    /// `None` when it does not fit.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Option<T> {
        serde_json::from_slice(&self.raw).ok()
    }

    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `model` field.
    pub fn model(&self) -> &str {
        self.body()["model"].as_str().unwrap_or_default()
    }

    /// The `messages` array (empty if absent).
    pub fn messages(&self) -> &[Value] {
        self.body()["messages"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Names of the tools offered, in order, in either format.
    pub fn tool_names(&self) -> Vec<String> {
        let Some(tools) = self.body()["tools"].as_array() else {
            return Vec::new();
        };
        tools
            .iter()
            .filter_map(|t| t.pointer("/function/name").or_else(|| t.get("name")))
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    }

    /// Whether the conversation ends with tool results (the model is being told what its tool
    /// calls returned), in either format.
    pub fn last_message_is_tool_result(&self) -> bool {
        let Some(last) = self.messages().last() else {
            return false;
        };
        match self.wire {
            WireFormat::OpenAi => last["role"] == "tool",
            WireFormat::Anthropic => {
                last["role"] == "user"
                    && last["content"]
                        .as_array()
                        .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"))
            }
        }
    }

    /// All tool results in the conversation as `(tool_call_id, content)`, in either format.
    pub fn tool_results(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for m in self.messages() {
            match self.wire {
                WireFormat::OpenAi if m["role"] == "tool" => out.push((
                    m["tool_call_id"].as_str().unwrap_or_default().to_owned(),
                    m["content"].as_str().unwrap_or_default().to_owned(),
                )),
                WireFormat::Anthropic => {
                    for b in m["content"].as_array().into_iter().flatten() {
                        if b["type"] == "tool_result" {
                            out.push((
                                b["tool_use_id"].as_str().unwrap_or_default().to_owned(),
                                b["content"].as_str().unwrap_or_default().to_owned(),
                            ));
                        }
                    }
                }
                WireFormat::OpenAi => {}
            }
        }
        out
    }
}

/// A tool call the fake model makes.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeToolCall {
    /// Id; `None` lets the fake assign a unique one (`call_fake_N` / `toolu_fake_N`).
    pub id: Option<String>,
    /// Tool name.
    pub name: String,
    /// Arguments (streamed as JSON text in several fragments).
    pub arguments: Value,
}

#[derive(Debug, Clone)]
enum ReplyBody {
    Stream {
        text: String,
        tool_calls: Vec<FakeToolCall>,
    },
    Error {
        status: u16,
        message: String,
        retry_after: Option<String>,
    },
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    body: ReplyBody,
    usage: Option<(u64, u64)>,
    header_delay: Duration,
    stall: Option<(usize, Duration)>,
    disconnect_after: Option<usize>,
    delta_delay: Option<Duration>,
}

impl Reply {
    fn new(body: ReplyBody) -> Self {
        Self {
            body,
            usage: None,
            header_delay: Duration::ZERO,
            stall: None,
            disconnect_after: None,
            delta_delay: None,
        }
    }

    /// A text answer, streamed one word per delta.
    pub fn text(text: impl Into<String>) -> Self {
        Self::new(ReplyBody::Stream {
            text: text.into(),
            tool_calls: Vec::new(),
        })
    }

    /// One tool call.
    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Self {
        Self::tool_calls([(name, arguments)])
    }

    /// Several parallel tool calls.
    pub fn tool_calls<N: Into<String>>(calls: impl IntoIterator<Item = (N, Value)>) -> Self {
        Self::new(ReplyBody::Stream {
            text: String::new(),
            tool_calls: calls
                .into_iter()
                .map(|(name, arguments)| FakeToolCall {
                    id: None,
                    name: name.into(),
                    arguments,
                })
                .collect(),
        })
    }

    /// Adds a tool call (after any text and earlier calls).
    pub fn and_tool_call(mut self, name: impl Into<String>, arguments: Value) -> Self {
        if let ReplyBody::Stream { tool_calls, .. } = &mut self.body {
            tool_calls.push(FakeToolCall {
                id: None,
                name: name.into(),
                arguments,
            });
        }
        self
    }

    /// An HTTP error with a provider-shaped body carrying `message`.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self::new(ReplyBody::Error {
            status,
            message: message.into(),
            retry_after: None,
        })
    }

    /// 429 with `Retry-After` in whole seconds (rounded up).
    pub fn rate_limited(retry_after: Duration) -> Self {
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        Self::rate_limited_header(secs.to_string())
    }

    /// 429 with a literal `Retry-After` value (seconds or an HTTP date).
    pub fn rate_limited_header(retry_after: impl Into<String>) -> Self {
        Self::new(ReplyBody::Error {
            status: 429,
            message: "Rate limit reached, please retry later".to_owned(),
            retry_after: Some(retry_after.into()),
        })
    }

    /// Reported token usage (default: rough counts).
    pub fn with_usage(mut self, input_tokens: u64, output_tokens: u64) -> Self {
        self.usage = Some((input_tokens, output_tokens));
        self
    }

    /// Waits this long before sending response headers.
    pub fn stall_before_headers(mut self, delay: Duration) -> Self {
        self.header_delay = delay;
        self
    }

    /// After `deltas` content deltas (text fragments, tool-call starts and argument fragments;
    /// 0 = right after the headers), holds the stream open for `delay`, then continues.
    pub fn stall_after(mut self, deltas: usize, delay: Duration) -> Self {
        self.stall = Some((deltas, delay));
        self
    }

    /// After `deltas` content deltas, breaks the connection without finishing the response.
    pub fn disconnect_after(mut self, deltas: usize) -> Self {
        self.disconnect_after = Some(deltas);
        self
    }

    /// Delay before each content delta (overrides [`FakeLlm::set_delta_delay`]).
    pub fn with_delta_delay(mut self, delay: Duration) -> Self {
        self.delta_delay = Some(delay);
        self
    }
}

type Fallback = Arc<dyn Fn(&RecordedRequest) -> Reply + Send + Sync>;

struct Shared {
    replies: Mutex<VecDeque<Reply>>,
    fallback: Mutex<Option<Fallback>>,
    requests: Mutex<Vec<Arc<RecordedRequest>>>,
    /// Whether requests are kept for [`FakeLlm::requests`] (a long-running demo keeps none).
    recording: AtomicBool,
    delta_delay: Mutex<Duration>,
    next_id: AtomicU64,
    client_disconnects: AtomicU64,
    models: Mutex<Vec<String>>,
}

/// Locks a mutex, ignoring poisoning: a panicking test thread must not hide the fake's state
/// from the assertion that reports it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The fake provider, serving until dropped.
pub struct FakeLlm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    handle: JoinHandle<()>,
}

impl std::fmt::Debug for FakeLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeLlm")
            .field("addr", &self.addr)
            .field("requests", &self.request_count())
            .finish_non_exhaustive()
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl FakeLlm {
    /// Starts the server on `127.0.0.1:0`; panics when it cannot bind (a test has no use for
    /// a fake that is not there).
    pub async fn start() -> Self {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap_or_else(|e| panic!("fake LLM cannot bind 127.0.0.1:0: {e}"))
    }

    /// Starts the server on `addr`.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            replies: Mutex::new(VecDeque::new()),
            fallback: Mutex::new(None),
            requests: Mutex::new(Vec::new()),
            recording: AtomicBool::new(true),
            delta_delay: Mutex::new(Duration::ZERO),
            next_id: AtomicU64::new(1),
            client_disconnects: AtomicU64::new(0),
            models: Mutex::new(vec!["fake-model".to_owned()]),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            .route("/v1/models", get(models))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let handle = tokio::spawn(async move {
            // Streamed chunks go out at once, as from a real provider (no Nagle delay).
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("fake LLM server stopped: {e}");
            }
        });
        Ok(Self {
            addr,
            shared,
            handle,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL for an OpenAI-compatible client: `http://127.0.0.1:PORT/v1`.
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Base URL for an Anthropic client: `http://127.0.0.1:PORT/v1`.
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The key the fake accepts ([`FAKE_LLM_API_KEY`]).
    pub fn api_key(&self) -> &'static str {
        FAKE_LLM_API_KEY
    }

    /// Queues a reply.
    pub fn push(&self, reply: Reply) {
        lock(&self.shared.replies).push_back(reply);
    }

    /// Queues several replies, in order.
    pub fn push_all(&self, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.shared.replies).extend(replies);
    }

    /// Answers requests when the queue is empty.
    pub fn set_fallback(&self, f: impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static) {
        *lock(&self.shared.fallback) = Some(Arc::new(f));
    }

    /// Delay before each streamed content delta (default 0).
    pub fn set_delta_delay(&self, delay: Duration) {
        *lock(&self.shared.delta_delay) = delay;
    }

    /// The model ids `GET /v1/models` lists (default `["fake-model"]`).
    pub fn set_models<S: Into<String>>(&self, models: impl IntoIterator<Item = S>) {
        *lock(&self.shared.models) = models.into_iter().map(Into::into).collect();
    }

    /// Whether to keep every request for [`FakeLlm::requests`] (default `true`); a fake that
    /// serves for long, as `everruns dev fake-llm` does, turns it off to stay bounded.
    pub fn set_recording(&self, on: bool) {
        self.shared.recording.store(on, Ordering::SeqCst);
    }

    /// Every request received so far, in order (including rejected ones).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests)
            .iter()
            .map(|r| RecordedRequest::clone(r))
            .collect()
    }

    /// How many requests were received.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Replies still queued.
    pub fn pending_replies(&self) -> usize {
        lock(&self.shared.replies).len()
    }

    /// How many streaming responses the client abandoned before they were complete.
    pub fn client_disconnects(&self) -> u64 {
        self.shared.client_disconnects.load(Ordering::SeqCst)
    }
}

async fn openai(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(
        shared,
        WireFormat::OpenAi,
        "/v1/chat/completions",
        headers,
        body,
    )
    .await
}

async fn anthropic(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(shared, WireFormat::Anthropic, "/v1/messages", headers, body).await
}

/// `GET /v1/models`: Anthropic's shape when the request carries `anthropic-version`, else
/// OpenAI's; both are `{"data": [{"id": ...}]}`.
async fn models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let wire = if headers.contains_key("anthropic-version") {
        WireFormat::Anthropic
    } else {
        WireFormat::OpenAi
    };
    let request = record(&shared, wire, "/v1/models", &headers, Bytes::new());
    if !request.auth_ok {
        return error_response(wire, 401, "invalid API key", None);
    }
    let models = lock(&shared.models).clone();
    let data: Vec<Value> = models
        .iter()
        .map(|id| match wire {
            WireFormat::OpenAi => json!({"id": id, "object": "model", "owned_by": "fake"}),
            WireFormat::Anthropic => {
                json!({"id": id, "type": "model", "display_name": id, "created_at": "2025-01-01T00:00:00Z"})
            }
        })
        .collect();
    let body = match wire {
        WireFormat::OpenAi => json!({"object": "list", "data": data}),
        WireFormat::Anthropic => {
            json!({"data": data, "has_more": false, "first_id": models.first(), "last_id": models.last()})
        }
    };
    axum::Json(body).into_response()
}

/// Records a request (without its key) and whether it carried [`FAKE_LLM_API_KEY`].
fn record(
    shared: &Shared,
    wire: WireFormat,
    path: &str,
    headers: &HeaderMap,
    raw: Bytes,
) -> Arc<RecordedRequest> {
    let auth_ok = match wire {
        WireFormat::OpenAi => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == format!("Bearer {FAKE_LLM_API_KEY}")),
        WireFormat::Anthropic => headers
            .get("x-api-key")
            .is_some_and(|v| v.as_bytes() == FAKE_LLM_API_KEY.as_bytes()),
    };
    let request = RecordedRequest {
        wire,
        path: path.to_owned(),
        headers: headers
            .iter()
            .filter(|(n, _)| *n != header::AUTHORIZATION && n.as_str() != "x-api-key")
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        auth_ok,
        raw,
        tree: OnceLock::new(),
    };
    let request = Arc::new(request);
    if shared.recording.load(Ordering::SeqCst) {
        lock(&shared.requests).push(request.clone());
    }
    request
}

/// The fields of a chat request the fake itself needs (the rest is skipped unparsed).
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(default, borrow)]
    model: Cow<'a, str>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

async fn handle(
    shared: Arc<Shared>,
    wire: WireFormat,
    path: &str,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body_len = body.len();
    let request = record(&shared, wire, path, &headers, body);
    if !request.auth_ok {
        return error_response(wire, 401, "invalid API key", None);
    }
    // Checks the JSON without building a tree of it.
    let Some(head) = request.parse::<Head>() else {
        return error_response(wire, 400, "request body is not valid JSON", None);
    };
    let reply = lock(&shared.replies).pop_front();
    let reply = match reply {
        Some(r) => r,
        None => {
            let fallback = lock(&shared.fallback).clone();
            match fallback {
                Some(f) => f(&request),
                None => Reply::error(500, "fake LLM: no scripted reply left for this request"),
            }
        }
    };
    if !reply.header_delay.is_zero() {
        tokio::time::sleep(reply.header_delay).await;
    }
    match &reply.body {
        ReplyBody::Error {
            status,
            message,
            retry_after,
        } => error_response(wire, *status, message, retry_after.as_deref()),
        ReplyBody::Stream { text, tool_calls } => {
            let default_delay = *lock(&shared.delta_delay);
            let mut frames = Frames::new(&reply, default_delay);
            let ids: Vec<String> = tool_calls
                .iter()
                .map(|c| {
                    c.id.clone().unwrap_or_else(|| {
                        let n = shared.next_id.fetch_add(1, Ordering::SeqCst);
                        match wire {
                            WireFormat::OpenAi => format!("call_fake_{n}"),
                            WireFormat::Anthropic => format!("toolu_fake_{n}"),
                        }
                    })
                })
                .collect();
            let input_tokens = reply.usage.map_or((body_len / 4) as u64, |u| u.0);
            let model = head.model.into_owned();
            match wire {
                WireFormat::OpenAi => {
                    let include_usage = head.stream_options.is_some_and(|o| o.include_usage);
                    openai_frames(&mut frames, &model, text, tool_calls, &ids);
                    let output = reply.usage.map_or(frames.items as u64, |u| u.1);
                    let finish = if tool_calls.is_empty() {
                        "stop"
                    } else {
                        "tool_calls"
                    };
                    frames.meta(openai_chunk(&model, json!({}), Some(finish)));
                    if include_usage {
                        frames.meta(format!(
                            "data: {}\n\n",
                            json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [], "usage": {"prompt_tokens": input_tokens, "completion_tokens": output, "total_tokens": input_tokens + output}})
                        ));
                    }
                    frames.meta("data: [DONE]\n\n".to_owned());
                }
                WireFormat::Anthropic => {
                    frames.meta(sse("message_start", &json!({"type": "message_start", "message": {"id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": input_tokens, "output_tokens": 1}}})));
                    frames.meta(sse("ping", &json!({"type": "ping"})));
                    anthropic_frames(&mut frames, text, tool_calls, &ids);
                    let output = reply.usage.map_or(frames.items as u64, |u| u.1);
                    let stop = if tool_calls.is_empty() {
                        "end_turn"
                    } else {
                        "tool_use"
                    };
                    frames.meta(sse("message_delta", &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": output}})));
                    frames.meta(sse("message_stop", &json!({"type": "message_stop"})));
                }
            }
            frames.into_response(shared.clone())
        }
    }
}

fn error_response(
    wire: WireFormat,
    status: u16,
    message: &str,
    retry_after: Option<&str>,
) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match wire {
        WireFormat::OpenAi => {
            let kind = match status.as_u16() {
                401 => "invalid_api_key",
                429 => "rate_limit_exceeded",
                s if s >= 500 => "server_error",
                _ => "invalid_request_error",
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
        }
        WireFormat::Anthropic => {
            let kind = match status.as_u16() {
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                s if s >= 500 => "api_error",
                _ => "invalid_request_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
    };
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(v) = retry_after.and_then(|v| v.parse().ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

fn sse(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

fn openai_chunk(model: &str, delta: Value, finish: Option<&str>) -> String {
    let chunk = json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    format!("data: {chunk}\n\n")
}

fn openai_frames(
    frames: &mut Frames,
    model: &str,
    text: &str,
    calls: &[FakeToolCall],
    ids: &[String],
) {
    frames.meta(openai_chunk(
        model,
        json!({"role": "assistant", "content": ""}),
        None,
    ));
    for word in words(text) {
        frames.item(openai_chunk(model, json!({"content": word}), None));
    }
    for (index, (call, id)) in calls.iter().zip(ids).enumerate() {
        frames.item(openai_chunk(
            model,
            json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": call.name, "arguments": ""}}]}),
            None,
        ));
        for part in fragments(&call.arguments.to_string()) {
            frames.item(openai_chunk(
                model,
                json!({"tool_calls": [{"index": index, "function": {"arguments": part}}]}),
                None,
            ));
        }
    }
}

fn anthropic_frames(frames: &mut Frames, text: &str, calls: &[FakeToolCall], ids: &[String]) {
    let mut index = 0;
    if !text.is_empty() {
        frames.meta(sse("content_block_start", &json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})));
        for word in words(text) {
            frames.item(sse("content_block_delta", &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": word}})));
        }
        frames.meta(sse(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    for (call, id) in calls.iter().zip(ids) {
        frames.item(sse("content_block_start", &json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": id, "name": call.name, "input": {}}})));
        for part in fragments(&call.arguments.to_string()) {
            frames.item(sse("content_block_delta", &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": part}})));
        }
        frames.meta(sse(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
}

/// Text split after each space, so the deltas concatenate to the text exactly.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive(' ')
}

/// JSON text in about three fragments, split on character boundaries.
fn fragments(json: &str) -> Vec<String> {
    let chars: Vec<char> = json.chars().collect();
    let size = chars.len().div_ceil(3).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

enum Step {
    Data(Bytes),
    Sleep(Duration),
    Fail,
}

/// The scripted body: frames with the reply's delays, stall and disconnect applied.
struct Frames {
    steps: VecDeque<Step>,
    items: usize,
    delta_delay: Duration,
    stall: Option<(usize, Duration)>,
    disconnect_after: Option<usize>,
    cut: bool,
}

impl Frames {
    fn new(reply: &Reply, default_delay: Duration) -> Self {
        let mut frames = Self {
            steps: VecDeque::new(),
            items: 0,
            delta_delay: reply.delta_delay.unwrap_or(default_delay),
            stall: reply.stall,
            disconnect_after: reply.disconnect_after,
            cut: false,
        };
        frames.after_item();
        frames
    }

    /// A frame that is not content (framing events).
    fn meta(&mut self, frame: String) {
        if !self.cut {
            self.steps.push_back(Step::Data(Bytes::from(frame)));
        }
    }

    /// A content delta.
    fn item(&mut self, frame: String) {
        if self.cut {
            return;
        }
        if !self.delta_delay.is_zero() {
            self.steps.push_back(Step::Sleep(self.delta_delay));
        }
        self.steps.push_back(Step::Data(Bytes::from(frame)));
        self.items += 1;
        self.after_item();
    }

    fn after_item(&mut self) {
        if let Some((n, d)) = self.stall
            && n == self.items
        {
            self.steps.push_back(Step::Sleep(d));
        }
        if self.disconnect_after == Some(self.items) {
            // Pause first so the server flushes the frames already produced; an error in the
            // same poll would abort the connection with them still buffered.
            self.steps.push_back(Step::Sleep(Duration::from_millis(50)));
            self.steps.push_back(Step::Fail);
            self.cut = true;
        }
    }

    fn into_response(self, shared: Arc<Shared>) -> Response {
        let guard = StreamGuard {
            shared,
            finished: false,
        };
        let stream =
            futures::stream::unfold((self.steps, guard), |(mut steps, mut guard)| async move {
                loop {
                    match steps.pop_front() {
                        None => {
                            guard.finish();
                            return None;
                        }
                        Some(Step::Sleep(d)) => tokio::time::sleep(d).await,
                        Some(Step::Data(b)) => {
                            return Some((Ok::<_, std::io::Error>(b), (steps, guard)));
                        }
                        Some(Step::Fail) => {
                            guard.finish();
                            let err = std::io::Error::other("fake LLM: scripted disconnect");
                            return Some((Err(err), (steps, guard)));
                        }
                    }
                }
            });
        (
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from_stream(stream),
        )
            .into_response()
    }
}

/// Counts responses the client abandoned (dropped before the last frame).
struct StreamGuard {
    shared: Arc<Shared>,
    finished: bool,
}

impl StreamGuard {
    /// The stream ended as scripted (completely, or with its scripted disconnect).
    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.shared
                .client_disconnects
                .fetch_add(1, Ordering::SeqCst);
        }
    }
}
