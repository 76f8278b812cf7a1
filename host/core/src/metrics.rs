//! The Prometheus metrics every Everruns process exposes: their names, kinds, label names and
//! help texts, in one list that the recording sites (by name), the exporter (descriptions,
//! histogram buckets) and the tests share. Label values are bounded: statuses, outcomes, kinds,
//! capability ids, provider kinds, configured model names and route templates, never ids or
//! user text.

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    /// Durations in seconds (buckets from [`LATENCY_BUCKETS`]).
    Histogram,
}

/// One exposed metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub kind: MetricKind,
    /// The label names its series carry.
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

/// Finished runs by final status (`completed`, `failed`, `cancelled`).
pub const RUNS_TOTAL: &str = "everruns_runs_total";
/// Runs being executed now (`running` or `cancelling`), all processes (from the store).
pub const RUNS_ACTIVE: &str = "everruns_runs_active";
/// Runs waiting for a worker, all processes (from the store).
pub const RUN_QUEUE_DEPTH: &str = "everruns_run_queue_depth";
/// Age of the oldest run waiting for a worker (from the store; 0 when none waits).
pub const RUN_QUEUE_OLDEST_AGE: &str = "everruns_run_queue_oldest_age_seconds";
/// Time from a run being queued to a worker starting it.
pub const CLAIM_LATENCY: &str = "everruns_claim_latency_seconds";
/// Duration of journaled steps, by `kind` (`llm`, `tool`).
pub const STEP_DURATION: &str = "everruns_step_duration_seconds";
/// Runs this process took over from a worker whose lease had expired.
pub const LEASE_TAKEOVERS_TOTAL: &str = "everruns_lease_takeovers_total";
/// Free run slots of this process's worker.
pub const WORKER_SLOTS_AVAILABLE: &str = "everruns_worker_slots_available";
/// Model calls by `provider` kind, `model` and `outcome` (`ok`, `error`).
pub const LLM_REQUESTS_TOTAL: &str = "everruns_llm_requests_total";
/// Tokens by `provider`, `model` and `direction` (`input`, `output`).
pub const LLM_TOKENS_TOTAL: &str = "everruns_llm_tokens_total";
/// Time from sending a model request to its first streamed output.
pub const LLM_TIME_TO_FIRST_TOKEN: &str = "everruns_llm_time_to_first_token_seconds";
/// Plugin invocations by `capability` and `outcome` (`ok`, `tool_error`, `timeout`, `trap`,
/// `denied`).
pub const PLUGIN_CALLS_TOTAL: &str = "everruns_plugin_calls_total";
/// Duration of plugin invocations by `capability`.
pub const PLUGIN_CALL_DURATION: &str = "everruns_plugin_call_duration_seconds";
/// Outgoing HTTP requests of plugins refused by their permissions, by `capability`.
pub const PLUGIN_EGRESS_DENIED_TOTAL: &str = "everruns_plugin_egress_denied_total";
/// Open SSE event streams of this process.
pub const SSE_CONNECTIONS: &str = "everruns_sse_connections";
/// HTTP requests by `method`, `route` template and `status`.
pub const HTTP_REQUESTS_TOTAL: &str = "everruns_http_requests_total";
/// HTTP request duration by `method` and `route` template.
pub const HTTP_REQUEST_DURATION: &str = "everruns_http_request_duration_seconds";

/// Histogram buckets (seconds): 1 ms to 2 minutes, for everything from a plugin hook to a
/// long model call.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];

/// The `route` label of a request no route matched (unknown paths, the web UI's files).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The `model` label of a model that is not one of its provider's configured models.
pub const OTHER_MODEL: &str = "other";

