//! `POST /graphql` (queries and mutations) and the GraphiQL page with its assets,
//! served from the binary. Subscriptions are in [`super::ws`].

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use super::Viewer;
use crate::api::ApiState;
use crate::api::error::ApiError;

/// The caller from the `Authorization` header; an invalid, expired or revoked token is
/// UNAUTHENTICATED where it matters (resolvers that need a viewer), not a failed request:
/// `register` and `login` work without one.
pub async fn viewer(req: &HttpRequest, state: &ApiState) -> Viewer {
    let claims = match crate::api::auth::bearer_token(req) {
        Some(token) => crate::api::auth::verify_token(state, token)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "token version not readable; treated as signed out");
                None
            }),
        None => None,
    };
    Viewer {
        claims,
        address: crate::api::client_address(req, state.services.settings.http.trust_forwarded_for),
    }
}

/// `POST /graphql` with `{query, variables?, operationName?}`.
pub async fn post(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: web::Json<async_graphql::Request>,
) -> HttpResponse {
    let request = body.into_inner().data(viewer(&req, &state).await);
    let mut response = state.graphql.execute(request).await;
    // Errors from parsing, validation and limits come without a code: they are the
    // query's fault.
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", super::Code::BadUserInput.as_str());
        }
    }
    HttpResponse::Ok().json(response)
}

/// `GET /graphiql`: an in-browser IDE for the schema, its scripts and styles from this
/// server (see `graphiql/README.md`), under a policy that allows nothing else.
pub async fn graphiql() -> HttpResponse {
    crate::api::html(include_str!("graphiql/index.html"))
}

/// The GraphiQL page's assets, by name.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "graphiql.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("graphiql/graphiql.min.js"),
    ),
    (
        "graphiql.min.css",
        "text/css; charset=utf-8",
        include_bytes!("graphiql/graphiql.min.css"),
    ),
    (
        "react.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("graphiql/react.production.min.js"),
    ),
    (
        "react-dom.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("graphiql/react-dom.production.min.js"),
    ),
    (
        "init.js",
        "text/javascript; charset=utf-8",
        include_bytes!("graphiql/init.js"),
    ),
    (
        "init.css",
        "text/css; charset=utf-8",
        include_bytes!("graphiql/init.css"),
    ),
];

/// `GET /graphiql/assets/{name}`.
pub async fn graphiql_asset(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(file, _, _)| *file == name.as_str())
        .ok_or_else(|| ApiError::NotFound("no such GraphiQL asset".into()))?;
    Ok(HttpResponse::Ok()
        .content_type(*content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=86400"))
        .body(*body))
}
