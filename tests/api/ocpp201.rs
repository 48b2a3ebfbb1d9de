//! OCPP 2.0.1 charging stations on the same actors, APIs and storage as 1.6 ones.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::charge_point::{ChargePoint, TIMEOUT};
use crate::helpers::{Backend, TestApp, eventually, now, time_in};

const PASSWORD: &str = "station-password-0001";

pub fn event(kind: &str, seq: u64, tx: &str, trigger: &str, extra: Value) -> Value {
    let mut e = json!({
        "eventType": kind, "timestamp": now(), "triggerReason": trigger, "seqNo": seq,
        "transactionInfo": {"transactionId": tx}, "evse": {"id": 1, "connectorId": 1}
    });
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

pub fn energy(wh: f64) -> Value {
    json!([{"timestamp": now(), "sampledValue": [{"value": wh, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "Wh"}}]}])
}

pub async fn station(app: &TestApp, id: &str) -> ChargePoint {
    app.register_charger(id, PASSWORD).await;
    let mut cp = ChargePoint::connect_201(app.ws_url(id), id, Some(PASSWORD)).await;
    let boot = cp
        .call("BootNotification", json!({"reason": "PowerUp", "chargingStation": {"model": "Station-2", "vendorName": "JucrTest"}}))
        .await;
    assert_eq!(boot["status"], "Accepted");
    cp
}

async fn session(app: &TestApp, charger: &str) -> Value {
    let (_, sessions) = app
        .api(
            "GET",
            &format!("/api/v1/sessions?charger_id={charger}"),
            None,
        )
        .await;
    let list = sessions.as_array().expect("a list").clone();
    assert_eq!(list.len(), 1, "exactly one session: {sessions}");
    list[0].clone()
}

#[tokio::test]
async fn a_2_0_1_station_boots_authorizes_and_charges_once_whatever_it_repeats() {
    let app = TestApp::spawn(Backend::Postgres).await;
    app.register_token("GOOD", json!({"status": "Accepted", "group_id": "FLEET"}))
        .await;
    app.register_token("BLOCKED", json!({"status": "Blocked"}))
        .await;
    app.register_token(
        "OLD",
        json!({"status": "Accepted", "expiry_date": time_in(-60)}),
    )
    .await;
    let mut cp = station(&app, "CS-201").await;
    cp.call(
        "StatusNotification",
        json!({"timestamp": now(), "connectorStatus": "Available", "evseId": 1, "connectorId": 1}),
    )
    .await;
    cp.call("Heartbeat", json!({})).await;

    for (token, status) in [
        ("GOOD", "Accepted"),
        ("BLOCKED", "Blocked"),
        ("OLD", "Expired"),
        ("NOBODY", "Unknown"),
    ] {
        let answer = cp
            .call(
                "Authorize",
                json!({"idToken": {"idToken": token, "type": "ISO14443"}}),
            )
            .await;
        assert_eq!(answer["idTokenInfo"]["status"], status, "{token}");
    }
    let good = cp
        .call(
            "Authorize",
            json!({"idToken": {"idToken": "GOOD", "type": "ISO14443"}}),
        )
        .await;
    assert_eq!(good["idTokenInfo"]["groupIdToken"]["idToken"], "FLEET");

    // Plugged in first, authorized after: the token comes with an Updated event.
    let started = cp
        .call(
            "TransactionEvent",
            event(
                "Started",
                0,
                "TX-1",
                "CablePluggedIn",
                json!({"meterValue": energy(1000.0)}),
            ),
        )
        .await;
    assert_eq!(started, json!({}), "no token, no idTokenInfo");
    let authorized = cp
        .call(
            "TransactionEvent",
            event(
                "Updated",
                1,
                "TX-1",
                "Authorized",
                json!({"idToken": {"idToken": "GOOD", "type": "ISO14443"}}),
            ),
        )
        .await;
    assert_eq!(authorized["idTokenInfo"]["status"], "Accepted");
    cp.call(
        "TransactionEvent",
        event("Updated", 2, "TX-1", "MeterValuePeriodic", json!({"meterValue": [{"timestamp": now(), "sampledValue": [
            {"value": 3.5, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "kWh"}},
            {"value": 11, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "W", "multiplier": 3}}
        ]}]})),
    )
    .await;
    let live = eventually(Duration::from_secs(5), "live energy", || async {
        let s = session(&app, "CS-201").await;
        (s["energy_wh"] == 2500).then_some(s)
    })
    .await;
    assert_eq!(
        (
            live["id_token"].clone(),
            live["power_w"].clone(),
            live["status"].clone()
        ),
        (json!("GOOD"), json!(11000.0), json!("active"))
    );
    assert_eq!(live["transaction_id"], "TX-1");

    let ended = event(
        "Ended",
        3,
        "TX-1",
        "EVDeparted",
        json!({"meterValue": energy(4000.0), "transactionInfo": {"transactionId": "TX-1", "stoppedReason": "EVDisconnected"}}),
    );
    cp.call("TransactionEvent", ended.clone()).await;
    let done = session(&app, "CS-201").await;
    assert_eq!(
        (
            done["status"].clone(),
            done["energy_wh"].clone(),
            done["stop_reason"].clone()
        ),
        (json!("completed"), json!(3000), json!("EVDisconnected"))
    );

    // A repeated Ended, and a late replay of an Updated, change nothing and create nothing.
    cp.call("TransactionEvent", ended).await;
    cp.call(
        "TransactionEvent",
        event(
            "Updated",
            2,
            "TX-1",
            "MeterValuePeriodic",
            json!({"offline": true, "meterValue": energy(9999.0)}),
        ),
    )
    .await;
    let after = session(&app, "CS-201").await;
    assert_eq!(
        (after["status"].clone(), after["energy_wh"].clone()),
        (json!("completed"), json!(3000))
    );

    let charger = app.charger("CS-201").await;
    assert_eq!(
        (charger["ocpp_version"].clone(), charger["online"].clone()),
        (json!("2.0.1"), json!(true))
    );
    assert_eq!(charger["connectors"][0]["status"], "Available");
}

