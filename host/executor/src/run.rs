//! Executing one claimed run: a heartbeat keeps the lease, the executor's cancel watcher
//! (`worker::watch_cancels`) stops it when a cancel is requested, and the step loop journals
//! each LLM call and tool call as it finishes.
//!
//! The loop is driven by what the journal says: after a takeover the same code finds the last
//! recorded LLM step, runs only the tool calls that have no step yet (with the same
//! idempotency keys), and continues. The journal and the conversation are read once per claim
//! and then extended with the steps this worker records (fenced writes: nobody else adds any).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use everruns_core::metrics::{
    CLAIM_LATENCY, LEASE_TAKEOVERS_TOTAL, LLM_REQUESTS_TOTAL, LLM_TIME_TO_FIRST_TOKEN,
    LLM_TOKENS_TOTAL, RUNS_TOTAL, STEP_DURATION,
};
use everruns_core::{
    APPROVAL_TIMEOUT_DEFAULT, Approval, ApprovalStatus, EventType, Lease, MessageId, MessageRole,
    NewApproval, NewEvent, NewStep, RecordedStep, Run, RunConfig, RunStatus, Step, StepKind,
    StepMessage, StepStatus, Usage,
};
use everruns_llm::{ChatMessage, ChatRequest, StreamEvent, ToolCall};
use everruns_runtime::{KvWrites, ModelRequest};
use everruns_store::{Store, StoreError};
use futures::future::join_all;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::conversation::{self, History};
use crate::hooks::{self, Blocked, NeedsApproval, Planned};
use crate::providers::Llm;
use crate::telemetry;
use crate::toolbox::{self, Toolbox};
use crate::worker::{RENEW_TIMEOUT, Shared};

/// How a run's execution ended from the worker's point of view.
enum Outcome {
    /// Write this terminal status.
    Finish {
        status: RunStatus,
        error: Option<String>,
        events: Vec<NewEvent>,
    },
    /// Already written: the run's last step ended it in the same commit.
    Completed,
    /// Already written: the run waits for approval decisions, with no lease.
    Parked,
    /// Stop without writing (lease lost, shutdown, or a store failure left for a takeover).
    Abandon,
}

