//! Operator commands: every CSMS→charger action of OCPP 1.6 through
//! `POST /api/v1/chargers/{id}/ocpp/{Action}`, their failures, and their effects.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::charge_point::ChargePoint;
use crate::helpers::{Backend, CHARGER_PASSWORD, TestApp, eventually, now, time_in};

/// (action, request payload, the charger's answer): one row per CSMS→charger action.
fn every_outbound_action() -> Vec<(&'static str, Value, Value)> {
    let profile = json!({"chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Absolute", "chargingSchedule": {"chargingRateUnit": "W",
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000.0}]}});
    let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
    vec![
        (
            "CancelReservation",
            json!({"reservationId": 1}),
            json!({"status": "Accepted"}),
        ),
        (
            "ChangeAvailability",
            json!({"connectorId": 1, "type": "Inoperative"}),
            json!({"status": "Accepted"}),
        ),
        (
            "ChangeConfiguration",
            json!({"key": "HeartbeatInterval", "value": "60"}),
            json!({"status": "Accepted"}),
        ),
        ("ClearCache", json!({}), json!({"status": "Accepted"})),
        (
            "ClearChargingProfile",
            json!({"id": 1}),
            json!({"status": "Accepted"}),
        ),
        (
            "DataTransfer",
            json!({"vendorId": "acme", "messageId": "hello", "data": "x"}),
            json!({"status": "Accepted", "data": "y"}),
        ),
        (
            "GetCompositeSchedule",
            json!({"connectorId": 1, "duration": 3600}),
            json!({"status": "Accepted", "connectorId": 1, "scheduleStart": now(),
                   "chargingSchedule": {"chargingRateUnit": "W", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000.0}]}}),
        ),
        (
            "GetConfiguration",
            json!({"key": ["HeartbeatInterval"]}),
            json!({"configurationKey": [{"key": "HeartbeatInterval", "readonly": false, "value": "60"}], "unknownKey": []}),
        ),
        (
            "GetDiagnostics",
            json!({"location": "ftp://logs.example.com/up"}),
            json!({"fileName": "diag.zip"}),
        ),
        ("GetLocalListVersion", json!({}), json!({"listVersion": 3})),
        (
            "RemoteStartTransaction",
            json!({"connectorId": 1, "idTag": "T1"}),
            json!({"status": "Accepted"}),
        ),
        (
            "RemoteStopTransaction",
            json!({"transactionId": 99}),
            json!({"status": "Rejected"}),
        ),
        (
            "ReserveNow",
            json!({"connectorId": 1, "expiryDate": time_in(600), "idTag": "T1", "reservationId": 5}),
            json!({"status": "Accepted"}),
        ),
        (
            "Reset",
            json!({"type": "Soft"}),
            json!({"status": "Accepted"}),
        ),
        (
            "SendLocalList",
            json!({"listVersion": 4, "updateType": "Full", "localAuthorizationList": [{"idTag": "T1", "idTagInfo": {"status": "Accepted"}}]}),
            json!({"status": "Accepted"}),
        ),
        (
            "SetChargingProfile",
            json!({"connectorId": 1, "csChargingProfiles": profile}),
            json!({"status": "Accepted"}),
        ),
        (
            "TriggerMessage",
            json!({"requestedMessage": "Heartbeat"}),
            json!({"status": "Accepted"}),
        ),
        (
            "UnlockConnector",
            json!({"connectorId": 1}),
            json!({"status": "Unlocked"}),
        ),
        (
            "UpdateFirmware",
            json!({"location": "https://fw.example.com/1.2.bin", "retrieveDate": now()}),
            json!({}),
        ),
        (
            "CertificateSigned",
            json!({"certificateChain": cert}),
            json!({"status": "Accepted"}),
        ),
        (
            "DeleteCertificate",
            json!({"certificateHashData": {"hashAlgorithm": "SHA256", "issuerNameHash": "aa", "issuerKeyHash": "bb", "serialNumber": "01"}}),
            json!({"status": "Accepted"}),
        ),
        (
            "ExtendedTriggerMessage",
            json!({"requestedMessage": "StatusNotification"}),
            json!({"status": "Accepted"}),
        ),
        (
            "GetInstalledCertificateIds",
            json!({"certificateType": "CentralSystemRootCertificate"}),
            json!({"status": "NotFound"}),
        ),
        (
            "GetLog",
            json!({"logType": "DiagnosticsLog", "requestId": 7, "log": {"remoteLocation": "https://logs.example.com/"}}),
            json!({"status": "Accepted", "filename": "log.txt"}),
        ),
        (
            "InstallCertificate",
            json!({"certificateType": "ManufacturerRootCertificate", "certificate": cert}),
            json!({"status": "Accepted"}),
        ),
        (
            "SignedUpdateFirmware",
            json!({"requestId": 8, "firmware": {"location": "https://fw.example.com/2.bin", "retrieveDateTime": now(),
                   "signingCertificate": cert, "signature": "c2ln"}}),
            json!({"status": "Accepted"}),
        ),
    ]
}

