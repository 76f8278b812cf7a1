//! [`LlmClient`]: one streaming model call, with retries before output and none after.

use std::error::Error as _;
use std::time::Duration;

use eventsource_stream::{EventStreamError, Eventsource};
use futures::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use secrecy::ExposeSecret;

use crate::retry::{self, is_retryable_status};
use crate::wire::{StreamDecoder, StreamFault, error_message};
use crate::{
    ChatRequest, ChatResponse, ClientOptions, LlmError, ProviderConfig, ProviderKind, Result,
    StreamEvent, anthropic, openai,
};

/// A client for one provider. Cheap to clone (the HTTP connection pool is shared).
#[derive(Debug, Clone)]
pub struct LlmClient {
    config: ProviderConfig,
    options: ClientOptions,
    /// The base URL without a trailing slash.
    base: String,
    endpoint: String,
    http: reqwest::Client,
}

/// A failed attempt and whether another attempt may help.
struct Failure {
    error: LlmError,
    /// `None`: do not retry. `Some(after)`: retry, after the server's requested wait if any.
    retry: Option<Option<Duration>>,
}

impl Failure {
    fn fatal(error: LlmError) -> Self {
        Self { error, retry: None }
    }

    fn transient(error: LlmError, after: Option<Duration>) -> Self {
        Self {
            error,
            retry: Some(after),
        }
    }
}

impl LlmClient {
    /// A client with default [`ClientOptions`].
    pub fn new(config: ProviderConfig) -> Result<Self> {
        Self::with_options(config, ClientOptions::default())
    }

