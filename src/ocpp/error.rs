//! RPC error kinds and their per-version CALLERROR codes.
//!
//! The two code tables differ: OCPP-J 1.6 §4.2.3 (with its historical spellings
//! `FormationViolation` and `OccurenceConstraintViolation`) and OCPP 2.0.1 part 4 §4.3.
//! The server reasons in [`RpcErrorKind`]; only [`RpcErrorKind::code`] knows the spelling.

use super::OcppVersion;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcErrorKind {
    /// The action is not known by the receiver.
    NotImplemented,
    /// The action is recognised but not supported by the receiver (e.g. sent in the wrong direction).
    NotSupported,
    /// An internal error prevented the receiver from processing the action.
    InternalError,
    /// The payload is incomplete.
    ProtocolError,
    /// A security issue prevented processing (e.g. charger not accepted).
    SecurityError,
    /// The payload is syntactically incorrect or does not conform to the PDU structure
    /// (1.6 `FormationViolation`, 2.0.1 `FormatViolation`).
    FormatViolation,
    /// A field holds an invalid value (enum, length, pattern, format, range).
    PropertyConstraintViolation,
    /// A field violates occurrence constraints (a required field is missing).
    OccurrenceConstraintViolation,
    /// A field violates data type constraints.
    TypeConstraintViolation,
    /// Any other error.
    GenericError,
    /// The frame is not a valid RPC frame, e.g. its message id cannot be read
    /// (2.0.1 `RpcFrameworkError`; 1.6 has no such code and uses `ProtocolError`).
    RpcFrameworkError,
    /// The message type number is unknown (2.0.1 `MessageTypeNotSupported`; 1.6 `ProtocolError`).
    MessageTypeNotSupported,
    /// The text is not JSON (1.6 `FormationViolation`; 2.0.1 `RpcFrameworkError`).
    NotJson,
}

impl RpcErrorKind {
    /// The CALLERROR `errorCode` for this kind in `version`'s table.
    pub fn code(self, version: OcppVersion) -> &'static str {
        use RpcErrorKind::*;
        match (version, self) {
            (_, NotImplemented) => "NotImplemented",
            (_, NotSupported) => "NotSupported",
            (_, InternalError) => "InternalError",
            (_, ProtocolError) => "ProtocolError",
            (_, SecurityError) => "SecurityError",
            (_, PropertyConstraintViolation) => "PropertyConstraintViolation",
            (_, TypeConstraintViolation) => "TypeConstraintViolation",
            (_, GenericError) => "GenericError",
            (OcppVersion::V16, FormatViolation | NotJson) => "FormationViolation",
            (OcppVersion::V16, OccurrenceConstraintViolation) => "OccurenceConstraintViolation",
            (OcppVersion::V16, RpcFrameworkError | MessageTypeNotSupported) => "ProtocolError",
            (OcppVersion::V201, FormatViolation) => "FormatViolation",
            (OcppVersion::V201, OccurrenceConstraintViolation) => "OccurrenceConstraintViolation",
            (OcppVersion::V201, RpcFrameworkError | NotJson) => "RpcFrameworkError",
            (OcppVersion::V201, MessageTypeNotSupported) => "MessageTypeNotSupported",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OcppVersion::*;
    use RpcErrorKind::*;

    #[test]
    fn each_kind_maps_to_the_code_of_its_version_table() {
        let table = [
            (FormatViolation, "FormationViolation", "FormatViolation"),
            (
                OccurrenceConstraintViolation,
                "OccurenceConstraintViolation",
                "OccurrenceConstraintViolation",
            ),
            (
                PropertyConstraintViolation,
                "PropertyConstraintViolation",
                "PropertyConstraintViolation",
            ),
            (
                TypeConstraintViolation,
                "TypeConstraintViolation",
                "TypeConstraintViolation",
            ),
            (RpcFrameworkError, "ProtocolError", "RpcFrameworkError"),
            (
                MessageTypeNotSupported,
                "ProtocolError",
                "MessageTypeNotSupported",
            ),
            (NotJson, "FormationViolation", "RpcFrameworkError"),
            (NotImplemented, "NotImplemented", "NotImplemented"),
            (NotSupported, "NotSupported", "NotSupported"),
        ];
        for (kind, v16, v201) in table {
            assert_eq!(kind.code(V16), v16, "{kind:?} in 1.6");
            assert_eq!(kind.code(V201), v201, "{kind:?} in 2.0.1");
        }
    }
}
