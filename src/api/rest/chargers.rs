//! `/api/v1/chargers`: registration, live status and OCPP commands.

use std::collections::HashMap;

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::ApiState;
use crate::api::auth::Operator;
use crate::api::error::ApiError;
use crate::domain::{
    BootInfo, ChargerId, ChargerRecord, ChargerRegistration, ConnectorState, RegistrationStatus,
    SecurityProfile,
};
use crate::ocpp::schema::{PayloadKind, schemas};
use crate::ocpp::{Direction, OcppVersion, SUPPORTED_VERSIONS};

#[derive(Serialize)]
pub struct ChargerView {
    charger_id: ChargerId,
    description: Option<String>,
    operator_id: Option<String>,
    registration_status: RegistrationStatus,
    security_profile: u8,
    online: bool,
    ocpp_version: Option<String>,
    connected_at: Option<DateTime<Utc>>,
    last_heartbeat: Option<DateTime<Utc>>,
    last_seen_at: Option<DateTime<Utc>>,
    last_boot_at: Option<DateTime<Utc>>,
    boot: Option<BootInfo>,
    connectors: Vec<ConnectorState>,
    created_at: DateTime<Utc>,
}

impl ChargerView {
    fn new(
        record: ChargerRecord,
        live: Option<crate::actors::registry::LiveCharger>,
        stored: Vec<ConnectorState>,
    ) -> Self {
        let r = record.registration;
        ChargerView {
            charger_id: r.charger_id,
            description: r.description,
            operator_id: r.operator_id,
            registration_status: r.registration_status,
            security_profile: r.security_profile.number(),
            online: live.is_some(),
            ocpp_version: live
                .as_ref()
                .map(|l| l.ocpp_version.as_str().to_owned())
                .or(record.ocpp_version),
            connected_at: live.as_ref().map(|l| l.connected_at),
            last_heartbeat: live.as_ref().and_then(|l| l.last_heartbeat),
            last_seen_at: record.last_seen_at,
            last_boot_at: record.last_boot_at,
            boot: record.boot,
            connectors: live.map_or(stored, |l| l.connectors),
            created_at: record.created_at,
        }
    }
}

