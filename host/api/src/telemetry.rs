//! What the HTTP layer tells operators: a span per routed request (continuing an incoming W3C
//! `traceparent`), `x-request-id` on every response, the request figures by route template,
//! the open SSE streams, and the Prometheus exposition served at `/metrics` (with the queue
//! gauges read from the store at scrape time, at most once a second).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use everruns_core::metrics::{
    HTTP_REQUEST_DURATION, HTTP_REQUESTS_TOTAL, RUN_QUEUE_DEPTH, RUN_QUEUE_OLDEST_AGE, RUNS_ACTIVE,
    SSE_CONNECTIONS, UNMATCHED_ROUTE,
};
use everruns_store::{QueueStats, Store, StoreError};
use metrics_exporter_prometheus::PrometheusHandle;
use opentelemetry_http::HeaderExtractor;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header carrying a request's id (taken from the request when present, else made up).
pub(crate) const REQUEST_ID: &str = "x-request-id";

/// How long a read of the queue gauges is reused.
const QUEUE_STATS_TTL: Duration = Duration::from_secs(1);

/// The `/metrics` endpoint: the process's recorder and whether scrapers need an API key.
#[derive(Clone)]
pub struct MetricsEndpoint {
    handle: PrometheusHandle,
    /// `true`: served without an API key (`EVERRUNS_METRICS_PUBLIC`, for scrapers inside a
    /// private network).
    pub public: bool,
    /// The last queue read and when it was taken.
    queue: Arc<Mutex<Option<(Instant, QueueStats)>>>,
}

impl std::fmt::Debug for MetricsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsEndpoint")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl MetricsEndpoint {
    /// Serves what `handle`'s recorder (the process's) has recorded.
    pub fn new(handle: PrometheusHandle, public: bool) -> Self {
        Self {
            handle,
            public,
            queue: Arc::default(),
        }
    }

    /// The exposition, after setting the queue gauges from `store` (one bounded query, reused
    /// for a second so frequent scrapes and several scrapers cost the database nothing more).
    pub(crate) async fn render(&self, store: &dyn Store) -> Result<String, StoreError> {
        let cached = *self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let stats = match cached {
            Some((at, stats)) if at.elapsed() < QUEUE_STATS_TTL => stats,
            _ => {
                let stats = store.queue_stats().await?;
                *self.queue.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some((Instant::now(), stats));
                stats
            }
        };
        metrics::gauge!(RUN_QUEUE_DEPTH).set(stats.waiting as f64);
        metrics::gauge!(RUNS_ACTIVE).set(stats.active as f64);
        let age = stats.oldest_waiting_since.map_or(0.0, |since| {
            (chrono::Utc::now() - since)
                .to_std()
                .map_or(0.0, |d| d.as_secs_f64())
        });
        metrics::gauge!(RUN_QUEUE_OLDEST_AGE).set(age);
        self.handle.run_upkeep();
        Ok(self.handle.render())
    }
}

/// The route template a request matched, carried on its response to [`observe`].
#[derive(Debug, Clone)]
struct Route(MatchedPath);

/// Route-layer middleware (the route is known here): the request's span, named by method and
/// route template, continuing the trace an incoming `traceparent` names, with the request's
/// `x-request-id`; and the route template on the response, for [`observe`].
pub(crate) async fn request_span(request: Request, next: Next) -> Response {
    let Some(matched) = request.extensions().get::<MatchedPath>().cloned() else {
        return next.run(request).await;
    };
    let method = request.method().clone();
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "HTTP request",
        otel.name = %format_args!("{method} {}", matched.as_str()),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = matched.as_str(),
        http.response.status_code = tracing::field::Empty,
        url.path = %request.uri().path(),
        request_id = %request_id,
    );
    if request.headers().contains_key("traceparent") {
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(request.headers()))
        });
        // Fails only for a span already entered; this one is new.
        let _ = span.set_parent(parent);
    }
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response.extensions_mut().insert(Route(matched));
    response
}

/// Outer middleware of every request: its figures by method, route template (from
/// [`request_span`]; `unmatched` when no route matched) and status.
pub(crate) async fn observe(request: Request, next: Next) -> Response {
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let took = started.elapsed().as_secs_f64();
    let route = response
        .extensions()
        .get::<Route>()
        .map_or(UNMATCHED_ROUTE, |r| r.0.as_str())
        .to_owned();
    let status = response.status().as_str().to_owned();
    metrics::counter!(HTTP_REQUESTS_TOTAL, "method" => method, "route" => route.clone(),
        "status" => status)
    .increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION, "method" => method, "route" => route).record(took);
    response
}

/// The `method` label: the standard methods by name, anything else as `other` (bounded).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts an open SSE stream while it lives.
#[derive(Debug)]
pub(crate) struct OpenStream(());

impl OpenStream {
    pub(crate) fn open() -> Self {
        metrics::gauge!(SSE_CONNECTIONS).increment(1.0);
        Self(())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!(SSE_CONNECTIONS).decrement(1.0);
    }
}
