//! What the OpenChargeMap API (or an import file) sends: POIs, reference data, and the
//! Retry-After header, through the same functions the sync and `jucr ocm import` use.
//! Nothing may panic, whatever the bytes.
#![no_main]

use jucr::domain::ocm::{ReferenceData, retry_after};
use jucr::domain::station::Station;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = retry_after(text, chrono::Utc::now());
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = ReferenceData::from_ocm(&json);
    match &json {
        serde_json::Value::Array(pois) => {
            for poi in pois {
                let _ = Station::from_ocm(poi);
            }
        }
        poi => {
            let _ = Station::from_ocm(poi);
        }
    }
});
