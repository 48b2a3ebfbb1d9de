//! Billing through the real binary: an ended session becomes one invoice and one
//! payment, whatever happens in between (duplicate deliveries, a crash mid-way, a
//! declined card, a gateway that does not answer); tariffs and plans through the API.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::charge_point::ChargePoint;
use crate::helpers::{Backend, CHARGER_PASSWORD, TestApp, eventually, now, time_in};
use crate::ocpp201::{energy, event, station};

const WAIT: Duration = Duration::from_secs(15);

/// Pay as you go: 0.595 EUR/kWh, 0.50 per session, 0.10/min idle after 30 min, 19 % VAT.
pub async fn payg_default(app: &TestApp) -> String {
    let (status, body) = app
        .api(
            "POST",
            "/api/v1/tariffs",
            Some(json!({
                "name": "Pay as you go", "currency": "EUR", "vat_basis_points": 1900,
                "kind": "pay_as_you_go", "price_per_kwh_milli": 59500, "session_fee": 50,
                "idle_fee_per_minute": 10, "idle_grace_minutes": 30, "default": true
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["tariff_id"].as_str().unwrap().to_owned()
}

/// A driver with a card (a sandbox token) and an RFID card `rfid`; returns the user id.
pub async fn driver(app: &TestApp, email: &str, card: &str, rfid: &str) -> String {
    let (status, user) = app
        .api(
            "POST",
            "/api/v1/users",
            Some(json!({"email": email, "password": "driver-password-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    let id = user["user_id"].as_str().unwrap().to_owned();
    add_card(app, &id, card).await;
    app.register_token(rfid, json!({"status": "Accepted", "user_id": id}))
        .await;
    id
}

async fn add_card(app: &TestApp, user: &str, card: &str) {
    let (status, method) = app
        .api(
            "POST",
            &format!("/api/v1/users/{user}/payment-methods"),
            Some(json!({"gateway_token": card})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{method}");
}

/// One 1.6 session of `wh` on a fresh charger `cp`; returns its transaction id.
pub async fn charge(app: &TestApp, cp: &str, rfid: &str, wh: i64) -> i64 {
    let mut charger = app.registered_charger(cp).await;
    let tx = charger
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": rfid, "meterStart": 0, "timestamp": now()}),
        )
        .await["transactionId"]
        .as_i64()
        .expect("a transaction id");
    charger
        .call(
            "StopTransaction",
            json!({"transactionId": tx, "meterStop": wh, "timestamp": now()}),
        )
        .await;
    tx
}

pub async fn invoices_of(app: &TestApp, user: &str) -> Vec<Value> {
    let (status, body) = app
        .api("GET", &format!("/api/v1/invoices?user_id={user}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().unwrap().clone()
}

pub async fn events(app: &TestApp, event_type: &str) -> Vec<Value> {
    let (status, body) = app
        .api("GET", &format!("/api/v1/events?type={event_type}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().unwrap().clone()
}

/// Settings that make the app abort at `point` (test-only fault injection).
fn crashing_at(point: &str) -> [(&'static str, &str); 2] {
    [
        ("JUCR__TESTING__FAULT_INJECTION", "true"),
        ("JUCR__TESTING__CRASH_POINT", point),
    ]
}

/// Waits for the app started with [`crashing_at`] to abort there.
async fn aborted_at(app: &mut TestApp, point: &str) {
    let status = app.exited(WAIT).await;
    assert!(
        !status.success(),
        "the process aborted at {point}: {status}"
    );
    assert!(app.log().contains(&format!("crashing at {point}")));
}

/// The invoice with its payment once the payment has settled (completed or failed).
pub async fn settled_invoice(app: &TestApp, user: &str) -> Value {
    eventually(WAIT, "an invoice with a settled payment", || async {
        let invoice = invoices_of(app, user).await.into_iter().next()?;
        let (_, full) = app
            .api(
                "GET",
                &format!("/api/v1/invoices/{}", invoice["invoice_id"].as_str()?),
                None,
            )
            .await;
        matches!(
            full["payment"]["status"].as_str(),
            Some("completed" | "failed")
        )
        .then_some(full)
    })
    .await
}

/// A 1.6 session on `cp` whose register stops rising 40 minutes before now: started an
/// hour ago, 12,345 Wh from 40 minutes ago on, its readings stored; it is not stopped.
async fn idle_session(app: &TestApp, cp: &str, rfid: &str) -> (ChargePoint, i64) {
    let mut charger = app.registered_charger(cp).await;
    let minutes_ago = |m: i64| time_in(-m * 60);
    let tx = charger
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": rfid, "meterStart": 0, "timestamp": minutes_ago(60)}),
        )
        .await["transactionId"]
        .as_i64()
        .expect("a transaction id");
    // Full 40 minutes before the end; the later readings show nothing more drawn.
    let readings = [(50, "5000"), (40, "12345"), (30, "12345"), (20, "12345")];
    for (ago, wh) in readings {
        charger
            .call(
                "MeterValues",
                json!({"connectorId": 1, "transactionId": tx, "meterValue": [{"timestamp": minutes_ago(ago),
                    "sampledValue": [{"value": wh, "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]}]}),
            )
            .await;
    }
    eventually(WAIT, "the readings stored", || async {
        let (_, session) = app
            .api("GET", &format!("/api/v1/sessions/{tx}"), None)
            .await;
        (session["meter_values"].as_array()?.len() == readings.len()).then_some(())
    })
    .await;
    (charger, tx)
}

/// The stop of an [`idle_session`], at the last reading's value.
fn idle_stop(tx: i64) -> Value {
    json!({"transactionId": tx, "meterStop": 12_345, "timestamp": now()})
}

/// The invoice's lines as (description, amount).
fn lines(invoice: &Value) -> Vec<(String, i64)> {
    invoice["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["description"].as_str().unwrap().to_owned(),
                l["amount"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn assert_idle_fee_of_ten_minutes(invoice: &Value) {
    let lines = lines(invoice);
    assert_eq!(
        lines.last(),
        Some(&("Idle fee: 10 min after 30 min grace".to_owned(), 100)),
        "40 idle minutes, 30 of them free, at 0.10: {lines:?}"
    );
}

#[tokio::test]
async fn the_idle_fee_counts_from_the_first_reading_of_the_final_energy() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    payg_default(&app).await;
    let user = driver(&app, "idle@example.org", "tok_visa", "RFID-IDLE").await;
    let (mut charger, tx) = idle_session(&app, "CP-IDLE", "RFID-IDLE").await;
    charger.call("StopTransaction", idle_stop(tx)).await;
    assert_idle_fee_of_ten_minutes(&settled_invoice(&app, &user).await);
}

/// A session that ended before the idle clock was kept on the session row (ADR 0023),
/// billed after the upgrade: billing replays the clock from the session's samples.
#[tokio::test]
async fn a_session_ended_without_an_idle_clock_is_billed_from_its_samples() {
    billed_after_rewriting_its_row(
        "legacy",
        "UPDATE session SET idle_since = NULL WHERE session_id = $1 AND idle_since IS NOT NULL",
    )
    .await;
}

/// A session whose clock was set at its first reading, which a replica that predates
/// the clock then ended: the energy moved on, the clock stayed (50 idle minutes if it
/// were believed). Billing replays it from the samples.
#[tokio::test]
async fn a_clock_left_behind_by_an_older_replica_is_replayed_from_the_samples() {
    billed_after_rewriting_its_row(
        "stale",
        "UPDATE session SET idle_energy_wh = 5000 - meter_start_wh, idle_since = ( \
             SELECT min(sampled_at) FROM ( \
                 SELECT sampled_at FROM meter_sample WHERE session_id = $1 \
                 UNION ALL SELECT sampled_at FROM meter_sample_staged WHERE session_id = $1)) \
         WHERE session_id = $1 AND idle_energy_wh = energy_wh",
    )
    .await;
}

/// A running session whose clock an older replica left behind (its energy moved on),
/// rebuilt after a restart: the store withholds the clock, the session's actor replays
/// it from the samples, so the idle time before the restart is billed (without the
/// replay the end would start the clock, and there would be no idle fee).
#[tokio::test]
async fn a_running_session_rebuilt_without_its_clock_gets_it_from_its_samples() {
    let mut app = TestApp::spawn(Backend::Sqlite).await;
    payg_default(&app).await;
    let user = driver(&app, "rebuilt@example.org", "tok_visa", "RFID-REBUILT").await;
    let (charger, tx) = idle_session(&app, "CP-REBUILT", "RFID-REBUILT").await;
    drop(charger);
    app.stop(libc::SIGTERM).await;

    let mut db = app
        .sqlite_connection()
        .await
        .expect("opening the stopped app's database");
    let rewritten = sqlx::query(
        "UPDATE session SET idle_energy_wh = 5000 - meter_start_wh \
         WHERE session_id = $1 AND status = 'active' AND idle_energy_wh = energy_wh",
    )
    .bind(tx)
    .execute(&mut db)
    .await
    .expect("rewriting the session row");
    assert_eq!(rewritten.rows_affected(), 1, "the progress wrote its clock");
    db.close().await.expect("closing the database");

    app.restart_stopped().await;
    let mut charger = ChargePoint::connect(
        app.ws_url("CP-REBUILT"),
        "CP-REBUILT",
        Some(CHARGER_PASSWORD),
    )
    .await;
    charger.call("StopTransaction", idle_stop(tx)).await;
    assert_idle_fee_of_ten_minutes(&settled_invoice(&app, &user).await);
}

/// An [`idle_session`] stopped, the app aborted before billing takes it up, its session
/// row rewritten by `sql` (`$1` the session id) as another release would have left it,
/// the app restarted: the invoice has the 10-minute idle fee of the samples.
async fn billed_after_rewriting_its_row(name: &str, sql: &'static str) {
    let mut app =
        TestApp::spawn_with(Backend::Sqlite, &crashing_at("billing.before_invoice")).await;
    payg_default(&app).await;
    let rfid = format!("RFID-{name}");
    let user = driver(&app, &format!("{name}@example.org"), "tok_visa", &rfid).await;
    let (mut charger, tx) = idle_session(&app, &format!("CP-{name}"), &rfid).await;
    // Its answer may not come: the process aborts once billing takes the session up.
    charger
        .send_text(&json!([2, "stop-1", "StopTransaction", idle_stop(tx)]).to_string())
        .await;
    aborted_at(&mut app, "billing.before_invoice").await;

    let mut db = app
        .sqlite_connection()
        .await
        .expect("opening the stopped app's database");
    let rewritten = sqlx::query(sql)
        .bind(tx)
        .execute(&mut db)
        .await
        .expect("rewriting the session row");
    assert_eq!(
        rewritten.rows_affected(),
        1,
        "the session's end set its clock"
    );
    db.close().await.expect("closing the database");

    app.set_setting("JUCR__TESTING__CRASH_POINT", None);
    app.restart_stopped().await;
    assert_idle_fee_of_ten_minutes(&settled_invoice(&app, &user).await);
}

#[tokio::test]
async fn an_ended_session_is_invoiced_and_charged_once() {
    let app = TestApp::spawn(Backend::Postgres).await;
    payg_default(&app).await;
    let user = driver(&app, "ada@example.org", "tok_visa", "RFID-ADA").await;

    let tx = charge(&app, "CP-B1", "RFID-ADA", 12_345).await;

    let invoice = settled_invoice(&app, &user).await;
    let year = chrono::Utc::now().format("%Y").to_string();
    assert_eq!(invoice["invoice_number"], format!("{year}-000001"));
    assert_eq!(invoice["session_id"], tx);
    assert_eq!(invoice["kind"], "session");
    let lines: Vec<i64> = invoice["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(
        lines,
        [735, 50],
        "12.345 kWh at 0.595 = 7.345275 → 7.35; session fee 0.50"
    );
    assert_eq!(
        (
            invoice["net"].clone(),
            invoice["vat"].clone(),
            invoice["gross"].clone()
        ),
        (
            json!({"amount": 785, "currency": "EUR"}),
            json!({"amount": 149, "currency": "EUR"}),
            json!({"amount": 934, "currency": "EUR"})
        )
    );
    assert_eq!(invoice["status"], "paid");
    let payment = &invoice["payment"];
    assert_eq!(payment["status"], "completed");
    assert_eq!(payment["amount"], json!({"amount": 934, "currency": "EUR"}));
    assert_eq!(payment["attempts"], 1);
    assert!(
        payment["gateway_charge_id"]
            .as_str()
            .unwrap()
            .starts_with("ch_sandbox_")
    );

    eventually(WAIT, "the payment event published", || async {
        (events(&app, "PAYMENT_COMPLETED").await.len() == 1).then_some(())
    })
    .await;
    let generated = events(&app, "INVOICE_GENERATED").await;
    assert_eq!(generated.len(), 1, "{generated:?}");
    assert_eq!(generated[0]["aggregate_id"], invoice["invoice_id"]);
    assert!(events(&app, "PAYMENT_FAILED").await.is_empty());
    assert_eq!(
        app.metric("jucr_billing_sessions_total{outcome=\"invoiced\"}")
            .await,
        1.0
    );

    // A token that belongs to nobody charges, but nobody is billed.
    app.register_token("RFID-ANON", json!({"status": "Accepted"}))
        .await;
    charge(&app, "CP-B2", "RFID-ANON", 5_000).await;
    eventually(WAIT, "the anonymous session seen by billing", || async {
        let seen = app
            .metrics()
            .await
            .contains("jucr_billing_sessions_total{outcome=\"no_account\"} 1");
        seen.then_some(())
    })
    .await;
    let (_, all) = app.api("GET", "/api/v1/invoices", None).await;
    assert_eq!(all.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_declined_card_fails_the_payment_and_the_dunning_retry_uses_a_new_card() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("JUCR__BILLING__DECLINE_RETRY_SECS", "2"),
            ("JUCR__BILLING__SCHEDULE_INTERVAL_MS", "100"),
        ],
    )
    .await;
    payg_default(&app).await;
    let fixes = driver(&app, "fixes@example.org", "tok_chargeDeclined", "RFID-FIX").await;
    let stuck = driver(&app, "stuck@example.org", "tok_chargeDeclined", "RFID-STK").await;

    charge(&app, "CP-D1", "RFID-FIX", 10_000).await;
    let failed = eventually(WAIT, "PAYMENT_FAILED for the first driver", || async {
        events(&app, "PAYMENT_FAILED")
            .await
            .into_iter()
            .find(|e| e["payload"]["user_id"] == fixes.as_str())
    })
    .await;
    assert_eq!(failed["payload"]["will_retry"], true, "{failed}");
    assert_eq!(failed["payload"]["declines"], 1);
    assert!(
        failed["payload"]["last_error"]
            .as_str()
            .unwrap()
            .contains("declined")
    );
    // The driver adds a working card before the retry.
    add_card(&app, &fixes, "tok_visa").await;
    let invoice = settled_invoice(&app, &fixes).await;
    assert_eq!(invoice["payment"]["status"], "completed", "{invoice}");
    assert_eq!(invoice["payment"]["attempts"], 2);
    assert_eq!(invoice["status"], "paid");

    // Without a new card the retry is declined again, and that is final.
    charge(&app, "CP-D2", "RFID-STK", 10_000).await;
    let invoice = settled_invoice(&app, &stuck).await;
    assert_eq!(invoice["payment"]["status"], "failed", "{invoice}");
    assert_eq!(
        (
            invoice["payment"]["attempts"].clone(),
            invoice["payment"]["declines"].clone()
        ),
        (json!(2), json!(2))
    );
    assert_eq!(invoice["status"], "payment_failed");
    let stuck_failures: Vec<Value> = eventually(WAIT, "both failures published", || async {
        let all: Vec<Value> = events(&app, "PAYMENT_FAILED")
            .await
            .into_iter()
            .filter(|e| e["payload"]["user_id"] == stuck.as_str())
            .collect();
        (all.len() == 2).then_some(all)
    })
    .await;
    assert_eq!(
        stuck_failures[0]["payload"]["will_retry"], false,
        "newest first: the last failure is final"
    );
    assert_eq!(stuck_failures[1]["payload"]["will_retry"], true);
    assert_eq!(events(&app, "PAYMENT_COMPLETED").await.len(), 1);
}

#[tokio::test]
async fn a_gateway_outage_is_reported_after_the_quiet_retries_and_dunned_like_a_decline() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("JUCR__BILLING__GATEWAY_TIMEOUT_MS", "200"),
            ("JUCR__BILLING__TRANSIENT_RETRY_MS", "100"),
            ("JUCR__BILLING__TRANSIENT_ATTEMPTS", "2"),
            ("JUCR__BILLING__DECLINE_RETRY_SECS", "1"),
            ("JUCR__BILLING__SCHEDULE_INTERVAL_MS", "100"),
        ],
    )
    .await;
    payg_default(&app).await;
    let user = driver(&app, "outage@example.org", "tok_timeout", "RFID-OUT").await;
    charge(&app, "CP-O1", "RFID-OUT", 2_000).await;

    let invoice = settled_invoice(&app, &user).await;
    let payment = &invoice["payment"];
    assert_eq!(payment["status"], "failed", "{invoice}");
    assert_eq!(
        (payment["attempts"].clone(), payment["declines"].clone()),
        (json!(4), json!(0)),
        "two quiet attempts, reported, two more after the dunning wait, reported for good"
    );
    assert_eq!(payment["reported_failures"], 2);
    let failures = eventually(WAIT, "both failures published", || async {
        let all = events(&app, "PAYMENT_FAILED").await;
        (all.len() == 2).then_some(all)
    })
    .await;
    assert_eq!(failures[1]["payload"]["will_retry"], true);
    assert_eq!(failures[0]["payload"]["will_retry"], false);
    assert!(
        failures[0]["payload"]["last_error"]
            .as_str()
            .unwrap()
            .contains("did not answer")
    );
}

#[tokio::test]
async fn a_gateway_that_does_not_answer_is_retried_quietly_until_the_charge_goes_through() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("JUCR__BILLING__GATEWAY_TIMEOUT_MS", "300"),
            ("JUCR__BILLING__TRANSIENT_RETRY_MS", "100"),
            ("JUCR__BILLING__SCHEDULE_INTERVAL_MS", "100"),
        ],
    )
    .await;
    payg_default(&app).await;
    let user = driver(&app, "slow@example.org", "tok_timeoutOnce", "RFID-SLOW").await;
    charge(&app, "CP-T1", "RFID-SLOW", 2_000).await;

    let invoice = settled_invoice(&app, &user).await;
    assert_eq!(invoice["payment"]["status"], "completed", "{invoice}");
    assert_eq!(invoice["payment"]["attempts"], 2);
    assert_eq!(invoice["payment"]["declines"], 0);
    assert_eq!(
        app.metric("jucr_payment_attempts_total{outcome=\"unavailable\"}")
            .await,
        1.0
    );
    eventually(WAIT, "PAYMENT_COMPLETED published", || async {
        (events(&app, "PAYMENT_COMPLETED").await.len() == 1).then_some(())
    })
    .await;
    assert!(
        events(&app, "PAYMENT_FAILED").await.is_empty(),
        "a transient failure that recovers is not reported"
    );
}

/// Billing aborts the process after storing an invoice, before its event is
/// acknowledged; after a restart the session has one invoice and one payment.
async fn crash_after_the_invoice_then_restart(backend: Backend, bus: &[(&str, &str)]) {
    let mut settings = crashing_at("billing.after_invoice").to_vec();
    settings.extend_from_slice(bus);
    let mut app = TestApp::spawn_with(backend, &settings).await;
    payg_default(&app).await;
    let user = driver(&app, "crash@example.org", "tok_visa", "RFID-CRASH").await;
    charge(&app, "CP-C1", "RFID-CRASH", 7_000).await;

    aborted_at(&mut app, "billing.after_invoice").await;

    app.set_setting("JUCR__TESTING__CRASH_POINT", None);
    app.restart_stopped().await;
    let invoice = settled_invoice(&app, &user).await;
    assert_eq!(invoice["payment"]["status"], "completed");
    eventually(WAIT, "the outbox relayed after the restart", || async {
        (app.metric("jucr_outbox_pending_events").await == 0.0
            && events(&app, "PAYMENT_COMPLETED").await.len() == 1)
            .then_some(())
    })
    .await;
    assert_eq!(invoices_of(&app, &user).await.len(), 1, "one invoice");
    assert_eq!(events(&app, "INVOICE_GENERATED").await.len(), 1);
    assert_eq!(events(&app, "SESSION_ENDED").await.len(), 1);
}

#[tokio::test]
async fn a_crash_after_the_invoice_is_stored_still_bills_once() {
    crash_after_the_invoice_then_restart(Backend::Sqlite, &[]).await;
}

#[tokio::test]
async fn with_rabbitmq_a_crash_after_the_invoice_is_stored_still_bills_once() {
    // The unacknowledged SESSION_ENDED goes back to the queue when the process dies and
    // is delivered again after the restart; the receipt makes it a no-op.
    let vhost = crate::amqp::TestVhost::create();
    crash_after_the_invoice_then_restart(
        Backend::Postgres,
        &[
            ("JUCR__EVENTS__BUS", "rabbitmq"),
            ("JUCR__EVENTS__AMQP_URL", &vhost.url),
        ],
    )
    .await;
}

#[tokio::test]
async fn tariffs_overrides_and_plans_are_managed_through_the_api() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (status, flat) = app
        .api(
            "POST",
            "/api/v1/tariffs",
            Some(json!({
                "name": "Flat 49", "currency": "EUR", "vat_basis_points": 1900, "kind": "flat_rate",
                "monthly_fee": 4900, "included_energy_wh": 300000, "price_per_kwh_milli": 45000
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{flat}");
    let flat_id = flat["tariff_id"].as_str().unwrap().to_owned();
    for (bad, why) in [
        (
            json!({"name": "x", "currency": "EUR", "vat_basis_points": 1900, "kind": "gratis"}),
            "unknown kind",
        ),
        (
            json!({"name": "x", "currency": "EURO", "vat_basis_points": 0, "kind": "pay_as_you_go",
                "price_per_kwh_milli": 1, "session_fee": 0, "idle_fee_per_minute": 0, "idle_grace_minutes": 0}),
            "currency",
        ),
        (
            json!({"name": "x", "currency": "EUR", "vat_basis_points": 20000, "kind": "pay_as_you_go",
                "price_per_kwh_milli": 1, "session_fee": 0, "idle_fee_per_minute": 0, "idle_grace_minutes": 0}),
            "VAT over 100 %",
        ),
        (
            json!({"name": "x", "currency": "EUR", "vat_basis_points": 0, "kind": "pay_as_you_go",
                "price_per_kwh_milli": -1, "session_fee": 0, "idle_fee_per_minute": 0, "idle_grace_minutes": 0}),
            "negative price",
        ),
    ] {
        let (status, body) = app.api("POST", "/api/v1/tariffs", Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {body}");
        assert!(body["error"]["message"].is_string());
    }
    let (status, _) = app
        .api(
            "POST",
            "/api/v1/tariffs",
            Some(json!({
                "name": "Flat 49", "currency": "EUR", "vat_basis_points": 1900, "kind": "flat_rate",
                "monthly_fee": 1, "included_energy_wh": 1, "price_per_kwh_milli": 1
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "names are unique");
    let (_, listed) = app.api("GET", "/api/v1/tariffs", None).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);

    let user = driver(&app, "flat@example.org", "tok_visa", "RFID-FLAT").await;
    let plan = json!({"tariff_id": flat_id});
    let (status, body) = app
        .api(
            "PUT",
            &format!("/api/v1/users/{user}/plan"),
            Some(plan.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["subscription_invoices_issued"], 1,
        "the first month at once"
    );
    let (_, again) = app
        .api("PUT", &format!("/api/v1/users/{user}/plan"), Some(plan))
        .await;
    assert_eq!(again["subscription_invoices_issued"], 0, "once a month");
    let (status, body) = app
        .api(
            "PUT",
            &format!("/api/v1/users/{}/plan", uuid::Uuid::new_v4()),
            Some(json!({"tariff_id": flat_id})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = app
        .api(
            "PUT",
            &format!("/api/v1/users/{user}/plan"),
            Some(json!({"tariff_id": uuid::Uuid::new_v4()})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // A session within the fair-use cap costs nothing: paid on issue, no payment.
    charge(&app, "CP-F1", "RFID-FLAT", 40_000).await;
    let invoices = eventually(WAIT, "the session invoice", || async {
        let all = invoices_of(&app, &user).await;
        (all.len() == 2).then_some(all)
    })
    .await;
    let session = invoices.iter().find(|i| i["kind"] == "session").unwrap();
    assert_eq!(session["gross"]["amount"], 0);
    assert_eq!(session["status"], "paid");
    let month = invoices
        .iter()
        .find(|i| i["kind"] == "subscription")
        .unwrap();
    assert_eq!(month["gross"]["amount"], 5831, "49.00 + 19 % VAT");
    let subscription = settled_invoice_by_id(&app, month["invoice_id"].as_str().unwrap()).await;
    assert_eq!(subscription["payment"]["status"], "completed");

    // A charger's own tariff wins over the plan.
    let (status, site) = app
        .api(
            "POST",
            "/api/v1/tariffs",
            Some(json!({
                "name": "Site", "currency": "EUR", "vat_basis_points": 1900, "kind": "pay_as_you_go",
                "price_per_kwh_milli": 100000, "session_fee": 0, "idle_fee_per_minute": 0, "idle_grace_minutes": 0
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{site}");
    app.register_charger("CP-F2", CHARGER_PASSWORD).await;
    let (status, body) = app
        .api(
            "PUT",
            "/api/v1/chargers/CP-F2/tariff",
            Some(json!({"tariff_id": site["tariff_id"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    charge(&app, "CP-F2", "RFID-FLAT", 1_000).await;
    let site_invoice = eventually(WAIT, "the site invoice", || async {
        invoices_of(&app, &user)
            .await
            .into_iter()
            .find(|i| i["tariff_name"] == "Site")
    })
    .await;
    assert_eq!(site_invoice["gross"]["amount"], 119, "1 kWh at 1.00 + VAT");
    let (status, _) = app
        .api(
            "PUT",
            "/api/v1/chargers/NOPE/tariff",
            Some(json!({"tariff_id": null})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .api(
            "GET",
            &format!("/api/v1/invoices/{}", uuid::Uuid::new_v4()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.api("GET", "/api/v1/invoices/not-a-uuid", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = app
        .api(
            "POST",
            &format!("/api/v1/users/{user}/payment-methods"),
            Some(json!({"gateway_token": "4242424242424242"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "card numbers are refused: {body}"
    );

    // Updating a token without naming its owner keeps the owner; null removes it.
    app.register_token("RFID-FLAT", json!({"status": "Blocked"}))
        .await;
    let (_, token) = app.api("GET", "/api/v1/id-tokens/RFID-FLAT", None).await;
    assert_eq!(
        (token["status"].clone(), token["user_id"].clone()),
        (json!("Blocked"), json!(user))
    );
    app.register_token("RFID-FLAT", json!({"status": "Accepted", "user_id": null}))
        .await;
    let (_, token) = app.api("GET", "/api/v1/id-tokens/RFID-FLAT", None).await;
    assert!(token["user_id"].is_null(), "{token}");
    let (status, body) = app
        .api(
            "PUT",
            "/api/v1/id-tokens/RFID-X",
            Some(json!({"status": "Accepted", "user_id": uuid::Uuid::new_v4()})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "an unknown owner: {body}"
    );
}

async fn settled_invoice_by_id(app: &TestApp, id: &str) -> Value {
    eventually(WAIT, "a settled payment", || async {
        let (_, full) = app
            .api("GET", &format!("/api/v1/invoices/{id}"), None)
            .await;
        matches!(
            full["payment"]["status"].as_str(),
            Some("completed" | "failed")
        )
        .then_some(full)
    })
    .await
}

#[tokio::test]
async fn the_running_cost_is_shown_and_told_to_a_2_0_1_charger() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("JUCR__BILLING__COST_UPDATE_INTERVAL_SECS", "0")],
    )
    .await;
    payg_default(&app).await;
    let user = driver(&app, "live@example.org", "tok_visa", "RFID-LIVE").await;
    let mut cp = station(&app, "CS-COST").await;
    let token = json!({"idToken": {"idToken": "RFID-LIVE", "type": "ISO14443"}});
    cp.call(
        "TransactionEvent",
        event(
            "Started",
            0,
            "TX-C",
            "Authorized",
            json!({"idToken": token["idToken"], "meterValue": energy(0.0)}),
        ),
    )
    .await;
    let session = eventually(WAIT, "a cost estimate for the new session", || async {
        let (_, sessions) = app
            .api("GET", "/api/v1/sessions?charger_id=CS-COST", None)
            .await;
        let s = sessions.as_array()?.first()?.clone();
        s["cost_estimate"].is_object().then_some(s)
    })
    .await;
    assert_eq!(
        session["cost_estimate"],
        json!({"amount": 60, "currency": "EUR"}),
        "the session fee with VAT before any energy"
    );

    // 10 kWh: 5.95 + 0.50 = 6.45 net, 1.2255 → 1.23 VAT, 7.68 gross.
    let updated = event(
        "Updated",
        1,
        "TX-C",
        "MeterValuePeriodic",
        json!({"meterValue": energy(10_000.0)}),
    );
    cp.call("TransactionEvent", updated).await;
    // The charger may first have been told the cost at the start (0.60), depending on
    // whether the tariff was known by then; the 10 kWh cost follows in any case.
    let mut told = Vec::new();
    while told.last() != Some(&json!(7.68)) {
        let (id, action, payload) = cp.next_server_call().await;
        assert_eq!(action, "CostUpdated");
        assert_eq!(payload["transactionId"], "TX-C");
        cp.respond(&id, json!({})).await;
        told.push(payload["totalCost"].clone());
        assert!(told.len() <= 2, "told {told:?}");
    }
    assert!(told.len() == 1 || told[0] == json!(0.6), "told {told:?}");
    let id = session["session_id"].as_i64().unwrap();
    let (_, live) = app
        .api("GET", &format!("/api/v1/sessions/{id}"), None)
        .await;
    assert_eq!(live["cost_estimate"]["amount"], 768);

    let ended = cp
        .call(
            "TransactionEvent",
            event(
                "Ended",
                2,
                "TX-C",
                "EVDeparted",
                json!({"meterValue": energy(10_000.0)}),
            ),
        )
        .await;
    assert_eq!(
        ended["totalCost"], 7.68,
        "the final cost in the answer to the end"
    );
    let invoice = settled_invoice(&app, &user).await;
    assert_eq!(
        invoice["gross"]["amount"], 768,
        "the estimate is what is billed"
    );
}
