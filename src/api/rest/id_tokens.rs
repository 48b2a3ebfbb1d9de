//! `/api/v1/id-tokens/{idToken}`: the tokens chargers authorize.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::ApiState;
use crate::api::auth::Operator;
use crate::api::error::ApiError;
use uuid::Uuid;

use crate::domain::{AuthorizationStatus, IdToken, IdTokenRecord, TokenType};

#[derive(Serialize)]
pub struct IdTokenView {
    id_token: IdToken,
    status: AuthorizationStatus,
    #[serde(rename = "type")]
    token_type: TokenType,
    expiry_date: Option<DateTime<Utc>>,
    group_id: Option<IdToken>,
    user_id: Option<Uuid>,
    updated_at: DateTime<Utc>,
}

impl From<IdTokenRecord> for IdTokenView {
    fn from(r: IdTokenRecord) -> Self {
        IdTokenView {
            id_token: r.id_token,
            status: r.status,
            token_type: r.token_type,
            expiry_date: r.expiry_date,
            group_id: r.group_id,
            user_id: r.user_id,
            updated_at: r.updated_at,
        }
    }
}

fn token(raw: String) -> Result<IdToken, ApiError> {
    IdToken::parse(raw).map_err(|e| ApiError::BadRequest(e.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdTokenPut {
    status: String,
    #[serde(rename = "type")]
    token_type: Option<String>,
    expiry_date: Option<DateTime<Utc>>,
    group_id: Option<String>,
    /// The driver the token belongs to, who pays for its sessions. Omitted: unchanged;
    /// `null`: nobody.
    #[serde(default, deserialize_with = "present")]
    user_id: Option<Option<Uuid>>,
}

/// Tells an explicit `null` (`Some(None)`) from an omitted field (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<Uuid>>, D::Error> {
    Option::<Uuid>::deserialize(d).map(Some)
}

/// `PUT /api/v1/id-tokens/{idToken}` with `{status, type?, expiry_date?, group_id?, user_id?}`.
pub async fn put(
    _: Operator,
    state: web::Data<ApiState>,
    path: web::Path<String>,
    body: web::Json<IdTokenPut>,
) -> Result<HttpResponse, ApiError> {
    let id_token = token(path.into_inner())?;
    let body = body.into_inner();
    let user_id = match body.user_id {
        Some(user) => user,
        None => state
            .services
            .store
            .id_token(&id_token)
            .await?
            .and_then(|current| current.user_id),
    };
    let status = AuthorizationStatus::parse(&body.status).ok_or_else(|| {
        let all: Vec<_> = AuthorizationStatus::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        ApiError::BadRequest(format!("status must be one of {}", all.join(", ")))
    })?;
    let token_type = match body.token_type.as_deref() {
        None => TokenType::Iso14443,
        Some(raw) => TokenType::parse(raw).ok_or_else(|| {
            let all: Vec<_> = TokenType::ALL.iter().map(|t| t.as_str()).collect();
            ApiError::BadRequest(format!("type must be one of {}", all.join(", ")))
        })?,
    };
    let record = IdTokenRecord {
        id_token,
        status,
        token_type,
        expiry_date: body.expiry_date,
        group_id: body
            .group_id
            .map(|g| token(g).map_err(|e| ApiError::BadRequest(format!("group_id: {e}"))))
            .transpose()?,
        user_id,
        updated_at: Utc::now(),
    };
    if let Some(user) = record.user_id
        && state.services.store.user(user).await?.is_none()
    {
        return Err(ApiError::Unprocessable(format!("user_id: no user {user}")));
    }
    let created = state.services.store.put_id_token(&record).await?;
    let view = IdTokenView::from(record);
    Ok(if created {
        HttpResponse::Created().json(view)
    } else {
        HttpResponse::Ok().json(view)
    })
}

/// `GET /api/v1/id-tokens/{idToken}`.
pub async fn get(
    _: Operator,
    state: web::Data<ApiState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id_token = token(path.into_inner())?;
    let record = state
        .services
        .store
        .id_token(&id_token)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("id token {id_token} is not registered")))?;
    Ok(HttpResponse::Ok().json(IdTokenView::from(record)))
}

/// `GET /api/v1/id-tokens`.
pub async fn list(_: Operator, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let tokens: Vec<IdTokenView> = state
        .services
        .store
        .id_tokens()
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(HttpResponse::Ok().json(tokens))
}

/// `DELETE /api/v1/id-tokens/{idToken}`: 204, or 404 when there was no such token.
pub async fn delete(
    _: Operator,
    state: web::Data<ApiState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id_token = token(path.into_inner())?;
    if state.services.store.delete_id_token(&id_token).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!(
            "id token {id_token} is not registered"
        )))
    }
}
