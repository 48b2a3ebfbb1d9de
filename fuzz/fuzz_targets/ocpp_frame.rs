//! A charger's frame, as the charger actor reads it: parsed, its payload checked against
//! the schema of its action and direction, and a CALL decoded into the internal model;
//! for both OCPP versions. Nothing may panic, whatever the bytes.
#![no_main]

use jucr::ocpp::frame::{self, Frame};
use jucr::ocpp::schema::{PayloadKind, schemas};
use jucr::ocpp::{OcppVersion, decode_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for version in [OcppVersion::V16, OcppVersion::V201] {
        let set = schemas(version);
        match frame::parse(text) {
            Ok(Frame::Call(call)) => {
                let Some(spec) = set.action(&call.action) else {
                    continue;
                };
                if set
                    .check(spec.name, PayloadKind::Request, &call.payload)
                    .is_ok()
                {
                    let _ = decode_request(version, spec.name, call.payload);
                }
            }
            Ok(Frame::CallResult(result)) => {
                // An answer to whichever of our calls the first byte picks.
                let actions = set.actions();
                let spec = &actions[usize::from(data[0]) % actions.len()];
                let _ = set.check(spec.name, PayloadKind::Response, &result.payload);
            }
            Ok(Frame::CallError(_)) => {}
            Err(e) => {
                let _ = e.to_call_error(version);
            }
        }
    }
});
