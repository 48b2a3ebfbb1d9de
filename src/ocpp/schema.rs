//! Validation of payloads against the official OCPP JSON schemas, vendored under
//! `src/ocpp/schemas/` and compiled into the binary.
//!
//! The schemas decide what is valid. Each kind of schema failure maps to one
//! [`RpcErrorKind`], whose spelling then depends on the version (see [`super::error`]):
//!
//! | schema keyword                                              | kind                              |
//! |-------------------------------------------------------------|-----------------------------------|
//! | `type`                                                      | TypeConstraintViolation           |
//! | `required`, `minItems`, `maxItems`                          | OccurrenceConstraintViolation     |
//! | `enum`, `maxLength`, `minLength`, `pattern`, `format`, ranges | PropertyConstraintViolation     |
//! | `additionalProperties` and anything else structural          | FormatViolation                  |

use std::collections::HashMap;
use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{Draft, Validator};
use serde_json::Value;

use super::error::RpcErrorKind;
use super::{Direction, OcppVersion};
use crate::domain::echo::echo;

/// Whether a payload is the request of an action or its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    Request,
    Response,
}

/// One action of a version: who may send it, and its two schemas.
pub struct ActionSpec {
    pub name: &'static str,
    pub from_charger: bool,
    pub to_charger: bool,
    request: &'static str,
    response: &'static str,
}

impl ActionSpec {
    pub fn sent_by(&self, direction: Direction) -> bool {
        match direction {
            Direction::FromCharger => self.from_charger,
            Direction::ToCharger => self.to_charger,
        }
    }
}

macro_rules! actions {
    ($dir:literal, $request_suffix:literal: $( $name:literal => $from:literal, $to:literal; )*) => {
        &[ $( ActionSpec {
            name: $name,
            from_charger: $from,
            to_charger: $to,
            request: include_str!(concat!("schemas/", $dir, "/", $name, $request_suffix, ".json")),
            response: include_str!(concat!("schemas/", $dir, "/", $name, "Response.json")),
        }, )* ]
    };
}

/// OCPP 1.6-J: the 28 core messages plus the 11 of the security extension (78 schemas).
/// Columns: sent by the charger, sent by the central system.
static V16_ACTIONS: &[ActionSpec] = actions!("v1.6", "":
    "Authorize" => true, false;
    "BootNotification" => true, false;
    "DataTransfer" => true, true;
    "DiagnosticsStatusNotification" => true, false;
    "FirmwareStatusNotification" => true, false;
    "Heartbeat" => true, false;
    "MeterValues" => true, false;
    "StartTransaction" => true, false;
    "StatusNotification" => true, false;
    "StopTransaction" => true, false;
    "CancelReservation" => false, true;
    "ChangeAvailability" => false, true;
    "ChangeConfiguration" => false, true;
    "ClearCache" => false, true;
    "ClearChargingProfile" => false, true;
    "GetCompositeSchedule" => false, true;
    "GetConfiguration" => false, true;
    "GetDiagnostics" => false, true;
    "GetLocalListVersion" => false, true;
    "RemoteStartTransaction" => false, true;
    "RemoteStopTransaction" => false, true;
    "ReserveNow" => false, true;
    "Reset" => false, true;
    "SendLocalList" => false, true;
    "SetChargingProfile" => false, true;
    "TriggerMessage" => false, true;
    "UnlockConnector" => false, true;
    "UpdateFirmware" => false, true;
    "SecurityEventNotification" => true, false;
    "SignCertificate" => true, false;
    "SignedFirmwareStatusNotification" => true, false;
    "LogStatusNotification" => true, false;
    "CertificateSigned" => false, true;
    "DeleteCertificate" => false, true;
    "ExtendedTriggerMessage" => false, true;
    "GetInstalledCertificateIds" => false, true;
    "GetLog" => false, true;
    "InstallCertificate" => false, true;
    "SignedUpdateFirmware" => false, true;
);

