//! API authentication: `POST /api/v1/auth/login` and the bearer-token extractors.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::ApiState;
use super::error::ApiError;
use crate::domain::Email;
use crate::security::{self, Claims};

/// Any signed-in user.
pub struct Authenticated(pub Claims);

/// A signed-in operator or admin.
pub struct Operator(pub Claims);

/// The token of an `Authorization: Bearer …` header, if there is one.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
}

fn claims(req: &HttpRequest) -> Result<Claims, ApiError> {
    let state = req
        .app_data::<web::Data<ApiState>>()
        .expect("ApiState is registered on the App; qed");
    let token = bearer_token(req).ok_or(ApiError::Unauthorized)?;
    state
        .keys
        .verify(token.trim())
        .map_err(|_| ApiError::Unauthorized)
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(claims(req).map(Authenticated))
    }
}

impl FromRequest for Operator {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(claims(req).and_then(|c| {
            if c.role.may_operate() {
                Ok(Operator(c))
            } else {
                Err(ApiError::Forbidden)
            }
        }))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    email: String,
    password: String,
}

/// An argon2 hash of a random string, verified against when the e-mail is unknown so
/// that a wrong address takes as long as a wrong password.
pub(crate) fn dummy_hash() -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| security::hash_password(&security::random_secret(24)))
        .clone()
}

/// `POST /api/v1/auth/login` with `{email, password}` → `{access_token, token_type, expires_in}`.
pub async fn login(
    state: web::Data<ApiState>,
    body: web::Json<Login>,
) -> Result<HttpResponse, ApiError> {
    let Login { email, password } = body.into_inner();
    let user = match Email::parse(&email) {
        Ok(email) => state.services.store.user_by_email(&email).await?,
        Err(_) => None,
    };
    let known_hash = user.as_ref().map(|u| u.password_hash.clone());
    let verified = web::block(move || {
        security::verify_password(&password, &known_hash.unwrap_or_else(dummy_hash))
    })
    .await
    .map_err(ApiError::internal)?;
    let user = user
        .filter(|_| verified)
        .ok_or(ApiError::InvalidCredentials)?;
    let token = state
        .keys
        .issue(user.user_id, user.email.as_str(), user.role)
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": state.keys.ttl_secs(),
    })))
}
