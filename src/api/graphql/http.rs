//! The HTTP side of GraphQL: `POST /graphql` and the GraphiQL page.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use super::Viewer;
use crate::api::ApiState;

/// The caller from the `Authorization` header; an invalid or expired token is
/// UNAUTHENTICATED where it matters (resolvers that need a viewer), not a failed request:
/// `register` and `login` work without one.
pub fn viewer(req: &HttpRequest, state: &ApiState) -> Viewer {
    let claims = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .and_then(|token| state.keys.verify(token.trim()).ok());
    Viewer {
        claims,
        address: req.peer_addr().map(|a| a.ip()),
    }
}

/// `POST /graphql` with `{query, variables?, operationName?}`.
pub async fn post(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: web::Json<async_graphql::Request>,
) -> HttpResponse {
    let request = body.into_inner().data(viewer(&req, &state));
    let response = state.graphql.execute(request).await;
    HttpResponse::Ok().json(response)
}

/// `GET /graphiql`: an in-browser IDE for the schema.
pub async fn graphiql() -> HttpResponse {
    let page = async_graphql::http::GraphiQLSource::build()
        .endpoint("/graphql")
        .subscription_endpoint("/graphql")
        .finish();
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(page)
}
