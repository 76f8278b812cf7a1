//! The Everruns HTTP API: routes, OpenAPI document, authentication and problem+json errors.
//!
//! This is the only crate that knows HTTP. Modules:
//! - `routes`: one module per resource (`agents`, `sessions`, `messages`, `runs`,
//!   `approvals`, `events`, `capabilities`, `providers`, `secrets`, `api_keys`, `health`).
//! - `rules`: the text rules (regular expressions) the handlers check and the OpenAPI
//!   document states, from one definition.
//! - `error`: [`ApiError`], the single mapping of errors to RFC 9457 problem+json responses.
//! - `json`: body and query extractors that name the offending field on bad input.
//! - `pagination`: `?limit=&cursor=` in, `{data, next_cursor, total}` out.
//! - `auth`: API key generation and hashing, roles, and the bearer-token middleware (role,
//!   rate limits) and the request deadline.
//! - `limits`: [`Limits`], the per-key rate limits, the event-stream caps and the request
//!   deadline of this process.
//! - `ui`: the web UI's embedded files, served at `/` by the router's fallback (they are pages,
//!   not API operations, so they stay out of the OpenAPI document).
//! - `telemetry`: the request span and figures, `x-request-id`, the SSE stream gauge, and
//!   [`MetricsEndpoint`], the Prometheus exposition at `/metrics`.
//! - `mcp`: `/mcp`, our agents as MCP tools (`list_agents`, `run_agent`, `get_run`) over
//!   Streamable HTTP, with the official SDK (`rmcp`); outside the OpenAPI document.
//! - `serve`: [`serve`], the accept loop (idle connections closed, graceful shutdown).
//! - `hub`: [`EventHub`], one follower per watched session fanning live events out to its
//!   SSE streams.
//!
//! [`app`] builds the complete router; [`openapi`] the OpenAPI 3.1 document, which is generated
//! from the same route definitions so the two cannot drift apart.

mod auth;
mod error;
mod hub;
mod json;
mod limits;
mod mcp;
mod pagination;
mod routes;
mod rules;
mod serve;
mod telemetry;
mod ui;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderName;
use axum::http::header::ALLOW;
use axum::middleware::from_fn;
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use everruns_store::Store;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

pub use auth::{GeneratedKey, KEY_PREFIX, MIN_KEY_LEN, generate_key, hash_key, key_record};
pub use error::{ApiError, PROBLEM_JSON, Problem};
pub use hub::EventHub;
pub use limits::{LimitSettings, Limits};
pub use mcp::{MCP_PATH, McpSettings};
pub use serve::serve;
pub use telemetry::MetricsEndpoint;

/// Largest request body accepted, in bytes; larger bodies get 413.
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;

/// Shared state of every handler.
#[derive(Clone, Debug)]
pub struct AppState {
    /// Where everything is persisted.
    pub store: Arc<dyn Store>,
    /// The plugin runtime: installed capabilities, their tools and config schemas.
    pub runtime: everruns_runtime::Runtime,
    /// Starts runs: straight into this process's worker when it has room, else queued.
    pub runs: everruns_executor::Starter,
    /// Seals provider keys and secrets; `None` when no master key is configured (PostgreSQL
    /// without `EVERRUNS_SECRET_KEY`): those writes then answer 503.
    pub keyring: Option<Arc<everruns_secrets::Keyring>>,
    /// Fans live events out to the SSE streams of each session.
    pub events: EventHub,
    /// This process's Prometheus figures, served at `/metrics`.
    pub metrics: MetricsEndpoint,
    /// Rate limits, stream caps and the request deadline.
    pub limits: Arc<Limits>,
    /// Which hosts and origins `/mcp` answers.
    pub mcp: McpSettings,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Everruns API",
        description = "Durable AI agents with sandboxed WASM capabilities. Every `/v1` route \
                       needs `Authorization: Bearer <api key>`, and the key's role must allow \
                       the operation (`admin` > `operator` > `reader`; each operation's \
                       `x-required-role` says which). Each key has a request rate and a \
                       run-start rate (429 with `Retry-After` past them) and a cap on open \
                       event streams. Errors are RFC 9457 `application/problem+json`.",
        license(name = "Apache-2.0"),
    ),
    modifiers(&BearerAuth),
    security(("api_key" = [])),
    tags(
        (name = "agents", description = "Agents: system prompt, model and capabilities"),
        (name = "sessions", description = "Conversations with an agent"),
        (name = "runs", description = "Runs: the agent answering a message, step by step"),
        (name = "approvals", description = "Tool approval: a person approves or rejects a \
                                              tool call while its run waits (status \
                                              `waiting_approval`, no worker held)"),
        (name = "capabilities", description = "Installed WASM plugins: tools, granted \
                                                 permissions, load status"),
        (name = "providers", description = "LLM providers; API keys are write-only"),
        (name = "secrets", description = "Named secrets for plugins; values are write-only"),
        (name = "api-keys", description = "API keys (`admin` role)"),
        (name = "identity", description = "The API key making the request"),
        (name = "health", description = "Liveness"),
        (name = "monitoring", description = "Prometheus metrics of this process"),
    )
)]
struct ApiDoc;