/// OCPP 2.0.1: all 64 messages (128 schemas). Columns: sent by the charger, sent by the CSMS.
static V201_ACTIONS: &[ActionSpec] = actions!("v2.0.1", "Request":
    "Authorize" => true, false;
    "BootNotification" => true, false;
    "ClearedChargingLimit" => true, false;
    "DataTransfer" => true, true;
    "FirmwareStatusNotification" => true, false;
    "Get15118EVCertificate" => true, false;
    "GetCertificateStatus" => true, false;
    "Heartbeat" => true, false;
    "LogStatusNotification" => true, false;
    "MeterValues" => true, false;
    "NotifyChargingLimit" => true, false;
    "NotifyCustomerInformation" => true, false;
    "NotifyDisplayMessages" => true, false;
    "NotifyEVChargingNeeds" => true, false;
    "NotifyEVChargingSchedule" => true, false;
    "NotifyEvent" => true, false;
    "NotifyMonitoringReport" => true, false;
    "NotifyReport" => true, false;
    "PublishFirmwareStatusNotification" => true, false;
    "ReportChargingProfiles" => true, false;
    "ReservationStatusUpdate" => true, false;
    "SecurityEventNotification" => true, false;
    "SignCertificate" => true, false;
    "StatusNotification" => true, false;
    "TransactionEvent" => true, false;
    "CancelReservation" => false, true;
    "CertificateSigned" => false, true;
    "ChangeAvailability" => false, true;
    "ClearCache" => false, true;
    "ClearChargingProfile" => false, true;
    "ClearDisplayMessage" => false, true;
    "ClearVariableMonitoring" => false, true;
    "CostUpdated" => false, true;
    "CustomerInformation" => false, true;
    "DeleteCertificate" => false, true;
    "GetBaseReport" => false, true;
    "GetChargingProfiles" => false, true;
    "GetCompositeSchedule" => false, true;
    "GetDisplayMessages" => false, true;
    "GetInstalledCertificateIds" => false, true;
    "GetLocalListVersion" => false, true;
    "GetLog" => false, true;
    "GetMonitoringReport" => false, true;
    "GetReport" => false, true;
    "GetTransactionStatus" => false, true;
    "GetVariables" => false, true;
    "InstallCertificate" => false, true;
    "PublishFirmware" => false, true;
    "RequestStartTransaction" => false, true;
    "RequestStopTransaction" => false, true;
    "ReserveNow" => false, true;
    "Reset" => false, true;
    "SendLocalList" => false, true;
    "SetChargingProfile" => false, true;
    "SetDisplayMessage" => false, true;
    "SetMonitoringBase" => false, true;
    "SetMonitoringLevel" => false, true;
    "SetNetworkProfile" => false, true;
    "SetVariableMonitoring" => false, true;
    "SetVariables" => false, true;
    "TriggerMessage" => false, true;
    "UnlockConnector" => false, true;
    "UnpublishFirmware" => false, true;
    "UpdateFirmware" => false, true;
);

/// A payload that its schema rejects.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{description}")]
pub struct Violation {
    pub kind: RpcErrorKind,
    pub description: String,
}

/// The compiled schemas of one version.
pub struct SchemaSet {
    version: OcppVersion,
    specs: &'static [ActionSpec],
    validators: HashMap<&'static str, (Validator, Validator)>,
}

impl SchemaSet {
    fn compile(version: OcppVersion, specs: &'static [ActionSpec]) -> Self {
        let compile_one = |name: &str, text: &str| {
            let schema: Value = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("vendored schema {name} is not JSON: {e}"));
            let draft = match schema.get("$schema").and_then(Value::as_str) {
                Some(s) if s.contains("draft-04") => Draft::Draft4,
                _ => Draft::Draft6,
            };
            jsonschema::options()
                .with_draft(draft)
                .should_validate_formats(true)
                .build(&schema)
                .unwrap_or_else(|e| panic!("vendored schema {name} does not compile: {e}"))
        };
        let validators = specs
            .iter()
            .map(|spec| {
                let request = compile_one(spec.name, spec.request);
                let response = compile_one(spec.name, spec.response);
                (spec.name, (request, response))
            })
            .collect();
        SchemaSet {
            version,
            specs,
            validators,
        }
    }

    pub fn version(&self) -> OcppVersion {
        self.version
    }

    /// Every action of this version.
    pub fn actions(&self) -> &'static [ActionSpec] {
        self.specs
    }

    /// The action named `name` (case-sensitive, as on the wire).
    pub fn action(&self, name: &str) -> Option<&'static ActionSpec> {
        self.specs.iter().find(|spec| spec.name == name)
    }

    /// Checks `payload` against the schema of `action`'s request or response.
    /// The first failure found decides the error kind.
    ///
    /// # Panics
    /// Never for a name returned by [`SchemaSet::action`]; an unknown action is a caller bug.
    pub fn check(&self, action: &str, kind: PayloadKind, payload: &Value) -> Result<(), Violation> {
        let (request, response) = self
            .validators
            .get(action)
            .unwrap_or_else(|| panic!("check called for unknown action {action}"));
        let validator = match kind {
            PayloadKind::Request => request,
            PayloadKind::Response => response,
        };
        // The fast check first (no error paths built); the first error only when invalid.
        if validator.is_valid(payload) {
            return Ok(());
        }
        match validator.iter_errors(payload).next() {
            None => Ok(()),
            Some(error) => {
                let path = error.instance_path().to_string();
                let at = if path.is_empty() {
                    "payload".to_owned()
                } else {
                    format!("payload at {path}")
                };
                // The error shows the offending value, which may be a megabyte: it is
                // answered and logged cut.
                Err(Violation {
                    kind: classify(error.kind()),
                    description: echo(&format!("{at}: {error}")).into_owned(),
                })
            }
        }
    }
}