/// Why the step loop stopped early.
enum Stop {
    /// The run cannot go on; fail it with this message.
    Fatal(String),
    /// A hook blocked the model call: fail the run with this message, after these events.
    Blocked(String, Vec<NewEvent>),
    /// A store error: leave the run for a takeover (or the lease was lost: write nothing).
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// Executes `run` under `lease` until it finishes, is cancelled, loses its lease, or `shutdown`.
pub(crate) async fn execute(
    shared: Arc<Shared>,
    run: Run,
    lease: Lease,
    shutdown: CancellationToken,
) {
    // One `invoke_agent` span per claim, in the trace of the request that started the run
    // (stored with it), so a run taken over elsewhere stays in one trace; its fields reach
    // every log line of the run.
    let span = tracing::info_span!(
        "invoke_agent",
        otel.name = "invoke_agent",
        gen_ai.operation.name = "invoke_agent",
        gen_ai.conversation.id = %run.session_id,
        run_id = %run.id,
        session_id = %run.session_id,
        trace_id = tracing::field::Empty,
        lease_token = lease.token,
    );
    telemetry::continue_trace(&span, run.trace_parent.as_deref());
    if run.recovery_attempts > 0 {
        metrics::counter!(LEASE_TAKEOVERS_TOTAL).increment(1);
    } else if run.steps_completed == 0 {
        // Its first claim: queued → started.
        let waited = run.started_at.unwrap_or_else(Utc::now) - run.created_at;
        metrics::histogram!(CLAIM_LATENCY).record(seconds(waited));
    }
    async move {
        let (signal, _registered) = shared.in_flight.register(&lease);
        let (stop, cancelled) = (signal.stop, signal.requested);
        let lost = Arc::new(AtomicBool::new(false));
        let heartbeat = tokio::spawn(heartbeat(shared.clone(), lease.clone(), stop.clone(), lost.clone()));

        let outcome = tokio::select! {
            outcome = step_loop(&shared, &run, &lease) => outcome,
            _ = stop.cancelled() => Outcome::Abandon,
            _ = shutdown.cancelled() => Outcome::Abandon,
        };
        stop.cancel();
        heartbeat.abort();

        let completed = matches!(outcome, Outcome::Completed | Outcome::Parked);
        let cancel = cancelled.load(Ordering::SeqCst) && !lost.load(Ordering::SeqCst);
        let outcome = if cancel && !completed {
            Outcome::Finish {
                status: RunStatus::Cancelled,
                error: None,
                events: vec![event(EventType::RunCancelled, json!({"run_id": run.id.as_str()}))],
            }
        } else {
            outcome
        };
        match outcome {
            Outcome::Finish { status, error, events } => {
                match shared.store.finish_run(&lease, status, error.clone(), events).await {
                    Ok(_) => {
                        metrics::counter!(RUNS_TOTAL, "status" => status.as_str()).increment(1);
                        tracing::info!(status = status.as_str(), error = ?error, "run finished")
                    }
                    Err(StoreError::LeaseLost { .. }) => {
                        tracing::warn!("lease lost before the run could be finished")
                    }
                    Err(e) => tracing::error!(error = %e, "finishing the run failed; it will be taken over"),
                }
            }
            Outcome::Completed => {
                metrics::counter!(RUNS_TOTAL, "status" => RunStatus::Completed.as_str())
                    .increment(1);
                tracing::info!(status = "completed", "run finished")
            }
            Outcome::Parked => tracing::info!("run waits for tool approval; its lease is released"),
            Outcome::Abandon if shutdown.is_cancelled() && !lost.load(Ordering::SeqCst) => {
                // Let the next start (or another process) take over at once.
                let _ = shared.store.renew_lease(&lease, Duration::ZERO).await;
                tracing::info!("run paused for shutdown; it resumes from its last step");
            }
            Outcome::Abandon => {}
        }
    }
    .instrument(span)
    .await;
}

/// Renews the lease; when another worker took the run over, stops this one.
async fn heartbeat(
    shared: Arc<Shared>,
    lease: Lease,
    stop: CancellationToken,
    lost: Arc<AtomicBool>,
) {
    let config = &shared.config;
    loop {
        tokio::time::sleep(config.heartbeat).await;
        let renewal = tokio::time::timeout(
            RENEW_TIMEOUT,
            shared.store.renew_lease(&lease, config.lease),
        );
        match renewal.await {
            Ok(Ok(())) => {}
            Ok(Err(StoreError::LeaseLost { .. })) => {
                tracing::warn!("lease lost: another worker took the run over; stopping");
                lost.store(true, Ordering::SeqCst);
                stop.cancel();
                return;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "renewing the lease failed; retrying"),
            Err(_) => tracing::warn!("renewing the lease timed out; retrying"),
        }
    }
}

/// A duration in seconds, for a histogram (negative clock differences count as 0).
fn seconds(delta: chrono::TimeDelta) -> f64 {
    delta.to_std().map_or(0.0, |d| d.as_secs_f64())
}

fn event(event_type: EventType, payload: Value) -> NewEvent {
    NewEvent::new(event_type, payload)
}

async fn step_loop(shared: &Shared, run: &Run, lease: &Lease) -> Outcome {
    match steps(shared, run, lease).await {
        Ok(outcome) => outcome,
        Err(Stop::Fatal(error)) => Outcome::Finish {
            events: vec![event(
                EventType::RunFailed,
                json!({"run_id": run.id.as_str(), "error": error}),
            )],
            status: RunStatus::Failed,
            error: Some(error),
        },
        Err(Stop::Blocked(error, mut events)) => Outcome::Finish {
            events: {
                events.push(event(
                    EventType::RunFailed,
                    json!({"run_id": run.id.as_str(), "error": error}),
                ));
                events
            },
            status: RunStatus::Failed,
            error: Some(error),
        },
        Err(Stop::Store(StoreError::Invalid(problem))) => {
            // Something the store will never accept (a takeover would only repeat it).
            let error = format!("a step of the run could not be recorded: {problem}");
            Outcome::Finish {
                events: vec![event(
                    EventType::RunFailed,
                    json!({"run_id": run.id.as_str(), "error": error}),
                )],
                status: RunStatus::Failed,
                error: Some(error),
            }
        }
        Err(Stop::Store(StoreError::LeaseLost { .. })) => {
            tracing::warn!("lease lost; another worker continues the run");
            Outcome::Abandon
        }
        Err(Stop::Store(e)) => {
            tracing::error!(error = %e, "store failure during the run; leaving it for a takeover");
            Outcome::Abandon
        }
    }
}

async fn steps(shared: &Shared, run: &Run, lease: &Lease) -> Result<Outcome, Stop> {
    let config = &shared.config;
    let store = shared.store.as_ref();
    if run.recovery_attempts > config.max_recoveries {
        return Err(Stop::Fatal(format!(
            "the run was taken over {} times without completing a step (limit {}); giving up",
            run.recovery_attempts, config.max_recoveries
        )));
    }
    // `run.started` was written with the claim. The run executes from the configuration it
    // was created with; a run created before configurations were recorded uses its agent's
    // and its session's as they are now.
    let run_config = match &run.config {
        Some(recorded) => recorded.clone(),
        None => {
            let session = store.get_session(&run.session_id).await?;
            let agent = store.get_agent(&session.agent_id).await?;
            RunConfig::resolve(
                &agent,
                session.overrides.as_ref(),
                None,
                config.default_max_steps,
            )
        }
    };
    let setup = &run_config;
    let llm = shared
        .providers
        .client_for(store, &setup.model)
        .await?
        .map_err(Stop::Fatal)?;
    let mut toolbox = Toolbox::build(&shared.runtime, &setup.agent_id, &setup.capabilities, run)
        .await
        .map_err(Stop::Fatal)?;
    if let Some(policy) = &setup.tool_approval {
        toolbox.approval = Some(policy.matcher().map_err(|(i, e)| {
            Stop::Fatal(format!(
                "tool_approval.require[{i}] is not a valid pattern: {e}"
            ))
        })?);
    }
    let approval_timeout = setup
        .tool_approval
        .as_ref()
        .map_or(APPROVAL_TIMEOUT_DEFAULT, |p| p.timeout_seconds);
    let max_steps = setup.model.max_steps.unwrap_or(config.default_max_steps);
    let attempt = run.recovery_attempts + 1;

    // Read once; then this worker's own recorded steps are the only ones added (it holds the
    // lease), so the journal and the history follow them in memory.
    let mut journal = if run.steps_completed == 0 {
        // Counted in each step's own commit: nothing to read.
        Vec::new()
    } else {
        store.list_steps(&run.id).await?
    };
    let mut history: Option<History> = None;
    // What the run has spent: tokens as the run row counted them when it was claimed, plus
    // this loop's model calls; tool calls and time from the journal and the run's start.
    let mut spent = Spent {
        tokens: run.usage.input_tokens + run.usage.output_tokens,
        model_calls: journal.iter().filter(|s| s.kind == StepKind::Llm).count() as u64,
    };
    // Whether the last LLM step was recorded by this loop, with `tool.started` for its calls
    // in the same commit; calls run again after a takeover announce themselves anew.
    let mut announced = false;
    loop {
        let next_llm_step = match journal.iter().rev().find(|s| s.kind == StepKind::Llm) {
            None => 0,
            Some(llm) => {
                let calls = conversation::tool_calls_of(&llm.output);
                if calls.is_empty() {
                    // Recorded without ending the run (by a version that ended runs apart).
                    let text = llm.output["text"].as_str().unwrap_or_default();
                    return Ok(Outcome::Finish {
                        status: RunStatus::Completed,
                        error: None,
                        events: vec![completed_event(run, text)],
                    });
                }
                // The `before-tool` decisions were journaled with the model step.
                let missing: Vec<PlannedCall> = calls
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let plan = Planned::from_json(&llm.output["tool_calls"][i]["plan"]);
                        (llm.step_no + 1 + i as u32, c.clone(), plan)
                    })
                    .filter(|(no, ..)| !journal.iter().any(|s: &Step| s.step_no == *no))
                    .collect();
                if !missing.is_empty() {
                    let made = journal.iter().filter(|s| s.kind == StepKind::Tool).count();
                    check_budgets(setup, run, &spent, Some((made, missing.len())))?;
                    let announce = !std::mem::take(&mut announced);
                    // Calls that need approval run once it is given, with what was approved;
                    // the others run now.
                    let (runnable, waiting) = decide(store, run, missing).await?;
                    let recorded = run_tools(
                        shared, &toolbox, setup, run, lease, attempt, runnable, announce,
                    )
                    .await?;
                    for step in recorded {
                        journal.push(step.step);
                        if let (Some(history), Some(message)) = (&mut history, step.message) {
                            history.push(message);
                        }
                    }
                    if !waiting.is_empty() {
                        let expires_at =
                            Utc::now() + chrono::TimeDelta::seconds(i64::from(approval_timeout));
                        let approvals = waiting
                            .into_iter()
                            .map(|(no, call, need)| {
                                NewApproval::new(
                                    &run.id,
                                    no,
                                    call.id.clone(),
                                    call.name.clone(),
                                    toolbox.capability_of(&call.name).map(str::to_owned),
                                    call.arguments,
                                    need.reason,
                                    need.requested_by,
                                    expires_at,
                                )
                            })
                            .collect();
                        store.park_run(lease, approvals, Vec::new()).await?;
                        return Ok(Outcome::Parked);
                    }
                    continue;
                }
                llm.step_no + 1 + calls.len() as u32
            }
        };
        if journal.len() as u32 >= max_steps {
            return Err(Stop::Fatal(format!(
                "the step limit of {max_steps} was reached before the model finished"
            )));
        }
        check_budgets(setup, run, &spent, None)?;
        let history = match &mut history {
            Some(history) => history,
            None => history.insert(History::load(store, run).await?),
        };
        let trigger = history.trigger().to_owned();
        let recorded = llm_step(
            shared,
            &toolbox,
            setup,
            &llm,
            run,
            lease,
            attempt,
            next_llm_step,
            (history.chat(), &trigger),
        )
        .await?;
        let Some(recorded) = recorded else {
            return Ok(Outcome::Completed);
        };
        spent.model_calls += 1;
        spent.tokens += recorded.step.output["usage"]["input_tokens"]
            .as_u64()
            .unwrap_or(0)
            + recorded.step.output["usage"]["output_tokens"]
                .as_u64()
                .unwrap_or(0);
        journal.push(recorded.step);
        if let Some(message) = recorded.message {
            history.push(message);
        }
        announced = true;
    }
}

