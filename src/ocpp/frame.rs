//! OCPP-J RPC framing: CALL `[2, id, action, payload]`, CALLRESULT `[3, id, payload]`,
//! CALLERROR `[4, id, code, description, details]` (OCPP-J 1.6 §4; 2.0.1 part 4 §4).

use serde_json::{Map, Value};

use super::OcppVersion;
use super::error::RpcErrorKind;

/// Longest message id the spec allows (1.6 §4.1.4 and 2.0.1 §4.1.3: 36 characters).
pub const MAX_MESSAGE_ID_LEN: usize = 36;

/// The message id used to answer a frame whose own id could not be read (2.0.1 part 4 §4.2.3).
pub const UNREADABLE_MESSAGE_ID: &str = "-1";

#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub message_id: String,
    pub action: String,
    pub payload: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CallResult {
    pub message_id: String,
    pub payload: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CallError {
    pub message_id: String,
    pub error_code: String,
    pub description: String,
    pub details: Value,
}

/// One OCPP-J frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Call(Call),
    CallResult(CallResult),
    CallError(CallError),
}

/// Why a text could not be read as a frame, and how to answer it.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    /// The id to answer with: the frame's own when it could be read, else `"-1"`.
    pub message_id: String,
    pub kind: RpcErrorKind,
    pub description: String,
    /// Whether the faulty frame was a CALL (or could have been one). Faulty
    /// CALLRESULTs and CALLERRORs are never answered, only logged.
    pub answerable: bool,
}

impl FrameError {
    fn new(message_id: Option<&str>, kind: RpcErrorKind, description: impl Into<String>) -> Self {
        FrameError {
            message_id: message_id.unwrap_or(UNREADABLE_MESSAGE_ID).to_owned(),
            kind,
            description: description.into(),
            answerable: true,
        }
    }

    /// The CALLERROR that answers this fault.
    pub fn to_call_error(&self, version: OcppVersion) -> CallError {
        CallError {
            message_id: self.message_id.clone(),
            error_code: self.kind.code(version).to_owned(),
            description: self.description.clone(),
            details: Value::Object(Map::new()),
        }
    }
}

/// Reads one text frame.
pub fn parse(text: &str) -> Result<Frame, FrameError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        FrameError::new(
            None,
            RpcErrorKind::NotJson,
            format!("frame is not valid JSON: {e}"),
        )
    })?;
    let Value::Array(mut items) = value else {
        return Err(FrameError::new(
            None,
            RpcErrorKind::RpcFrameworkError,
            "frame is not a JSON array",
        ));
    };
    let message_id = match items.get(1) {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_MESSAGE_ID_LEN => {
            Some(id.clone())
        }
        _ => None,
    };
    let type_id = items.first().and_then(Value::as_u64);
    let Some(message_id) = message_id else {
        return Err(FrameError {
            answerable: type_id == Some(2),
            ..FrameError::new(
                None,
                RpcErrorKind::RpcFrameworkError,
                "message id is missing, not a string, empty or longer than 36 characters",
            )
        });
    };
    let id = Some(message_id.as_str());
    match type_id {
        Some(2) => {
            if items.len() != 4 {
                return Err(FrameError::new(
                    id,
                    RpcErrorKind::RpcFrameworkError,
                    format!("CALL must have 4 elements, found {}", items.len()),
                ));
            }
            let payload = items.pop().expect("length checked to be 4 above; qed");
            let Value::String(action) = items.pop().expect("length checked to be 4 above; qed")
            else {
                return Err(FrameError::new(
                    id,
                    RpcErrorKind::RpcFrameworkError,
                    "action is not a string",
                ));
            };
            if !payload.is_object() {
                return Err(FrameError::new(
                    id,
                    RpcErrorKind::FormatViolation,
                    "payload is not a JSON object",
                ));
            }
            Ok(Frame::Call(Call {
                message_id,
                action,
                payload,
            }))
        }
        Some(3) => {
            if items.len() != 3 || !items[2].is_object() {
                return Err(FrameError {
                    answerable: false,
                    ..FrameError::new(
                        id,
                        RpcErrorKind::FormatViolation,
                        "CALLRESULT must be [3, id, {payload}]",
                    )
                });
            }
            let payload = items.pop().expect("length checked to be 3 above; qed");
            Ok(Frame::CallResult(CallResult {
                message_id,
                payload,
            }))
        }
        Some(4) => {
            let (Some(Value::String(code)), Some(Value::String(description))) =
                (items.get(2), items.get(3))
            else {
                return Err(FrameError {
                    answerable: false,
                    ..FrameError::new(
                        id,
                        RpcErrorKind::FormatViolation,
                        "CALLERROR must be [4, id, code, description, {details}]",
                    )
                });
            };
            Ok(Frame::CallError(CallError {
                message_id,
                error_code: code.clone(),
                description: description.clone(),
                details: items
                    .get(4)
                    .cloned()
                    .unwrap_or_else(|| Value::Object(Map::new())),
            }))
        }
        _ => Err(FrameError::new(
            id,
            RpcErrorKind::MessageTypeNotSupported,
            "message type must be 2 (CALL), 3 (CALLRESULT) or 4 (CALLERROR)",
        )),
    }
}

