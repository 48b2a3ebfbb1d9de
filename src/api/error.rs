//! The one place errors become HTTP. Every error body has one shape:
//! `{"error": {"code": "...", "message": "...", "details": ...}}` (`details` optional).
//! Each code has one status, in [`ApiError::status_and_code`].

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{Value, json};

use crate::actors::charger::CallFailure;
use crate::domain::echo::{ECHO_BYTES, echo};
use crate::domain::ports::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed, but refers to something that does not exist or cannot be used.
    #[error("{0}")]
    Unprocessable(String),
    /// An OCPP payload its schema rejects.
    #[error("{message}")]
    InvalidPayload {
        message: String,
        ocpp_error_code: &'static str,
    },
    #[error("authentication required")]
    Unauthorized,
    /// A charger without valid credentials: challenged for HTTP Basic (OCPP security
    /// profiles 1 and 2), not a bearer token.
    #[error("charger authentication required: HTTP Basic, user = the charge point id")]
    ChargerUnauthorized,
    #[error("security profile {0} needs TLS: connect with wss://")]
    TlsRequired(u8),
    #[error("too many failed attempts; try again later")]
    TooManyAttempts,
    /// Too much of one kind of work at once (password checks); try again shortly.
    #[error("{0}")]
    Busy(String),
    /// The request's body did not arrive within `http.body_timeout_secs`.
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("invalid e-mail or password")]
    InvalidCredentials,
    #[error("this needs the operator or admin role")]
    Forbidden,
    #[error("{0}")]
    NotFound(String),
    #[error("body larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    ChargerOffline(String),
    #[error("charger answered with {code}: {description}")]
    OcppCallError {
        code: String,
        description: String,
        details: Value,
    },
    #[error("charger's answer breaks its schema: {0}")]
    OcppInvalidResponse(String),
    #[error("charger did not answer within the call timeout")]
    OcppTimeout,
    #[error("too many calls are waiting for this charger; retry later")]
    ChargerBusy,
    #[error("storage is not reachable")]
    Unavailable,
    /// A service we depend on (the payment gateway) failed; try again later.
    #[error("{0}")]
    Upstream(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
            ApiError::InvalidPayload { .. } => (StatusCode::BAD_REQUEST, "invalid_payload"),
            ApiError::Unauthorized | ApiError::ChargerUnauthorized => {
                (StatusCode::UNAUTHORIZED, "unauthorized")
            }
            ApiError::InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::TlsRequired(_) => (StatusCode::FORBIDDEN, "tls_required"),
            ApiError::TooManyAttempts => (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
            ApiError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            ApiError::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::ChargerOffline(_) => (StatusCode::CONFLICT, "charger_offline"),
            ApiError::OcppCallError { .. } => (StatusCode::BAD_GATEWAY, "ocpp_call_error"),
            ApiError::OcppInvalidResponse(_) => (StatusCode::BAD_GATEWAY, "ocpp_invalid_response"),
            ApiError::OcppTimeout => (StatusCode::GATEWAY_TIMEOUT, "ocpp_timeout"),
            ApiError::ChargerBusy => (StatusCode::SERVICE_UNAVAILABLE, "charger_busy"),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Upstream(_) => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(e.into())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::NotFound(m) => ApiError::NotFound(m),
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<crate::security::HashingError> for ApiError {
    fn from(e: crate::security::HashingError) -> Self {
        match e {
            crate::security::HashingError::Busy => ApiError::Busy(e.to_string()),
            other => ApiError::internal(other),
        }
    }
}

impl From<super::limit::RateLimited> for ApiError {
    fn from(_: super::limit::RateLimited) -> Self {
        ApiError::TooManyAttempts
    }
}

impl From<CallFailure> for ApiError {
    fn from(e: CallFailure) -> Self {
        match e {
            CallFailure::NotConnected => {
                ApiError::ChargerOffline("charger is not connected".into())
            }
            CallFailure::Disconnected => {
                ApiError::ChargerOffline("charger disconnected before answering".into())
            }
            CallFailure::Timeout => ApiError::OcppTimeout,
            CallFailure::CallError {
                code,
                description,
                details,
            } => ApiError::OcppCallError {
                code: echo(&code).into_owned(),
                description: echo(&description).into_owned(),
                details,
            },
            CallFailure::InvalidResponse(m) => ApiError::OcppInvalidResponse(m),
            CallFailure::Busy => ApiError::ChargerBusy,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(e) = self {
            tracing::error!(error.cause_chain = ?e, error.message = %e, "request failed");
        }
        let mut error = json!({ "code": code, "message": self.to_string() });
        match self {
            ApiError::OcppCallError {
                code,
                description,
                details,
            } => {
                // The charger's details are echoed only when small (they may be a megabyte).
                let details = if details.to_string().len() <= ECHO_BYTES {
                    details.clone()
                } else {
                    json!({ "cut": "details larger than the echo limit are not shown" })
                };
                error["details"] = json!({ "ocpp_error_code": code, "ocpp_error_description": description, "ocpp_error_details": details });
            }
            ApiError::InvalidPayload {
                ocpp_error_code, ..
            } => {
                error["details"] = json!({ "ocpp_error_code": ocpp_error_code });
            }
            _ => {}
        }
        let mut response = HttpResponse::build(status);
        match self {
            ApiError::ChargerUnauthorized => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    "Basic realm=\"jucr OCPP\", charset=\"UTF-8\"",
                ));
            }
            _ if status == StatusCode::UNAUTHORIZED => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            _ => {}
        }
        response.json(json!({ "error": error }))
    }
}