fn charger_id(raw: String) -> Result<ChargerId, ApiError> {
    ChargerId::parse(raw).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// `GET /api/v1/chargers`: every registered charger with its live state.
pub async fn list(_: Operator, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let store = &state.services.store;
    let records = store.chargers().await?;
    let mut live: HashMap<ChargerId, _> = state
        .directory
        .live(None)
        .await
        .into_iter()
        .map(|l| (l.charger_id.clone(), l))
        .collect();
    let mut stored: HashMap<ChargerId, Vec<ConnectorState>> = HashMap::new();
    for (id, connector) in store.all_connectors().await? {
        stored.entry(id).or_default().push(connector);
    }
    let views: Vec<ChargerView> = records
        .into_iter()
        .map(|record| {
            let id = &record.registration.charger_id;
            let (live, stored) = (live.remove(id), stored.remove(id).unwrap_or_default());
            ChargerView::new(record, live, stored)
        })
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

/// `GET /api/v1/chargers/{id}`.
pub async fn get(
    _: Operator,
    state: web::Data<ApiState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = charger_id(path.into_inner())?;
    Ok(HttpResponse::Ok().json(view(&state, &id).await?))
}

async fn view(state: &ApiState, id: &ChargerId) -> Result<ChargerView, ApiError> {
    let store = &state.services.store;
    let record = store
        .charger(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("charger {id} is not registered")))?;
    let live = state.directory.live(Some(id)).await.into_iter().next();
    let stored = if live.is_some() {
        Vec::new()
    } else {
        store.connectors(id).await?
    };
    Ok(ChargerView::new(record, live, stored))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargerPut {
    /// Basic-auth password (OCPP: 16 to 40 characters). Omitted: keep the current one.
    password: Option<String>,
    /// 0 (no authentication) or 1 (Basic auth). Omitted: 1 when a password is set, else 0.
    security_profile: Option<i64>,
    registration_status: Option<String>,
    description: Option<String>,
    /// The charge point operator it belongs to (operator tariffs apply to it). Omitted:
    /// unchanged; `""`: none.
    operator_id: Option<String>,
}

/// `PUT /api/v1/chargers/{id}`: registers a charger or updates its registration.
/// Omitted fields keep their current values (or defaults for a new charger).
pub async fn put(
    _: Operator,
    state: web::Data<ApiState>,
    path: web::Path<String>,
    body: web::Json<ChargerPut>,
) -> Result<HttpResponse, ApiError> {
    let id = charger_id(path.into_inner())?;
    let body = body.into_inner();
    let store = &state.services.store;
    let current = store.charger(&id).await?.map(|c| c.registration);

    if let Some(p) = &body.password
        && !(16..=40).contains(&p.chars().count())
    {
        return Err(ApiError::BadRequest(
            "password must be 16 to 40 characters (OCPP BasicAuthPassword)".into(),
        ));
    }
    let registration_status = match &body.registration_status {
        Some(raw) => RegistrationStatus::parse(raw).ok_or_else(|| {
            ApiError::BadRequest("registration_status must be Accepted, Pending or Rejected".into())
        })?,
        None => current
            .as_ref()
            .map_or(RegistrationStatus::Accepted, |c| c.registration_status),
    };
    let setting_password = body.password.is_some();
    let password_hash = match body.password {
        Some(password) => Some(state.services.charger_hashing.hash(password).await?),
        None => current.as_ref().and_then(|c| c.password_hash.clone()),
    };
    let security_profile = match (body.security_profile, &current) {
        (Some(raw), _) => SecurityProfile::parse(raw).map_err(ApiError::BadRequest)?,
        // Giving a profile-0 charger a password moves it to profile 1.
        (None, Some(c)) if !(setting_password && c.security_profile == SecurityProfile::NONE) => {
            c.security_profile
        }
        (None, _) if password_hash.is_some() => SecurityProfile::BASIC,
        // No password and no profile: an unauthenticated charger only when asked for.
        (None, _) => {
            return Err(ApiError::BadRequest(
                "give a password (security profile 1), or security_profile 0 for a charger without authentication".into(),
            ));
        }
    };
    if security_profile.requires_password() && password_hash.is_none() {
        return Err(ApiError::BadRequest(format!(
            "security profile {} needs a password",
            security_profile.number()
        )));
    }
    let registration = ChargerRegistration {
        charger_id: id.clone(),
        password_hash: if security_profile.requires_password() {
            password_hash
        } else {
            None
        },
        security_profile,
        registration_status,
        operator_id: match body.operator_id {
            None => current.as_ref().and_then(|c| c.operator_id.clone()),
            Some(o) if o.trim().is_empty() => None,
            Some(o) if o.len() > 100 => {
                return Err(ApiError::BadRequest(
                    "operator_id is at most 100 characters".into(),
                ));
            }
            Some(o) => Some(o.trim().to_owned()),
        },
        description: body
            .description
            .or_else(|| current.and_then(|c| c.description)),
    };
    let created = store.save_registration(&registration).await?;
    let view = view(&state, &id).await?;
    Ok(if created {
        HttpResponse::Created().json(view)
    } else {
        HttpResponse::Ok().json(view)
    })
}

/// `POST /api/v1/chargers/{id}/ocpp/{Action}`: sends any CSMS→charger call of the
/// charger's OCPP version and returns the charger's answer.
pub async fn call(
    _: Operator,
    state: web::Data<ApiState>,
    path: web::Path<(String, String)>,
    mut body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // Read the payload ourselves: large SendLocalList payloads are fine up to the OCPP
    // frame limit, and a larger one gets our error shape, not actix's text.
    let limit = state.services.settings.ocpp.max_frame_bytes;
    let mut bytes = web::BytesMut::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
        let chunk = chunk.map_err(|e| {
            if crate::api::deadline::timed_out(&e) {
                ApiError::RequestTimeout
            } else {
                ApiError::BadRequest(format!("reading the body: {e}"))
            }
        })?;
        if bytes.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        bytes.extend_from_slice(&chunk);
    }
    let body = bytes.freeze();
    let (raw_id, action) = path.into_inner();
    let id = charger_id(raw_id)?;
    let record = state
        .services
        .store
        .charger(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("charger {id} is not registered")))?;
    let live = state.directory.live(Some(&id)).await.into_iter().next();
    let version = live
        .as_ref()
        .map(|l| l.ocpp_version)
        .or_else(|| {
            record
                .ocpp_version
                .as_deref()
                .and_then(|v| OcppVersion::from_subprotocol(&format!("ocpp{v}")))
        })
        .unwrap_or(OcppVersion::V16);
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(ApiError::BadRequest(format!(
            "charger {id} speaks OCPP {version}, which this server does not serve yet"
        )));
    }
    let set = schemas(version);
    let spec = set
        .action(&action)
        .filter(|spec| spec.sent_by(Direction::ToCharger))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{action} is not a central-system-to-charger action of OCPP {version}"
            ))
        })?;
    let payload: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("body is not JSON: {e}")))?
    };
    set.check(spec.name, PayloadKind::Request, &payload)
        .map_err(|v| ApiError::InvalidPayload {
            message: format!(
                "{action} payload rejected by the OCPP {version} schema: {}",
                v.description
            ),
            ocpp_error_code: v.kind.code(version),
        })?;
    if live.is_none() {
        return Err(ApiError::ChargerOffline(format!(
            "charger {id} is not connected"
        )));
    }
    let answer = state.directory.call(&id, spec.name, payload).await?;
    Ok(HttpResponse::Ok().json(answer))
}

/// `GET /api/v1/chargers/{id}/variables`: the device model the charger last reported
/// completely (OCPP 2.0.1 NotifyReport, after GetBaseReport or GetReport).
pub async fn variables(
    _: Operator,
    state: web::Data<ApiState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = charger_id(path.into_inner())?;
    let store = &state.services.store;
    store
        .charger(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("charger {id} is not registered")))?;
    let (variables, reported_at) = match store.device_model(&id).await? {
        Some((variables, at)) => (variables, Some(at)),
        None => (Vec::new(), None),
    };
    Ok(HttpResponse::Ok().json(
        serde_json::json!({ "charger_id": id, "reported_at": reported_at, "variables": variables }),
    ))
}
