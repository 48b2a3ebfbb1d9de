//! The driver app's GraphQL API: `POST /graphql` (queries, mutations), WebSocket
//! `/graphql` (subscriptions, `graphql-transport-ws` and the legacy `graphql-ws`),
//! GraphiQL at `/graphiql`. The SDL is committed as `schema.graphql` (`jucr schema`).
//!
//! Resolvers stay thin: they ask the store, the charger directory and the live hub.
//! Errors carry `extensions.code` (see [`Code`]). A driver only ever sees their own
//! sessions, invoices, cards, tokens and vehicles.

mod account;
mod charging;
mod http;
pub mod limits;
mod live;
mod stations;
mod types;
mod ws;

use std::net::IpAddr;
use std::sync::Arc;

use std::future::Future;

use async_graphql::connection::{Connection, Edge, EmptyFields, query};
use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, ErrorExtensions, MergedObject, OutputType, Schema};
use uuid::Uuid;

use crate::actors::Services;
use crate::actors::registry::ChargerDirectory;
use crate::api::limit::{LoginLimits, SignupLimit};
use crate::domain::ports::StoreError;
use crate::security::{Claims, TokenKeys};

pub use http::{graphiql, graphiql_asset, post};
pub use ws::subscriptions;

#[derive(MergedObject, Default)]
pub struct Query(
    account::AccountQuery,
    charging::ChargingQuery,
    stations::StationQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(account::AccountMutation, charging::ChargingMutation);

pub type JucrSchema = Schema<Query, Mutation, live::Subscription>;

/// Deepest query accepted, and the most expensive (fields count 1, lists their page size).
const MAX_DEPTH: usize = 10;
const MAX_COMPLEXITY: usize = 1000;

/// What resolvers share.
pub struct GraphqlState {
    pub services: Arc<Services>,
    pub directory: Arc<dyn ChargerDirectory>,
    pub keys: TokenKeys,
    /// Login attempts per account and per address (shared by the replicas in the
    /// cloud), the operator API's and the app's alike.
    pub logins: Arc<LoginLimits>,
    /// Sign-ups per address.
    pub signups: SignupLimit,
}

pub fn schema(state: GraphqlState) -> JucrSchema {
    let introspection = state.services.settings.graphql.introspection;
    let state = Arc::new(state);
    let builder = Schema::build(Query::default(), Mutation::default(), live::Subscription);
    let builder = if introspection {
        builder
    } else {
        builder.disable_introspection()
    };
    builder
        .data(DataLoader::new(
            types::InvoiceBySession(state.clone()),
            tokio::spawn,
        ))
        .data(DataLoader::new(
            types::BilledSessions(state.clone()),
            tokio::spawn,
        ))
        .data(state)
        .extension(limits::DocumentLimits)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

/// The SDL of the schema (what `jucr schema` prints and `schema.graphql` holds).
pub fn sdl() -> String {
    Schema::build(Query::default(), Mutation::default(), live::Subscription)
        .finish()
        .sdl()
}

/// Who is asking, from the `Authorization` header (HTTP) or `connection_init` (WebSocket).
#[derive(Clone, Default)]
pub struct Viewer {
    pub claims: Option<Claims>,
    pub address: Option<IpAddr>,
}

/// `extensions.code` of every error, stable for the app to branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unauthenticated,
    Forbidden,
    NotFound,
    BadUserInput,
    Conflict,
    ChargerOffline,
    ChargerRejected,
    ConnectorBusy,
    RateLimited,
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::Forbidden => "FORBIDDEN",
            Code::NotFound => "NOT_FOUND",
            Code::BadUserInput => "BAD_USER_INPUT",
            Code::Conflict => "CONFLICT",
            Code::ChargerOffline => "CHARGER_OFFLINE",
            Code::ChargerRejected => "CHARGER_REJECTED",
            Code::ConnectorBusy => "CONNECTOR_BUSY",
            Code::RateLimited => "RATE_LIMITED",
            Code::Internal => "INTERNAL",
        }
    }
}

/// An error with its code.
pub fn error(code: Code, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message.into()).extend_with(|_, e| e.set("code", code.as_str()))
}

/// Storage failures: conflicts and missing things are the caller's; the rest is logged
/// and told as INTERNAL without detail.
pub fn store_error(e: StoreError) -> async_graphql::Error {
    match e {
        StoreError::Conflict(m) => error(Code::Conflict, m),
        StoreError::NotFound(m) => error(Code::NotFound, m),
        other => {
            tracing::error!(error.cause_chain = ?other, error.message = %other, "graphql request failed");
            error(Code::Internal, "internal error")
        }
    }
}

pub fn internal(e: impl std::fmt::Display) -> async_graphql::Error {
    tracing::error!(error.message = %e, "graphql request failed");
    error(Code::Internal, "internal error")
}

pub fn state<'a>(ctx: &Context<'a>) -> &'a Arc<GraphqlState> {
    ctx.data_unchecked::<Arc<GraphqlState>>()
}

/// Where a page after cursor `after` starts; a cursor no page could have made is
/// BAD_USER_INPUT (not an overflow).
pub fn offset_after(after: Option<usize>) -> async_graphql::Result<u32> {
    match after {
        None => Ok(0),
        Some(a) => a
            .checked_add(1)
            .and_then(|o| u32::try_from(o).ok())
            .ok_or_else(|| error(Code::BadUserInput, "after: not a cursor of this list")),
    }
}

/// The largest page any list gives.
pub const MAX_PAGE: usize = 100;

/// A list's page size from `first`: 20 when not given, at most [`MAX_PAGE`].
pub fn page_size(first: Option<i32>) -> async_graphql::Result<usize> {
    match first {
        None => Ok(20),
        Some(n) if n >= 0 && n as usize <= MAX_PAGE => Ok(n as usize),
        Some(_) => Err(error(
            Code::BadUserInput,
            format!("first must be 0 to {MAX_PAGE}"),
        )),
    }
}

/// A Relay connection over an offset-paged list (cursors are positions): `fetch(offset,
/// limit + 1)` reads one item more than the page, to know whether another page follows;
/// `node` turns each item of the page into what the list shows.
pub async fn offset_connection<T, N, F, Fut, V, VFut>(
    after: Option<String>,
    limit: usize,
    fetch: F,
    mut node: V,
) -> async_graphql::Result<Connection<usize, N, EmptyFields, EmptyFields>>
where
    N: OutputType,
    F: FnOnce(u32, u32) -> Fut,
    Fut: Future<Output = async_graphql::Result<Vec<T>>>,
    V: FnMut(T) -> VFut,
    VFut: Future<Output = async_graphql::Result<N>>,
{
    query(
        after,
        None,
        Some(limit as i32),
        None,
        |after: Option<usize>, _, _, _| async move {
            let offset = offset_after(after)?;
            let items = fetch(offset, limit as u32 + 1).await?;
            let mut connection = Connection::new(offset > 0, items.len() > limit);
            for (i, item) in items.into_iter().take(limit).enumerate() {
                connection
                    .edges
                    .push(Edge::new(offset as usize + i, node(item).await?));
            }
            Ok::<_, async_graphql::Error>(connection)
        },
    )
    .await
}

/// The signed-in user's id, or UNAUTHENTICATED.
pub fn viewer_id(ctx: &Context<'_>) -> async_graphql::Result<Uuid> {
    ctx.data_opt::<Viewer>()
        .and_then(|v| v.claims.as_ref())
        .map(|c| c.sub)
        .ok_or_else(|| {
            error(
                Code::Unauthenticated,
                "sign in first: Authorization: Bearer <access token>",
            )
        })
}