#[tokio::test]
async fn a_transaction_first_seen_mid_way_becomes_one_session() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut cp = station(&app, "CS-LATE").await;
    // The Started event was lost: the first event we see is an offline Updated.
    cp.call(
        "TransactionEvent",
        event(
            "Updated",
            5,
            "TX-9",
            "MeterValuePeriodic",
            json!({"offline": true, "meterValue": energy(500.0)}),
        ),
    )
    .await;
    cp.call(
        "TransactionEvent",
        event(
            "Updated",
            6,
            "TX-9",
            "MeterValuePeriodic",
            json!({"meterValue": energy(800.0)}),
        ),
    )
    .await;
    cp.call(
        "TransactionEvent",
        event(
            "Ended",
            7,
            "TX-9",
            "StopAuthorized",
            json!({"meterValue": energy(900.0)}),
        ),
    )
    .await;
    let s = session(&app, "CS-LATE").await;
    assert_eq!(
        (
            s["status"].clone(),
            s["meter_start_wh"].clone(),
            s["energy_wh"].clone()
        ),
        (json!("completed"), json!(500), json!(400))
    );
}

#[tokio::test]
async fn a_remote_start_through_the_api_becomes_a_session_of_that_token() {
    let app = TestApp::spawn(Backend::Postgres).await;
    app.register_token("REMOTE", json!({"status": "Accepted"}))
        .await;
    let mut cp = station(&app, "CS-REMOTE").await;
    let request = json!({"idToken": {"idToken": "REMOTE", "type": "Central"}, "remoteStartId": 7, "evseId": 1});
    let call = tokio::join!(
        app.api(
            "POST",
            "/api/v1/chargers/CS-REMOTE/ocpp/RequestStartTransaction",
            Some(request.clone())
        ),
        async {
            let (id, action, payload) = cp.next_server_call().await;
            assert_eq!(
                (action.as_str(), &payload),
                ("RequestStartTransaction", &request)
            );
            cp.respond(&id, json!({"status": "Accepted"})).await;
        }
    );
    assert_eq!(call.0, (StatusCode::OK, json!({"status": "Accepted"})));
    let started = cp
        .call(
            "TransactionEvent",
            event(
                "Started",
                0,
                "TX-R",
                "RemoteStart",
                json!({
                    "idToken": {"idToken": "REMOTE", "type": "Central"},
                    "transactionInfo": {"transactionId": "TX-R", "remoteStartId": 7}
                }),
            ),
        )
        .await;
    assert_eq!(started["idTokenInfo"]["status"], "Accepted");
    let s = session(&app, "CS-REMOTE").await;
    assert_eq!(
        (
            s["id_token"].clone(),
            s["remote_start"].clone(),
            s["status"].clone()
        ),
        (json!("REMOTE"), json!(true), json!("active"))
    );
}