impl Frame {
    /// The frame as OCPP-J text.
    pub fn to_text(&self) -> String {
        let value = match self {
            Frame::Call(c) => Value::Array(vec![
                Value::from(2),
                Value::String(c.message_id.clone()),
                Value::String(c.action.clone()),
                c.payload.clone(),
            ]),
            Frame::CallResult(r) => Value::Array(vec![
                Value::from(3),
                Value::String(r.message_id.clone()),
                r.payload.clone(),
            ]),
            Frame::CallError(e) => Value::Array(vec![
                Value::from(4),
                Value::String(e.message_id.clone()),
                Value::String(e.error_code.clone()),
                Value::String(e.description.clone()),
                e.details.clone(),
            ]),
        };
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_call_round_trips() {
        let frame = parse(
            r#"[2,"19223201","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]"#,
        )
        .expect("valid call");
        let Frame::Call(call) = &frame else {
            panic!("expected a call, got {frame:?}")
        };
        assert_eq!(call.action, "BootNotification");
        assert_eq!(parse(&frame.to_text()).unwrap(), frame);
    }

    #[test]
    fn unreadable_frames_are_answered_with_id_minus_one() {
        for text in [
            "not json",
            "{}",
            "[2]",
            "[2, 17, \"Heartbeat\", {}]",
            "[2, \"\", \"Heartbeat\", {}]",
        ] {
            let err = parse(text).expect_err(text);
            assert_eq!(err.message_id, "-1", "{text}");
        }
        assert_eq!(parse("not json").unwrap_err().kind, RpcErrorKind::NotJson);
    }

    #[test]
    fn a_call_with_a_readable_id_is_answered_with_that_id() {
        let err = parse(r#"[2,"abc","Heartbeat"]"#).unwrap_err();
        assert_eq!(
            (err.message_id.as_str(), err.kind),
            ("abc", RpcErrorKind::RpcFrameworkError)
        );
        let err = parse(r#"[2,"abc","Heartbeat",[]]"#).unwrap_err();
        assert_eq!(err.kind, RpcErrorKind::FormatViolation);
        let err = parse(r#"[7,"abc","Heartbeat",{}]"#).unwrap_err();
        assert_eq!(err.kind, RpcErrorKind::MessageTypeNotSupported);
        assert!(err.answerable);
    }

    #[test]
    fn faulty_results_are_not_answered() {
        assert!(!parse(r#"[3,"abc"]"#).unwrap_err().answerable);
        assert!(!parse(r#"[4,"abc",1]"#).unwrap_err().answerable);
    }

    #[test]
    fn a_call_error_keeps_its_details() {
        let frame = parse(r#"[4,"a","NotSupported","nope",{"x":1}]"#).unwrap();
        assert_eq!(
            frame,
            Frame::CallError(CallError {
                message_id: "a".into(),
                error_code: "NotSupported".into(),
                description: "nope".into(),
                details: json!({"x": 1}),
            })
        );
    }
}
