//! A charger that stops answering pings is shown offline within two ping intervals.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{Backend, TestApp, eventually};

#[tokio::test]
async fn a_charger_that_stops_answering_pings_goes_offline_within_two_intervals() {
    let app = TestApp::spawn_with(
        Backend::Postgres,
        &[("JUCR__OCPP__PING_INTERVAL_SECS", "1")],
    )
    .await;
    let mut cp = app.registered_charger("CP-SILENT").await;
    cp.call("Heartbeat", json!({})).await;
    assert_eq!(app.charger("CP-SILENT").await["online"], true);

    // A client answers pings only while it reads: from now on this one never reads.
    let silent_since = Instant::now();
    eventually(
        Duration::from_secs(10),
        "the charger shown offline",
        || async { (app.charger("CP-SILENT").await["online"] == false).then_some(()) },
    )
    .await;
    let took = silent_since.elapsed();
    assert!(
        took <= Duration::from_millis(2000 + 500),
        "offline after {took:?}, more than two 1 s intervals"
    );
    assert_eq!(app.metric("jucr_ocpp_connected_chargers").await, 0.0);
    drop(cp);
}

#[tokio::test]
async fn a_charger_that_answers_pings_stays_online() {
    let app =
        TestApp::spawn_with(Backend::Sqlite, &[("JUCR__OCPP__PING_INTERVAL_SECS", "1")]).await;
    let mut cp = app.registered_charger("CP-ALIVE").await;
    // Reading (which answers pings) across several intervals keeps it online.
    cp.call("Heartbeat", json!({})).await;
    // Only answering pings (it sends nothing) across four intervals keeps it online.
    cp.idle(Duration::from_secs(4)).await;
    assert_eq!(app.charger("CP-ALIVE").await["online"], true);
}