/// What a run has spent of its token budget.
struct Spent {
    /// Input and output tokens of every model call.
    tokens: u64,
    /// Model calls made.
    model_calls: u64,
}

/// Ends the run when it has used up a budget of its configuration: before a model call
/// (`tools` is `None`), its tokens or its time since its first start; before the tool calls a
/// model answer asked for (`tools`: those made, and those asked for now), its time or its tool
/// calls. The error names the budget and what was spent.
fn check_budgets(
    setup: &RunConfig,
    run: &Run,
    spent: &Spent,
    tools: Option<(usize, usize)>,
) -> Result<(), Stop> {
    let budgets = &setup.model;
    if let Some(max) = budgets.max_tokens_per_run
        && tools.is_none()
        && spent.tokens >= max
    {
        return Err(Stop::Fatal(format!(
            "the token budget of {max} (max_tokens_per_run) was reached: {} tokens spent in {} \
             model calls",
            spent.tokens, spent.model_calls
        )));
    }
    if let Some(max) = budgets.max_duration_seconds {
        let elapsed = (Utc::now() - run.started_at.unwrap_or(run.created_at))
            .num_milliseconds()
            .max(0) as u64;
        if elapsed >= max.saturating_mul(1000) {
            return Err(Stop::Fatal(format!(
                "the time budget of {max} s (max_duration_seconds) was reached: the run has \
                 taken {:.1} s since it started",
                elapsed as f64 / 1000.0
            )));
        }
    }
    if let (Some(max), Some((made, asked))) = (budgets.max_tool_calls_per_run, tools)
        && made + asked > max as usize
    {
        return Err(Stop::Fatal(format!(
            "the tool call budget of {max} (max_tool_calls_per_run) was reached: {made} tool \
             calls made, and the model asked for {asked} more"
        )));
    }
    Ok(())
}

