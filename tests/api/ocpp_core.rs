//! A charge point's life: connect, boot, authorize, charge, stop.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::charge_point::ChargePoint;
use crate::helpers::{Backend, CHARGER_PASSWORD, TestApp, eventually, now, time_in};

async fn charge_a_session(backend: Backend) {
    // Arrange
    let app = TestApp::spawn(backend).await;
    app.register_token(
        "GOOD-TAG",
        json!({"status": "Accepted", "group_id": "FLEET-1"}),
    )
    .await;
    app.register_token("BLOCKED-TAG", json!({"status": "Blocked"}))
        .await;
    app.register_token(
        "OLD-TAG",
        json!({"status": "Accepted", "expiry_date": time_in(-60)}),
    )
    .await;
    app.register_token("POOR-TAG", json!({"status": "NoCredit"}))
        .await;
    let mut cp = app.registered_charger("CP-CORE").await;
    assert_eq!(cp.subprotocol.as_deref(), Some("ocpp1.6"));

    // Boot and status
    let boot = cp.boot().await;
    assert_eq!(boot["status"], "Accepted");
    assert_eq!(boot["interval"], 300);
    cp.call(
        "StatusNotification",
        json!({"connectorId": 1, "errorCode": "NoError", "status": "Available"}),
    )
    .await;
    cp.call("Heartbeat", json!({})).await;

    // Authorize: good and bad tags (2.0.1-only statuses fold into 1.6's Invalid)
    let good = cp.call("Authorize", json!({"idTag": "good-tag"})).await;
    assert_eq!(
        good["idTagInfo"]["status"], "Accepted",
        "tags match case-insensitively"
    );
    assert_eq!(good["idTagInfo"]["parentIdTag"], "FLEET-1");
    for (tag, status) in [
        ("BLOCKED-TAG", "Blocked"),
        ("OLD-TAG", "Expired"),
        ("POOR-TAG", "Invalid"),
        ("NO-SUCH-TAG", "Invalid"),
    ] {
        let answer = cp.call("Authorize", json!({"idTag": tag})).await;
        assert_eq!(answer["idTagInfo"]["status"], status, "{tag}");
    }

    // Start
    let started = cp
        .call("StartTransaction", json!({"connectorId": 1, "idTag": "GOOD-TAG", "meterStart": 10_000, "timestamp": now()}))
        .await;
    assert_eq!(started["idTagInfo"]["status"], "Accepted");
    let tx = started["transactionId"]
        .as_i64()
        .expect("integer transaction id");
    cp.call(
        "StatusNotification",
        json!({"connectorId": 1, "errorCode": "NoError", "status": "Charging"}),
    )
    .await;
    let again = cp.call("Authorize", json!({"idTag": "GOOD-TAG"})).await;
    assert_eq!(
        again["idTagInfo"]["status"], "ConcurrentTx",
        "a token already charging"
    );

    // Meter values
    cp.call(
        "MeterValues",
        json!({"connectorId": 1, "transactionId": tx, "meterValue": [{"timestamp": now(), "sampledValue": [
            {"value": "12.5", "measurand": "Energy.Active.Import.Register", "unit": "kWh"},
            {"value": "11000", "measurand": "Power.Active.Import", "unit": "W"},
            {"value": "55", "measurand": "SoC", "unit": "Percent"}
        ]}]}),
    )
    .await;
    let live = eventually(Duration::from_secs(5), "live energy", || async {
        let (_, s) = app
            .api("GET", &format!("/api/v1/sessions/{tx}"), None)
            .await;
        (s["energy_wh"] == 2500).then_some(s)
    })
    .await;
    assert_eq!(
        (
            live["status"].clone(),
            live["power_w"].clone(),
            live["soc_percent"].clone()
        ),
        (json!("active"), json!(11000.0), json!(55.0))
    );

    // The charger shows online with its connector and heartbeat
    let charger = app.charger("CP-CORE").await;
    assert_eq!(charger["online"], true);
    assert_eq!(charger["ocpp_version"], "1.6");
    assert_eq!(charger["boot"]["vendor"], "JucrTest");
    assert!(charger["last_heartbeat"].is_string());
    assert_eq!(charger["connectors"][0]["status"], "Charging");

    // Stop
    let stopped = cp
        .call(
            "StopTransaction",
            json!({"transactionId": tx, "idTag": "GOOD-TAG", "meterStop": 13_000, "timestamp": now(), "reason": "Local",
                   "transactionData": [{"timestamp": now(), "sampledValue": [{"value": "13000"}]}]}),
        )
        .await;
    assert_eq!(stopped["idTagInfo"]["status"], "Accepted");
    let (status, session) = app
        .api("GET", &format!("/api/v1/sessions/{tx}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (session["status"].clone(), session["energy_wh"].clone()),
        (json!("completed"), json!(3000))
    );
    assert_eq!(session["id_token"], "GOOD-TAG");
    assert_eq!(session["stop_reason"], "Local");
    let samples = eventually(Duration::from_secs(5), "stored meter values", || async {
        let (_, s) = app
            .api("GET", &format!("/api/v1/sessions/{tx}"), None)
            .await;
        let n = s["meter_values"].as_array().map_or(0, Vec::len);
        (n == 4).then_some(s["meter_values"].clone())
    })
    .await;
    assert!(
        samples
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["measurand"] == "SoC" && s["value"] == 55.0)
    );

    // A repeated StopTransaction (the charger missed our answer) is answered, not doubled.
    cp.call(
        "StopTransaction",
        json!({"transactionId": tx, "meterStop": 13_000, "timestamp": now()}),
    )
    .await;
    let (_, list) = app
        .api(
            "GET",
            "/api/v1/sessions?charger_id=CP-CORE&status=completed",
            None,
        )
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, active) = app.api("GET", "/api/v1/sessions?status=active", None).await;
    assert_eq!(active, json!([]));
    let after = cp.call("Authorize", json!({"idTag": "GOOD-TAG"})).await;
    assert_eq!(
        after["idTagInfo"]["status"], "Accepted",
        "the token is free again"
    );
    let started_ok = app
        .metric(
            "jucr_ocpp_messages_total{action=\"StartTransaction\",direction=\"in\",result=\"ok\"}",
        )
        .await;
    assert_eq!(started_ok, 1.0, "messages are counted by action and result");
    cp.close().await;
}

