//! `GET /v1/sessions/{id}/events`: the session's durable event log, as a live
//! `text/event-stream` (resumable with `Last-Event-ID` or `?since=`) or as JSON pages.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::HeaderName;
use axum::http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use everruns_core::{Event, SessionId};
use futures::stream::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, QueryErrors};
use crate::hub::Frame;
use crate::json::ApiQuery;
use crate::limits::StreamPermit;
use crate::routes::sessions::session_id;

/// Events read from the store per query.
const BATCH: u32 = 500;
/// The heartbeat: an SSE comment, which clients ignore.
const HEARTBEAT_COMMENT: &[u8] = b": heartbeat\n\n";

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(session_events))
}

/// Query parameters of the event log.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Return events with a sequence number greater than this (default 0: from the start).
    #[param(minimum = 0)]
    pub since: Option<i64>,
    /// Events per JSON page, 1 to 500 (default 100). Ignored for SSE.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// One event of a session's log.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventResponse {
    /// Per-session sequence number: 1, 2, 3, ... without gaps.
    pub seq: i64,
    /// Event type, e.g. `run.completed`, `message.delta`.
    #[serde(rename = "type")]
    #[schema(example = "message.completed")]
    pub event_type: String,
    pub run_id: Option<String>,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<Event> for EventResponse {
    fn from(e: Event) -> Self {
        Self {
            seq: e.seq,
            event_type: e.event_type.as_str().to_owned(),
            run_id: e.run_id.map(|r| r.to_string()),
            data: e.payload,
            created_at: e.created_at,
        }
    }
}

/// A page of events.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub data: Vec<EventResponse>,
    /// Pass as `since` to read on; absent when this page reached the end of the log.
    pub next_since: Option<i64>,
}

/// The session's events. With `Accept: text/event-stream` this is a live SSE stream: each
/// event has `id:` = sequence number, `event:` = type and `data:` = the event as JSON;
/// reconnecting with `Last-Event-ID` (or `?since=`) replays exactly the events missed, then
/// continues live. Otherwise a JSON page of the log.
#[utoipa::path(
    get, path = "/v1/sessions/{id}/events", tag = "sessions",
    params(
        ("id" = String, Path, description = "Session id (`ses_...`)"),
        ("Last-Event-ID" = Option<i64>, Header, minimum = 0, description = "Resume an SSE stream after this sequence number"),
        EventParams,
    ),
    responses(
        (status = 200, description = "Events as JSON, or a `text/event-stream`",
         content((EventPage = "application/json"), (String = "text/event-stream"))),
        QueryErrors,
    )
)]
async fn session_events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<EventParams>,
) -> ApiResult<Response> {
    let session = session_id(&id)?;
    state.store.get_session(&session).await?;
    // The query is checked even when the header is what counts.
    if params.since.is_some_and(|s| s < 0) {
        return Err(ApiError::bad_request(
            "invalid query parameter `since`: must be 0 or more",
        ));
    }
    let since = match headers.get("last-event-id") {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .filter(|v| *v >= 0)
            .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be a sequence number"))?,
        None => params.since.unwrap_or(0),
    };
    let wants_sse = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if wants_sse {
        let headers = [
            (CONTENT_TYPE, "text/event-stream"),
            (CACHE_CONTROL, "no-cache"),
            // Tells nginx-style proxies not to buffer the stream.
            (HeaderName::from_static("x-accel-buffering"), "no"),
        ];
        let permit = state.limits.open_stream(&caller.id)?;
        let stream = live(state, session, since, permit);
        return Ok((headers, Body::from_stream(stream)).into_response());
    }
    let limit = params.limit.unwrap_or(100);
    if !(1..=BATCH).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid query parameter `limit`: must be between 1 and 500",
        ));
    }
    let events = state.store.list_events(&session, since, limit).await?;
    let next_since = (events.len() as u32 == limit)
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    Ok(Json(EventPage {
        data: events.into_iter().map(EventResponse::from).collect(),
        next_since,
    })
    .into_response())
}

/// Replays from `since`, then follows the session's live frames (see [`crate::hub`]). Ends
/// when the client goes away (which never affects runs) or the server shuts down; `permit`
/// counts the stream against its key's and the process's caps until then.
fn live(
    state: AppState,
    session: SessionId,
    since: i64,
    permit: StreamPermit,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let closing = state.events.closing();
    let stream = async_stream::stream! {
        let _open = crate::telemetry::OpenStream::open();
        let _permit = permit;
        // Subscribed before the replay reads the log, so nothing falls between the two.
        let mut live = state.events.subscribe(&session).await;
        let mut last = since;
        loop {
            // From the log: the replay, and again after a gap or a lag.
            let batch = match state.store.list_events(&session, last, BATCH).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = %e, session = %session, "reading events for SSE failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let full = batch.len() as u32 == BATCH;
            if let Some(event) = batch.last() {
                let before = std::mem::replace(&mut last, event.seq);
                yield Ok(Frame::of(&batch).after(before));
            }
            if full {
                continue;
            }
            // Live: frames come in sequence order; skip what the log already gave. The
            // heartbeat timer is re-armed only when it fires (not per frame: with many
            // streams, timer updates per frame and stream would add up).
            let mut sent = Instant::now();
            let every = state.events.heartbeat();
            let heartbeat = tokio::time::sleep(every);
            tokio::pin!(heartbeat);
            loop {
                let received = tokio::select! {
                    received = live.recv() => Some(received),
                    () = &mut heartbeat => None,
                };
                let Some(received) = received else {
                    if sent.elapsed() >= every {
                        yield Ok(Bytes::from_static(HEARTBEAT_COMMENT));
                        sent = Instant::now();
                    }
                    heartbeat.as_mut().reset(sent + every);
                    continue;
                };
                match received {
                    Ok(frame) if frame.last <= last => {}
                    Ok(frame) if frame.first <= last + 1 => {
                        let rest = frame.after(last);
                        last = frame.last;
                        sent = Instant::now();
                        yield Ok(rest);
                    }
                    // A gap, or this client fell behind the buffer: read the log.
                    Ok(_) | Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return,
                }
            }
        }
    };
    stream.take_until(closing)
}