async fn connected(app: &TestApp, id: &str) -> ChargePoint {
    let mut cp = app.registered_charger(id).await;
    cp.boot().await;
    cp
}

#[tokio::test]
async fn every_outbound_1_6_action_is_sent_and_answered() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let mut cp = connected(&app, "CP-OPS").await;
    let table = every_outbound_action();
    assert_eq!(table.len(), 26, "19 core + 7 security-extension actions");
    for (action, request, answer) in table {
        let api = {
            let (app_addr, token, request) =
                (app.address.clone(), app.token.clone(), request.clone());
            tokio::spawn(async move {
                let response = crate::helpers::http_client()
                    .post(format!("{app_addr}/api/v1/chargers/CP-OPS/ocpp/{action}"))
                    .bearer_auth(token)
                    .json(&request)
                    .send()
                    .await
                    .unwrap();
                (response.status(), response.json::<Value>().await.unwrap())
            })
        };
        let (message_id, received_action, payload) = cp.next_server_call().await;
        assert_eq!((received_action.as_str(), &payload), (action, &request));
        cp.respond(&message_id, answer.clone()).await;
        let (status, body) = api.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{action}: {body}");
        assert_eq!(body, answer, "{action}");
    }
}

#[tokio::test]
async fn operator_calls_fail_with_the_right_status() {
    let app =
        TestApp::spawn_with(Backend::Postgres, &[("JUCR__OCPP__CALL_TIMEOUT_SECS", "1")]).await;
    let mut cp = connected(&app, "CP-FAIL").await;
    let post = |action: &str, body: Value| {
        let path = format!("/api/v1/chargers/CP-FAIL/ocpp/{action}");
        let app = &app;
        async move { app.api("POST", &path, Some(body)).await }
    };

    let (status, body) = post("FlyToTheMoon", json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("bad_request"))
    );
    let (status, _) = post("RequestStartTransaction", json!({})).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a 2.0.1 action for a 1.6 charger"
    );
    let (status, _) = post("BootNotification", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a charger-to-CSMS action");
    let (status, body) = post("Reset", json!({"type": "Warm"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_payload");
    assert_eq!(
        body["error"]["details"]["ocpp_error_code"],
        "PropertyConstraintViolation"
    );
    let (status, _) = app
        .api(
            "POST",
            "/api/v1/chargers/NOPE/ocpp/Reset",
            Some(json!({"type": "Soft"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // CALLERROR → 502
    let call = tokio::join!(post("Reset", json!({"type": "Soft"})), async {
        let (id, _, _) = cp.next_server_call().await;
        cp.send_text(
            &json!([4, id, "NotSupported", "no resets today", {"why": "busy"}]).to_string(),
        )
        .await;
    });
    let (status, body) = call.0;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["details"]["ocpp_error_code"], "NotSupported");

    // An answer that breaks the response schema → 502
    let call = tokio::join!(post("Reset", json!({"type": "Soft"})), async {
        let (id, _, _) = cp.next_server_call().await;
        cp.respond(&id, json!({"status": "Maybe"})).await;
    });
    assert_eq!(call.0.1["error"]["code"], "ocpp_invalid_response");

    // No answer → 504 after the call timeout; the late answer is dropped.
    let call = tokio::join!(
        post("Reset", json!({"type": "Soft"})),
        cp.next_server_call()
    );
    assert_eq!(call.0.0, StatusCode::GATEWAY_TIMEOUT);
    cp.respond(&call.1.0, json!({"status": "Accepted"})).await;
    cp.call("Heartbeat", json!({})).await;

    // Disconnected mid-call → 409; offline → 409.
    let call = tokio::join!(post("Reset", json!({"type": "Soft"})), async move {
        cp.next_server_call().await;
        cp.close().await;
    });
    assert_eq!(call.0.0, StatusCode::CONFLICT);
    eventually(Duration::from_secs(5), "charger offline", || async {
        (app.charger("CP-FAIL").await["online"] == false).then_some(())
    })
    .await;
    let (status, body) = post("Reset", json!({"type": "Soft"})).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("charger_offline"))
    );
}

#[tokio::test]
async fn concurrent_operator_calls_reach_a_slow_charger_one_at_a_time_in_order() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let mut cp = connected(&app, "CP-SLOW").await;
    let keys = ["K1", "K2", "K3", "K4", "K5"];
    let get_configuration = |key: &str| {
        let (addr, token, key) = (app.address.clone(), app.token.clone(), key.to_owned());
        tokio::spawn(async move {
            let r = crate::helpers::http_client()
                .post(format!(
                    "{addr}/api/v1/chargers/CP-SLOW/ocpp/GetConfiguration"
                ))
                .bearer_auth(token)
                .json(&json!({"key": [key]}))
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        })
    };
    // The first goes out; each later one is sent once the one before it waits in the queue.
    let mut requests = vec![get_configuration("K1")];
    let (first_id, _, payload) = cp.next_server_call().await;
    assert_eq!(payload["key"][0], "K1");
    for (queued, key) in keys[1..].iter().enumerate() {
        requests.push(get_configuration(key));
        eventually(Duration::from_secs(5), "the call queued", || async {
            (app.metric("jucr_ocpp_queued_calls").await == (queued + 1) as f64).then_some(())
        })
        .await;
    }

    // The slow charger answers K1, and only then sees K2, and so on.
    let mut outstanding = (first_id, "K1".to_owned());
    for next in &keys[1..] {
        cp.respond(&outstanding.0, json!({"configurationKey": [{"key": outstanding.1, "readonly": true, "value": outstanding.1}]}))
            .await;
        let (id, action, payload) = cp.next_server_call().await;
        assert_eq!(
            (action.as_str(), payload["key"][0].as_str()),
            ("GetConfiguration", Some(*next)),
            "FIFO order"
        );
        outstanding = (id, next.to_string());
    }
    cp.respond(&outstanding.0, json!({"configurationKey": [{"key": outstanding.1, "readonly": true, "value": outstanding.1}]})).await;

    for (request, key) in requests.into_iter().zip(keys) {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body["configurationKey"][0]["value"], key,
            "each caller gets its own answer"
        );
    }
}

#[tokio::test]
async fn accepted_calls_take_effect() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.register_token("REMOTE-TAG", json!({"status": "Accepted"}))
        .await;
    let mut cp = connected(&app, "CP-EFFECT").await;
    cp.call(
        "StatusNotification",
        json!({"connectorId": 1, "errorCode": "NoError", "status": "Available"}),
    )
    .await;

    // ChangeAvailability accepted → the connector is Inoperative.
    let call = tokio::join!(
        app.api(
            "POST",
            "/api/v1/chargers/CP-EFFECT/ocpp/ChangeAvailability",
            Some(json!({"connectorId": 1, "type": "Inoperative"}))
        ),
        async {
            let (id, _, _) = cp.next_server_call().await;
            cp.respond(&id, json!({"status": "Accepted"})).await;
        }
    );
    assert_eq!(call.0.0, StatusCode::OK);
    let charger = app.charger("CP-EFFECT").await;
    assert_eq!(charger["connectors"][0]["availability"], "Inoperative");

    // RemoteStartTransaction accepted, then StartTransaction → a remote session of that token.
    let call = tokio::join!(
        app.api(
            "POST",
            "/api/v1/chargers/CP-EFFECT/ocpp/RemoteStartTransaction",
            Some(json!({"connectorId": 1, "idTag": "REMOTE-TAG"}))
        ),
        async {
            let (id, _, _) = cp.next_server_call().await;
            cp.respond(&id, json!({"status": "Accepted"})).await;
        }
    );
    assert_eq!(call.0.1, json!({"status": "Accepted"}));
    let started = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "REMOTE-TAG", "meterStart": 0, "timestamp": now()}),
        )
        .await;
    let (_, session) = app
        .api(
            "GET",
            &format!("/api/v1/sessions/{}", started["transactionId"]),
            None,
        )
        .await;
    assert_eq!(
        (session["id_token"].clone(), session["remote_start"].clone()),
        (json!("REMOTE-TAG"), json!(true))
    );
}

