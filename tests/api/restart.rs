//! Restarts keep sessions, tokens and unique transaction ids: after SIGTERM (graceful,
//! everything flushed) and after SIGKILL (at most one flush window of meter values lost).

use std::time::Duration;

use serde_json::{Value, json};

use crate::charge_point::ChargePoint;
use crate::helpers::{Backend, CHARGER_PASSWORD, TestApp, eventually, migrated_sqlite, now};

async fn meter(cp: &mut ChargePoint, tx: &Value, wh: u32) {
    cp.call("MeterValues", json!({"connectorId": 1, "transactionId": tx, "meterValue": [{"timestamp": now(), "sampledValue": [{"value": wh.to_string()}]}]}))
        .await;
}

async fn energy(app: &TestApp, tx: &Value) -> Value {
    app.api("GET", &format!("/api/v1/sessions/{tx}"), None)
        .await
        .1["energy_wh"]
        .clone()
}

async fn sessions_survive(backend: Backend, signal: i32) {
    let mut app = TestApp::spawn(backend).await;
    app.register_token("T1", json!({"status": "Accepted"}))
        .await;
    app.register_token("T2", json!({"status": "Accepted"}))
        .await;
    let mut cp = app.registered_charger("CP-R").await;
    let tx = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "T1", "meterStart": 0, "timestamp": now()}),
        )
        .await["transactionId"]
        .clone();
    meter(&mut cp, &tx, 1000).await;
    if signal == libc::SIGKILL {
        // Stored within one flush window (500 ms), and then it survives a SIGKILL.
        let stored = eventually(
            Duration::from_millis(1500),
            "meter values stored",
            || async {
                let (_, s) = app
                    .api("GET", &format!("/api/v1/sessions/{tx}"), None)
                    .await;
                (s["meter_values"].as_array().map_or(0, Vec::len) == 1).then_some(())
            },
        );
        stored.await;
    }

    app.restart(signal).await;
    if signal == libc::SIGTERM {
        assert_eq!(
            cp.closed_by_server(Duration::from_secs(5)).await,
            Some(1001),
            "a proper close frame on shutdown"
        );
    }
    drop(cp);

    // The session, its figures and the tokens survived.
    let (_, session) = app
        .api("GET", &format!("/api/v1/sessions/{tx}"), None)
        .await;
    assert_eq!(session["status"], "active", "{session}");
    assert_eq!(session["energy_wh"], 1000);
    let (status, _) = app.api("GET", "/api/v1/id-tokens/T2", None).await;
    assert!(status.is_success());

    // The charger reconnects: meter values reach the rebuilt SessionActor, new ids stay unique.
    let mut cp = ChargePoint::connect(app.ws_url("CP-R"), "CP-R", Some(CHARGER_PASSWORD)).await;
    meter(&mut cp, &tx, 2500).await;
    eventually(
        Duration::from_secs(5),
        "live energy after restart",
        || async { (energy(&app, &tx).await == 2500).then_some(()) },
    )
    .await;
    let tx2 = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 2, "idTag": "T2", "meterStart": 0, "timestamp": now()}),
        )
        .await["transactionId"]
        .clone();
    assert!(
        tx2.as_i64() > tx.as_i64(),
        "transaction ids are never reused: {tx} then {tx2}"
    );
    cp.call(
        "StopTransaction",
        json!({"transactionId": tx, "meterStop": 3000, "timestamp": now()}),
    )
    .await;
    assert_eq!(energy(&app, &tx).await, 3000);
}

#[tokio::test]
async fn sigterm_restart_keeps_sessions_tokens_and_unique_ids_on_postgres() {
    sessions_survive(Backend::Postgres, libc::SIGTERM).await;
}

#[tokio::test]
async fn sigkill_restart_keeps_sessions_tokens_and_unique_ids_on_postgres() {
    sessions_survive(Backend::Postgres, libc::SIGKILL).await;
}

#[tokio::test]
async fn sigterm_restart_keeps_sessions_tokens_and_unique_ids_on_sqlite() {
    sessions_survive(Backend::Sqlite, libc::SIGTERM).await;
}

