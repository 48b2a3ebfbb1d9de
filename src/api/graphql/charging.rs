//! Charging: the driver's sessions and invoices, live chargers, starting and stopping
//! from the phone.

use async_graphql::connection::{Connection, EmptyFields};
use async_graphql::{Context, ID, Object};
use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use super::types::{
    BilledSessions, ChargerStatusView, ConnectorView, InvoiceView, SessionStatus, SessionView,
};
use super::{
    Code, GraphqlState, error, offset_connection, page_size, state, store_error, viewer_id,
};
use crate::actors::charger::CallFailure;
use crate::domain::echo::echo;
use crate::domain::ports::InvoiceFilter;
use crate::domain::{
    AuthorizationStatus, ChargerId, ConnectorId, ConnectorStatus, IdToken, IdTokenRecord, Session,
    SessionId, SessionStatus as StoredStatus, TokenType,
};
use crate::ocpp::OcppVersion;
use async_graphql::dataloader::DataLoader;

#[derive(Default)]
pub struct ChargingQuery;

/// A session as the app sees it: live figures for a running one, billing state for an
/// ended one.
pub async fn session_view(
    ctx: &Context<'_>,
    session: Session,
) -> async_graphql::Result<SessionView> {
    let (session, cost, connector) = live_parts(state(ctx), session).await;
    // Batched across a page of sessions (no query per session).
    let billed = session.status == StoredStatus::Completed
        && ctx
            .data_unchecked::<DataLoader<BilledSessions>>()
            .load_one(session.session_id.0)
            .await?
            .unwrap_or(false);
    Ok(SessionView::new(&session, cost, connector, billed))
}

/// As [`session_view`], outside a request (subscriptions).
pub async fn session_view_of(
    st: &GraphqlState,
    session: Session,
) -> async_graphql::Result<SessionView> {
    let (session, cost, connector) = live_parts(st, session).await;
    let billed = session.status == StoredStatus::Completed
        && !st
            .services
            .store
            .billed_sessions(&[session.session_id])
            .await
            .map_err(store_error)?
            .is_empty();
    Ok(SessionView::new(&session, cost, connector, billed))
}

/// A running session's live figures, cost and connector status (in memory, no query).
async fn live_parts(
    st: &GraphqlState,
    session: Session,
) -> (
    Session,
    Option<crate::domain::money::Money>,
    Option<ConnectorStatus>,
) {
    match session.status {
        StoredStatus::Active => {
            let live = st.directory.live_session(session.session_id).await;
            let connector = st
                .directory
                .live(Some(&session.charger_id))
                .await
                .into_iter()
                .flat_map(|c| c.connectors)
                .find(|c| c.connector_id == session.connector_id)
                .map(|c| c.status);
            match live {
                Some(live) => (live.session, live.cost_estimate, connector),
                None => (session, None, connector),
            }
        }
        StoredStatus::Completed => (session, None, None),
    }
}

/// The session if the viewer's tokens charged it; FORBIDDEN otherwise.
pub async fn own_session(ctx: &Context<'_>, id: &ID) -> async_graphql::Result<Session> {
    let viewer = viewer_id(ctx)?;
    let id: i64 = id.parse().map_err(|_| {
        error(
            Code::BadUserInput,
            format!("{:?} is not a session id", echo(id.as_str())),
        )
    })?;
    let store = &state(ctx).services.store;
    let session = store
        .session(SessionId(id))
        .await
        .map_err(store_error)?
        .ok_or_else(|| error(Code::NotFound, format!("no session {id}")))?;
    let owner = store
        .session_owner(session.session_id)
        .await
        .map_err(store_error)?;
    // Someone else's session is told apart from a missing one by nothing: ids are
    // sequential, and FORBIDDEN would confirm which ones exist.
    if owner != Some(viewer) {
        return Err(error(Code::NotFound, format!("no session {id}")));
    }
    Ok(session)
}

