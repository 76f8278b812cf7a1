//! `/metrics`: the Prometheus exposition of this process (behind an API key, which
//! Prometheus sends as a bearer token, unless `EVERRUNS_METRICS_PUBLIC` opens it).

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};

/// The content type of the Prometheus text exposition format.
const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// The process's metrics in the Prometheus text format: runs, queue, steps, model calls,
/// plugin calls, HTTP requests and SSE streams (the README's Monitoring section explains each).
/// Every process (API, worker, both) serves its own figures; the queue gauges are read from
/// the store at most once a second.
#[utoipa::path(
    get, path = "/metrics", tag = "monitoring",
    responses(
        (status = 200, description = "Prometheus text exposition (version 0.0.4)",
         body = String, content_type = "text/plain"),
        (status = 401, description = "No valid API key (unless EVERRUNS_METRICS_PUBLIC is set)",
         body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unreachable", body = Problem,
         content_type = "application/problem+json"),
    )
)]
async fn metrics(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let text = state
        .metrics
        .render(state.store.as_ref())
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "metrics: reading the run queue failed");
            ApiError::unavailable("the database is unreachable")
        })?;
    Ok(([(CONTENT_TYPE, EXPOSITION)], text))
}
