//! A crash in one ChargerActor closes that charger's socket and nothing else.

use std::time::Duration;

use serde_json::json;

use crate::charge_point::ChargePoint;
use crate::helpers::{Backend, CHARGER_PASSWORD, TestApp, eventually, now};

#[tokio::test]
async fn a_panicking_charger_actor_closes_only_its_own_socket() {
    let app = TestApp::spawn_with(
        Backend::Postgres,
        &[("JUCR__TESTING__FAULT_INJECTION", "true")],
    )
    .await;
    app.register_token("T1", json!({"status": "Accepted"}))
        .await;
    let mut steady = app.registered_charger("CP-STEADY").await;
    let mut crash = app.registered_charger("CP-CRASH").await;
    let tx = steady
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "T1", "meterStart": 0, "timestamp": now()}),
        )
        .await["transactionId"]
        .clone();

    // The test-only hook makes CP-CRASH's actor panic.
    crash
        .send_text(&json!([2, "boom", "DataTransfer", {"vendorId": "org.jucr.test", "messageId": "panic"}]).to_string())
        .await;
    let code = crash.closed_by_server(Duration::from_secs(10)).await;
    assert_eq!(code, Some(1011), "closed as an internal error");

    // The other charger keeps charging.
    steady
        .call("MeterValues", json!({"connectorId": 1, "transactionId": tx, "meterValue": [{"timestamp": now(), "sampledValue": [{"value": "4200"}]}]}))
        .await;
    steady
        .call(
            "StopTransaction",
            json!({"transactionId": tx, "meterStop": 5000, "timestamp": now()}),
        )
        .await;
    let (_, session) = app
        .api("GET", &format!("/api/v1/sessions/{tx}"), None)
        .await;
    assert_eq!(
        (session["status"].clone(), session["energy_wh"].clone()),
        (json!("completed"), json!(5000))
    );
    assert_eq!(app.charger("CP-STEADY").await["online"], true);

    // The crashed charger is offline, and reconnects to a fresh actor.
    eventually(Duration::from_secs(5), "CP-CRASH offline", || async {
        (app.charger("CP-CRASH").await["online"] == false).then_some(())
    })
    .await;
    let mut again =
        ChargePoint::connect(app.ws_url("CP-CRASH"), "CP-CRASH", Some(CHARGER_PASSWORD)).await;
    again.call("Heartbeat", json!({})).await;
    assert_eq!(app.charger("CP-CRASH").await["online"], true);
}

#[tokio::test]
async fn without_fault_injection_the_hook_is_an_ordinary_unknown_vendor() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut cp = app.registered_charger("CP-SAFE").await;
    let answer = cp
        .call(
            "DataTransfer",
            json!({"vendorId": "org.jucr.test", "messageId": "panic"}),
        )
        .await;
    assert_eq!(answer["status"], "UnknownVendorId");
}
