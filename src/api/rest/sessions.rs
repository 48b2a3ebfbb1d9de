//! `/api/v1/sessions`: charging sessions, live while they run.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::actors::session::LiveSession;
use crate::api::ApiState;
use crate::api::auth::Operator;
use crate::api::error::ApiError;
use crate::domain::{ChargerId, MeterSample, Session, SessionFilter, SessionId, SessionStatus};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionQuery {
    charger_id: Option<String>,
    status: Option<String>,
    /// At most this many, newest first (default 100, at most 1000).
    limit: Option<u32>,
}

/// `GET /api/v1/sessions?charger_id=&status=&limit=`.
pub async fn list(
    _: Operator,
    state: web::Data<ApiState>,
    query: web::Query<SessionQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let filter = SessionFilter {
        charger_id: query
            .charger_id
            .filter(|c| !c.is_empty())
            .map(|c| ChargerId::parse(c).map_err(|e| ApiError::BadRequest(e.to_string())))
            .transpose()?,
        status: query
            .status
            .filter(|s| !s.is_empty())
            .map(|s| {
                SessionStatus::parse(&s).ok_or_else(|| {
                    ApiError::BadRequest("status must be active or completed".into())
                })
            })
            .transpose()?,
        limit: query.limit.unwrap_or(100).clamp(1, 1000),
    };
    let stored = state.services.store.sessions(&filter).await?;
    let mut sessions = Vec::with_capacity(stored.len());
    for session in stored {
        sessions.push(live_or_stored(&state, session).await);
    }
    Ok(HttpResponse::Ok().json(sessions))
}

/// A running session as its actor has it (with its cost so far), else as stored.
async fn live_or_stored(state: &ApiState, session: Session) -> LiveSession {
    if session.status == SessionStatus::Active
        && let Some(live) = state.directory.live_session(session.session_id).await
    {
        return live;
    }
    LiveSession {
        session,
        cost_estimate: None,
    }
}

#[derive(Serialize)]
struct SessionDetail {
    #[serde(flatten)]
    session: LiveSession,
    meter_values: Vec<MeterSample>,
}

/// `GET /api/v1/sessions/{id}`: the session with its meter values.
pub async fn get(
    _: Operator,
    state: web::Data<ApiState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let raw = path.into_inner();
    let id = SessionId(
        raw.parse()
            .map_err(|_| ApiError::BadRequest(format!("session id {raw:?} is not a number")))?,
    );
    let store = &state.services.store;
    let stored = store
        .session(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("session {id} does not exist")))?;
    let session = live_or_stored(&state, stored).await;
    let meter_values = store.samples(id).await?;
    Ok(HttpResponse::Ok().json(SessionDetail {
        session,
        meter_values,
    }))
}
