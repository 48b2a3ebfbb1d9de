//! `/api/v1/users`: accounts as operators manage them, and their payment methods
//! (gateway tokens: card numbers never reach this API).

use actix_web::{HttpResponse, web};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::ApiState;
use crate::api::auth::{Admin, Operator};
use crate::api::error::ApiError;
use crate::domain::billing::GatewayError;
use crate::domain::ports::StoreError;
use crate::domain::{Email, Role, User};
use crate::payment::{AddCardError, add_card};
use crate::security;

#[derive(Serialize)]
pub struct UserView {
    user_id: Uuid,
    email: String,
    role: Role,
    created_at: chrono::DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            user_id: u.user_id,
            email: u.email.as_str().to_owned(),
            role: u.role,
            created_at: u.created_at,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPost {
    email: String,
    password: String,
    /// `driver` (default), `operator` or `admin`; only admins create operators and admins.
    role: Option<String>,
}

/// `POST /api/v1/users` with `{email, password, role?}`.
pub async fn create(
    Operator(me): Operator,
    state: web::Data<ApiState>,
    body: web::Json<UserPost>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let email = Email::parse(&body.email).map_err(ApiError::BadRequest)?;
    let role = match body.role.as_deref() {
        None => Role::Driver,
        Some(raw) => Role::parse(raw)
            .ok_or_else(|| ApiError::BadRequest("role must be driver, operator or admin".into()))?,
    };
    // Operators create drivers; only admins create staff.
    if role != Role::Driver && me.role != Role::Admin {
        return Err(ApiError::Forbidden);
    }
    let user = security::new_user(&state.services.hashing, email, body.password, role)
        .await
        .map_err(|e| match e {
            security::NewUserError::Hashing(e) => e.into(),
            other => ApiError::BadRequest(other.to_string()),
        })?;
    state
        .services
        .store
        .create_user(&user)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => {
                ApiError::Conflict("that e-mail address is registered".into())
            }
            other => other.into(),
        })?;
    Ok(HttpResponse::Created().json(UserView::from(user)))
}

async fn user(state: &ApiState, id: Uuid) -> Result<User, ApiError> {
    state
        .services
        .store
        .user(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user {id}")))
}

/// `GET /api/v1/users/{id}`.
pub async fn get(
    _: Operator,
    state: web::Data<ApiState>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(UserView::from(user(&state, path.into_inner()).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolePut {
    role: String,
}

/// `PUT /api/v1/users/{id}/role` with `{role}` (admins only): the access tokens the user
/// holds end at once (they sign in again, with their new role).
pub async fn put_role(
    Admin(me): Admin,
    state: web::Data<ApiState>,
    path: web::Path<Uuid>,
    body: web::Json<RolePut>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let role = Role::parse(&body.role)
        .ok_or_else(|| ApiError::BadRequest("role must be driver, operator or admin".into()))?;
    if id == me.sub && role != Role::Admin {
        // The last admin could otherwise lock everybody out of the admin endpoints.
        return Err(ApiError::Conflict(
            "admins cannot demote themselves; ask another admin".into(),
        ));
    }
    let user = state
        .services
        .store
        .set_role(id, role)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user {id}")))?;
    tracing::info!(user_id = %id, role = %role, by = %me.sub, "role changed; the user's access tokens end");
    Ok(HttpResponse::Ok().json(UserView::from(user)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentMethodPost {
    /// The token the gateway gave the app for the card.
    gateway_token: String,
}

/// `POST /api/v1/users/{id}/payment-methods` with `{gateway_token}`: the gateway says
/// what card it is; the newest method is the one charged.
pub async fn add_payment_method(
    _: Operator,
    state: web::Data<ApiState>,
    path: web::Path<Uuid>,
    body: web::Json<PaymentMethodPost>,
) -> Result<HttpResponse, ApiError> {
    let user = user(&state, path.into_inner()).await?;
    let services = &state.services;
    let method = add_card(
        &*services.gateway,
        &*services.store,
        user.user_id,
        body.into_inner().gateway_token,
    )
    .await
    .map_err(|e| match e {
        AddCardError::Gateway(GatewayError::Unavailable(m)) => ApiError::Upstream(format!(
            "the payment gateway is unavailable ({m}); try again"
        )),
        AddCardError::Gateway(other) => ApiError::Unprocessable(format!("gateway_token: {other}")),
        AddCardError::Store(e) => e.into(),
    })?;
    Ok(HttpResponse::Created().json(method))
}

/// `GET /api/v1/users/{id}/payment-methods`: newest first.
pub async fn payment_methods(
    _: Operator,
    state: web::Data<ApiState>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let user = user(&state, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(state.services.store.payment_methods(user.user_id).await?))
}