#[tokio::test]
async fn a_charge_point_boots_authorizes_charges_and_stops_on_postgres() {
    charge_a_session(Backend::Postgres).await;
}

#[tokio::test]
async fn a_charge_point_boots_authorizes_charges_and_stops_on_sqlite() {
    charge_a_session(Backend::Sqlite).await;
}

#[tokio::test]
async fn boot_is_answered_with_the_registration_status_and_rejected_chargers_are_refused() {
    let app = TestApp::spawn(Backend::Postgres).await;
    app.register_charger("CP-PENDING", CHARGER_PASSWORD).await;
    let (status, _) = app
        .api(
            "PUT",
            "/api/v1/chargers/CP-PENDING",
            Some(json!({"registration_status": "Pending"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut cp = ChargePoint::connect(
        app.ws_url("CP-PENDING"),
        "CP-PENDING",
        Some(CHARGER_PASSWORD),
    )
    .await;
    let boot = cp.boot().await;
    assert_eq!(
        (boot["status"].clone(), boot["interval"].clone()),
        (json!("Pending"), json!(60))
    );

    // The operator rejects it: its next boot is Rejected and other calls get SecurityError.
    app.api(
        "PUT",
        "/api/v1/chargers/CP-PENDING",
        Some(json!({"registration_status": "Rejected"})),
    )
    .await;
    assert_eq!(cp.boot().await["status"], "Rejected");
    let refused = cp.call_raw("Heartbeat", json!({})).await;
    assert_eq!(
        (refused[0].clone(), refused[2].clone()),
        (json!(4), json!("SecurityError"))
    );

    // Accepted again: it may work normally.
    app.api(
        "PUT",
        "/api/v1/chargers/CP-PENDING",
        Some(json!({"registration_status": "Accepted"})),
    )
    .await;
    assert_eq!(cp.boot().await["status"], "Accepted");
    cp.call("Heartbeat", json!({})).await;
}

#[tokio::test]
async fn meter_values_without_a_transaction_id_reach_the_session_on_that_connector() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.register_token("T1", json!({"status": "Accepted"}))
        .await;
    let mut cp = app.registered_charger("CP-MV").await;
    let tx = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 2, "idTag": "T1", "meterStart": 0, "timestamp": now()}),
        )
        .await["transactionId"]
        .as_i64()
        .unwrap();
    cp.call("MeterValues", json!({"connectorId": 2, "meterValue": [{"timestamp": now(), "sampledValue": [{"value": "750"}]}]}))
        .await;
    eventually(
        Duration::from_secs(5),
        "energy from connector-level meter values",
        || async {
            let (_, s) = app
                .api("GET", &format!("/api/v1/sessions/{tx}"), None)
                .await;
            (s["energy_wh"] == 750).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_repeated_start_transaction_gets_the_same_transaction_id() {
    let app = TestApp::spawn(Backend::Postgres).await;
    app.register_token("T1", json!({"status": "Accepted"}))
        .await;
    let mut cp = app.registered_charger("CP-REPEAT").await;
    let start = json!({"connectorId": 1, "idTag": "T1", "meterStart": 5, "timestamp": now()});
    let first = cp.call("StartTransaction", start.clone()).await;
    let second = cp.call("StartTransaction", start).await;
    assert_eq!(first["transactionId"], second["transactionId"]);
    assert_eq!(
        second["idTagInfo"]["status"], "Accepted",
        "a repeat is not a concurrent transaction"
    );
    let (_, sessions) = app
        .api("GET", "/api/v1/sessions?charger_id=CP-REPEAT", None)
        .await;
    assert_eq!(sessions.as_array().map(Vec::len), Some(1), "{sessions}");
}

#[tokio::test]
async fn a_new_start_on_a_connector_ends_the_session_whose_stop_was_lost() {
    let app = TestApp::spawn(Backend::Postgres).await;
    app.register_token("T1", json!({"status": "Accepted"}))
        .await;
    let mut cp = app.registered_charger("CP-LOST").await;
    let first = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "T1", "meterStart": 0, "timestamp": time_in(-600)}),
        )
        .await;
    cp.call("MeterValues", json!({"connectorId": 1, "transactionId": first["transactionId"], "meterValue": [{"timestamp": time_in(-300), "sampledValue": [{"value": "800"}]}]}))
        .await;
    // The charger rebooted and lost the stop: the same token starts again on the same connector.
    let second = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "T1", "meterStart": 900, "timestamp": now()}),
        )
        .await;
    assert_eq!(second["idTagInfo"]["status"], "Accepted");
    assert_ne!(first["transactionId"], second["transactionId"]);
    let old = eventually(Duration::from_secs(5), "the lost session ended", || async {
        let (_, s) = app
            .api(
                "GET",
                &format!("/api/v1/sessions/{}", first["transactionId"]),
                None,
            )
            .await;
        (s["status"] == "completed").then_some(s)
    })
    .await;
    assert_eq!(
        (old["stop_reason"].clone(), old["energy_wh"].clone()),
        (json!("Superseded"), json!(800))
    );
    let (_, active) = app.api("GET", "/api/v1/sessions?status=active", None).await;
    assert_eq!(active.as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_value_the_database_refuses_does_not_block_other_writes() {
    let app = TestApp::spawn(Backend::Postgres).await;
    app.register_token("T1", json!({"status": "Accepted"}))
        .await;
    let mut cp = app.registered_charger("CP-NUL").await;
    let tx = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "T1", "meterStart": 0, "timestamp": now()}),
        )
        .await["transactionId"]
        .clone();
    // Valid by the schema, refused by PostgreSQL (NUL in text), in the same batch as a meter value.
    cp.call("StatusNotification", json!({"connectorId": 1, "errorCode": "OtherError", "status": "Faulted", "info": "bad\u{0}info"}))
        .await;
    cp.call("MeterValues", json!({"connectorId": 1, "transactionId": tx, "meterValue": [{"timestamp": now(), "sampledValue": [{"value": "321"}]}]}))
        .await;
    eventually(
        Duration::from_secs(5),
        "the meter value stored and the bad update dropped",
        || async {
            let (_, s) = app
                .api("GET", &format!("/api/v1/sessions/{tx}"), None)
                .await;
            let stored = s["meter_values"].as_array().map_or(0, Vec::len) == 1;
            (stored && app.metric("jucr_persistence_dropped_writes_total").await >= 1.0)
                .then_some(())
        },
    )
    .await;
}