fn classify(kind: &ValidationErrorKind) -> RpcErrorKind {
    use ValidationErrorKind as K;
    match kind {
        K::Type { .. } => RpcErrorKind::TypeConstraintViolation,
        K::Required { .. } | K::MinItems { .. } | K::MaxItems { .. } => {
            RpcErrorKind::OccurrenceConstraintViolation
        }
        K::Enum { .. }
        | K::Constant { .. }
        | K::MaxLength { .. }
        | K::MinLength { .. }
        | K::Pattern { .. }
        | K::Format { .. }
        | K::Minimum { .. }
        | K::Maximum { .. }
        | K::ExclusiveMinimum { .. }
        | K::ExclusiveMaximum { .. }
        | K::MultipleOf { .. } => RpcErrorKind::PropertyConstraintViolation,
        _ => RpcErrorKind::FormatViolation,
    }
}

/// The compiled schemas of `version`, built once per process.
pub fn schemas(version: OcppVersion) -> &'static SchemaSet {
    static V16: OnceLock<SchemaSet> = OnceLock::new();
    static V201: OnceLock<SchemaSet> = OnceLock::new();
    match version {
        OcppVersion::V16 => V16.get_or_init(|| SchemaSet::compile(OcppVersion::V16, V16_ACTIONS)),
        OcppVersion::V201 => {
            V201.get_or_init(|| SchemaSet::compile(OcppVersion::V201, V201_ACTIONS))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(action: &str, payload: Value) -> Result<(), RpcErrorKind> {
        schemas(OcppVersion::V16)
            .check(action, PayloadKind::Request, &payload)
            .map_err(|v| v.kind)
    }

    #[test]
    fn all_78_and_128_schemas_compile() {
        assert_eq!(schemas(OcppVersion::V16).actions().len() * 2, 78);
        assert_eq!(schemas(OcppVersion::V201).actions().len() * 2, 128);
    }

    #[test]
    fn in_2_0_1_the_same_failures_get_2_0_1_codes() {
        let set = schemas(OcppVersion::V201);
        let bad = json!({"reason": "PowerUp", "chargingStation": {"model": "M", "vendorName": "V", "colour": "red"}});
        let v = set
            .check("BootNotification", PayloadKind::Request, &bad)
            .unwrap_err();
        assert_eq!(v.kind.code(OcppVersion::V201), "FormatViolation");
        let missing = json!({"reason": "PowerUp"});
        let v = set
            .check("BootNotification", PayloadKind::Request, &missing)
            .unwrap_err();
        assert_eq!(
            v.kind.code(OcppVersion::V201),
            "OccurrenceConstraintViolation"
        );
    }

    #[test]
    fn each_kind_of_failure_gets_its_kind() {
        let ok = json!({"connectorId": 1, "idTag": "ABC", "meterStart": 0, "timestamp": "2026-01-01T00:00:00Z"});
        assert_eq!(check("StartTransaction", ok.clone()), Ok(()));

        let mut wrong_type = ok.clone();
        wrong_type["connectorId"] = json!("one");
        assert_eq!(
            check("StartTransaction", wrong_type),
            Err(RpcErrorKind::TypeConstraintViolation)
        );

        let mut missing = ok.clone();
        missing.as_object_mut().unwrap().remove("idTag");
        assert_eq!(
            check("StartTransaction", missing),
            Err(RpcErrorKind::OccurrenceConstraintViolation)
        );

        let mut too_long = ok.clone();
        too_long["idTag"] = json!("X".repeat(21));
        assert_eq!(
            check("StartTransaction", too_long),
            Err(RpcErrorKind::PropertyConstraintViolation)
        );

        let mut bad_date = ok.clone();
        bad_date["timestamp"] = json!("yesterday");
        assert_eq!(
            check("StartTransaction", bad_date),
            Err(RpcErrorKind::PropertyConstraintViolation)
        );

        let mut extra = ok;
        extra["colour"] = json!("red");
        assert_eq!(
            check("StartTransaction", extra),
            Err(RpcErrorKind::FormatViolation)
        );

        let bad_enum = json!({"connectorId": 1, "errorCode": "Oops", "status": "Available"});
        assert_eq!(
            check("StatusNotification", bad_enum),
            Err(RpcErrorKind::PropertyConstraintViolation)
        );
    }
}