#[tokio::test]
async fn sigkill_restart_keeps_sessions_tokens_and_unique_ids_on_sqlite() {
    sessions_survive(Backend::Sqlite, libc::SIGKILL).await;
}

#[tokio::test]
async fn sigterm_flushes_meter_values_that_arrived_just_before() {
    // A long flush window: only the shutdown flush can have written the last values.
    let mut app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("JUCR__PERSISTENCE__FLUSH_INTERVAL_MS", "60000")],
    )
    .await;
    app.register_token("T1", json!({"status": "Accepted"}))
        .await;
    let mut cp = app.registered_charger("CP-F").await;
    let tx = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "T1", "meterStart": 0, "timestamp": now()}),
        )
        .await["transactionId"]
        .clone();
    meter(&mut cp, &tx, 777).await;
    let took = app.stop(libc::SIGTERM).await;
    assert!(
        took < Duration::from_secs(10),
        "exits within the grace period, took {took:?}"
    );
    drop(cp);
    app.restart_stopped().await;
    let (_, session) = app
        .api("GET", &format!("/api/v1/sessions/{tx}"), None)
        .await;
    assert_eq!(session["energy_wh"], 777);
    assert_eq!(session["meter_values"].as_array().map(Vec::len), Some(1));
}

/// The embedded store copies its write-ahead log back into the database file while it
/// runs, beside the writer, from a thread at the lowest CPU priority (ADR 0020).
#[tokio::test]
async fn the_embedded_store_checkpoints_its_log_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = jucr::persistence::sqlite_file(dir.path());
    let wal = jucr::persistence::sqlite_wal_file(dir.path());
    let _store = migrated_sqlite(&path).await;
    // The migrations ran on a reading connection, which would checkpoint by itself past
    // SQLite's default of 1,000 pages: below that, only the checkpointer copies them.
    let page = 4096;
    let frames = std::fs::metadata(&wal).map_or(0, |m| m.len()) / (page + 24);
    assert!(
        (1..1000).contains(&frames),
        "the migrations leave between 1 and 999 pages in the log, not {frames}"
    );
    eventually(
        Duration::from_secs(20),
        "the migrated schema in the database file",
        || async {
            let size = std::fs::metadata(&path).map_or(0, |m| m.len());
            (size > 10 * page).then_some(())
        },
    )
    .await;
    assert!(
        std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0),
        "the store is still open in WAL mode"
    );
    #[cfg(target_os = "linux")]
    {
        let nice = checkpoint_thread_nice().expect("a sqlite-ckpt thread in this process");
        assert_eq!(
            nice, 19,
            "the checkpoint thread runs at the lowest priority"
        );
    }
}

/// The embedded server exports the size of its write-ahead log, so that an operator
/// sees checkpoints falling behind.
#[tokio::test]
async fn the_embedded_server_exports_its_log_size() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let data_dir = app.dir.path().join("data");
    let wal = std::fs::metadata(jucr::persistence::sqlite_wal_file(&data_dir))
        .expect("the log beside the database")
        .len();
    assert!(wal > 0, "the migrations went through the log");
    eventually(
        Duration::from_secs(20),
        "the log's size in the metrics",
        || async { (app.metric("jucr_persistence_sqlite_wal_bytes").await > 0.0).then_some(()) },
    )
    .await;
}

/// The nice value of this process's SQLite checkpoint thread, from /proc.
#[cfg(target_os = "linux")]
fn checkpoint_thread_nice() -> Option<i64> {
    std::fs::read_dir("/proc/self/task").ok()?.find_map(|task| {
        let task = task.ok()?.path();
        let name = std::fs::read_to_string(task.join("comm")).ok()?;
        if !name.starts_with("sqlite-ckpt-") {
            return None;
        }
        let stat = std::fs::read_to_string(task.join("stat")).ok()?;
        // Fields after the name in parentheses start at the third; nice is the 19th.
        let (_, rest) = stat.rsplit_once(") ")?;
        rest.split_whitespace().nth(16)?.parse().ok()
    })
}