#[tokio::test]
async fn a_scheduled_availability_change_waits_for_the_transaction_to_end() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.register_token("T1", json!({"status": "Accepted"}))
        .await;
    let mut cp = connected(&app, "CP-SCHED").await;
    cp.call(
        "StatusNotification",
        json!({"connectorId": 1, "errorCode": "NoError", "status": "Charging"}),
    )
    .await;
    let tx = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "T1", "meterStart": 0, "timestamp": now()}),
        )
        .await["transactionId"]
        .clone();
    let call = tokio::join!(
        app.api(
            "POST",
            "/api/v1/chargers/CP-SCHED/ocpp/ChangeAvailability",
            Some(json!({"connectorId": 1, "type": "Inoperative"}))
        ),
        async {
            let (id, _, _) = cp.next_server_call().await;
            cp.respond(&id, json!({"status": "Scheduled"})).await;
        }
    );
    assert_eq!(call.0.1, json!({"status": "Scheduled"}));
    assert_eq!(
        app.charger("CP-SCHED").await["connectors"][0]["availability"],
        "Operative",
        "not while charging"
    );
    cp.call(
        "StopTransaction",
        json!({"transactionId": tx, "meterStop": 10, "timestamp": now()}),
    )
    .await;
    assert_eq!(
        app.charger("CP-SCHED").await["connectors"][0]["availability"],
        "Inoperative",
        "once the transaction ended"
    );
    let timed = app
        .metric("jucr_ocpp_call_duration_seconds_count{action=\"ChangeAvailability\"}")
        .await;
    assert_eq!(timed, 1.0, "call latency is measured");
}

