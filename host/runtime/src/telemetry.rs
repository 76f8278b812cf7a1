//! The Prometheus figures of a plugin's invocations (names in `everruns_core::metrics`): its
//! handles are registered once when the plugin loads, so a call only bumps atomics.

use std::time::Duration;

use everruns_core::metrics::{
    PLUGIN_CALL_DURATION, PLUGIN_CALLS_TOTAL, PLUGIN_EGRESS_DENIED_TOTAL,
};
use metrics::{Counter, Histogram};

/// How one invocation ended, as `everruns_plugin_calls_total{outcome}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It answered.
    Ok,
    /// The tool returned an error (data for the model).
    ToolError,
    /// It ran past its deadline.
    Timeout,
    /// It trapped or hit a limit (memory, stack, fuel, output size), or could not run.
    Trap,
    /// It failed after the host refused it something (a host not allowed, a secret not
    /// granted).
    Denied,
}

/// One plugin's metric handles.
#[derive(Clone)]
pub(crate) struct PluginMetrics {
    calls: [Counter; 5],
    duration: Histogram,
    /// Outgoing requests refused by the plugin's permissions.
    pub(crate) egress_denied: Counter,
}

impl PluginMetrics {
    /// The handles of capability `id` (registered with the process's recorder now; with none
    /// installed they do nothing).
    pub(crate) fn new(id: &str) -> Self {
        let calls = ["ok", "tool_error", "timeout", "trap", "denied"].map(|outcome| {
            metrics::counter!(PLUGIN_CALLS_TOTAL, "capability" => id.to_owned(), "outcome" => outcome)
        });
        Self {
            calls,
            duration: metrics::histogram!(PLUGIN_CALL_DURATION, "capability" => id.to_owned()),
            egress_denied: metrics::counter!(
                PLUGIN_EGRESS_DENIED_TOTAL,
                "capability" => id.to_owned()
            ),
        }
    }

    /// Counts one invocation.
    pub(crate) fn record(&self, outcome: Outcome, took: Duration) {
        self.calls[outcome as usize].increment(1);
        self.duration.record(took.as_secs_f64());
    }
}

impl std::fmt::Debug for PluginMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginMetrics").finish_non_exhaustive()
    }
}