#[Object]
impl ChargingQuery {
    /// The driver's sessions, newest first.
    async fn my_sessions(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<usize, SessionView, EmptyFields, EmptyFields>> {
        let viewer = viewer_id(ctx)?;
        let store = &state(ctx).services.store;
        offset_connection(
            after,
            page_size(first)?,
            |offset, limit| async move {
                store
                    .user_sessions(viewer, offset, limit)
                    .await
                    .map_err(store_error)
            },
            |session| session_view(ctx, session),
        )
        .await
    }

    /// The driver's invoices, newest first.
    async fn my_invoices(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<usize, InvoiceView, EmptyFields, EmptyFields>> {
        let viewer = viewer_id(ctx)?;
        let store = &state(ctx).services.store;
        offset_connection(
            after,
            page_size(first)?,
            |offset, limit| async move {
                store
                    .invoices(&InvoiceFilter {
                        user_id: Some(viewer),
                        session_id: None,
                        offset,
                        limit,
                    })
                    .await
                    .map_err(store_error)
            },
            |invoice| async move { Ok(InvoiceView::from(invoice)) },
        )
        .await
    }

    /// One of the driver's sessions (FORBIDDEN for anybody else's).
    async fn session(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<SessionView> {
        let session = own_session(ctx, &id).await?;
        session_view(ctx, session).await
    }

    /// The live status of one of our chargers.
    async fn charger(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ChargerStatusView> {
        viewer_id(ctx)?;
        charger_status(ctx, &id).await
    }
}

pub async fn charger_status(
    ctx: &Context<'_>,
    id: &str,
) -> async_graphql::Result<ChargerStatusView> {
    let charger_id = ChargerId::parse(id).map_err(|e| error(Code::BadUserInput, e.to_string()))?;
    charger_status_of(state(ctx), &charger_id).await
}

/// As [`charger_status`], outside a request (subscriptions).
pub async fn charger_status_of(
    st: &GraphqlState,
    charger_id: &ChargerId,
) -> async_graphql::Result<ChargerStatusView> {
    let charger_id = charger_id.clone();
    let Some(record) = st
        .services
        .store
        .charger(&charger_id)
        .await
        .map_err(store_error)?
    else {
        return Err(error(Code::NotFound, format!("no charger {charger_id}")));
    };
    let live = st
        .directory
        .live(Some(&charger_id))
        .await
        .into_iter()
        .next();
    let connectors = match &live {
        Some(live) => live.connectors.clone(),
        None => st
            .services
            .store
            .connectors(&charger_id)
            .await
            .map_err(store_error)?,
    };
    Ok(ChargerStatusView {
        charger_id: ID(record.registration.charger_id.to_string()),
        online: live.is_some(),
        connectors: connectors
            .into_iter()
            .map(|c| ConnectorView {
                connector_id: i32::try_from(c.connector_id.0).unwrap_or(i32::MAX),
                status: c.status.as_str().to_owned(),
                updated_at: c.updated_at,
            })
            .collect(),
    })
}

#[derive(Default)]
pub struct ChargingMutation;

/// The driver's app token (made on first use): what remote starts authorize with.
async fn app_token(ctx: &Context<'_>, user: Uuid) -> async_graphql::Result<IdToken> {
    let store = &state(ctx).services.store;
    let tokens = store.user_id_tokens(user).await.map_err(store_error)?;
    if let Some(app) = tokens.iter().find(|t| t.token_type == TokenType::Central) {
        // A blocked app token is not replaced by a fresh one: the block stands.
        return if app.status == AuthorizationStatus::Accepted {
            Ok(app.id_token.clone())
        } else {
            Err(error(
                Code::Forbidden,
                format!("your app token is {}", app.status.as_str()),
            ))
        };
    }
    // 20 characters: the longest id tag OCPP 1.6 chargers accept.
    let token = IdToken::parse(format!("APP{}", &Uuid::new_v4().simple().to_string()[..17]))
        .map_err(super::internal)?;
    let record = IdTokenRecord {
        id_token: token.clone(),
        status: AuthorizationStatus::Accepted,
        token_type: TokenType::Central,
        expiry_date: None,
        group_id: None,
        user_id: Some(user),
        updated_at: Utc::now(),
    };
    if !store.insert_id_token(&record).await.map_err(store_error)? {
        return Err(super::internal(
            "a fresh app token collided with an existing one",
        ));
    }
    Ok(token)
}

fn call_error(e: CallFailure) -> async_graphql::Error {
    match e {
        CallFailure::NotConnected | CallFailure::Disconnected => {
            error(Code::ChargerOffline, "the charger is not connected")
        }
        CallFailure::Timeout => error(Code::ChargerOffline, "the charger did not answer in time"),
        CallFailure::Busy => error(Code::ChargerOffline, "the charger is busy; try again"),
        CallFailure::CallError {
            code, description, ..
        } => error(
            Code::ChargerRejected,
            format!(
                "the charger refused: {} {}",
                echo(&code),
                echo(&description)
            ),
        ),
        CallFailure::InvalidResponse(_) => error(
            Code::ChargerRejected,
            "the charger answered with something invalid",
        ),
    }
}

#[Object]
impl ChargingMutation {
    /// Starts charging at a connector of one of our chargers, with the driver's app token
    /// (RemoteStartTransaction / RequestStartTransaction). Answers STARTING once the
    /// charger accepts; the session then appears in `mySessions` when the charger starts
    /// the transaction.
    async fn start_charging(
        &self,
        ctx: &Context<'_>,
        charger_id: ID,
        connector_id: i32,
    ) -> async_graphql::Result<SessionView> {
        let user = viewer_id(ctx)?;
        let st = state(ctx);
        let charger = ChargerId::parse(charger_id.as_str())
            .map_err(|e| error(Code::BadUserInput, e.to_string()))?;
        let connector = u32::try_from(connector_id)
            .ok()
            .and_then(|c| ConnectorId::parse(i64::from(c)).ok())
            .filter(|c| c.0 > 0)
            .ok_or_else(|| error(Code::BadUserInput, "connectorId must be 1 or more"))?;
        let Some(live) = st.directory.live(Some(&charger)).await.into_iter().next() else {
            return Err(
                if st
                    .services
                    .store
                    .charger(&charger)
                    .await
                    .map_err(store_error)?
                    .is_some()
                {
                    error(Code::ChargerOffline, "the charger is not connected")
                } else {
                    error(Code::NotFound, format!("no charger {charger}"))
                },
            );
        };
        let state_of = live.connectors.iter().find(|c| c.connector_id == connector);
        if let Some(c) = state_of
            && !matches!(
                c.status,
                ConnectorStatus::Available | ConnectorStatus::Preparing
            )
        {
            return Err(error(
                Code::ConnectorBusy,
                format!("connector {} is {}", connector.0, c.status.as_str()),
            ));
        }
        let token = app_token(ctx, user).await?;
        let (action, payload) = match live.ocpp_version {
            OcppVersion::V16 => (
                "RemoteStartTransaction",
                json!({"connectorId": connector.0, "idTag": token.as_str()}),
            ),
            OcppVersion::V201 => (
                "RequestStartTransaction",
                json!({
                    "evseId": connector.0,
                    "remoteStartId": rand::random::<u32>() >> 1,
                    "idToken": {"idToken": token.as_str(), "type": "Central"}
                }),
            ),
        };
        let answer = st
            .directory
            .call(&charger, action, payload)
            .await
            .map_err(call_error)?;
        if answer["status"] != "Accepted" {
            return Err(error(
                Code::ChargerRejected,
                format!("the charger answered {}", answer["status"]),
            ));
        }
        Ok(SessionView {
            id: ID(format!("starting-{}", Uuid::new_v4().simple())),
            status: SessionStatus::Starting,
            charger_id: ID(charger.to_string()),
            connector_id,
            started_at: None,
            ended_at: None,
            energy_wh: 0,
            power_w: None,
            soc_percent: None,
            cost_estimate: None,
            session_id: 0,
        })
    }

    /// Asks the charger to stop one of the driver's running sessions
    /// (RemoteStopTransaction / RequestStopTransaction).
    async fn stop_charging(
        &self,
        ctx: &Context<'_>,
        session_id: ID,
    ) -> async_graphql::Result<SessionView> {
        let session = own_session(ctx, &session_id).await?;
        if session.status != StoredStatus::Active {
            return Err(error(Code::BadUserInput, "this session has ended"));
        }
        let st = state(ctx);
        let version = st
            .directory
            .live(Some(&session.charger_id))
            .await
            .into_iter()
            .next()
            .map(|c| c.ocpp_version)
            .ok_or_else(|| error(Code::ChargerOffline, "the charger is not connected"))?;
        let (action, payload) = match version {
            OcppVersion::V16 => {
                let tx: i64 = session.transaction_id.0.parse().map_err(super::internal)?;
                ("RemoteStopTransaction", json!({"transactionId": tx}))
            }
            OcppVersion::V201 => (
                "RequestStopTransaction",
                json!({"transactionId": session.transaction_id.0}),
            ),
        };
        let answer = st
            .directory
            .call(&session.charger_id, action, payload)
            .await
            .map_err(call_error)?;
        if answer["status"] != "Accepted" {
            return Err(error(
                Code::ChargerRejected,
                format!("the charger answered {}", answer["status"]),
            ));
        }
        session_view(ctx, session).await
    }
}
