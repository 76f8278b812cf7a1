//! The provider clients against the fake LLM over real HTTP, for both wire formats.

use std::sync::Arc;
use std::time::{Duration, Instant};

use everruns_llm::{
    ChatMessage, ChatRequest, ChatResponse, ClientOptions, LlmClient, LlmError, ProviderConfig,
    ProviderKind, RetryPolicy, StopReason, StreamEvent, ToolCall, ToolSpec, Usage,
};
use everruns_testkit::{FAKE_LLM_API_KEY, FakeLlm, Reply, WireFormat};
use serde_json::json;

/// Runs `$name(kind)` once per provider as `$name::openai` and `$name::anthropic`.
macro_rules! both_providers {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn openai() {
                super::$name(everruns_llm::ProviderKind::OpenAi).await;
            }
            #[tokio::test]
            async fn anthropic() {
                super::$name(everruns_llm::ProviderKind::Anthropic).await;
            }
        }
    )*};
}

both_providers!(
    text_streams_in_order,
    tool_call_round_trip,
    parallel_tool_calls_and_errors_round_trip,
    rate_limit_honours_retry_after,
    server_errors_are_retried,
    client_errors_are_not_retried,
    retries_are_bounded,
    failure_after_output_is_not_retried,
    disconnect_before_output_is_retried,
    stall_before_headers_times_out_and_retries,
    stall_after_output_is_interrupted,
    dropping_the_future_cancels_promptly,
    api_key_never_appears_in_errors,
    fallback_answers_by_conversation_state,
    models_are_listed_and_a_wrong_key_is_reported,
);

fn fast_options() -> ClientOptions {
    ClientOptions {
        retry: RetryPolicy {
            max_attempts: 4,
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_secs(5),
        },
        connect_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
    }
}

fn config(kind: ProviderKind, base_url: String, key: &str) -> ProviderConfig {
    ProviderConfig {
        kind,
        base_url,
        api_key: key.to_owned().into(),
        default_model: Some("fake-model".to_owned()),
    }
}

fn client_with(fake: &FakeLlm, kind: ProviderKind, options: ClientOptions) -> LlmClient {
    let base = match kind {
        ProviderKind::OpenAi => fake.openai_base_url(),
        ProviderKind::Anthropic => fake.anthropic_base_url(),
    };
    LlmClient::with_options(config(kind, base, fake.api_key()), options).expect("valid config")
}

fn client(fake: &FakeLlm, kind: ProviderKind) -> LlmClient {
    client_with(fake, kind, fast_options())
}

fn weather_tool() -> ToolSpec {
    ToolSpec {
        name: "get_weather".into(),
        description: "Current weather in a city".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    }
}

fn request(text: &str) -> ChatRequest {
    ChatRequest {
        system: "You are terse.".into(),
        messages: vec![ChatMessage::user(text)].into(),
        tools: vec![weather_tool()],
        ..ChatRequest::default()
    }
}

async fn call(
    client: &LlmClient,
    req: &ChatRequest,
) -> (Vec<StreamEvent>, Result<ChatResponse, LlmError>) {
    let mut events = Vec::new();
    let result = client.stream(req, &mut |e| events.push(e)).await;
    (events, result)
}