/// The smallest instance of a JSON schema node: required properties only, the first enum
/// value, one array item, `now` for date-times. Enough to exercise every action.
fn example(root: &Value, node: &Value) -> Value {
    if let Some(reference) = node.get("$ref").and_then(Value::as_str) {
        let name = reference.trim_start_matches("#/definitions/");
        return example(root, &root["definitions"][name]);
    }
    if let Some(first) = node.get("enum").and_then(|e| e.get(0)) {
        return first.clone();
    }
    match node.get("type").and_then(Value::as_str) {
        Some("object") => {
            let mut out = serde_json::Map::new();
            for name in node
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = name.as_str().unwrap();
                out.insert(name.to_owned(), example(root, &node["properties"][name]));
            }
            Value::Object(out)
        }
        Some("array") => json!([example(root, &node["items"])]),
        Some("string") if node.get("format").and_then(Value::as_str) == Some("date-time") => {
            json!(now())
        }
        Some("string") => json!("x"),
        Some("integer") => json!(1),
        Some("number") => json!(1.5),
        Some("boolean") => json!(true),
        _ => json!({}),
    }
}

fn example_of(file: &str) -> Value {
    let path = format!(
        "{}/src/ocpp/schemas/v2.0.1/{file}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let root: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    example(&root, &root)
}

#[tokio::test]
async fn every_outbound_2_0_1_action_is_sent_and_answered() {
    // The 40 CSMS-to-charging-station messages of OCPP 2.0.1 (part 2, messages by use case).
    let actions = [
        "CancelReservation",
        "CertificateSigned",
        "ChangeAvailability",
        "ClearCache",
        "ClearChargingProfile",
        "ClearDisplayMessage",
        "ClearVariableMonitoring",
        "CostUpdated",
        "CustomerInformation",
        "DataTransfer",
        "DeleteCertificate",
        "GetBaseReport",
        "GetChargingProfiles",
        "GetCompositeSchedule",
        "GetDisplayMessages",
        "GetInstalledCertificateIds",
        "GetLocalListVersion",
        "GetLog",
        "GetMonitoringReport",
        "GetReport",
        "GetTransactionStatus",
        "GetVariables",
        "InstallCertificate",
        "PublishFirmware",
        "RequestStartTransaction",
        "RequestStopTransaction",
        "ReserveNow",
        "Reset",
        "SendLocalList",
        "SetChargingProfile",
        "SetDisplayMessage",
        "SetMonitoringBase",
        "SetMonitoringLevel",
        "SetNetworkProfile",
        "SetVariableMonitoring",
        "SetVariables",
        "TriggerMessage",
        "UnlockConnector",
        "UnpublishFirmware",
        "UpdateFirmware",
    ];
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.register_charger("CS-OPS", CHARGER_PASSWORD).await;
    let mut cp =
        ChargePoint::connect_201(app.ws_url("CS-OPS"), "CS-OPS", Some(CHARGER_PASSWORD)).await;
    cp.call(
        "BootNotification",
        json!({"reason": "PowerUp", "chargingStation": {"model": "M", "vendorName": "V"}}),
    )
    .await;
    for action in actions {
        let request = example_of(&format!("{action}Request"));
        let answer = example_of(&format!("{action}Response"));
        crate::charge_point::assert_valid_in("2.0.1", action, false, &request);
        crate::charge_point::assert_valid_in("2.0.1", action, true, &answer);
        let path = format!("/api/v1/chargers/CS-OPS/ocpp/{action}");
        let call = tokio::join!(app.api("POST", &path, Some(request.clone())), async {
            let (id, received, payload) = cp.next_server_call().await;
            assert_eq!((received.as_str(), &payload), (action, &request));
            cp.respond(&id, answer.clone()).await;
        });
        assert_eq!(call.0, (StatusCode::OK, answer), "{action}");
    }
    // A 1.6-only action is refused for a 2.0.1 station.
    let (status, _) = app
        .api(
            "POST",
            "/api/v1/chargers/CS-OPS/ocpp/RemoteStartTransaction",
            Some(json!({"idTag": "T"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