/// The `run.completed` event of a run that answered `text`.
fn completed_event(run: &Run, text: &str) -> NewEvent {
    event(
        EventType::RunCompleted,
        json!({"run_id": run.id.as_str(), "text": text}),
    )
}

/// Calls the model and records its answer as step `step_no`, with the `before-model` hooks
/// before the call and the `before-tool` hooks on the calls it asks for (their decisions and
/// key-value writes go with the step). An answer without tool calls ends the run in the same
/// commit: then `None`, else the recorded step. `conversation`: the messages, and the user
/// message that started the run.
#[allow(
    clippy::too_many_arguments,
    reason = "the pieces of one step; bundling them hides nothing"
)]
async fn llm_step(
    shared: &Shared,
    toolbox: &Toolbox,
    setup: &RunConfig,
    llm: &Llm,
    run: &Run,
    lease: &Lease,
    attempt: u32,
    step_no: u32,
    conversation: (Arc<Vec<ChatMessage>>, &str),
) -> Result<Option<RecordedStep>, Stop> {
    let (messages, trigger) = conversation;
    let store = shared.store.as_ref();
    let started_at = Utc::now();
    let run_id = run.id.as_str();
    let mut writes = toolbox.kv_writes();
    let mut system = toolbox.system_prompt(setup);
    let mut hook_events = Vec::new();
    if !toolbox.hooks.is_empty() {
        let request = ModelRequest {
            last_user_message: trigger.to_owned(),
            tools: toolbox.tools.iter().map(|t| t.name.clone()).collect(),
            step: step_no,
        };
        let decided = hooks::before_model(toolbox, run_id, &request, &mut writes).await;
        if let Some(error) = decided.blocked {
            return Err(Stop::Blocked(error, decided.events));
        }
        for text in decided.context {
            if !system.is_empty() {
                system.push_str("\n\n");
            }
            system.push_str(&text);
        }
        hook_events = decided.events;
    }
    let request = ChatRequest {
        model: setup.model.model.clone().unwrap_or_default(),
        system,
        messages,
        tools: toolbox.tools.clone(),
        temperature: setup.model.temperature,
        max_tokens: setup.model.max_tokens,
    };
    let message_id = MessageId::new();

    let (provider, model) = (llm.provider_label(), llm.model_label(&request.model));
    let chat = tracing::info_span!(
        "chat",
        otel.name = %format_args!("chat {model}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = provider,
        gen_ai.request.model = match request.model.as_str() {
            "" => llm.client.default_model().unwrap_or_default(),
            named => named,
        },
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        gen_ai.response.finish_reasons = tracing::field::Empty,
        error.type = tracing::field::Empty,
        step_no,
    );
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    let sent = std::time::Instant::now();
    let mut first_output = true;
    let mut on_event = move |ev: StreamEvent| {
        if first_output
            && matches!(
                ev,
                StreamEvent::TextDelta(_) | StreamEvent::ToolCallStarted { .. }
            )
        {
            first_output = false;
            metrics::histogram!(LLM_TIME_TO_FIRST_TOKEN, "provider" => provider, "model" => model.to_owned())
                .record(sent.elapsed().as_secs_f64());
        }
        if let StreamEvent::TextDelta(text) = ev {
            // The receiver lives until the stream ends; a send can only fail after that.
            let _ = tx.send(text);
        }
    };
    let streaming = async {
        let result = llm.client.stream(&request, &mut on_event).await;
        drop(on_event);
        result
    }
    .instrument(chat.clone());
    let flushing = flush_deltas(shared, lease, run, &message_id, rx);
    let (response, flushed) = tokio::join!(streaming, flushing);
    let unflushed = flushed?;
    let outcome = if response.is_ok() { "ok" } else { "error" };
    metrics::counter!(LLM_REQUESTS_TOTAL, "provider" => provider, "model" => model.to_owned(), "outcome" => outcome)
        .increment(1);
    let response = response.map_err(|e| {
        chat.record("otel.status_code", "ERROR");
        chat.record("error.type", e.kind());
        Stop::Fatal(format!("the LLM call failed: {e}"))
    })?;
    chat.record("gen_ai.usage.input_tokens", response.usage.input_tokens);
    chat.record("gen_ai.usage.output_tokens", response.usage.output_tokens);
    chat.record(
        "gen_ai.response.finish_reasons",
        tracing::field::debug(&response.stop_reason),
    );
    for (direction, tokens) in [
        ("input", response.usage.input_tokens),
        ("output", response.usage.output_tokens),
    ] {
        metrics::counter!(LLM_TOKENS_TOTAL, "provider" => provider, "model" => model.to_owned(), "direction" => direction)
            .increment(tokens);
    }

    let tool_calls = response.tool_calls.clone();
    let usage = Usage {
        input_tokens: response.usage.input_tokens,
        output_tokens: response.usage.output_tokens,
    };
    let calls_json: Vec<Value> = tool_calls
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "name": c.name,
                "arguments": c.arguments,
                "capability": toolbox.capability_of(&c.name),
            })
        })
        .collect();
    // The `before-tool` hooks decide each call now, in call order; the plans are journaled
    // with this step, so a replay runs exactly what was decided without asking again.
    let mut plans = Vec::with_capacity(tool_calls.len());
    for (i, call) in tool_calls.iter().enumerate() {
        let mut plan = if toolbox.hooks.is_empty() {
            Planned::default()
        } else {
            let request = hooks::tool_request(call, step_no + 1 + i as u32);
            hooks::before_tool(toolbox, run_id, request, &mut writes, &mut hook_events).await
        };
        // The run's policy, unless a hook blocked the call or asked for approval already.
        if plan.blocked.is_none()
            && plan.approval.is_none()
            && let Some(pattern) = toolbox
                .approval
                .as_ref()
                .and_then(|m| m.first_match(&call.name))
        {
            plan.approval = Some(NeedsApproval {
                requested_by: "tool_approval".to_owned(),
                reason: format!("the tool matches the approval pattern `{pattern}`"),
            });
        }
        plans.push(plan);
    }
    let journaled_calls: Vec<Value> = calls_json
        .iter()
        .zip(&plans)
        .map(|(call, plan)| {
            let mut call = call.clone();
            if plan != &Planned::default()
                && let Some(fields) = call.as_object_mut()
            {
                fields.insert("plan".into(), plan.to_json());
            }
            call
        })
        .collect();
    let step = NewStep {
        step_no,
        kind: StepKind::Llm,
        input: json!({
            "model": request.model,
            "messages": request.messages.len(),
            "tools": request.tools.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        }),
        output: json!({
            "text": response.text,
            "tool_calls": journaled_calls,
            "stop_reason": format!("{:?}", response.stop_reason),
            "usage": {
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
            },
        }),
        status: StepStatus::Completed,
        attempt,
        capability_id: None,
        digest: None,
        started_at,
        message: Some(StepMessage {
            id: message_id.clone(),
            role: MessageRole::Assistant,
            content: response.text.clone(),
            metadata: conversation::assistant_metadata(run, &tool_calls),
        }),
        kv_writes: toolbox::journal_writes(writes.clone()),
    };
    // The hooks' decisions first (they came before the model call and its tool calls); then
    // text that streamed after the last flush, ahead of its message.
    let mut events = hook_events;
    events.extend(unflushed.map(|text| delta_event(run, &message_id, text)));
    events.extend([
        event(
            EventType::MessageCompleted,
            json!({
                "run_id": run_id,
                "message_id": message_id.as_str(),
                "role": "assistant",
                "text": response.text,
                "tool_calls": calls_json,
            }),
        ),
        event(
            EventType::StepCompleted,
            json!({"run_id": run_id, "step_no": step_no, "kind": "llm"}),
        ),
        event(
            EventType::Usage,
            json!({
                "run_id": run_id,
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
            }),
        ),
    ]);
    if tool_calls.is_empty() {
        events.push(completed_event(run, &response.text));
        store
            .record_final_step(lease, step, events, usage, RunStatus::Completed)
            .await?;
        metrics::histogram!(STEP_DURATION, "kind" => "llm")
            .record(seconds(Utc::now() - started_at));
        return Ok(None);
    }
    // The calls start as soon as this commits: announce them in the same commit (a blocked
    // call does not start, one that needs approval starts once approved).
    events.extend(
        tool_calls
            .iter()
            .zip(&plans)
            .enumerate()
            .filter(|(_, (_, plan))| plan.blocked.is_none() && plan.approval.is_none())
            .map(|(i, (call, plan))| {
                tool_started(toolbox, run, step_no + 1 + i as u32, &plan.apply(call))
            }),
    );
    let recorded = store.record_step(lease, step, events, usage).await?;
    toolbox.kv_cache.committed(&writes);
    metrics::histogram!(STEP_DURATION, "kind" => "llm").record(seconds(Utc::now() - started_at));
    Ok(Some(recorded))
}