/// Every metric, in the order the README documents them.
pub const METRICS: &[Metric] = &[
    Metric {
        name: RUNS_TOTAL,
        kind: MetricKind::Counter,
        labels: &["status"],
        help: "Runs finished, by final status",
    },
    Metric {
        name: RUNS_ACTIVE,
        kind: MetricKind::Gauge,
        labels: &[],
        help: "Runs being executed now, by any process (read from the store)",
    },
    Metric {
        name: RUN_QUEUE_DEPTH,
        kind: MetricKind::Gauge,
        labels: &[],
        help: "Runs waiting for a worker (read from the store)",
    },
    Metric {
        name: RUN_QUEUE_OLDEST_AGE,
        kind: MetricKind::Gauge,
        labels: &[],
        help: "Age of the oldest run waiting for a worker, 0 when none waits",
    },
    Metric {
        name: CLAIM_LATENCY,
        kind: MetricKind::Histogram,
        labels: &[],
        help: "Time from a run being queued to a worker starting it",
    },
    Metric {
        name: STEP_DURATION,
        kind: MetricKind::Histogram,
        labels: &["kind"],
        help: "Duration of journaled steps, by kind (llm, tool)",
    },
    Metric {
        name: LEASE_TAKEOVERS_TOTAL,
        kind: MetricKind::Counter,
        labels: &[],
        help: "Runs this process took over after another worker's lease expired",
    },
    Metric {
        name: WORKER_SLOTS_AVAILABLE,
        kind: MetricKind::Gauge,
        labels: &[],
        help: "Free run slots of this process's worker",
    },
    Metric {
        name: LLM_REQUESTS_TOTAL,
        kind: MetricKind::Counter,
        labels: &["provider", "model", "outcome"],
        help: "Model calls, by provider kind, model and outcome (ok, error)",
    },
    Metric {
        name: LLM_TOKENS_TOTAL,
        kind: MetricKind::Counter,
        labels: &["provider", "model", "direction"],
        help: "Tokens, by provider kind, model and direction (input, output)",
    },
    Metric {
        name: LLM_TIME_TO_FIRST_TOKEN,
        kind: MetricKind::Histogram,
        labels: &["provider", "model"],
        help: "Time from sending a model request to its first streamed output",
    },
    Metric {
        name: PLUGIN_CALLS_TOTAL,
        kind: MetricKind::Counter,
        labels: &["capability", "outcome"],
        help: "Plugin invocations, by capability and outcome (ok, tool_error, timeout, trap, \
               denied)",
    },
    Metric {
        name: PLUGIN_CALL_DURATION,
        kind: MetricKind::Histogram,
        labels: &["capability"],
        help: "Duration of plugin invocations, by capability",
    },
    Metric {
        name: PLUGIN_EGRESS_DENIED_TOTAL,
        kind: MetricKind::Counter,
        labels: &["capability"],
        help: "Outgoing HTTP requests of plugins refused by their permissions",
    },
    Metric {
        name: SSE_CONNECTIONS,
        kind: MetricKind::Gauge,
        labels: &[],
        help: "Open SSE event streams of this process",
    },
    Metric {
        name: HTTP_REQUESTS_TOTAL,
        kind: MetricKind::Counter,
        labels: &["method", "route", "status"],
        help: "HTTP requests, by method, route template and status",
    },
    Metric {
        name: HTTP_REQUEST_DURATION,
        kind: MetricKind::Histogram,
        labels: &["method", "route"],
        help: "HTTP request duration until the response head, by method and route template",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_prometheus_names_with_their_kind_suffix() {
        let mut seen = std::collections::HashSet::new();
        for m in METRICS {
            assert!(seen.insert(m.name), "{} listed twice", m.name);
            assert!(m.name.starts_with("everruns_"), "{}", m.name);
            assert!(
                m.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                m.name
            );
            match m.kind {
                MetricKind::Counter => assert!(m.name.ends_with("_total"), "{}", m.name),
                MetricKind::Histogram => assert!(m.name.ends_with("_seconds"), "{}", m.name),
                MetricKind::Gauge => assert!(!m.name.ends_with("_total"), "{}", m.name),
            }
        }
        assert!(LATENCY_BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }
}
