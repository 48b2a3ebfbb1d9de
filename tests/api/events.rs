//! Domain events: written to the outbox with the session changes they describe,
//! relayed, and shown by the operator API.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, TestApp, eventually, now};

#[tokio::test]
async fn a_session_emits_one_started_and_one_ended_event_and_the_outbox_drains() {
    let app = TestApp::spawn(Backend::Postgres).await;
    app.register_token("T1", json!({"status": "Accepted"}))
        .await;
    let mut cp = app.registered_charger("CP-EV").await;
    let tx = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "T1", "meterStart": 0, "timestamp": now()}),
        )
        .await["transactionId"]
        .clone();
    let stop = json!({"transactionId": tx, "meterStop": 4200, "timestamp": now()});
    cp.call("StopTransaction", stop.clone()).await;
    cp.call("StopTransaction", stop).await;

    let ended = eventually(
        Duration::from_secs(5),
        "SESSION_ENDED published",
        || async {
            let (_, events) = app
                .api("GET", "/api/v1/events?type=SESSION_ENDED", None)
                .await;
            let events = events.as_array()?.clone();
            events
                .iter()
                .all(|e| e["published_at"].is_string())
                .then_some(events)
        },
    )
    .await;
    assert_eq!(
        ended.len(),
        1,
        "one end, however often the charger says so: {ended:?}"
    );
    let event = &ended[0];
    assert_eq!(
        (event["type"].clone(), event["version"].clone()),
        (json!("SESSION_ENDED"), json!(1))
    );
    assert_eq!(event["aggregate_id"], tx.to_string());
    assert_eq!(event["payload"]["energy_wh"], 4200);
    assert!(event["id"].is_string() && event["occurred_at"].is_string());

    let (_, all) = app.api("GET", "/api/v1/events", None).await;
    let types: Vec<_> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].clone())
        .collect();
    assert_eq!(
        types,
        [json!("SESSION_ENDED"), json!("SESSION_STARTED")],
        "newest first"
    );
    eventually(Duration::from_secs(5), "an empty outbox", || async {
        (app.metric("jucr_outbox_pending_events").await == 0.0).then_some(())
    })
    .await;
    assert_eq!(
        app.metric("jucr_events_published_total{type=\"SESSION_ENDED\"}")
            .await,
        1.0
    );

    let (status, body) = app.api("GET", "/api/v1/events?type=SOMETHING", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}