/// Writes streamed text as `message.delta` events, coalescing what arrives within
/// `delta_flush` into one event. Ends when the stream's sender is dropped; returns the text
/// that arrived since the last write (if any), which the step's own commit then carries, so a
/// quick answer costs no commit of its own.
async fn flush_deltas(
    shared: &Shared,
    lease: &Lease,
    run: &Run,
    message_id: &MessageId,
    mut rx: mpsc::UnboundedReceiver<String>,
) -> Result<Option<String>, StoreError> {
    while let Some(first) = rx.recv().await {
        let mut text = first;
        let deadline = tokio::time::Instant::now() + shared.config.delta_flush;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(more)) => text.push_str(&more),
                // The stream ended: the rest goes with the step.
                Ok(None) => return Ok(Some(text)),
                Err(_) => break,
            }
        }
        shared
            .store
            .append_events(lease, vec![delta_event(run, message_id, text)])
            .await?;
    }
    Ok(None)
}

/// A `message.delta` event carrying `text`.
fn delta_event(run: &Run, message_id: &MessageId, text: String) -> NewEvent {
    event(
        EventType::MessageDelta,
        json!({"run_id": run.id.as_str(), "message_id": message_id.as_str(), "delta": text}),
    )
}

/// The `tool.started` event of the call that is step `step_no`.
fn tool_started(toolbox: &Toolbox, run: &Run, step_no: u32, call: &ToolCall) -> NewEvent {
    event(
        EventType::ToolStarted,
        json!({
            "run_id": run.id.as_str(),
            "step_no": step_no,
            "tool_call_id": call.id,
            "name": call.name,
            "capability": toolbox.capability_of(&call.name),
            "arguments": call.arguments,
        }),
    )
}

