//! OCPP-J protocol code: RPC framing, per-version error codes, schema validation and
//! per-version adapters that translate wire payloads to the internal model in
//! [`crate::domain`]. Nothing here knows about actors, sockets or databases.

pub mod error;
pub mod frame;
pub mod schema;
pub mod v16;
pub mod v201;

use std::fmt;

use crate::domain::{CallEffect, ChargerRequest, ChargerResponse};
use schema::Violation;

/// An OCPP-J protocol version, as negotiated through the WebSocket subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum OcppVersion {
    #[serde(rename = "1.6")]
    V16,
    #[serde(rename = "2.0.1")]
    V201,
}

impl OcppVersion {
    /// The WebSocket subprotocol token (OCPP-J 1.6 §3.1.2, OCPP 2.0.1 part 4 §3.1.2).
    pub fn subprotocol(self) -> &'static str {
        match self {
            OcppVersion::V16 => "ocpp1.6",
            OcppVersion::V201 => "ocpp2.0.1",
        }
    }

    pub fn from_subprotocol(token: &str) -> Option<Self> {
        match token.trim() {
            "ocpp1.6" => Some(OcppVersion::V16),
            "ocpp2.0.1" => Some(OcppVersion::V201),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OcppVersion::V16 => "1.6",
            OcppVersion::V201 => "2.0.1",
        }
    }
}

impl fmt::Display for OcppVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Versions this build has adapters for. The endpoint only negotiates these.
pub const SUPPORTED_VERSIONS: &[OcppVersion] = &[OcppVersion::V201, OcppVersion::V16];

/// Translates a charger→CSMS CALL (payload already checked against its schema) to the
/// internal model, with the adapter of `version`.
pub fn decode_request(
    version: OcppVersion,
    action: &str,
    payload: serde_json::Value,
) -> Result<ChargerRequest, Violation> {
    match version {
        OcppVersion::V16 => v16::decode_request(action, payload),
        OcppVersion::V201 => v201::decode_request(action, payload),
    }
}

/// Translates the answer to a charger's `action` into `version`'s payload.
pub fn encode_response(
    version: OcppVersion,
    action: &str,
    response: &ChargerResponse,
) -> Result<serde_json::Value, Violation> {
    match version {
        OcppVersion::V16 => v16::encode_response(action, response),
        OcppVersion::V201 => v201::encode_response(action, response),
    }
}

/// What an answered CSMS→charger call changes, given its request and (schema-valid) response.
pub fn call_effect(
    version: OcppVersion,
    action: &str,
    request: &serde_json::Value,
    response: &serde_json::Value,
) -> Option<CallEffect> {
    match version {
        OcppVersion::V16 => v16::call_effect(action, request, response),
        OcppVersion::V201 => v201::call_effect(action, request, response),
    }
}

/// Which side of the link sends an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Charge point → central system.
    FromCharger,
    /// Central system → charge point.
    ToCharger,
}

/// Picks the subprotocol from the client's offer, in server preference order
/// (`preference` first to last), among the versions this build supports.
pub fn negotiate(offered: &[&str], preference: &[OcppVersion]) -> Option<OcppVersion> {
    preference.iter().copied().find(|version| {
        SUPPORTED_VERSIONS.contains(version)
            && offered
                .iter()
                .any(|o| OcppVersion::from_subprotocol(o) == Some(*version))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_server_preference_among_supported_versions() {
        let (v16, v201) = (OcppVersion::V16, OcppVersion::V201);
        assert_eq!(
            negotiate(&["ocpp1.6", "ocpp2.0.1"], &[v201, v16]),
            Some(v201)
        );
        assert_eq!(
            negotiate(&["ocpp2.0.1", "ocpp1.6"], &[v16, v201]),
            Some(v16)
        );
        assert_eq!(negotiate(&["ocpp1.5", "ocpp1.6"], &[v201, v16]), Some(v16));
        assert_eq!(negotiate(&["ocpp1.5"], &[v201, v16]), None);
        assert_eq!(negotiate(&[], &[v201, v16]), None);
    }
}