fn text_deltas(events: &[StreamEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::TextDelta(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

fn retries(events: &[StreamEvent]) -> Vec<Duration> {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Retrying { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect()
}

fn wire(kind: ProviderKind) -> WireFormat {
    match kind {
        ProviderKind::OpenAi => WireFormat::OpenAi,
        ProviderKind::Anthropic => WireFormat::Anthropic,
    }
}

async fn text_streams_in_order(kind: ProviderKind) {
    let fake = FakeLlm::start().await;
    fake.push(Reply::text("The quick brown fox jumps over").with_usage(17, 6));
    let (events, result) = call(&client(&fake, kind), &request("hi")).await;
    let response = result.expect("text reply");

    let deltas = text_deltas(&events);
    assert_eq!(deltas.len(), 6, "one delta per word: {deltas:?}");
    assert_eq!(deltas.concat(), "The quick brown fox jumps over");
    assert_eq!(response.text, deltas.concat());
    assert!(response.tool_calls.is_empty());
    assert_eq!(response.stop_reason, StopReason::EndTurn);
    assert_eq!(
        response.usage,
        Usage {
            input_tokens: 17,
            output_tokens: 6
        }
    );

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.wire, wire(kind));
    assert!(r.auth_ok, "the API key is sent the provider's way");
    assert_eq!(r.model(), "fake-model", "the default model is used");
    assert_eq!(r.body()["stream"], true);
    assert_eq!(r.tool_names(), vec!["get_weather"]);
    match kind {
        ProviderKind::OpenAi => {
            assert_eq!(
                r.messages()[0],
                json!({"role": "system", "content": "You are terse."})
            );
            assert_eq!(r.body()["stream_options"]["include_usage"], true);
            assert_eq!(
                r.body()["tools"][0]["function"]["parameters"]["required"][0],
                "city"
            );
        }
        ProviderKind::Anthropic => {
            assert_eq!(r.body()["system"], "You are terse.");
            assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
            assert!(
                r.body()["max_tokens"].as_u64().is_some(),
                "max_tokens is required"
            );
            assert_eq!(r.body()["tools"][0]["input_schema"]["required"][0], "city");
        }
    }
}

async fn tool_call_round_trip(kind: ProviderKind) {
    let fake = FakeLlm::start().await;
    let client = client(&fake, kind);
    fake.push(Reply::tool_call(
        "get_weather",
        json!({"city": "Paris", "units": "C"}),
    ));
    let mut req = request("weather in Paris?");
    let (events, result) = call(&client, &req).await;
    let first = result.expect("tool call reply");

    assert_eq!(first.stop_reason, StopReason::ToolUse);
    assert_eq!(first.tool_calls.len(), 1);
    let tc = &first.tool_calls[0];
    assert_eq!(tc.name, "get_weather");
    assert_eq!(
        tc.arguments_json().expect("valid JSON args"),
        json!({"city": "Paris", "units": "C"})
    );
    assert!(events.contains(&StreamEvent::ToolCallStarted {
        id: tc.id.clone(),
        name: tc.name.clone()
    }));

    Arc::make_mut(&mut req.messages).push(ChatMessage::Assistant {
        content: first.text.clone(),
        tool_calls: first.tool_calls.clone(),
    });
    Arc::make_mut(&mut req.messages).push(ChatMessage::tool_result(&tc.id, "sunny, 21C"));
    fake.push(Reply::text("Sunny and 21C."));
    let (_, result) = call(&client, &req).await;
    assert_eq!(result.expect("final reply").text, "Sunny and 21C.");

    let second = &fake.requests()[1];
    assert!(second.last_message_is_tool_result());
    assert_eq!(
        second.tool_results(),
        vec![(tc.id.clone(), "sunny, 21C".to_owned())]
    );
    let assistant = &second.messages()[second.messages().len() - 2];
    match kind {
        ProviderKind::OpenAi => {
            assert_eq!(assistant["tool_calls"][0]["id"], tc.id.as_str());
            assert_eq!(
                assistant["tool_calls"][0]["function"]["name"],
                "get_weather"
            );
            let args: serde_json::Value = serde_json::from_str(
                assistant["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .expect("arguments are a string"),
            )
            .expect("arguments are JSON");
            assert_eq!(args, json!({"city": "Paris", "units": "C"}));
        }
        ProviderKind::Anthropic => {
            assert_eq!(
                assistant["content"],
                json!([{"type": "tool_use", "id": tc.id, "name": "get_weather", "input": {"city": "Paris", "units": "C"}}])
            );
        }
    }
}

async fn parallel_tool_calls_and_errors_round_trip(kind: ProviderKind) {
    let fake = FakeLlm::start().await;
    let client = client(&fake, kind);
    fake.push(
        Reply::text("Checking both.")
            .and_tool_call("get_weather", json!({"city": "Paris"}))
            .and_tool_call("get_weather", json!({"city": "Oslo"})),
    );
    let mut req = request("Paris and Oslo?");
    let (events, result) = call(&client, &req).await;
    let first = result.expect("parallel tool calls");
    assert_eq!(first.text, "Checking both.");
    assert_eq!(first.stop_reason, StopReason::ToolUse);
    let cities: Vec<_> = first
        .tool_calls
        .iter()
        .map(|c| c.arguments_json().expect("valid JSON")["city"].clone())
        .collect();
    assert_eq!(cities, vec![json!("Paris"), json!("Oslo")]);
    assert_ne!(first.tool_calls[0].id, first.tool_calls[1].id);
    let started = events
        .iter()
        .filter(|e| matches!(e, StreamEvent::ToolCallStarted { .. }))
        .count();
    assert_eq!(started, 2);

    Arc::make_mut(&mut req.messages).push(ChatMessage::Assistant {
        content: first.text.clone(),
        tool_calls: first.tool_calls.clone(),
    });
    let (a, b) = (&first.tool_calls[0].id, &first.tool_calls[1].id);
    Arc::make_mut(&mut req.messages).push(ChatMessage::tool_result(a, "sunny"));
    Arc::make_mut(&mut req.messages).push(ChatMessage::Tool {
        tool_call_id: b.clone(),
        content: "station offline".into(),
        is_error: true,
    });
    fake.push(Reply::text("Paris is sunny; Oslo unknown."));
    call(&client, &req).await.1.expect("final reply");

    let second = &fake.requests()[1];
    let msgs = second.messages();
    match kind {
        ProviderKind::OpenAi => {
            // system, user, assistant, tool, tool
            assert_eq!(msgs.len(), 5);
            assert_eq!(msgs[2]["content"], "Checking both.");
            assert_eq!(msgs[2]["tool_calls"].as_array().map(Vec::len), Some(2));
            assert_eq!(
                msgs[3],
                json!({"role": "tool", "tool_call_id": a, "content": "sunny"})
            );
            assert_eq!(
                msgs[4],
                json!({"role": "tool", "tool_call_id": b, "content": "Error: station offline"})
            );
        }
        ProviderKind::Anthropic => {
            // user, assistant, one user message with both results
            assert_eq!(msgs.len(), 3);
            assert_eq!(
                msgs[1]["content"][0],
                json!({"type": "text", "text": "Checking both."})
            );
            assert_eq!(msgs[1]["content"][2]["input"], json!({"city": "Oslo"}));
            assert_eq!(
                msgs[2]["content"],
                json!([
                    {"type": "tool_result", "tool_use_id": a, "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": b, "content": "station offline", "is_error": true},
                ])
            );
        }
    }
}

async fn rate_limit_honours_retry_after(kind: ProviderKind) {
    let fake = FakeLlm::start().await;
    fake.push(Reply::rate_limited(Duration::from_secs(1)));
    fake.push(Reply::text("after the wait"));
    let started = Instant::now();
    let (events, result) = call(&client(&fake, kind), &request("hi")).await;
    assert_eq!(result.expect("retried").text, "after the wait");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(retries(&events), vec![Duration::from_secs(1)]);
    assert_eq!(fake.request_count(), 2);
}

async fn server_errors_are_retried(kind: ProviderKind) {
    let fake = FakeLlm::start().await;
    fake.push_all([
        Reply::error(500, "internal error"),
        Reply::error(529, "Overloaded"),
        Reply::error(503, "unavailable"),
        Reply::text("finally"),
    ]);
    let (events, result) = call(&client(&fake, kind), &request("hi")).await;
    assert_eq!(result.expect("retried to success").text, "finally");
    assert_eq!(retries(&events).len(), 3);
    assert_eq!(fake.request_count(), 4);
    // Every attempt sent the same body.
    let bodies: Vec<_> = fake
        .requests()
        .into_iter()
        .map(|r| r.body().clone())
        .collect();
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
}

async fn client_errors_are_not_retried(kind: ProviderKind) {
    let fake = FakeLlm::start().await;
    fake.push(Reply::error(400, "model `nope` does not exist"));
    fake.push(Reply::text("never sent"));
    let (events, result) = call(&client(&fake, kind), &request("hi")).await;
    let err = result.expect_err("400 fails");
    assert_eq!(
        err,
        LlmError::Http {
            provider: kind,
            status: 400,
            message: "model `nope` does not exist".into(),
            retryable: false,
            attempts: 1
        }
    );
    assert_eq!(
        err.to_string(),
        format!("{kind} provider returned HTTP 400: model `nope` does not exist")
    );
    assert!(events.is_empty());
    assert_eq!(fake.request_count(), 1);
}

async fn retries_are_bounded(kind: ProviderKind) {
    let fake = FakeLlm::start().await;
    fake.set_fallback(|_| Reply::error(503, "upstream unavailable"));
    let (events, result) = call(&client(&fake, kind), &request("hi")).await;
    let err = result.expect_err("gives up");
    assert_eq!(fake.request_count(), 4);
    assert_eq!(retries(&events).len(), 3);
    assert!(err.is_transient());
    assert_eq!(
        err.to_string(),
        format!(
            "{kind} provider returned HTTP 503: upstream unavailable (gave up after 4 attempts)"
        )
    );

    // A Retry-After beyond the policy's limit is not waited for.
    let fake = FakeLlm::start().await;
    fake.push(Reply::rate_limited(Duration::from_secs(120)));
    let started = Instant::now();
    let err = call(&client(&fake, kind), &request("hi"))
        .await
        .1
        .expect_err("gives up");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        err.to_string().contains("asked to retry after 120s"),
        "{err}"
    );
}

async fn failure_after_output_is_not_retried(kind: ProviderKind) {
    let fake = FakeLlm::start().await;
    fake.push(Reply::text("one two three four five").disconnect_after(2));
    fake.push(Reply::text("must not be requested"));
    let (events, result) = call(&client(&fake, kind), &request("hi")).await;
    let err = result.expect_err("interrupted");
    assert!(
        matches!(err, LlmError::Interrupted { provider, .. } if provider == kind),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("after output had started"),
        "{err}"
    );
    assert_eq!(text_deltas(&events), vec!["one ", "two "]);
    assert!(retries(&events).is_empty());
    assert_eq!(fake.request_count(), 1);
    assert_eq!(fake.pending_replies(), 1);

    // The same holds when the output so far was a tool call.
    let fake = FakeLlm::start().await;
    fake.push(Reply::tool_call("get_weather", json!({"city": "Rome"})).disconnect_after(1));
    let (_, result) = call(&client(&fake, kind), &request("hi")).await;
    assert!(
        matches!(result, Err(LlmError::Interrupted { .. })),
        "{result:?}"
    );
    assert_eq!(fake.request_count(), 1);
}

async fn disconnect_before_output_is_retried(kind: ProviderKind) {
    let fake = FakeLlm::start().await;
    fake.push(Reply::text("lost").disconnect_after(0));
    fake.push(Reply::text("second try"));
    let (events, result) = call(&client(&fake, kind), &request("hi")).await;
    assert_eq!(result.expect("retried").text, "second try");
    assert_eq!(retries(&events).len(), 1);
    assert_eq!(fake.request_count(), 2);
}

async fn stall_before_headers_times_out_and_retries(kind: ProviderKind) {
    let fake = FakeLlm::start().await;
    fake.push(Reply::text("too late").stall_before_headers(Duration::from_secs(10)));
    fake.push(Reply::text("on time"));
    let options = ClientOptions {
        response_timeout: Duration::from_millis(300),
        ..fast_options()
    };
    let started = Instant::now();
    let (events, result) = call(&client_with(&fake, kind, options), &request("hi")).await;
    assert_eq!(result.expect("retried").text, "on time");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(retries(&events).len(), 1);
}

async fn stall_after_output_is_interrupted(kind: ProviderKind) {
    let fake = FakeLlm::start().await;
    fake.push(Reply::text("slow and then silent").stall_after(1, Duration::from_secs(10)));
    let options = ClientOptions {
        idle_timeout: Duration::from_millis(300),
        ..fast_options()
    };
    let started = Instant::now();
    let (events, result) = call(&client_with(&fake, kind, options), &request("hi")).await;
    let err = result.expect_err("stalled");
    assert!(matches!(err, LlmError::Interrupted { .. }), "{err:?}");
    assert!(err.to_string().contains("stalled"), "{err}");
    assert_eq!(text_deltas(&events), vec!["slow "]);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(fake.request_count(), 1);
}

async fn dropping_the_future_cancels_promptly(kind: ProviderKind) {
    let fake = FakeLlm::start().await;
    fake.push(Reply::text("a b c d e f g h").stall_after(2, Duration::from_secs(30)));
    let client = client(&fake, kind);
    let req = request("hi");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    {
        let mut on_event = move |e: StreamEvent| {
            let _ = tx.send(e);
        };
        let call = client.stream(&req, &mut on_event);
        tokio::pin!(call);
        let mut seen = 0;
        while seen < 2 {
            tokio::select! {
                r = &mut call => panic!("the stream should be stalled, got {r:?}"),
                Some(_) = rx.recv() => seen += 1,
            }
        }
        // Leaving the block drops the future mid-stream.
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    // The server sees the connection go away.
    let deadline = Instant::now() + Duration::from_secs(2);
    while fake.client_disconnects() == 0 {
        assert!(
            Instant::now() < deadline,
            "the HTTP stream was not closed on cancel"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn api_key_never_appears_in_errors(kind: ProviderKind) {
    let fake = FakeLlm::start().await;
    // Providers echo the key in auth errors; the client must not pass it on.
    fake.push(Reply::error(
        401,
        format!("Incorrect API key provided: {FAKE_LLM_API_KEY}."),
    ));
    let (events, result) = call(&client(&fake, kind), &request("hi")).await;
    let err = result.expect_err("401");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(FAKE_LLM_API_KEY), "{shown}");
    assert!(
        shown.contains("Incorrect API key provided: [redacted]"),
        "{shown}"
    );
    assert!(events.is_empty());

    // Retried errors and their Retrying reasons too.
    fake.push(Reply::error(
        500,
        format!("key {FAKE_LLM_API_KEY} broke us"),
    ));
    fake.push(Reply::text("ok"));
    let (events, _) = call(&client(&fake, kind), &request("hi")).await;
    assert!(!format!("{events:?}").contains(FAKE_LLM_API_KEY));

    // A wrong key gets the provider's 401, not retried.
    let base = match kind {
        ProviderKind::OpenAi => fake.openai_base_url(),
        ProviderKind::Anthropic => fake.anthropic_base_url(),
    };
    let wrong = LlmClient::with_options(config(kind, base, "sk-wrong-key-42"), fast_options())
        .expect("valid config");
    let before = fake.request_count();
    let err = call(&wrong, &request("hi")).await.1.expect_err("401");
    assert!(
        matches!(
            err,
            LlmError::Http {
                status: 401,
                retryable: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.to_string().contains("sk-wrong-key-42"));
    assert_eq!(fake.request_count(), before + 1);
    assert!(!fake.requests().last().expect("recorded").auth_ok);

    // Connection errors name the endpoint, not the key.
    let port = free_port().await;
    let down = LlmClient::with_options(
        config(
            kind,
            format!("http://127.0.0.1:{port}/v1"),
            FAKE_LLM_API_KEY,
        ),
        fast_options(),
    )
    .expect("valid config");
    let err = call(&down, &request("hi"))
        .await
        .1
        .expect_err("connection refused");
    assert!(!format!("{err} {err:?}").contains(FAKE_LLM_API_KEY));
}

async fn fallback_answers_by_conversation_state(kind: ProviderKind) {
    let fake = FakeLlm::start().await;
    fake.set_fallback(|r| {
        if r.last_message_is_tool_result() {
            Reply::text("done")
        } else {
            Reply::tool_call("get_weather", json!({"city": "Lima"}))
        }
    });
    let client = client(&fake, kind);
    let mut req = request("go");
    for _ in 0..3 {
        let response = call(&client, &req).await.1.expect("reply");
        let calls: Vec<ToolCall> = response.tool_calls.clone();
        assert_eq!(calls.len(), 1);
        Arc::make_mut(&mut req.messages).push(ChatMessage::Assistant {
            content: response.text,
            tool_calls: calls.clone(),
        });
        Arc::make_mut(&mut req.messages).push(ChatMessage::tool_result(&calls[0].id, "warm"));
        let response = call(&client, &req).await.1.expect("reply");
        assert_eq!(response.text, "done");
        Arc::make_mut(&mut req.messages).push(ChatMessage::Assistant {
            content: response.text,
            tool_calls: Vec::new(),
        });
        Arc::make_mut(&mut req.messages).push(ChatMessage::user("again"));
    }
    assert_eq!(fake.request_count(), 6);
}

async fn free_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test]
async fn connection_refused_fails_clearly_after_bounded_retries() {
    for kind in [ProviderKind::OpenAi, ProviderKind::Anthropic] {
        let port = free_port().await;
        let options = ClientOptions {
            retry: RetryPolicy {
                max_attempts: 3,
                initial_delay: Duration::from_millis(10),
                max_delay: Duration::from_secs(1),
            },
            ..fast_options()
        };
        let url = format!("http://127.0.0.1:{port}/v1");
        let client =
            LlmClient::with_options(config(kind, url.clone(), "k"), options).expect("valid config");
        let started = Instant::now();
        let (events, result) = call(&client, &request("hi")).await;
        let err = result.expect_err("refused");
        assert!(
            matches!(err, LlmError::Connect { attempts: 3, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("could not connect to {kind} provider at {url}/")),
            "{msg}"
        );
        assert!(msg.contains("(gave up after 3 attempts)"), "{msg}");
        assert!(msg.to_lowercase().contains("refused"), "{msg}");
        assert_eq!(retries(&events).len(), 2);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}

#[tokio::test]
async fn missing_model_and_bad_base_url_are_rejected() {
    let fake = FakeLlm::start().await;
    let mut cfg = config(ProviderKind::OpenAi, fake.openai_base_url(), fake.api_key());
    cfg.default_model = None;
    let client = LlmClient::new(cfg).expect("valid config");
    let err = call(&client, &request("hi")).await.1.expect_err("no model");
    assert!(matches!(err, LlmError::InvalidRequest(_)));
    assert_eq!(fake.request_count(), 0);

    // An explicit model wins over the default.
    let client = LlmClient::new(config(
        ProviderKind::Anthropic,
        fake.anthropic_base_url(),
        fake.api_key(),
    ))
    .expect("valid");
    fake.push(Reply::text("hi"));
    let req = ChatRequest {
        model: "claude-x".into(),
        ..request("hi")
    };
    call(&client, &req).await.1.expect("reply");
    assert_eq!(fake.requests()[0].model(), "claude-x");

    let err =
        LlmClient::new(config(ProviderKind::OpenAi, "not a url".into(), "k")).expect_err("bad url");
    assert!(err.to_string().contains("invalid base URL"), "{err}");
}

/// The executor spawns calls on a multi-threaded runtime and shares one client.
#[test]
fn client_and_call_future_are_send() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>(_: &T) {}
    assert_send_sync::<LlmClient>();
    let client = LlmClient::new(config(
        ProviderKind::OpenAi,
        "http://127.0.0.1:9/v1".into(),
        "k",
    ))
    .expect("valid config");
    let req = request("hi");
    let mut on_event = |_: StreamEvent| {};
    let fut = client.stream(&req, &mut on_event);
    assert_send(&fut);
}

async fn models_are_listed_and_a_wrong_key_is_reported(kind: ProviderKind) {
    let llm = FakeLlm::start().await;
    llm.set_models(["m-1", "m-2"]);
    let models = client(&llm, kind)
        .list_models(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(models, ["m-1", "m-2"]);

    let wrong_key = "sk-wrong-key-that-must-not-leak-42";
    let bad = LlmClient::with_options(
        config(kind, llm.openai_base_url(), wrong_key),
        fast_options(),
    )
    .unwrap();
    let err = bad.list_models(Duration::from_secs(5)).await.unwrap_err();
    match &err {
        LlmError::Http {
            status,
            message,
            attempts,
            ..
        } => {
            assert_eq!(
                (*status, message.as_str(), *attempts),
                (401, "invalid API key", 1)
            );
        }
        other => panic!("expected HTTP 401, got {other:?}"),
    }
    assert!(!err.to_string().contains(wrong_key));
    let requests = llm.requests();
    assert_eq!(requests.len(), 2, "one attempt each, no retries");
    let expected = match kind {
        ProviderKind::OpenAi => WireFormat::OpenAi,
        ProviderKind::Anthropic => WireFormat::Anthropic,
    };
    assert!(
        requests
            .iter()
            .all(|r| r.path == "/v1/models" && r.wire == expected)
    );
}