/// A journaled call: its step number, the call, and its plan.
type PlannedCall = (u32, ToolCall, Planned);

/// Splits the calls that have no step yet into those to run now and those that wait for a
/// decision. A call whose approval was given runs exactly as approved (the approval's name
/// and arguments, checked against their fingerprint), whatever the journal says now; one
/// rejected, expired or cancelled gives the model a result that says so.
async fn decide(
    store: &dyn Store,
    run: &Run,
    calls: Vec<PlannedCall>,
) -> Result<(Vec<PlannedCall>, Vec<(u32, ToolCall, NeedsApproval)>), Stop> {
    let approvals: Vec<Approval> = if calls.iter().any(|(_, _, p)| p.approval.is_some()) {
        store.run_approvals(&run.id).await?
    } else {
        Vec::new()
    };
    let mut runnable = Vec::with_capacity(calls.len());
    let mut waiting = Vec::new();
    for (no, call, mut plan) in calls {
        let Some(need) = plan.approval.take() else {
            runnable.push((no, call, plan));
            continue;
        };
        let refused = |decision: &'static str, reason: String| Planned {
            blocked: Some(Blocked {
                by: "approval".to_owned(),
                decision,
                reason,
            }),
            ..Planned::default()
        };
        let decided = approvals.iter().find(|a| a.step_no == no);
        let why = |a: &Approval, default: &str| {
            a.decision_reason
                .clone()
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        match decided.map(|a| (a, a.status)) {
            None | Some((_, ApprovalStatus::Pending)) => {
                // What is shown for approval is what would run: the rewritten arguments.
                waiting.push((no, plan.apply(&call), need));
            }
            Some((a, ApprovalStatus::Approved)) if a.arguments_intact() => {
                let approved = ToolCall {
                    id: a.tool_call_id.clone(),
                    name: a.name.clone(),
                    arguments: a.arguments.clone(),
                };
                runnable.push((no, approved, Planned::default()));
            }
            Some((_, ApprovalStatus::Approved)) => runnable.push((
                no,
                call,
                refused(
                    "changed",
                    "the approved arguments were altered after approval".to_owned(),
                ),
            )),
            Some((a, ApprovalStatus::Rejected)) => {
                runnable.push((no, call, refused("rejected", why(a, "no reason given"))));
            }
            Some((a, ApprovalStatus::Expired)) => {
                runnable.push((no, call, refused("expired", why(a, "it expired"))));
            }
            Some((a, ApprovalStatus::Cancelled)) => {
                runnable.push((
                    no,
                    call,
                    refused("cancelled", why(a, "the run was cancelled")),
                ));
            }
        }
    }
    Ok((runnable, waiting))
}

