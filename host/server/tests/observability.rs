//! Observability of a real `everruns serve` process on PostgreSQL, after a real run with a
//! tool call: `/metrics` parsed by a Prometheus text parser (counters and histograms move by
//! the right amounts, routes are templates, no ids in labels, an API key is needed), spans
//! received by an OTLP/HTTP receiver in the test and decoded (names, parent links, GenAI
//! attributes, a trace continued from `traceparent`), `x-request-id` on responses, and the
//! run's log lines carrying its ids and trace id.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::otlp::{Receiver, attribute, hex, named};
use common::{Everruns, KEY, client, get_json, post_json};
use everruns_testkit::guests::{WELL_BEHAVED, plugin_dir};
use everruns_testkit::{FakeLlm, Reply, TestDb};
use openmetrics_parser::PrometheusValue;
use openmetrics_parser::prometheus::parse_prometheus;
use serde_json::json;

use common::otlp::{CLIENT_SPAN, TRACE_ID, traceparent};

/// One scrape of `/metrics`, parsed: every sample's value by name and labels.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

async fn scrape(http: &reqwest::Client, base: &str) -> Samples {
    let response = http
        .get(format!("{base}/metrics"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let exposition = parse_prometheus(&text).expect("a Prometheus text exposition");
    let mut samples = Samples::new();
    for (name, family) in &exposition.families {
        for sample in family.iter_samples() {
            let labels: BTreeMap<String, String> = sample
                .get_labelset()
                .expect("labels")
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let mut put = |name: String, labels: BTreeMap<String, String>, value: f64| {
                samples.insert((name, labels), value);
            };
            match &sample.value {
                PrometheusValue::Counter(c) => put(name.clone(), labels, c.value.as_f64()),
                PrometheusValue::Gauge(g) => put(name.clone(), labels, g.as_f64()),
                PrometheusValue::Histogram(h) => {
                    for bucket in &h.buckets {
                        let mut labels = labels.clone();
                        labels.insert("le".to_owned(), bucket.upper_bound.to_string());
                        put(format!("{name}_bucket"), labels, bucket.count.as_f64());
                    }
                    let sum = h.sum.as_ref().map_or(0.0, |s| s.as_f64());
                    put(format!("{name}_sum"), labels.clone(), sum);
                    put(format!("{name}_count"), labels, h.count.unwrap_or(0) as f64);
                }
                other => panic!("{name}: unexpected {other:?}"),
            }
        }
    }
    samples
}

/// The sum of the samples named `name` whose labels include `labels`.
fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|((n, l), _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_with_a_tool_call_is_counted_traced_and_logged() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    plugin_dir(
        &dir.path().join("plugins"),
        "well-behaved",
        "well-behaved",
        WELL_BEHAVED,
    );
    let llm = FakeLlm::start().await;
    llm.set_fallback(|request| {
        if request.last_message_is_tool_result() {
            Reply::text("pong received").with_usage(7, 3)
        } else {
            Reply::tool_call("well-behaved__ping", json!({})).with_usage(11, 5)
        }
    });
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let mut everruns = Everruns::spawn_with(
        dir.path(),
        &db,
        &llm,
        0,
        &[
            ("EVERRUNS_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    everruns.healthy().await;
    let (http, base) = (client(), everruns.base.clone());

    // Behind an API key like every route.
    let anonymous = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let before = scrape(&http, &base).await;

    let agent = post_json(
        &http,
        &format!("{base}/v1/agents"),
        json!({"name": "observed", "capabilities": [{"id": "well-behaved"}]}),
    )
    .await;
    let session = post_json(
        &http,
        &format!("{base}/v1/sessions"),
        json!({"agent_id": agent["id"]}),
    )
    .await;
    let sid = session["id"].as_str().unwrap();
    let response = http
        .post(format!("{base}/v1/sessions/{sid}/messages"))
        .bearer_auth(KEY)
        .header("traceparent", traceparent())
        .header("x-request-id", "req-observed-1")
        .json(&json!({"content": "ping please"}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    assert_eq!(response.headers()["x-request-id"], "req-observed-1");
    let started: serde_json::Value = response.json().await.unwrap();
    let run_id = started["id"].as_str().unwrap().to_owned();

    // Made up when the client sends none.
    let other = http
        .get(format!("{base}/v1/agents"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    let made_up = other.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(made_up.len(), 36, "a UUID: {made_up}");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = get_json(&http, &format!("{base}/v1/runs/{run_id}")).await;
        if run["status"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "the run did not complete: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // ---- metrics ----
    let after = scrape(&http, &base).await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert_eq!(
        moved("everruns_runs_total", &[("status", "completed")]),
        1.0
    );
    assert_eq!(
        moved("everruns_step_duration_seconds_count", &[("kind", "llm")]),
        2.0
    );
    assert_eq!(
        moved("everruns_step_duration_seconds_count", &[("kind", "tool")]),
        1.0
    );
    let m = [("provider", "openai"), ("model", "m")];
    assert_eq!(
        moved(
            "everruns_llm_requests_total",
            &[m[0], m[1], ("outcome", "ok")]
        ),
        2.0
    );
    assert_eq!(
        moved(
            "everruns_llm_tokens_total",
            &[m[0], m[1], ("direction", "input")]
        ),
        18.0
    );
    assert_eq!(
        moved(
            "everruns_llm_tokens_total",
            &[m[0], m[1], ("direction", "output")]
        ),
        8.0
    );
    assert_eq!(
        moved("everruns_llm_time_to_first_token_seconds_count", &m),
        2.0
    );
    assert_eq!(moved("everruns_claim_latency_seconds_count", &[]), 1.0);
    let plugin = [("capability", "well-behaved")];
    assert!(
        moved(
            "everruns_plugin_calls_total",
            &[plugin[0], ("outcome", "ok")]
        ) >= 1.0,
        "the tool call is counted"
    );
    assert_eq!(
        moved(
            "everruns_plugin_calls_total",
            &[plugin[0], ("outcome", "trap")]
        ),
        0.0
    );
    assert!(moved("everruns_plugin_call_duration_seconds_count", &plugin) >= 1.0);
    // The histogram's buckets are cumulative and end with everything.
    let tool_steps = value(
        &after,
        "everruns_step_duration_seconds_count",
        &[("kind", "tool")],
    );
    assert_eq!(
        value(
            &after,
            "everruns_step_duration_seconds_bucket",
            &[("kind", "tool"), ("le", "inf")]
        ),
        tool_steps
    );
    let route = [
        ("method", "POST"),
        ("route", "/v1/sessions/{id}/messages"),
        ("status", "202"),
    ];
    assert_eq!(moved("everruns_http_requests_total", &route), 1.0);
    assert_eq!(
        moved(
            "everruns_http_request_duration_seconds_count",
            &[route[0], route[1]]
        ),
        1.0
    );
    assert_eq!(value(&after, "everruns_run_queue_depth", &[]), 0.0);
    assert_eq!(value(&after, "everruns_runs_active", &[]), 0.0);
    assert!(
        after
            .keys()
            .any(|(n, _)| n == "everruns_worker_slots_available")
    );
    // Label values are bounded: no ids anywhere.
    for (name, labels) in after.keys() {
        for value in labels.values() {
            assert!(
                !["agt_", "ses_", "run_", "msg_"]
                    .iter()
                    .any(|id| value.contains(id)),
                "{name} has an id in its labels: {labels:?}"
            );
        }
    }

    // ---- traces ----
    let spans = receiver
        .wait_for("run's spans", |spans| {
            named(spans, "execute_tool").len() == 1
                && named(spans, "chat").len() == 2
                && !named(spans, "invoke_agent").is_empty()
                && !named(spans, "POST /v1/sessions/{id}/messages").is_empty()
        })
        .await;
    let request = named(&spans, "POST /v1/sessions/{id}/messages")[0];
    assert_eq!(
        hex(&request.trace_id),
        TRACE_ID,
        "the client's trace continues"
    );
    assert_eq!(hex(&request.parent_span_id), CLIENT_SPAN);
    assert_eq!(
        attribute(request, "http.route").as_deref(),
        Some("/v1/sessions/{id}/messages")
    );
    assert_eq!(
        attribute(request, "http.response.status_code").as_deref(),
        Some("202")
    );
    assert_eq!(
        attribute(request, "request_id").as_deref(),
        Some("req-observed-1")
    );

    let run = named(&spans, "invoke_agent")[0];
    assert_eq!(hex(&run.trace_id), TRACE_ID);
    assert_eq!(
        run.parent_span_id, request.span_id,
        "the run is a child of its request"
    );
    assert_eq!(attribute(run, "run_id").as_deref(), Some(run_id.as_str()));
    assert_eq!(
        attribute(run, "gen_ai.operation.name").as_deref(),
        Some("invoke_agent")
    );
    assert_eq!(
        attribute(run, "gen_ai.conversation.id").as_deref(),
        Some(sid)
    );

    let chats = named(&spans, "chat");
    for chat in &chats {
        assert_eq!(chat.name, "chat m");
        assert_eq!(
            chat.parent_span_id, run.span_id,
            "a model call is a child of its run"
        );
        assert_eq!(hex(&chat.trace_id), TRACE_ID);
        assert_eq!(
            attribute(chat, "gen_ai.operation.name").as_deref(),
            Some("chat")
        );
        assert_eq!(
            attribute(chat, "gen_ai.request.model").as_deref(),
            Some("m")
        );
        assert_eq!(
            attribute(chat, "gen_ai.provider.name").as_deref(),
            Some("openai")
        );
    }
    let mut tokens: Vec<_> = chats
        .iter()
        .map(|c| {
            (
                attribute(c, "gen_ai.usage.input_tokens").unwrap(),
                attribute(c, "gen_ai.usage.output_tokens").unwrap(),
            )
        })
        .collect();
    tokens.sort();
    assert_eq!(
        tokens,
        [
            ("11".to_owned(), "5".to_owned()),
            ("7".to_owned(), "3".to_owned())
        ]
    );
    let tool = named(&spans, "execute_tool")[0];
    assert_eq!(tool.name, "execute_tool well-behaved__ping");
    assert_eq!(
        tool.parent_span_id, run.span_id,
        "a tool call is a child of its run"
    );
    assert_eq!(
        attribute(tool, "gen_ai.tool.name").as_deref(),
        Some("well-behaved__ping")
    );
    assert_eq!(
        attribute(tool, "gen_ai.operation.name").as_deref(),
        Some("execute_tool")
    );
    assert!(attribute(tool, "gen_ai.tool.call.id").is_some());

    // ---- logs ----
    let log = std::fs::read_to_string(&everruns.log).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("run finished"))
        .unwrap_or_else(|| panic!("no `run finished` line:\n{log}"));
    for field in [
        format!("run_id={run_id}"),
        format!("session_id={sid}"),
        format!("trace_id={TRACE_ID}"),
    ] {
        assert!(line.contains(&field), "{field} missing from: {line}");
    }
    drop(everruns);
    db.cleanup().await;
}

/// With `EVERRUNS_METRICS_PUBLIC`, scrapers need no key (for a private network).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_metrics_need_no_key() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    let mut everruns = Everruns::spawn_with(
        dir.path(),
        &db,
        &llm,
        0,
        &[("EVERRUNS_METRICS_PUBLIC", "true")],
    );
    everruns.healthy().await;
    let response = reqwest::get(format!("{}/metrics", everruns.base))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        text.contains("# TYPE everruns_run_queue_depth gauge"),
        "{text}"
    );
    // Everything else still needs one.
    let agents = reqwest::get(format!("{}/v1/agents", everruns.base))
        .await
        .unwrap();
    assert_eq!(agents.status(), 401);
    drop(everruns);
    db.cleanup().await;
}

/// A worker-only process serves its own figures and health on its listen address (and
/// nothing else), and executes runs another process queues.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_process_serves_its_own_metrics() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    llm.set_fallback(|_| Reply::text("from the worker"));
    let mut api = Everruns::spawn_with(dir.path(), &db, &llm, 0, &[("EVERRUNS_WORKER", "false")]);
    api.healthy().await;
    let mut worker = Everruns::spawn_worker(
        dir.path(),
        &db,
        &llm,
        1,
        &[("EVERRUNS_BUILTIN_PLUGINS", "false")],
    );
    worker.healthy().await;
    let http = client();
    let anonymous = http
        .get(format!("{}/metrics", worker.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        anonymous.status(),
        401,
        "the same API keys as every process"
    );
    let before = scrape(&http, &worker.base).await;
    assert_eq!(
        value(&before, "everruns_worker_slots_available", &[]),
        64.0,
        "the worker's own slots"
    );
    let missing = http
        .get(format!("{}/v1/agents", worker.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404, "a worker serves no API");

    let agent = post_json(
        &http,
        &format!("{}/v1/agents", api.base),
        json!({"name": "w"}),
    )
    .await;
    let session = post_json(
        &http,
        &format!("{}/v1/sessions", api.base),
        json!({"agent_id": agent["id"]}),
    )
    .await;
    let run = post_json(
        &http,
        &format!(
            "{}/v1/sessions/{}/messages",
            api.base,
            session["id"].as_str().unwrap()
        ),
        json!({"content": "hi"}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let after = scrape(&http, &worker.base).await;
        if value(&after, "everruns_runs_total", &[("status", "completed")]) == 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not count the run {run}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((api, worker));
    db.cleanup().await;
}
