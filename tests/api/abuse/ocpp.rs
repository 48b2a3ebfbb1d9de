//! A charger (or whoever holds its credentials) sending what no real charger would:
//! megabyte values echoed back, reports that never finish, connectors and transactions
//! by the thousand; and a plain GET that should not register anything.

use std::time::Duration;

use serde_json::json;

use super::{memory_settles, rss_kib, still_serves};
use crate::charge_point::ChargePoint;
use crate::helpers::{Backend, TestApp, now};
use crate::ocpp201::station;

/// The most of a value a CALLERROR may echo: a few hundred bytes, then a marker.
const ECHO: usize = 1024;

#[tokio::test]
async fn a_megabyte_value_is_not_echoed_into_the_callerror_or_the_log() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut cp = app.registered_charger("CP-LOUD").await;
    let log_before = app.log().len();
    let vendor = "V".repeat(1_000_000);
    let answer = cp
        .call_raw(
            "BootNotification",
            json!({"chargePointVendor": vendor, "chargePointModel": "M"}),
        )
        .await;
    assert_eq!(answer[0], 4, "{}", &answer.to_string()[..200]);
    assert_eq!(answer[2], "PropertyConstraintViolation");
    let description = answer[3].as_str().unwrap();
    assert!(
        description.len() < ECHO,
        "{} bytes echoed",
        description.len()
    );
    assert!(description.contains("cut"), "marked as cut: {description}");
    assert!(
        answer.to_string().len() < 2 * ECHO,
        "the whole CALLERROR is small"
    );
    let logged = app.log().len() - log_before;
    assert!(
        logged < 16 * 1024,
        "{logged} bytes logged for one refused frame"
    );
    // The charger's next (valid) call is answered as usual.
    assert_eq!(cp.boot().await["status"], "Accepted");
}

#[tokio::test]
async fn device_model_reports_in_flight_are_bounded() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut cp = station(&app, "CS-REPORTS").await;
    let before = rss_kib(&app);
    // 200 reports that never finish, about 1 MB each.
    let value = "v".repeat(2500);
    let part: Vec<_> = (0..380)
        .map(|i| {
            json!({
                "component": {"name": "Connector"},
                "variable": {"name": format!("Var{i}")},
                "variableAttribute": [{"value": value}]
            })
        })
        .collect();
    let mut refused = 0;
    for request_id in 0..200 {
        let answer = cp
            .call_raw(
                "NotifyReport",
                json!({"requestId": request_id, "generatedAt": now(), "tbc": true, "seqNo": 0, "reportData": part}),
            )
            .await;
        if answer[0] == 4 {
            assert_eq!(answer[2], "GenericError", "{answer}");
            refused += 1;
        }
    }
    assert!(
        refused >= 190,
        "reports in flight are bounded: {refused} of 200 refused"
    );
    // One report that grows part by part is bounded by what it holds (8 MiB).
    let mut parts = 0;
    loop {
        parts += 1;
        let answer = cp
            .call_raw(
                "NotifyReport",
                json!({"requestId": 1, "generatedAt": now(), "tbc": true, "seqNo": parts, "reportData": part}),
            )
            .await;
        if answer[0] == 4 {
            assert_eq!(answer[2], "GenericError", "{answer}");
            break;
        }
        assert!(parts < 12, "a report of {parts} MB is still held");
    }
    memory_settles(&app, before).await;
    // A report that finishes is still stored.
    let answer = cp
        .call_raw(
            "NotifyReport",
            json!({"requestId": 0, "generatedAt": now(), "tbc": false, "seqNo": 1, "reportData": [part[0].clone()]}),
        )
        .await;
    assert_eq!(
        answer[0],
        3,
        "{}",
        &answer.to_string()[..200.min(answer.to_string().len())]
    );
    still_serves(&app).await;
}

#[tokio::test]
async fn connectors_and_open_sessions_per_charger_are_bounded() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("JUCR__OCPP__MAX_CONNECTORS", "4")]).await;
    app.register_token("MANY", json!({"status": "Accepted"}))
        .await;
    let mut cp = app.registered_charger("CP-MANY-CONNECTORS").await;
    cp.boot().await;
    let mut refused = 0;
    for connector in 1..=40 {
        let answer = cp
            .call_raw(
                "StatusNotification",
                json!({"connectorId": connector, "errorCode": "NoError", "status": "Available"}),
            )
            .await;
        if answer[0] == 4 {
            assert_eq!(answer[2], "PropertyConstraintViolation", "{answer}");
            refused += 1;
        }
    }
    assert_eq!(refused, 36);
    let charger = app.charger("CP-MANY-CONNECTORS").await;
    assert!(
        charger["connectors"].as_array().unwrap().len() <= 5,
        "{charger}"
    );
    // Transactions: one per connector the charger may have, the rest refused.
    let mut started = 0;
    for connector in 1..=40 {
        let answer = cp
            .call_raw(
                "StartTransaction",
                json!({"connectorId": connector, "idTag": "MANY", "meterStart": 0, "timestamp": now()}),
            )
            .await;
        if answer[0] == 3 {
            started += 1;
        } else {
            assert_eq!(answer[2], "PropertyConstraintViolation", "{answer}");
        }
    }
    assert_eq!(started, 4);
    let (_, sessions) = app
        .api(
            "GET",
            "/api/v1/sessions?charger_id=CP-MANY-CONNECTORS&status=active",
            None,
        )
        .await;
    assert!(sessions.as_array().unwrap().len() <= 4, "{sessions}");
    still_serves(&app).await;
}

#[tokio::test]
async fn a_plain_get_registers_no_charger_even_when_unknown_ones_are_accepted() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("JUCR__OCPP__UNKNOWN_CHARGERS", "accept")],
    )
    .await;
    let (status, _) = app.request("GET", "/ocpp/CP-GHOST", None, None).await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST);
    let (status, body) = app.api("GET", "/api/v1/chargers/CP-GHOST", None).await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND, "{body}");
    // A real handshake still registers it (the documented lab default).
    let mut cp = ChargePoint::connect(app.ws_url("CP-REAL"), "CP-REAL", None).await;
    cp.boot().await;
    app.charger("CP-REAL").await;
}

#[tokio::test]
async fn a_charger_without_credentials_is_asked_for_basic_auth() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.register_charger("CP-BASIC", crate::helpers::CHARGER_PASSWORD)
        .await;
    let response = app
        .http
        .get(format!("{}/ocpp/CP-BASIC", app.address))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Sec-WebSocket-Protocol", "ocpp1.6")
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::UNAUTHORIZED);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Basic"), "{challenge}");
}