/// Runs the tool calls in parallel; each is recorded as soon as it finishes, with the
/// `after-tool` hooks' replacement of its result and its key-value writes. Calls whose state
/// scopes overlap (the tool's capability, or an `after-tool` hook's, when it may write state)
/// run one after another in call order, each committed before the next starts, so no update
/// is lost. A call a `before-tool` hook blocked does not run: its step records the reason.
/// Returns the records in call order. `announce`: write the `tool.started` events first
/// (unless the LLM step that asked for them already did).
#[allow(
    clippy::too_many_arguments,
    reason = "the pieces of one step; bundling them hides nothing"
)]
async fn run_tools(
    shared: &Shared,
    toolbox: &Toolbox,
    setup: &RunConfig,
    run: &Run,
    lease: &Lease,
    attempt: u32,
    calls: Vec<PlannedCall>,
    announce: bool,
) -> Result<Vec<RecordedStep>, Stop> {
    let store = shared.store.as_ref();
    let run_id = run.id.as_str();
    if announce {
        let started: Vec<NewEvent> = calls
            .iter()
            .filter(|(_, _, plan)| plan.blocked.is_none())
            .map(|(no, call, plan)| tool_started(toolbox, run, *no, &plan.apply(call)))
            .collect();
        if !started.is_empty() {
            store.append_events(lease, started).await?;
        }
    }

    let mut locks: HashMap<String, Arc<tokio::sync::Mutex<()>>> = HashMap::new();
    let calls: Vec<_> = calls
        .into_iter()
        .map(|(step_no, call, plan)| {
            let scopes: Vec<_> = if plan.blocked.is_some() {
                Vec::new()
            } else {
                toolbox
                    .state_touched_by(&call.name)
                    .into_iter()
                    .map(|capability| locks.entry(capability).or_default().clone())
                    .collect()
            };
            (step_no, call, plan, scopes)
        })
        .collect();
    let results = join_all(
        calls
            .into_iter()
            .map(|(step_no, call, plan, scopes)| async move {
                let started_at = Utc::now();
                // In capability order (sorted), so two calls never wait for each other in a cycle;
                // held until the step is committed.
                let mut held = Vec::with_capacity(scopes.len());
                for lock in scopes {
                    held.push(lock.lock_owned().await);
                }
                let mut payload = json!({
                    "run_id": run_id,
                    "step_no": step_no,
                    "tool_call_id": call.id,
                    "name": call.name,
                });
                let (step, events, committed) = if let Some(blocked) = &plan.blocked {
                    let capability = toolbox
                        .capability_of(&call.name)
                        .unwrap_or(&blocked.by)
                        .to_owned();
                    let message = blocked.message();
                    if let Some(fields) = payload.as_object_mut() {
                        fields.insert("capability".into(), json!(capability));
                        fields.insert("blocked_by".into(), json!(blocked.by));
                        fields.insert("reason".into(), json!(blocked.reason));
                    }
                    let step = tool_step(
                        run,
                        &call,
                        step_no,
                        attempt,
                        started_at,
                        (
                            format!("error: {message}"),
                            true,
                            json!({"error": message, "blocked": plan.to_json()["blocked"]}),
                        ),
                        (Some(capability), None),
                        KvWrites::default(),
                    );
                    (
                        step,
                        vec![event(EventType::ToolBlocked, payload)],
                        KvWrites::default(),
                    )
                } else {
                    let call = plan.apply(&call);
                    let key = format!("{}:{}:{}", run.id, step_no, call.id);
                    let mut writes = toolbox.kv_writes();
                    let span = tracing::info_span!(
                        "execute_tool",
                        otel.name = %format_args!("execute_tool {}", call.name),
                        otel.status_code = tracing::field::Empty,
                        gen_ai.operation.name = "execute_tool",
                        gen_ai.tool.name = %call.name,
                        gen_ai.tool.call.id = %call.id,
                        gen_ai.tool.type = "function",
                        everruns.capability = toolbox.capability_of(&call.name),
                        step_no,
                    );
                    let (result, capability, digest) = toolbox
                        .call(
                            &shared.runtime,
                            &setup.agent_id,
                            run,
                            &call,
                            key,
                            &mut writes,
                        )
                        .instrument(span.clone())
                        .await;
                    if result.is_err() {
                        span.record("otel.status_code", "ERROR");
                    }
                    let mut events = Vec::new();
                    let result = if toolbox.hooks.is_empty() {
                        result
                    } else {
                        let request = hooks::tool_request(&call, step_no);
                        hooks::after_tool(
                            toolbox,
                            run_id,
                            &request,
                            result,
                            &mut writes,
                            &mut events,
                        )
                        .await
                    };
                    let recorded = toolbox::recorded_result(&result);
                    let (event_type, detail) = if recorded.1 {
                        (EventType::ToolFailed, json!({"error": recorded.2["error"]}))
                    } else {
                        (EventType::ToolCompleted, json!({"output": recorded.0}))
                    };
                    if let (Some(target), Some(extra)) =
                        (payload.as_object_mut(), detail.as_object())
                    {
                        target.insert("capability".into(), json!(capability));
                        target.extend(extra.clone());
                    }
                    events.push(event(event_type, payload));
                    let committed = writes.clone();
                    let step = tool_step(
                        run,
                        &call,
                        step_no,
                        attempt,
                        started_at,
                        recorded,
                        (capability, digest),
                        writes,
                    );
                    (step, events, committed)
                };
                let mut events = events;
                events.push(event(
                    EventType::StepCompleted,
                    json!({"run_id": run_id, "step_no": step_no, "kind": "tool"}),
                ));
                let recorded = store
                    .record_step(lease, step, events, Usage::default())
                    .await;
                if recorded.is_ok() {
                    toolbox.kv_cache.committed(&committed);
                    metrics::histogram!(STEP_DURATION, "kind" => "tool")
                        .record(seconds(Utc::now() - started_at));
                }
                drop(held);
                recorded
            }),
    )
    .await;
    let mut recorded = Vec::with_capacity(results.len());
    for result in results {
        recorded.push(result?);
    }
    Ok(recorded)
}

/// The journal step of tool call `call`: `result` is the text the model sees, whether it is
/// an error, and the structured output; `ran` the capability and component digest.
#[allow(
    clippy::too_many_arguments,
    reason = "the pieces of one step; bundling them hides nothing"
)]
fn tool_step(
    run: &Run,
    call: &ToolCall,
    step_no: u32,
    attempt: u32,
    started_at: chrono::DateTime<Utc>,
    result: (String, bool, Value),
    ran: (Option<String>, Option<String>),
    writes: KvWrites,
) -> NewStep {
    let (content, is_error, output) = result;
    let (capability_id, digest) = ran;
    NewStep {
        step_no,
        kind: StepKind::Tool,
        input: json!({"tool_call_id": call.id, "name": call.name, "arguments": call.arguments}),
        output,
        status: if is_error {
            StepStatus::Failed
        } else {
            StepStatus::Completed
        },
        attempt,
        capability_id,
        digest,
        started_at,
        message: Some(StepMessage {
            id: MessageId::new(),
            role: MessageRole::Tool,
            content,
            metadata: conversation::tool_metadata(run, call, is_error),
        }),
        kv_writes: toolbox::journal_writes(writes),
    }
}
