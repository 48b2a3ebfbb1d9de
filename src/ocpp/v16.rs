//! OCPP 1.6-J adapter: wire payloads (already checked against their schemas) to and
//! from the version-neutral model in [`crate::domain`].

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::RpcErrorKind;
use super::schema::Violation;
use crate::domain::{
    Availability, BootInfo, CallEffect, ChargerRequest, ChargerResponse, ConnectorId,
    ConnectorStatus, IdToken, IdTokenInfo, Measurand, MeterSample, NotificationKind, StatusReport,
    TransactionEvent, TransactionEventKind, TransactionId, TransactionIdOrigin,
};

/// Formats a time as OCPP wants it: RFC 3339, UTC, millisecond precision.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn violation(kind: RpcErrorKind, description: impl Into<String>) -> Violation {
    Violation {
        kind,
        description: description.into(),
    }
}

fn decode<T: serde::de::DeserializeOwned>(payload: Value) -> Result<T, Violation> {
    serde_json::from_value(payload)
        .map_err(|e| violation(RpcErrorKind::FormatViolation, e.to_string()))
}

fn id_token(raw: String) -> Result<IdToken, Violation> {
    IdToken::parse(raw)
        .map_err(|e| violation(RpcErrorKind::PropertyConstraintViolation, e.to_string()))
}

