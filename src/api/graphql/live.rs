//! Subscriptions: a session's updates (every meter value, status and cost change) and a
//! charger's status, fed by the notifier's live hub (so from whichever replica the
//! charger is on).

use std::sync::Arc;

use async_graphql::{Context, ID, Subscription};
use futures_util::Stream;
use tokio::sync::broadcast::{self, error::RecvError};

use super::charging::{charger_status_of, own_session, session_view_of};
use super::types::{ChargerStatusView, ConnectorView, SessionView};
use super::{Code, GraphqlState, error, state, store_error, viewer_id};
use crate::domain::live::LiveUpdate;
use crate::domain::{ChargerId, ConnectorId, EventType, SessionId, SessionStatus};

#[derive(Default)]
pub struct Subscription;

/// One session's subscription: what it watches, and what it sends first.
struct SessionFeed {
    /// Set once the session is billed: nothing more will change, the stream ends.
    done: bool,
    st: Arc<GraphqlState>,
    updates: broadcast::Receiver<Arc<LiveUpdate>>,
    id: SessionId,
    charger: ChargerId,
    connector: ConnectorId,
    first: Option<SessionView>,
}

impl SessionFeed {
    /// The session's view after `update`, if the update concerns it.
    async fn view_after(&self, update: &LiveUpdate) -> Option<SessionView> {
        let st = &self.st;
        match update {
            LiveUpdate::SessionUpdated {
                session,
                cost_estimate,
            } if session.session_id == self.id => {
                if session.status == SessionStatus::Completed {
                    return session_view_of(st, session.clone()).await.ok();
                }
                let connector = self.connector_status().await;
                Some(SessionView::new(session, *cost_estimate, connector, false))
            }
            // A pause or resume on its connector while it runs.
            LiveUpdate::ChargerStatus {
                charger_id,
                connector,
            } if *charger_id == self.charger && connector.connector_id == self.connector => {
                let live = st.directory.live_session(self.id).await?;
                Some(SessionView::new(
                    &live.session,
                    live.cost_estimate,
                    Some(connector.status),
                    false,
                ))
            }
            // Ended or billed: the stored session, with its invoice once there.
            LiveUpdate::Event { event }
                if matches!(
                    event.event_type,
                    EventType::SessionEnded | EventType::InvoiceGenerated
                ) && update.session_id() == Some(self.id.0) =>
            {
                let session = st.services.store.session(self.id).await.ok()??;
                session_view_of(st, session).await.ok()
            }
            _ => None,
        }
    }

    async fn connector_status(&self) -> Option<crate::domain::ConnectorStatus> {
        self.st
            .directory
            .live(Some(&self.charger))
            .await
            .into_iter()
            .flat_map(|c| c.connectors)
            .find(|c| c.connector_id == self.connector)
            .map(|c| c.status)
    }
}

/// One charger's subscription.
struct ChargerFeed {
    st: Arc<GraphqlState>,
    updates: broadcast::Receiver<Arc<LiveUpdate>>,
    id: ChargerId,
    first: Option<ChargerStatusView>,
}

#[Subscription]
impl Subscription {
    /// The driver's session as it changes: first as it is, then at every meter value,
    /// status change (suspended, ended, billed) and cost change.
    async fn session_updated(
        &self,
        ctx: &Context<'_>,
        session_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = SessionView> + use<>> {
        let session = own_session(ctx, &session_id).await?;
        let st: Arc<GraphqlState> = state(ctx).clone();
        // Subscribed before the first view is read: nothing falls between the two.
        let updates = st.services.live.subscribe();
        let first = session_view_of(&st, session.clone()).await?;
        let feed = SessionFeed {
            done: false,
            st,
            updates,
            id: session.session_id,
            charger: session.charger_id.clone(),
            connector: session.connector_id,
            first: Some(first),
        };
        Ok(futures_util::stream::unfold(feed, |mut feed| async move {
            if feed.done {
                return None;
            }
            if let Some(first) = feed.first.take() {
                feed.done = first.status == super::types::SessionStatus::Completed;
                return Some((first, feed));
            }
            loop {
                let view = match feed.updates.recv().await {
                    Ok(update) => feed.view_after(&update).await,
                    // Fell behind: what it missed is in the store.
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "a session subscriber fell behind; reloading");
                        match feed.st.services.store.session(feed.id).await {
                            Ok(Some(session)) => session_view_of(&feed.st, session).await.ok(),
                            _ => None,
                        }
                    }
                    Err(RecvError::Closed) => return None,
                };
                if let Some(view) = view {
                    feed.done = view.status == super::types::SessionStatus::Completed;
                    return Some((view, feed));
                }
            }
        }))
    }

    /// One of our chargers' status as its connectors change: first as it is.
    async fn charger_status_changed(
        &self,
        ctx: &Context<'_>,
        charger_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = ChargerStatusView> + use<>> {
        viewer_id(ctx)?;
        let id = ChargerId::parse(charger_id.as_str())
            .map_err(|e| error(Code::BadUserInput, e.to_string()))?;
        let st: Arc<GraphqlState> = state(ctx).clone();
        if st
            .services
            .store
            .charger(&id)
            .await
            .map_err(store_error)?
            .is_none()
        {
            return Err(error(Code::NotFound, format!("no charger {id}")));
        }
        let updates = st.services.live.subscribe();
        let first = charger_status_of(&st, &id).await?;
        let feed = ChargerFeed {
            st,
            updates,
            id,
            first: Some(first),
        };
        Ok(futures_util::stream::unfold(feed, |mut feed| async move {
            if let Some(first) = feed.first.take() {
                return Some((first, feed));
            }
            loop {
                match feed.updates.recv().await {
                    Ok(update) => {
                        if let LiveUpdate::ChargerStatus {
                            charger_id,
                            connector,
                        } = &*update
                            && *charger_id == feed.id
                            && let Ok(mut view) = charger_status_of(&feed.st, &feed.id).await
                        {
                            // The update is newer than what the registry may have yet.
                            let changed = ConnectorView {
                                connector_id: i32::try_from(connector.connector_id.0)
                                    .unwrap_or(i32::MAX),
                                status: connector.status.as_str().to_owned(),
                                updated_at: connector.updated_at,
                            };
                            view.connectors
                                .retain(|c| c.connector_id != changed.connector_id);
                            view.connectors.push(changed);
                            view.connectors.sort_by_key(|c| c.connector_id);
                            view.online = true;
                            return Some((view, feed));
                        }
                    }
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                }
            }
        }))
    }
}
