//! `/v1/sessions/{id}/messages`: the conversation of a session.

use axum::Json;
use axum::extract::{Path, State};
use everruns_core::Message;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiResult, QueryErrors};
use crate::json::ApiQuery;
use crate::pagination::{ListResponse, PageParams};
use crate::routes::sessions::session_id;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_messages))
}

/// A message of a conversation.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageResponse {
    #[schema(example = "msg_0192f3c4a1b27c3d8e9f0a1b2c3d4e5f")]
    pub id: String,
    pub session_id: String,
    /// `user`, `assistant` or `tool`.
    #[schema(example = "user")]
    pub role: String,
    pub content: String,
    /// Structured extras such as tool calls; absent when there are none.
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    #[schema(value_type = Option<Object>)]
    pub metadata: serde_json::Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<Message> for MessageResponse {
    fn from(m: Message) -> Self {
        Self {
            id: m.id.to_string(),
            session_id: m.session_id.to_string(),
            role: m.role.as_str().to_owned(),
            content: m.content,
            metadata: m.metadata,
            created_at: m.created_at,
        }
    }
}

/// List the messages of a session, oldest first.
#[utoipa::path(
    get, path = "/v1/sessions/{id}/messages", tag = "sessions",
    params(("id" = String, Path, description = "Session id (`ses_...`)"), PageParams),
    responses(
        (status = 200, description = "A page of messages", body = ListResponse<MessageResponse>),
        QueryErrors,
    )
)]
async fn list_messages(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<ListResponse<MessageResponse>>> {
    let id = session_id(&id)?;
    let page = state
        .store
        .list_messages(&id, &params.to_request()?)
        .await?;
    Ok(Json(ListResponse::from_page(page, MessageResponse::from)))
}
