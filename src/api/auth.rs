//! API authentication: `POST /api/v1/auth/login` and the bearer-token extractors.

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use futures_util::TryFutureExt;
use futures_util::future::LocalBoxFuture;
use serde::Deserialize;
use serde_json::json;

use super::ApiState;
use super::error::ApiError;
use crate::domain::{Email, Role, TokenState};
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

/// The claims of a bearer token that is signed, unexpired, and of its user's current
/// token version and role: logging out and a change of role end the tokens handed out
/// before, on every replica (both are in the shared database: one primary-key read per
/// authenticated request), and a token issued while its user's role changed is refused
/// too. `None` for any token that fails.
pub async fn verify_token(state: &ApiState, token: &str) -> Result<Option<Claims>, ApiError> {
    let Ok(claims) = state.keys.verify(token.trim()) else {
        return Ok(None);
    };
    let current = state.services.store.token_state(claims.sub).await?;
    let matches = current
        == Some(TokenState {
            version: claims.ver,
            role: claims.role,
        });
    Ok(matches.then_some(claims))
}

async fn claims(req: HttpRequest) -> Result<Claims, ApiError> {
    let state = req
        .app_data::<web::Data<ApiState>>()
        .expect("ApiState is registered on the App; qed")
        .clone();
    let token = bearer_token(&req).ok_or(ApiError::Unauthorized)?;
    verify_token(&state, token)
        .await?
        .ok_or(ApiError::Unauthorized)
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        Box::pin(claims(req.clone()).map_ok(Authenticated))
    }
}

/// The claims of a signed-in user whose role `allowed` lets in, else Forbidden.
async fn claims_of(req: HttpRequest, allowed: fn(Role) -> bool) -> Result<Claims, ApiError> {
    let claims = claims(req).await?;
    if allowed(claims.role) {
        Ok(claims)
    } else {
        Err(ApiError::Forbidden)
    }
}

impl FromRequest for Operator {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        Box::pin(claims_of(req.clone(), Role::may_operate).map_ok(Operator))
    }
}

/// A signed-in admin.
pub struct Admin(pub Claims);

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        Box::pin(claims_of(req.clone(), |role| role == Role::Admin).map_ok(Admin))
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
/// Attempts are limited as the app's logins are (per account and per address, counted
/// before the password is checked), and passwords are checked a bounded number at once.
pub async fn login(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: web::Json<Login>,
) -> Result<HttpResponse, ApiError> {
    let Login { email, password } = body.into_inner();
    let email = Email::parse(&email).ok();
    let address = super::client_address(&req, state.services.settings.http.trust_forwarded_for);
    let attempt = state.logins.attempt(email.as_ref(), address).await?;
    let user = match &email {
        Some(email) => state.services.store.user_by_email(email).await?,
        None => None,
    };
    // An unknown account takes as long as a wrong password.
    let hash = user
        .as_ref()
        .map_or_else(dummy_hash, |u| u.password_hash.clone());
    let verified = state.services.hashing.verify(password, hash).await?;
    let user = user
        .filter(|_| verified)
        .ok_or(ApiError::InvalidCredentials)?;
    attempt.succeeded().await;
    let current = state
        .services
        .store
        .token_state(user.user_id)
        .await?
        .ok_or(ApiError::InvalidCredentials)?;
    let token = state
        .keys
        .issue(&user, current)
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": state.keys.ttl_secs(),
    })))
}
