//! `GET /api/v1/live?charger_id=&session_id=`: live updates as server-sent events, for
//! operator dashboards: charger status changes, running sessions' figures and cost, and
//! domain events, from every replica. Each update is one event named after its kind
//! (`charger_status`, `session_updated`, `event`) with the update's JSON as data; a
//! comment line every 15 s keeps proxies from closing an idle stream. The stream lives
//! no longer than the access token it was opened with: it ends (an `end` event saying
//! why) when the token expires, or at the next keepalive after its user logged out or
//! changed role.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use futures_util::stream;
use serde::Deserialize;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::api::ApiState;
use crate::api::auth::Operator;
use crate::api::error::ApiError;
use crate::domain::TokenState;
use crate::domain::live::LiveUpdate;
use crate::security::Claims;

const KEEPALIVE: Duration = Duration::from_secs(15);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveQuery {
    charger_id: Option<String>,
    session_id: Option<i64>,
}

struct Feed {
    updates: broadcast::Receiver<Arc<LiveUpdate>>,
    query: LiveQuery,
    state: web::Data<ApiState>,
    claims: Claims,
    /// When the token expires.
    until: tokio::time::Instant,
    ended: bool,
}

impl Feed {
    fn wants(&self, update: &LiveUpdate) -> bool {
        self.query
            .charger_id
            .as_deref()
            .is_none_or(|c| update.charger_id() == Some(c))
            && self
                .query
                .session_id
                .is_none_or(|s| update.session_id() == Some(s))
    }

    /// Whether the token is still its user's (not logged out, same role).
    async fn still_valid(&self) -> bool {
        let current = self.state.services.store.token_state(self.claims.sub).await;
        matches!(current, Ok(Some(TokenState { version, role })) if version == self.claims.ver && role == self.claims.role)
    }

    fn end(&mut self, reason: &str) -> Option<String> {
        self.ended = true;
        Some(format!("event: end\ndata: {{\"reason\":\"{reason}\"}}\n\n"))
    }

    /// The next frame of the stream; `None` when it has ended or the hub is gone
    /// (shutdown).
    async fn next(&mut self) -> Option<String> {
        loop {
            if self.ended {
                return None;
            }
            let now = tokio::time::Instant::now();
            if now >= self.until {
                return self.end("access token expired");
            }
            let wait = KEEPALIVE.min(self.until - now);
            let received = tokio::time::timeout(wait, self.updates.recv()).await;
            return match received {
                Err(_) if tokio::time::Instant::now() >= self.until => {
                    self.end("access token expired")
                }
                Err(_) if !self.still_valid().await => self.end("access token revoked"),
                Err(_) => Some(": keepalive\n\n".to_owned()),
                Ok(Ok(update)) if self.wants(&update) => {
                    let data = serde_json::to_string(&*update)
                        .expect("live updates always serialize; qed");
                    Some(format!("event: {}\ndata: {data}\n\n", update.kind()))
                }
                Ok(Ok(_)) => continue,
                Ok(Err(RecvError::Lagged(missed))) => {
                    Some(format!("event: lagged\ndata: {{\"missed\":{missed}}}\n\n"))
                }
                Ok(Err(RecvError::Closed)) => None,
            };
        }
    }
}

pub async fn stream(
    Operator(claims): Operator,
    state: web::Data<ApiState>,
    query: web::Query<LiveQuery>,
) -> Result<HttpResponse, ApiError> {
    let left = (claims.exp - chrono::Utc::now().timestamp()).max(0) as u64;
    let feed = Feed {
        updates: state.services.live.subscribe(),
        query: query.into_inner(),
        state: state.clone(),
        claims,
        until: tokio::time::Instant::now() + Duration::from_secs(left),
        ended: false,
    };
    let frames = stream::unfold(feed, |mut feed| async move {
        let frame = feed.next().await?;
        Some((Ok::<_, ApiError>(Bytes::from(frame)), feed))
    });
    // The first frame tells the client the stream is open (and flushes the headers).
    let opened = stream::once(async { Ok::<_, ApiError>(Bytes::from_static(b": open\n\n")) });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(futures_util::StreamExt::chain(opened, frames)))
}