#[tokio::test]
async fn variables_round_trip_and_the_reported_device_model_is_stored() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let mut cp = station(&app, "CS-VARS").await;

    let get = json!({"getVariableData": [{"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}]});
    let answer = json!({"getVariableResult": [{"attributeStatus": "Accepted", "component": {"name": "OCPPCommCtrlr"},
        "variable": {"name": "HeartbeatInterval"}, "attributeValue": "300"}]});
    let call = tokio::join!(
        app.api(
            "POST",
            "/api/v1/chargers/CS-VARS/ocpp/GetVariables",
            Some(get)
        ),
        async {
            let (id, _, _) = cp.next_server_call().await;
            cp.respond(&id, answer.clone()).await;
        }
    );
    assert_eq!(call.0, (StatusCode::OK, answer));

    let set = json!({"setVariableData": [{"attributeValue": "60", "component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}]});
    let set_answer = json!({"setVariableResult": [{"attributeStatus": "Accepted", "component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}]});
    let call = tokio::join!(
        app.api(
            "POST",
            "/api/v1/chargers/CS-VARS/ocpp/SetVariables",
            Some(set)
        ),
        async {
            let (id, _, _) = cp.next_server_call().await;
            cp.respond(&id, set_answer.clone()).await;
        }
    );
    assert_eq!(call.0, (StatusCode::OK, set_answer));

    // GetBaseReport, then the report in two parts.
    let call = tokio::join!(
        app.api(
            "POST",
            "/api/v1/chargers/CS-VARS/ocpp/GetBaseReport",
            Some(json!({"requestId": 42, "reportBase": "FullInventory"}))
        ),
        async {
            let (id, _, _) = cp.next_server_call().await;
            cp.respond(&id, json!({"status": "Accepted"})).await;
        }
    );
    assert_eq!(call.0.0, StatusCode::OK);
    let item = |component: &str, variable: &str, value: &str| {
        json!({"component": {"name": component}, "variable": {"name": variable},
               "variableAttribute": [{"type": "Actual", "value": value, "mutability": "ReadWrite"}],
               "variableCharacteristics": {"dataType": "integer", "supportsMonitoring": false}})
    };
    cp.call(
        "NotifyReport",
        json!({"requestId": 42, "generatedAt": now(), "seqNo": 0, "tbc": true,
        "reportData": [item("OCPPCommCtrlr", "HeartbeatInterval", "60")]}),
    )
    .await;
    let (_, before) = app
        .api("GET", "/api/v1/chargers/CS-VARS/variables", None)
        .await;
    assert_eq!(
        before["variables"],
        json!([]),
        "nothing is stored before the last part: {before}"
    );
    cp.call(
        "NotifyReport",
        json!({"requestId": 42, "generatedAt": now(), "seqNo": 1,
        "reportData": [item("TxCtrlr", "EVConnectionTimeOut", "120")]}),
    )
    .await;
    let (status, model) = app
        .api("GET", "/api/v1/chargers/CS-VARS/variables", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let variables = model["variables"].as_array().unwrap();
    assert_eq!(variables.len(), 2, "{model}");
    assert_eq!(variables[0]["component"], "OCPPCommCtrlr");
    assert_eq!(variables[0]["attributes"][0]["value"], "60");
    assert_eq!(variables[1]["variable"], "EVConnectionTimeOut");
}

#[tokio::test]
async fn schema_invalid_2_0_1_frames_get_2_0_1_codes_and_the_socket_stays_open() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut cp = station(&app, "CS-BAD").await;
    let cases = [
        ("not json".to_owned(), "-1", "RpcFrameworkError"),
        ("[2, 42, \"Heartbeat\", {}]".to_owned(), "-1", "RpcFrameworkError"),
        ("[7, \"m1\", \"Heartbeat\", {}]".to_owned(), "m1", "MessageTypeNotSupported"),
        (json!([2, "m2", "FlyToTheMoon", {}]).to_string(), "m2", "NotImplemented"),
        (json!([2, "m3", "RequestStartTransaction", {}]).to_string(), "m3", "NotSupported"),
        (json!([2, "m4", "BootNotification", {"reason": "PowerUp"}]).to_string(), "m4", "OccurrenceConstraintViolation"),
        (
            json!([2, "m5", "BootNotification", {"reason": "PowerUp", "chargingStation": {"model": "M", "vendorName": "V", "colour": 1}}]).to_string(),
            "m5",
            "FormatViolation",
        ),
        (json!([2, "m6", "StatusNotification", {"timestamp": now(), "connectorStatus": "Available", "evseId": "one", "connectorId": 1}]).to_string(), "m6", "TypeConstraintViolation"),
        (json!([2, "m7", "StatusNotification", {"timestamp": now(), "connectorStatus": "Sleeping", "evseId": 1, "connectorId": 1}]).to_string(), "m7", "PropertyConstraintViolation"),
        (json!([2, "m8", "Authorize", {"idToken": {"idToken": "X".repeat(37), "type": "ISO14443"}}]).to_string(), "m8", "PropertyConstraintViolation"),
    ];
    for (frame, id, code) in cases {
        cp.send_text(&frame).await;
        let answer = cp
            .recv_frame(TIMEOUT)
            .await
            .unwrap_or_else(|c| panic!("closed after {frame}: {c:?}"));
        assert_eq!(
            (answer[0].clone(), answer[1].clone(), answer[2].clone()),
            (json!(4), json!(id), json!(code)),
            "{frame} → {answer}"
        );
    }
    cp.call("Heartbeat", json!({})).await;
}

#[tokio::test]
async fn a_1_6_and_a_2_0_1_charger_charge_side_by_side() {
    let app = TestApp::spawn(Backend::Postgres).await;
    app.register_token("T16", json!({"status": "Accepted"}))
        .await;
    app.register_token("T201", json!({"status": "Accepted"}))
        .await;
    app.register_charger("CP-16", PASSWORD).await;
    let mut old = ChargePoint::connect(app.ws_url("CP-16"), "CP-16", Some(PASSWORD)).await;
    old.boot().await;
    let mut new = station(&app, "CS-201").await;

    let tx16 = old
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "T16", "meterStart": 0, "timestamp": now()}),
        )
        .await["transactionId"]
        .clone();
    new.call(
        "TransactionEvent",
        event(
            "Started",
            0,
            "TX-SIDE",
            "Authorized",
            json!({"idToken": {"idToken": "T201", "type": "ISO14443"}, "meterValue": energy(0.0)}),
        ),
    )
    .await;
    old.call("MeterValues", json!({"connectorId": 1, "transactionId": tx16, "meterValue": [{"timestamp": now(), "sampledValue": [{"value": "1200"}]}]}))
        .await;
    new.call(
        "TransactionEvent",
        event(
            "Updated",
            1,
            "TX-SIDE",
            "MeterValuePeriodic",
            json!({"meterValue": energy(2100.0)}),
        ),
    )
    .await;

    let (_, chargers) = app.api("GET", "/api/v1/chargers", None).await;
    let versions: Vec<(Value, Value, Value)> = chargers
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["charger_id"].clone(),
                c["ocpp_version"].clone(),
                c["online"].clone(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        vec![
            (json!("CP-16"), json!("1.6"), json!(true)),
            (json!("CS-201"), json!("2.0.1"), json!(true))
        ]
    );
    eventually(Duration::from_secs(5), "both sessions charging", || async {
        let (_, active) = app.api("GET", "/api/v1/sessions?status=active", None).await;
        let mut energies: Vec<i64> = active
            .as_array()?
            .iter()
            .filter_map(|s| s["energy_wh"].as_i64())
            .collect();
        energies.sort();
        (energies == [1200, 2100]).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_offline_replay_after_a_reconnect_reaches_the_same_session() {
    let app = TestApp::spawn(Backend::Postgres).await;
    app.register_token("GOOD", json!({"status": "Accepted"}))
        .await;
    let mut cp = station(&app, "CS-REPLAY").await;
    let token = json!({"idToken": {"idToken": "GOOD", "type": "ISO14443"}});
    let mut started = token.clone();
    started["meterValue"] = energy(100.0);
    cp.call(
        "TransactionEvent",
        event("Started", 0, "TX-OFF", "Authorized", started),
    )
    .await;
    cp.close().await;

    // Offline for a while; back, it replays its queue (one event twice) and ends.
    let mut cp =
        ChargePoint::connect_201(app.ws_url("CS-REPLAY"), "CS-REPLAY", Some(PASSWORD)).await;
    let replayed = event(
        "Updated",
        1,
        "TX-OFF",
        "MeterValuePeriodic",
        json!({"offline": true, "meterValue": energy(600.0)}),
    );
    cp.call("TransactionEvent", replayed.clone()).await;
    cp.call("TransactionEvent", replayed).await;
    cp.call(
        "TransactionEvent",
        event(
            "Ended",
            2,
            "TX-OFF",
            "EVDeparted",
            json!({"offline": true, "meterValue": energy(700.0)}),
        ),
    )
    .await;
    let s = session(&app, "CS-REPLAY").await;
    assert_eq!(
        (
            s["status"].clone(),
            s["energy_wh"].clone(),
            s["id_token"].clone()
        ),
        (json!("completed"), json!(600), json!("GOOD"))
    );
}