/// Registers the bearer-token security scheme referenced by every `/v1` operation.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every documented route; `auth` adds the API-key check to the `/v1` ones.
fn documented_routes(auth: Option<&AppState>) -> OpenApiRouter<AppState> {
    let mut v1 = OpenApiRouter::new()
        .merge(routes::agents::router())
        .merge(routes::sessions::router())
        .merge(routes::messages::router())
        .merge(routes::api_keys::router())
        .merge(routes::runs::router())
        .merge(routes::approvals::router())
        .merge(routes::events::router())
        .merge(routes::capabilities::router())
        .merge(routes::providers::router())
        .merge(routes::secrets::router());
    let mut monitoring = routes::monitoring::router();
    if let Some(state) = auth {
        v1 = v1
            .route_layer(from_fn_with_state(state.clone(), auth::require_api_key))
            .route_layer(from_fn_with_state(state.clone(), auth::deadline));
        if !state.metrics.public {
            monitoring =
                monitoring.route_layer(from_fn_with_state(state.clone(), auth::require_api_key));
        }
    }
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(v1)
        .merge(monitoring)
        .merge(routes::health::router())
}

/// The OpenAPI 3.1 document of the API, as served at `/api-doc/openapi.json`.
pub fn openapi() -> OpenApiDoc {
    let mut doc = documented_routes(None).split_for_parts().1;
    rules::document(&mut doc);
    auth::document(&mut doc);
    doc
}

/// The complete HTTP application.
pub fn app(state: AppState) -> Router {
    let (router, mut spec) = documented_routes(Some(&state)).split_for_parts();
    rules::document(&mut spec);
    auth::document(&mut spec);
    let mcp =
        mcp::router(&state).route_layer(from_fn_with_state(state.clone(), auth::require_api_key));
    let router = router
        .merge(mcp)
        .merge(SwaggerUi::new("/swagger-ui").url("/api-doc/openapi.json", spec))
        // Unknown paths: the web UI's files, else a `no-such-route` problem.
        .fallback(ui::serve);
    served(router, state)
}

/// The application of a process that only executes runs (`everruns worker`): `/metrics` and
/// `/health`, so every process can be scraped and probed.
pub fn monitoring_app(state: AppState) -> Router {
    let mut monitoring = routes::monitoring::router();
    if !state.metrics.public {
        monitoring =
            monitoring.route_layer(from_fn_with_state(state.clone(), auth::require_api_key));
    }
    let (router, _) = monitoring.merge(routes::health::router()).split_for_parts();
    let router = router.fallback(|request: Request| async move {
        ApiError::no_route(request.uri().path()).into_response()
    });
    served(router, state)
}

/// The layers every request passes through, around `router`'s routes.
fn served(router: Router<AppState>, state: AppState) -> Router {
    let request_id = HeaderName::from_static(telemetry::REQUEST_ID);
    router
        // Every matched route's request gets its span; its template reaches `observe`.
        .route_layer(from_fn(telemetry::request_span))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        // Outermost first: the request id is set (or kept), then the request is counted,
        // then the id is copied onto the response.
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(from_fn(telemetry::observe))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

async fn method_not_allowed(request: Request) -> axum::response::Response {
    let allow = request.headers().get(ALLOW).cloned();
    ApiError::method_not_allowed(request.method().as_str(), allow).into_response()
}
