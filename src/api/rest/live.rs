//! `GET /api/v1/live?charger_id=&session_id=`: live updates as server-sent events, for
//! operator dashboards: charger status changes, running sessions' figures and cost, and
//! domain events, from every replica. Each update is one event named after its kind
//! (`charger_status`, `session_updated`, `event`) with the update's JSON as data; a
//! comment line every 15 s keeps proxies from closing an idle stream.

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
use crate::domain::live::LiveUpdate;

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

    /// The next frame of the stream; `None` when the hub is gone (shutdown).
    async fn next(&mut self) -> Option<String> {
        loop {
            let received = tokio::time::timeout(KEEPALIVE, self.updates.recv()).await;
            return match received {
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
    _: Operator,
    state: web::Data<ApiState>,
    query: web::Query<LiveQuery>,
) -> Result<HttpResponse, ApiError> {
    let feed = Feed {
        updates: state.services.live.subscribe(),
        query: query.into_inner(),
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