fn connector(raw: i64) -> Result<ConnectorId, Violation> {
    ConnectorId::parse(raw)
        .map_err(|e| violation(RpcErrorKind::PropertyConstraintViolation, e.to_string()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BootNotificationReq {
    charge_point_vendor: String,
    charge_point_model: String,
    charge_point_serial_number: Option<String>,
    charge_box_serial_number: Option<String>,
    firmware_version: Option<String>,
    iccid: Option<String>,
    imsi: Option<String>,
    meter_type: Option<String>,
    meter_serial_number: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusNotificationReq {
    connector_id: i64,
    error_code: String,
    info: Option<String>,
    status: String,
    timestamp: Option<DateTime<Utc>>,
    vendor_error_code: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdTagReq {
    id_tag: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartTransactionReq {
    connector_id: i64,
    id_tag: String,
    meter_start: i64,
    reservation_id: Option<i64>,
    timestamp: DateTime<Utc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SampledValue {
    value: String,
    context: Option<String>,
    measurand: Option<String>,
    phase: Option<String>,
    unit: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MeterValue {
    timestamp: DateTime<Utc>,
    sampled_value: Vec<SampledValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MeterValuesReq {
    connector_id: i64,
    transaction_id: Option<i64>,
    meter_value: Vec<MeterValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StopTransactionReq {
    id_tag: Option<String>,
    meter_stop: i64,
    timestamp: DateTime<Utc>,
    transaction_id: i64,
    reason: Option<String>,
    #[serde(default)]
    transaction_data: Vec<MeterValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DataTransferReq {
    vendor_id: String,
    message_id: Option<String>,
    data: Option<String>,
}

#[derive(Deserialize)]
struct StatusReq {
    status: Option<String>,
}

fn samples(values: Vec<MeterValue>) -> Vec<MeterSample> {
    values
        .into_iter()
        .flat_map(|mv| {
            let at = mv.timestamp;
            mv.sampled_value.into_iter().filter_map(move |sv| {
                // Signed meter data carries no plain number; it is not a sample we can use.
                if sv.value.is_empty() {
                    return None;
                }
                let measurand = Measurand::parse(
                    sv.measurand
                        .as_deref()
                        .unwrap_or(Measurand::ENERGY_IMPORT_REGISTER),
                );
                MeterSample::normalised(
                    at,
                    measurand,
                    &sv.value,
                    sv.unit.as_deref(),
                    sv.phase,
                    sv.context,
                )
            })
        })
        .collect()
}

/// Translates a charger→CSMS CALL whose payload passed its schema.
pub fn decode_request(action: &str, payload: Value) -> Result<ChargerRequest, Violation> {
    Ok(match action {
        "BootNotification" => {
            let r: BootNotificationReq = decode(payload)?;
            ChargerRequest::BootNotification(BootInfo {
                vendor: r.charge_point_vendor,
                model: r.charge_point_model,
                serial_number: r.charge_point_serial_number.or(r.charge_box_serial_number),
                firmware_version: r.firmware_version,
                iccid: r.iccid,
                imsi: r.imsi,
                meter_type: r.meter_type,
                meter_serial_number: r.meter_serial_number,
            })
        }
        "Heartbeat" => ChargerRequest::Heartbeat,
        "StatusNotification" => {
            let r: StatusNotificationReq = decode(payload)?;
            let status = ConnectorStatus::parse(&r.status).ok_or_else(|| {
                violation(RpcErrorKind::PropertyConstraintViolation, "unknown status")
            })?;
            ChargerRequest::StatusNotification(StatusReport {
                connector_id: connector(r.connector_id)?,
                status,
                error_code: Some(r.error_code).filter(|c| c != "NoError"),
                info: r.info,
                vendor_error_code: r.vendor_error_code,
                timestamp: r.timestamp,
            })
        }
        "Authorize" => ChargerRequest::Authorize(id_token(decode::<IdTagReq>(payload)?.id_tag)?),
        "StartTransaction" => {
            let r: StartTransactionReq = decode(payload)?;
            ChargerRequest::Transaction(TransactionEvent {
                kind: TransactionEventKind::Started,
                origin: TransactionIdOrigin::Central,
                transaction_id: None,
                connector_id: Some(connector(r.connector_id)?),
                id_token: Some(id_token(r.id_tag)?),
                timestamp: r.timestamp,
                meter_wh: Some(r.meter_start),
                samples: Vec::new(),
                stop_reason: None,
                reservation_id: r.reservation_id,
                seq_no: None,
                offline: false,
            })
        }
        "MeterValues" => {
            let r: MeterValuesReq = decode(payload)?;
            ChargerRequest::MeterValues {
                connector_id: connector(r.connector_id)?,
                transaction_id: r.transaction_id.map(|t| TransactionId(t.to_string())),
                samples: samples(r.meter_value),
            }
        }
        "StopTransaction" => {
            let r: StopTransactionReq = decode(payload)?;
            ChargerRequest::Transaction(TransactionEvent {
                kind: TransactionEventKind::Ended,
                origin: TransactionIdOrigin::Central,
                transaction_id: Some(TransactionId(r.transaction_id.to_string())),
                connector_id: None,
                id_token: r.id_tag.map(id_token).transpose()?,
                timestamp: r.timestamp,
                meter_wh: Some(r.meter_stop),
                samples: samples(r.transaction_data),
                stop_reason: r.reason,
                reservation_id: None,
                seq_no: None,
                offline: false,
            })
        }
        "DataTransfer" => {
            let r: DataTransferReq = decode(payload)?;
            ChargerRequest::DataTransfer {
                vendor_id: r.vendor_id,
                message_id: r.message_id,
                data: r.data,
            }
        }
        "SignCertificate" => ChargerRequest::SignCertificate,
        "DiagnosticsStatusNotification"
        | "FirmwareStatusNotification"
        | "SignedFirmwareStatusNotification"
        | "LogStatusNotification"
        | "SecurityEventNotification" => {
            let kind = match action {
                "DiagnosticsStatusNotification" => NotificationKind::DiagnosticsStatus,
                "FirmwareStatusNotification" => NotificationKind::FirmwareStatus,
                "SignedFirmwareStatusNotification" => NotificationKind::SignedFirmwareStatus,
                "LogStatusNotification" => NotificationKind::LogStatus,
                _ => NotificationKind::SecurityEvent,
            };
            let status = match kind {
                NotificationKind::SecurityEvent => payload
                    .get("type")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                _ => decode::<StatusReq>(payload)?.status,
            };
            ChargerRequest::Notification { kind, status }
        }
        other => {
            return Err(violation(
                RpcErrorKind::NotSupported,
                format!("{other} is not a charger request"),
            ));
        }
    })
}

fn id_tag_info(info: &IdTokenInfo) -> Value {
    let mut out = Map::new();
    out.insert("status".into(), json!(info.status.to_v16()));
    if let Some(expiry) = info.expiry_date {
        out.insert("expiryDate".into(), json!(timestamp(expiry)));
    }
    if let Some(group) = &info.group_id {
        out.insert("parentIdTag".into(), json!(group.as_str()));
    }
    Value::Object(out)
}

/// Translates the answer to a charger request into its 1.6 payload.
pub fn encode_response(action: &str, response: &ChargerResponse) -> Result<Value, Violation> {
    Ok(match response {
        ChargerResponse::BootNotification {
            status,
            current_time,
            interval_secs,
        } => json!({
            "status": status.as_str(),
            "currentTime": timestamp(*current_time),
            "interval": interval_secs,
        }),
        ChargerResponse::Heartbeat { current_time } => {
            json!({ "currentTime": timestamp(*current_time) })
        }
        ChargerResponse::Authorize(info) => json!({ "idTagInfo": id_tag_info(info) }),
        ChargerResponse::Transaction {
            transaction_id,
            id_token_info,
            ..
        } if action == "StartTransaction" => {
            let id: i64 = transaction_id.0.parse().map_err(|_| {
                violation(
                    RpcErrorKind::InternalError,
                    format!("transaction id {transaction_id} is not a 1.6 integer"),
                )
            })?;
            let info = id_token_info.clone().unwrap_or_else(|| {
                IdTokenInfo::with_status(crate::domain::AuthorizationStatus::Invalid)
            });
            json!({ "transactionId": id, "idTagInfo": id_tag_info(&info) })
        }
        ChargerResponse::Transaction { id_token_info, .. } => match id_token_info {
            Some(info) => json!({ "idTagInfo": id_tag_info(info) }),
            None => json!({}),
        },
        ChargerResponse::DataTransfer { status, data } => {
            let status = status.as_str();
            match data {
                Some(d) => json!({ "status": status, "data": d }),
                None => json!({ "status": status }),
            }
        }
        ChargerResponse::SignCertificate { accepted } => {
            json!({ "status": if *accepted { "Accepted" } else { "Rejected" } })
        }
        ChargerResponse::Ack => json!({}),
    })
}

/// What an answered CSMS→charger call changes, given its request and (schema-valid) response.
pub fn call_effect(action: &str, request: &Value, response: &Value) -> Option<CallEffect> {
    let status = response.get("status").and_then(Value::as_str);
    match (action, status) {
        ("ChangeAvailability", Some(status @ ("Accepted" | "Scheduled"))) => {
            let connector_id = ConnectorId::parse(request.get("connectorId")?.as_i64()?).ok()?;
            let availability = Availability::parse(request.get("type")?.as_str()?)?;
            Some(CallEffect::Availability {
                connector_id,
                availability,
                scheduled: status == "Scheduled",
            })
        }
        ("RemoteStartTransaction", Some("Accepted")) => {
            let id_token = IdToken::parse(request.get("idTag")?.as_str()?).ok()?;
            let connector_id = request
                .get("connectorId")
                .and_then(Value::as_i64)
                .and_then(|c| ConnectorId::parse(c).ok());
            Some(CallEffect::RemoteStartAccepted {
                id_token,
                connector_id,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AuthorizationStatus, DataTransferStatus};
    use crate::ocpp::OcppVersion;
    use crate::ocpp::schema::{PayloadKind, schemas};

    #[test]
    fn meter_values_become_normalised_samples_of_the_transaction() {
        let payload = json!({
            "connectorId": 1, "transactionId": 7,
            "meterValue": [{"timestamp": "2026-01-01T10:00:00Z", "sampledValue": [
                {"value": "1.25", "unit": "kWh"},
                {"value": "7.4", "measurand": "Power.Active.Import", "unit": "kW"},
                {"value": "230", "measurand": "Voltage", "phase": "L1", "unit": "V"}
            ]}]
        });
        let ChargerRequest::MeterValues {
            transaction_id,
            samples,
            ..
        } = decode_request("MeterValues", payload).unwrap()
        else {
            panic!("expected MeterValues")
        };
        assert_eq!(transaction_id, Some(TransactionId("7".into())));
        assert_eq!(samples.len(), 3);
        assert_eq!(
            (samples[0].measurand.clone(), samples[0].value),
            (Measurand::EnergyImportRegister, 1250.0)
        );
        assert_eq!(samples[1].value, 7400.0);
    }

    #[test]
    fn our_responses_validate_against_the_1_6_schemas() {
        let set = schemas(OcppVersion::V16);
        let info = IdTokenInfo {
            status: AuthorizationStatus::NotAtThisTime,
            expiry_date: Some(Utc::now()),
            group_id: Some(IdToken::parse("PARENT").unwrap()),
        };
        let cases = [
            ("Authorize", ChargerResponse::Authorize(info.clone())),
            (
                "StartTransaction",
                ChargerResponse::Transaction {
                    transaction_id: TransactionId("12".into()),
                    id_token_info: Some(info),
                    total_cost: None,
                },
            ),
            (
                "StopTransaction",
                ChargerResponse::Transaction {
                    transaction_id: TransactionId("12".into()),
                    id_token_info: None,
                    total_cost: None,
                },
            ),
            (
                "Heartbeat",
                ChargerResponse::Heartbeat {
                    current_time: Utc::now(),
                },
            ),
            (
                "DataTransfer",
                ChargerResponse::DataTransfer {
                    status: DataTransferStatus::UnknownVendorId,
                    data: None,
                },
            ),
            (
                "SignCertificate",
                ChargerResponse::SignCertificate { accepted: false },
            ),
        ];
        for (action, response) in cases {
            let payload = encode_response(action, &response).unwrap();
            set.check(action, PayloadKind::Response, &payload)
                .unwrap_or_else(|v| panic!("{action}: {v}"));
        }
        let Value::Object(authorize) = encode_response(
            "Authorize",
            &ChargerResponse::Authorize(IdTokenInfo::with_status(
                AuthorizationStatus::NotAtThisTime,
            )),
        )
        .unwrap() else {
            unreachable!()
        };
        assert_eq!(authorize["idTagInfo"]["status"], "Invalid");
    }
}
