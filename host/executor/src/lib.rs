//! The durable run loop: workers claim queued (or abandoned) runs from the store, execute them
//! step by step (LLM call, tool calls, LLM call, ...) and journal every finished step, so a
//! run survives the death of the process that was executing it.
//!
//! Modules:
//! - `config`: [`ExecutorConfig`], lease, heartbeat, polling and limits.
//! - `worker`: [`Executor`], the claim loop, the cancel watcher, and [`Starter`], which
//!   starts runs for the API and hands them straight to this process's worker.
//! - `run`: executing one claimed run: heartbeat, the step loop.
//! - `conversation`: rebuilding the model's conversation from the stored messages.
//! - `toolbox`: the agent's capabilities as one tool list, and calling a tool through the
//!   runtime (its key-value writes buffered, committed with its step).
//! - `hooks`: the capabilities' `before-model`, `before-tool` and `after-tool` hooks around
//!   the run's calls, their decisions journaled with the step they belong to.
//! - `providers`: which LLM client serves a run's model settings.
//! - `resolve`: the configuration a run is created with (agent, session and message
//!   overrides, tool names), stored with the run.
//! - `telemetry`: a run's trace context (stored with it, continued by every claim) and the
//!   label values of the executor's metrics.
//!
//! Invariants: every write for a run carries its lease (the store fences stale workers);
//! a step is recorded only after its work is done and before the next step starts; tool
//! steps of one model turn get consecutive step numbers fixed by the model's call order, so a
//! takeover knows exactly which calls are still missing.

mod config;
mod conversation;
mod hooks;
mod providers;
mod resolve;
mod run;
mod telemetry;
mod toolbox;
mod worker;

pub use config::ExecutorConfig;
pub use providers::Providers;
pub use toolbox::store_scope;
pub use worker::{Executor, Starter};
