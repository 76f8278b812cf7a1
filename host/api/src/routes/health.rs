//! `/health`: liveness and database reachability, without authentication.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health))
}

/// Server health.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` in a 200 response.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// `postgres` or `sqlite`.
    #[schema(example = "sqlite")]
    pub store: &'static str,
    /// Server version.
    pub version: &'static str,
}

/// Health check: 200 when the server serves and its database answers.
#[utoipa::path(
    get, path = "/health", tag = "health",
    security(()),
    responses(
        (status = 200, description = "Serving", body = Health),
        (status = 503, description = "The database is unreachable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn health(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "health check: database unreachable");
        ApiError::unavailable("the database is unreachable")
    })?;
    Ok(Json(Health {
        status: "ok",
        store: state.store.backend(),
        version: env!("CARGO_PKG_VERSION"),
    }))
}
