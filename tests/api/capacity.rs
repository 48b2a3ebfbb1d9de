//! Running out of file descriptors (each charger's socket is one): the server says so
//! plainly, keeps serving the chargers it has, and takes new ones once some leave.

use std::time::Duration;

use serde_json::json;

use crate::charge_point::{ChargePoint, Connect};
use crate::helpers::{Backend, TestApp, eventually};

async fn connect(app: &TestApp, id: &str) -> Option<ChargePoint> {
    let attempt = ChargePoint::try_connect(Connect {
        url: app.ws_url(id),
        id,
        password: None,
        protocols: "ocpp1.6",
        tls: None,
    });
    // Out of descriptors, the server cannot accept: the handshake never completes.
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(Ok(cp)) => Some(cp),
        _ => None,
    }
}

#[tokio::test]
async fn out_of_file_descriptors_is_said_and_connected_chargers_are_served_on() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("JUCR_TEST_NOFILE", "160"),
            ("JUCR__OCPP__UNKNOWN_CHARGERS", "accept"),
        ],
    )
    .await;
    let mut fleet = Vec::new();
    for i in 0..200 {
        match connect(&app, &format!("FD-{i:03}")).await {
            Some(mut cp) => {
                cp.boot().await;
                fleet.push(cp);
            }
            None => break,
        }
    }
    assert!(
        (20..200).contains(&fleet.len()),
        "{} chargers connected under a limit of 160 files",
        fleet.len()
    );
    eventually(
        Duration::from_secs(10),
        "the server to say it ran out",
        || async { app.log().contains("out of file descriptors").then_some(()) },
    )
    .await;
    // The chargers it has are served on.
    for cp in fleet.iter_mut() {
        let answer = cp.call("Heartbeat", json!({})).await;
        assert!(answer["currentTime"].is_string(), "{answer}");
    }
    // Some leave: new ones get in again.
    for cp in fleet.drain(..20) {
        cp.close().await;
    }
    let mut again = eventually(
        Duration::from_secs(20),
        "a new charger to get in",
        || async { connect(&app, "FD-LATE").await },
    )
    .await;
    again.boot().await;
}