    /// A client with explicit timeouts and retry policy.
    pub fn with_options(config: ProviderConfig, options: ClientOptions) -> Result<Self> {
        let base = config.base_url.trim_end_matches('/');
        let parsed = reqwest::Url::parse(base).map_err(|e| {
            LlmError::InvalidRequest(format!(
                "invalid base URL `{base}` for {}: {e}",
                config.kind
            ))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(LlmError::InvalidRequest(format!(
                "base URL `{base}` must be http or https"
            )));
        }
        let path = match config.kind {
            ProviderKind::OpenAi => openai::PATH,
            ProviderKind::Anthropic => anthropic::PATH,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .build()
            .map_err(|e| LlmError::InvalidRequest(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            base: base.to_owned(),
            endpoint: format!("{base}{path}"),
            config,
            options,
            http,
        })
    }

    /// The provider's wire format.
    pub fn kind(&self) -> ProviderKind {
        self.config.kind
    }

    /// The model used when a request names none.
    pub fn default_model(&self) -> Option<&str> {
        self.config.default_model.as_deref()
    }

    /// The full URL requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends `req` and streams the answer: `on_event` sees text deltas and tool-call starts as
    /// they arrive (and a [`StreamEvent::Retrying`] before each retry); the result is the whole
    /// response.
    ///
    /// Failures before any output are retried per [`crate::RetryPolicy`]; once output was
    /// delivered, a failure is [`LlmError::Interrupted`] and never retried. Dropping the future
    /// cancels the call and closes its connection.
    pub async fn stream(
        &self,
        req: &ChatRequest,
        on_event: &mut (dyn FnMut(StreamEvent) + Send),
    ) -> Result<ChatResponse> {
        let model = match (req.model.trim(), &self.config.default_model) {
            ("", Some(default)) if !default.trim().is_empty() => default.trim(),
            ("", _) => {
                return Err(LlmError::InvalidRequest(
                    "no model given and the provider has no default model".to_owned(),
                ));
            }
            (model, _) => model,
        };
        // Serialized once: every attempt sends the same bytes.
        let body = match self.config.kind {
            ProviderKind::OpenAi => bytes_of(&openai::request_body(req, model)),
            ProviderKind::Anthropic => bytes_of(&anthropic::request_body(req, model)),
        };
        let policy = &self.options.retry;
        let mut delays = retry::backoff(policy);
        let mut attempt: u32 = 1;
        loop {
            let Failure { mut error, retry } = match self.attempt(&body, on_event).await {
                Ok(response) => return Ok(response),
                Err(f) => f,
            };
            error.set_attempts(attempt);
            let error = error.redact(self.config.api_key.expose_secret());
            let Some(after) = retry else {
                return Err(error);
            };
            if attempt >= policy.max_attempts.max(1) {
                return Err(error);
            }
            let delay = match after {
                Some(after) if after > policy.max_delay => {
                    return Err(with_note(
                        error,
                        &format!(
                            "the provider asked to retry after {}s, longer than the {}s limit",
                            after.as_secs_f64().ceil(),
                            policy.max_delay.as_secs_f64()
                        ),
                    ));
                }
                Some(after) => after,
                None => delays.next().unwrap_or(policy.max_delay),
            };
            tracing::warn!(provider = %self.config.kind, attempt, ?delay, error = %error, "LLM call failed, retrying");
            on_event(StreamEvent::Retrying {
                attempt,
                delay,
                reason: error.to_string(),
            });
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// Lists the provider's models (`GET {base}/models`, the same path for both providers): a
    /// cheap call that proves the base URL and the API key work. One attempt, no retries, all
    /// of it (connecting included) within `timeout`. Errors carry the provider's own message
    /// and never the key.
    pub async fn list_models(&self, timeout: Duration) -> Result<Vec<String>> {
        let provider = self.config.kind;
        let url = format!("{}{}", self.base, PATH_MODELS);
        let request = self
            .authorize(self.http.get(&url))
            .header(ACCEPT, "application/json")
            .timeout(timeout);
        let timed_out = || LlmError::Timeout {
            provider,
            message: format!("no answer within {}s", timeout.as_secs_f64()),
            attempts: 1,
        };
        let key = self.config.api_key.expose_secret();
        let response = match tokio::time::timeout(timeout, request.send()).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) if e.is_timeout() => return Err(timed_out()),
            Ok(Err(e)) => {
                let error = match self.send_failure(&e).error {
                    LlmError::Connect {
                        message, attempts, ..
                    } => LlmError::Connect {
                        provider,
                        url: url.clone(),
                        message,
                        attempts,
                    },
                    other => other,
                };
                return Err(error.redact(key));
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let text = match tokio::time::timeout(timeout, response.text()).await {
            Ok(Ok(text)) => text,
            Ok(Err(_)) | Err(_) if !status.is_success() => String::new(),
            Ok(Err(e)) => return Err(self.send_failure(&e).error.redact(key)),
            Err(_) => return Err(timed_out()),
        };
        if !status.is_success() {
            let message = if text.trim().is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("no error body")
                    .to_owned()
            } else {
                error_message(&text)
            };
            return Err(LlmError::Http {
                provider,
                status: status.as_u16(),
                message,
                retryable: is_retryable_status(status.as_u16()),
                attempts: 1,
            }
            .redact(key));
        }
        models_of(&text).ok_or_else(|| LlmError::Protocol {
            provider,
            message: "the model list is not `{\"data\": [{\"id\": ...}]}`".to_owned(),
        })
    }

    /// Adds the provider's authentication (and version) headers; an empty key sends none.
    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let key = self.config.api_key.expose_secret();
        match self.config.kind {
            ProviderKind::OpenAi if key.is_empty() => request,
            ProviderKind::OpenAi => request.bearer_auth(key),
            ProviderKind::Anthropic => {
                let r = request.header("anthropic-version", anthropic::API_VERSION);
                if key.is_empty() {
                    r
                } else {
                    r.header("x-api-key", key)
                }
            }
        }
    }

    async fn attempt(
        &self,
        body: &bytes::Bytes,
        on_event: &mut (dyn FnMut(StreamEvent) + Send),
    ) -> Result<ChatResponse, Failure> {
        let provider = self.config.kind;
        let request = self.authorize(
            self.http
                .post(&self.endpoint)
                .header(CONTENT_TYPE, "application/json")
                .header(ACCEPT, "text/event-stream")
                .body(body.clone()),
        );
        let wait = self.options.response_timeout;
        let response = match tokio::time::timeout(wait, request.send()).await {
            Err(_) => {
                return Err(Failure::transient(
                    LlmError::Timeout {
                        provider,
                        message: format!("no response within {}s", wait.as_secs_f64()),
                        attempts: 1,
                    },
                    None,
                ));
            }
            Ok(Err(e)) => return Err(self.send_failure(&e)),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if !status.is_success() {
            let after = retry::retry_after(response.headers());
            // A body that does not arrive in time still leaves a useful status.
            let text = tokio::time::timeout(wait, response.text())
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or_default();
            let message = if text.trim().is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("no error body")
                    .to_owned()
            } else {
                error_message(&text)
            };
            let retryable = is_retryable_status(status.as_u16());
            let error = LlmError::Http {
                provider,
                status: status.as_u16(),
                message,
                retryable,
                attempts: 1,
            };
            return Err(if retryable {
                Failure::transient(error, after)
            } else {
                Failure::fatal(error)
            });
        }

        let mut decoder: Box<dyn StreamDecoder> = match provider {
            ProviderKind::OpenAi => Box::<openai::Decoder>::default(),
            ProviderKind::Anthropic => Box::<anthropic::Decoder>::default(),
        };
        let mut delivered = false;
        let mut events = response.bytes_stream().eventsource();
        let idle = self.options.idle_timeout;
        let failure = loop {
            let next = tokio::time::timeout(idle, events.next()).await;
            let event = match next {
                Err(_) => {
                    break Failure::transient(
                        LlmError::Timeout {
                            provider,
                            message: format!(
                                "the response stream stalled (no data for {}s)",
                                idle.as_secs_f64()
                            ),
                            attempts: 1,
                        },
                        None,
                    );
                }
                Ok(None) => match decoder.finish() {
                    Ok(response) => return Ok(response),
                    Err(fault) => break fault_failure(provider, fault),
                },
                Ok(Some(Err(EventStreamError::Transport(e)))) => {
                    break Failure::transient(
                        LlmError::Disconnected {
                            provider,
                            message: error_chain(&e),
                            attempts: 1,
                        },
                        None,
                    );
                }
                Ok(Some(Err(e))) => {
                    break Failure::fatal(LlmError::Protocol {
                        provider,
                        message: format!("malformed event stream: {e}"),
                    });
                }
                Ok(Some(Ok(event))) => event,
            };
            let fed = {
                let mut emit = |ev: StreamEvent| {
                    delivered |= ev.is_output();
                    on_event(ev);
                };
                decoder.feed(&event.event, &event.data, &mut emit)
            };
            if let Err(fault) = fed {
                break fault_failure(provider, fault);
            }
            if decoder.is_done() {
                // Stop reading at the provider's end marker; anything after it is ignored.
                match decoder.finish() {
                    Ok(response) => return Ok(response),
                    Err(fault) => break fault_failure(provider, fault),
                }
            }
        };
        if delivered {
            let message = match &failure.error {
                LlmError::Http {
                    status, message, ..
                } => format!("HTTP {status}: {message}"),
                LlmError::Connect { message, .. }
                | LlmError::Disconnected { message, .. }
                | LlmError::Timeout { message, .. }
                | LlmError::Protocol { message, .. }
                | LlmError::Interrupted { message, .. }
                | LlmError::InvalidRequest(message) => message.clone(),
            };
            return Err(Failure::fatal(LlmError::Interrupted { provider, message }));
        }
        Err(failure)
    }

    fn send_failure(&self, e: &reqwest::Error) -> Failure {
        let provider = self.config.kind;
        let message = error_chain(e);
        let error = if e.is_timeout() {
            LlmError::Timeout {
                provider,
                message,
                attempts: 1,
            }
        } else if e.is_connect() {
            LlmError::Connect {
                provider,
                url: self.endpoint.clone(),
                message,
                attempts: 1,
            }
        } else {
            LlmError::Disconnected {
                provider,
                message,
                attempts: 1,
            }
        };
        Failure::transient(error, None)
    }
}

fn fault_failure(provider: ProviderKind, fault: StreamFault) -> Failure {
    match fault {
        StreamFault::Protocol(message) => Failure::fatal(LlmError::Protocol { provider, message }),
        StreamFault::Provider { status, message } => {
            let retryable = is_retryable_status(status);
            let error = LlmError::Http {
                provider,
                status,
                message,
                retryable,
                attempts: 1,
            };
            if retryable {
                Failure::transient(error, None)
            } else {
                Failure::fatal(error)
            }
        }
    }
}

/// The error and its causes, innermost last, without the request URL reqwest puts first (the
/// error variant names the endpoint where it matters).
fn error_chain(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

fn with_note(mut error: LlmError, note: &str) -> LlmError {
    if let LlmError::Http { message, .. } = &mut error {
        message.push_str(&format!(" ({note})"));
    }
    error
}

/// Path of the model list, relative to the base URL (OpenAI and Anthropic alike).
const PATH_MODELS: &str = "/models";

/// The model ids of a model list: `{"data": [{"id": "..."}, ...]}` in both providers' formats.
fn models_of(body: &str) -> Option<Vec<String>> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value
        .get("data")?
        .as_array()?
        .iter()
        .map(|m| m.get("id").and_then(|id| id.as_str()).map(str::to_owned))
        .collect()
}

fn bytes_of(body: &impl serde::Serialize) -> bytes::Bytes {
    // The bodies cannot fail to serialize: string keys, strings, numbers (a non-finite float
    // becomes `null`) and `Value`s.
    bytes::Bytes::from(serde_json::to_vec(body).unwrap_or_default())
}
