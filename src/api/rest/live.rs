//! `GET /api/v1/live?charger_id=&session_id=`: live updates as server-sent events, for
//! operator dashboards: charger status changes, running sessions' figures and cost, and
//! domain events, from every replica. Each update is one event named after its kind
//! (`charger_status`, `session_updated`, `event`) with the update's JSON as data; a
//! comment line after 15 s without one keeps proxies from closing an idle stream. The
//! stream lives no longer than the access token it was opened with: it ends (an `end`
//! event saying why) when the token expires, or within 15 s of its user logging out or
//! changing role, however busy it is.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use futures_util::stream;
use serde::Deserialize;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;

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
    until: Instant,
    /// When the token is next checked against its user (every [`KEEPALIVE`], however
    /// busy the stream), and when a keepalive is due (after [`KEEPALIVE`] of silence).
    next_check: Instant,
    next_keepalive: Instant,
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
            let now = Instant::now();
            if now >= self.until {
                return self.end("access token expired");
            }
            if now >= self.next_check {
                self.next_check = now + KEEPALIVE;
                if !self.still_valid().await {
                    return self.end("access token revoked");
                }
            }
            if now >= self.next_keepalive {
                self.next_keepalive = now + KEEPALIVE;
                return Some(": keepalive\n\n".to_owned());
            }
            let wake = self.until.min(self.next_check).min(self.next_keepalive);
            match tokio::time::timeout_at(wake, self.updates.recv()).await {
                Err(_) => continue,
                Ok(Ok(update)) if self.wants(&update) => {
                    self.next_keepalive = Instant::now() + KEEPALIVE;
                    let data = serde_json::to_string(&*update)
                        .expect("live updates always serialize; qed");
                    return Some(format!("event: {}\ndata: {data}\n\n", update.kind()));
                }
                Ok(Ok(_)) => continue,
                Ok(Err(RecvError::Lagged(missed))) => {
                    return Some(format!("event: lagged\ndata: {{\"missed\":{missed}}}\n\n"));
                }
                Ok(Err(RecvError::Closed)) => return None,
            }
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
        until: Instant::now() + Duration::from_secs(left),
        next_check: Instant::now() + KEEPALIVE,
        next_keepalive: Instant::now() + KEEPALIVE,
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
