//! The persistence contract: every test here runs against both backends (SQLite, as
//! the embedded profile uses it, and PostgreSQL, each in its own fresh database), through
//! the `Store` port only. Test names end in `sqlite` or `postgres`; the test script
//! reports how many ran for each.

use std::sync::Arc;

use chrono::{Duration, DurationRound, Utc};
use jucr::domain::billing::*;
use jucr::domain::money::Currency;
use jucr::domain::ports::{
    InvoiceFilter, Receipt, SessionProgress, SessionSample, StationStore, Store, StoreError,
    WriteBatch,
};
use jucr::domain::tariff::{Tariff, TariffKind};
use jucr::domain::webhook::{DeliveryStatus, Webhook};
use jucr::domain::*;

use crate::helpers::{TestDatabase, migrated_sqlite};

/// A store on a fresh database; the guard keeps it alive (and drops it after).
pub async fn store(backend: &str) -> (Arc<dyn Store>, Box<dyn std::any::Any>) {
    match backend {
        "sqlite" => {
            let dir = tempfile::tempdir().unwrap();
            let store = migrated_sqlite(&dir.path().join("t.sqlite")).await;
            (Arc::new(store), Box::new(dir))
        }
        "postgres" => {
            let db = TestDatabase::create().await;
            let url = secrecy::SecretString::from(db.url.clone());
            let store = jucr::persistence::postgres::SqlStore::connect(&url, 4)
                .await
                .unwrap();
            jucr::persistence::postgres::MIGRATOR
                .run(store.pool())
                .await
                .unwrap();
            (Arc::new(store), Box::new(db))
        }
        other => unreachable!("{other}"),
    }
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test] async fn $name() { let (s, _guard) = super::store("sqlite").await; assert_eq!(s.backend(), "sqlite"); super::$name(&*s).await; } )*
        }
        mod postgres {
            $( #[tokio::test] async fn $name() { let (s, _guard) = super::store("postgres").await; assert_eq!(s.backend(), "postgres"); super::$name(&*s).await; } )*
        }
    };
}

contract!(
    chargers_are_registered_updated_and_listed,
    boots_are_recorded_for_registered_chargers_only,
    id_tokens_are_stored_case_insensitively,
    sessions_get_unique_ids_and_repeated_starts_are_idempotent,
    sessions_end_durably_with_their_final_samples,
    batches_write_samples_progress_connectors_and_last_seen,
    samples_read_back_in_arrival_order_however_many_batches_ago,
    progress_of_an_ended_session_is_ignored,
    users_are_unique_by_email,
    token_versions_move_on_at_logout_and_at_a_change_of_role,
    secrets_keep_their_first_value,
    session_changes_write_their_events_to_the_outbox,
    invoices_are_numbered_without_gaps_and_issued_once,
    payments_are_opened_once_claimed_by_one_and_recorded_with_their_event,
    tariffs_resolve_charger_then_operator_then_plan_then_default,
    webhook_deliveries_are_queued_once_per_event_and_logged,
);

/// A station store on a fresh database (SQLite, PostgreSQL or MongoDB); the guard keeps
/// it alive (and drops it after).
pub async fn station_store(backend: &str) -> (Arc<dyn StationStore>, Box<dyn std::any::Any>) {
    match backend {
        "mongodb" => {
            let url = secrecy::SecretString::from(crate::helpers::mongodb_url());
            let name = format!("jucr_test_{}", uuid::Uuid::new_v4().simple());
            let store = jucr::persistence::mongo::MongoStationStore::connect(&url, &name)
                .await
                .unwrap();
            store.ensure_indexes().await.unwrap_or_else(|e| {
                panic!(
                    "MongoDB (or SecantusDB) must answer at {} for the tests: {e:?}",
                    crate::helpers::mongodb_url()
                )
            });
            (Arc::new(store), Box::new(MongoDatabase(name)))
        }
        sql => {
            let (store, guard) = store(sql).await;
            (store, guard)
        }
    }
}

/// Drops a test's MongoDB database.
struct MongoDatabase(String);

impl Drop for MongoDatabase {
    fn drop(&mut self) {
        let name = self.0.clone();
        crate::helpers::cleanup(async move {
            let url = secrecy::SecretString::from(crate::helpers::mongodb_url());
            if let Ok(store) =
                jucr::persistence::mongo::MongoStationStore::connect(&url, &name).await
            {
                let _ = store.drop_database().await;
            }
        });
    }
}

macro_rules! station_contract {
    ($($name:ident),* $(,)?) => {
        mod stations {
            mod sqlite {
                $( #[tokio::test] async fn $name() { let (s, _guard) = super::super::station_store("sqlite").await; assert_eq!(s.station_backend(), "sqlite"); super::super::$name(&*s).await; } )*
            }
            mod postgres {
                $( #[tokio::test] async fn $name() { let (s, _guard) = super::super::station_store("postgres").await; assert_eq!(s.station_backend(), "postgres"); super::super::$name(&*s).await; } )*
            }
            mod mongodb {
                $( #[tokio::test] async fn $name() { let (s, _guard) = super::super::station_store("mongodb").await; assert_eq!(s.station_backend(), "mongodb"); super::super::$name(&*s).await; } )*
            }
        }
    };
}

station_contract!(
    stations_upsert_idempotently_and_are_found_nearest_first,
    radius_searches_cut_off_filter_and_page_like_the_formula_on_real_stations,
    reference_data_is_kept_as_sent,
    concurrent_upserts_keep_the_newest,
    stations_no_full_import_saw_are_hidden,
);

/// Times as the stores return them (microsecond precision).
pub(crate) fn now() -> chrono::DateTime<Utc> {
    Utc::now()
        .duration_trunc(Duration::microseconds(1))
        .unwrap()
}

fn charger(id: &str) -> ChargerId {
    ChargerId::parse(id).unwrap()
}

fn token(t: &str) -> IdToken {
    IdToken::parse(t).unwrap()
}

pub(crate) fn registration(id: &str) -> ChargerRegistration {
    ChargerRegistration {
        charger_id: charger(id),
        password_hash: Some("$argon2id$hash".into()),
        security_profile: SecurityProfile::BASIC,
        registration_status: RegistrationStatus::Accepted,
        description: Some("bay 1".into()),
        operator_id: Some("cpo-1".into()),
    }
}

fn new_session(id: &str, connector: u32, tag: &str) -> NewSession {
    NewSession {
        charger_id: charger(id),
        connector_id: ConnectorId(connector),
        transaction_id: None,
        id_token: Some(token(tag)),
        meter_start_wh: 100,
        started_at: now(),
        remote_start: false,
        reservation_id: None,
    }
}

fn end_of(
    session: &Session,
    meter_wh: Option<i64>,
    at: chrono::DateTime<Utc>,
    samples: Vec<MeterSample>,
) -> TransactionEvent {
    TransactionEvent {
        kind: TransactionEventKind::Ended,
        origin: TransactionIdOrigin::Central,
        transaction_id: Some(session.transaction_id.clone()),
        connector_id: Some(session.connector_id),
        id_token: None,
        timestamp: at,
        meter_wh,
        samples,
        stop_reason: Some("EVDisconnected".into()),
        reservation_id: None,
        seq_no: None,
        offline: false,
    }
}

pub(crate) fn sample(at: chrono::DateTime<Utc>, wh: f64) -> MeterSample {
    MeterSample::normalised(
        at,
        Measurand::EnergyImportRegister,
        &wh.to_string(),
        None,
        None,
        None,
    )
    .unwrap()
}

async fn chargers_are_registered_updated_and_listed(s: &dyn Store) {
    assert!(
        s.save_registration(&registration("CP-B")).await.unwrap(),
        "new"
    );
    assert!(s.save_registration(&registration("CP-A")).await.unwrap());
    let mut changed = registration("CP-B");
    changed.registration_status = RegistrationStatus::Rejected;
    changed.password_hash = None;
    changed.security_profile = SecurityProfile::NONE;
    assert!(!s.save_registration(&changed).await.unwrap(), "an update");
    let got = s.charger(&charger("CP-B")).await.unwrap().unwrap();
    assert_eq!(got.registration, changed);
    assert_eq!(got.boot, None);
    let all: Vec<_> = s
        .chargers()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.registration.charger_id.to_string())
        .collect();
    assert_eq!(all, ["CP-A", "CP-B"]);
    assert!(s.charger(&charger("CP-C")).await.unwrap().is_none());
}

async fn boots_are_recorded_for_registered_chargers_only(s: &dyn Store) {
    s.save_registration(&registration("CP-1")).await.unwrap();
    let boot = BootInfo {
        vendor: "V".into(),
        model: "M".into(),
        firmware_version: Some("1.2".into()),
        ..Default::default()
    };
    let at = now();
    s.record_boot(&charger("CP-1"), &boot, "1.6", at)
        .await
        .unwrap();
    let got = s.charger(&charger("CP-1")).await.unwrap().unwrap();
    assert_eq!(
        (got.boot, got.ocpp_version.as_deref(), got.last_boot_at),
        (Some(boot.clone()), Some("1.6"), Some(at))
    );
    assert!(matches!(
        s.record_boot(&charger("CP-X"), &boot, "1.6", at).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn id_tokens_are_stored_case_insensitively(s: &dyn Store) {
    let record = IdTokenRecord {
        id_token: token("AbC-1"),
        status: AuthorizationStatus::Accepted,
        token_type: TokenType::Iso14443,
        expiry_date: Some(now() + Duration::days(30)),
        group_id: Some(token("FLEET")),
        user_id: None,
        updated_at: now(),
    };
    assert!(s.put_id_token(&record).await.unwrap());
    assert_eq!(
        s.id_token(&token("abc-1")).await.unwrap(),
        Some(record.clone())
    );
    let blocked = IdTokenRecord {
        status: AuthorizationStatus::Blocked,
        expiry_date: None,
        ..record.clone()
    };
    assert!(!s.put_id_token(&blocked).await.unwrap());
    assert_eq!(s.id_tokens().await.unwrap(), vec![blocked]);
    assert!(s.delete_id_token(&token("ABC-1")).await.unwrap());
    assert!(!s.delete_id_token(&token("ABC-1")).await.unwrap());
    assert_eq!(s.id_token(&token("ABC-1")).await.unwrap(), None);
}

async fn sessions_get_unique_ids_and_repeated_starts_are_idempotent(s: &dyn Store) {
    s.save_registration(&registration("CP-1")).await.unwrap();
    let a = s
        .start_session(&new_session("CP-1", 1, "T1"))
        .await
        .unwrap();
    let b = s
        .start_session(&new_session("CP-1", 2, "T2"))
        .await
        .unwrap();
    assert!(b.session_id > a.session_id);
    assert_eq!(
        a.transaction_id.0,
        a.session_id.to_string(),
        "1.6 transaction ids are session ids"
    );
    assert_eq!(
        s.start_session(&new_session("CP-1", 3, "T3"))
            .await
            .unwrap()
            .status,
        SessionStatus::Active
    );

    let repeat = new_session("CP-1", 9, "T9");
    let first = s.start_session(&repeat).await.unwrap();
    assert_eq!(
        s.start_session(&repeat).await.unwrap().session_id,
        first.session_id
    );

    let mut with_tx = new_session("CP-1", 4, "T4");
    with_tx.transaction_id = Some(TransactionId("uuid-from-charger".into()));
    let c = s.start_session(&with_tx).await.unwrap();
    assert_eq!(
        s.session_by_transaction(&charger("CP-1"), &TransactionId("uuid-from-charger".into()))
            .await
            .unwrap(),
        Some(c.clone())
    );
    assert_eq!(s.session(c.session_id).await.unwrap(), Some(c));
    assert_eq!(s.active_sessions().await.unwrap().len(), 5);
    let filter = SessionFilter {
        charger_id: Some(charger("CP-1")),
        status: Some(SessionStatus::Active),
        limit: 2,
    };
    let newest: Vec<_> = s
        .sessions(&filter)
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.session_id)
        .collect();
    assert_eq!(newest.len(), 2);
    assert!(newest[0] > newest[1], "newest first");
}

async fn sessions_end_durably_with_their_final_samples(s: &dyn Store) {
    let mut session = s
        .start_session(&new_session("CP-1", 1, "T1"))
        .await
        .unwrap();
    let at = now();
    let stop = end_of(&session, Some(2100), at, vec![sample(at, 2100.0)]);
    session.end(&stop).unwrap();
    s.stop_session(&session, &stop.samples).await.unwrap();
    let stored = s.session(session.session_id).await.unwrap().unwrap();
    assert_eq!(stored, session);
    assert_eq!(stored.energy_wh, 2000);
    assert_eq!(s.samples(session.session_id).await.unwrap(), stop.samples);
    assert!(s.active_sessions().await.unwrap().is_empty());
}

async fn batches_write_samples_progress_connectors_and_last_seen(s: &dyn Store) {
    s.save_registration(&registration("CP-1")).await.unwrap();
    let session = s
        .start_session(&new_session("CP-1", 1, "T1"))
        .await
        .unwrap();
    let t0 = now();
    let samples: Vec<_> = (0..1500)
        .map(|i| SessionSample {
            session_id: session.session_id,
            sample: sample(t0 + Duration::seconds(i), 100.0 + i as f64),
        })
        .collect();
    let connector = ConnectorState {
        connector_id: ConnectorId(1),
        status: ConnectorStatus::Charging,
        error_code: None,
        info: Some("ok".into()),
        availability: Availability::Operative,
        updated_at: t0,
    };
    let other = s
        .start_session(&new_session("CP-1", 2, "T2"))
        .await
        .unwrap();
    let batch = WriteBatch {
        samples,
        progress: vec![
            SessionProgress {
                session_id: session.session_id,
                energy_wh: 1499,
                power_w: Some(7400.0),
                soc_percent: None,
                last_meter_at: Some(t0),
                idle_since: Some(t0 - Duration::seconds(30)),
                id_token: Some(token("LATE-AUTH")),
            },
            SessionProgress {
                session_id: other.session_id,
                energy_wh: 42,
                power_w: None,
                soc_percent: Some(80.0),
                last_meter_at: Some(t0),
                idle_since: None,
                id_token: None,
            },
        ],
        connectors: vec![(charger("CP-1"), connector.clone())],
        last_seen: vec![(charger("CP-1"), t0)],
    };
    s.write_batch(&batch).await.unwrap();
    assert_eq!(
        s.samples(session.session_id).await.unwrap().len(),
        1500,
        "more rows than one INSERT chunk"
    );
    let stored = s.session(session.session_id).await.unwrap().unwrap();
    assert_eq!((stored.energy_wh, stored.power_w), (1499, Some(7400.0)));
    assert_eq!(stored.idle_since, Some(t0 - Duration::seconds(30)));
    assert_eq!(
        stored.id_token,
        Some(token("LATE-AUTH")),
        "a token learnt after the start"
    );
    let stored = s.session(other.session_id).await.unwrap().unwrap();
    assert_eq!(
        (stored.energy_wh, stored.power_w, stored.soc_percent),
        (42, None, Some(80.0)),
        "every session of the batch"
    );
    assert_eq!(
        stored.id_token,
        Some(token("T2")),
        "a batch without a token keeps the one stored"
    );
    assert_eq!(
        s.connectors(&charger("CP-1")).await.unwrap(),
        vec![connector.clone()]
    );
    let faulted = ConnectorState {
        status: ConnectorStatus::Faulted,
        error_code: Some("GroundFailure".into()),
        ..connector
    };
    s.write_batch(&WriteBatch {
        connectors: vec![(charger("CP-1"), faulted.clone())],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        s.all_connectors().await.unwrap(),
        vec![(charger("CP-1"), faulted)]
    );
    assert_eq!(
        s.charger(&charger("CP-1"))
            .await
            .unwrap()
            .unwrap()
            .last_seen_at,
        Some(t0)
    );
    s.write_batch(&WriteBatch::default()).await.unwrap();
}

async fn samples_read_back_in_arrival_order_however_many_batches_ago(s: &dyn Store) {
    s.save_registration(&registration("CP-1")).await.unwrap();
    let mut sessions = Vec::new();
    for connector in 1..=3 {
        let session = s
            .start_session(&new_session("CP-1", connector, &format!("T{connector}")))
            .await
            .unwrap();
        sessions.push((session.session_id, Vec::new()));
    }
    let t0 = now();
    // More batches than SQLite's staging slots (ADR 0023), so that every session's
    // samples are read back while some are staged and some merged, and after.
    for round in 0..40i64 {
        let mut batch = WriteBatch::default();
        for (i, (session_id, expected)) in sessions.iter_mut().enumerate() {
            // Two readings with the same time in each batch, and one session with
            // nothing in some batches.
            if i == 2 && round % 3 == 0 {
                continue;
            }
            for k in 0..2 {
                let reading = sample(t0 + Duration::seconds(round), (round * 10 + k) as f64);
                batch.samples.push(SessionSample {
                    session_id: *session_id,
                    sample: reading.clone(),
                });
                expected.push(reading);
            }
        }
        s.write_batch(&batch).await.unwrap();
        if round % 7 == 0 || round == 39 {
            for (session_id, expected) in &sessions {
                assert_eq!(
                    &s.samples(*session_id).await.unwrap(),
                    expected,
                    "session {session_id} after batch {round}"
                );
            }
        }
    }
    // A session's final samples come after the ones its batches carried with the same
    // time, also when those were merged long ago (SQLite: 19 batches, more than a round
    // of the 16 slots) and the final ones are staged.
    let (session_id, mut expected) = sessions.swap_remove(0);
    let mut session = s.session(session_id).await.unwrap().unwrap();
    let at = t0 + Duration::seconds(39);
    let last = sample(at, 9000.0);
    let late = sample(t0 + Duration::seconds(20), 9.5);
    let stop = end_of(&session, Some(9000), at, vec![last.clone(), late.clone()]);
    session.end(&stop).unwrap();
    s.stop_session(&session, &stop.samples).await.unwrap();
    expected.push(last);
    let after_its_time = expected
        .iter()
        .rposition(|s| s.timestamp == late.timestamp)
        .expect("two readings of round 20")
        + 1;
    expected.insert(after_its_time, late);
    assert_eq!(s.samples(session_id).await.unwrap(), expected);
}

async fn progress_of_an_ended_session_is_ignored(s: &dyn Store) {
    let mut session = s
        .start_session(&new_session("CP-1", 1, "T1"))
        .await
        .unwrap();
    let stop = end_of(&session, Some(600), now(), vec![]);
    session.end(&stop).unwrap();
    s.stop_session(&session, &[]).await.unwrap();
    let late = SessionProgress {
        session_id: session.session_id,
        energy_wh: 1,
        power_w: Some(1.0),
        soc_percent: None,
        last_meter_at: None,
        idle_since: None,
        id_token: None,
    };
    s.write_batch(&WriteBatch {
        progress: vec![late],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        s.session(session.session_id)
            .await
            .unwrap()
            .unwrap()
            .energy_wh,
        500
    );
}

async fn users_are_unique_by_email(s: &dyn Store) {
    assert!(!s.admin_exists().await.unwrap());
    let user = User {
        user_id: uuid::Uuid::new_v4(),
        email: Email::parse("Ada@Example.org").unwrap(),
        password_hash: "$argon2id$x".into(),
        role: Role::Admin,
        created_at: now(),
    };
    s.create_user(&user).await.unwrap();
    assert!(s.admin_exists().await.unwrap());
    assert_eq!(
        s.user_by_email(&Email::parse("ada@example.org").unwrap())
            .await
            .unwrap(),
        Some(user.clone())
    );
    let twin = User {
        user_id: uuid::Uuid::new_v4(),
        role: Role::Driver,
        ..user
    };
    assert!(matches!(
        s.create_user(&twin).await,
        Err(StoreError::Conflict(_))
    ));
}

async fn token_versions_move_on_at_logout_and_at_a_change_of_role(s: &dyn Store) {
    let user = User {
        user_id: uuid::Uuid::new_v4(),
        email: Email::parse("op@example.org").unwrap(),
        password_hash: "$argon2id$x".into(),
        role: Role::Operator,
        created_at: now(),
    };
    s.create_user(&user).await.unwrap();
    assert_eq!(
        s.token_state(user.user_id).await.unwrap(),
        Some(TokenState {
            version: 0,
            role: Role::Operator
        })
    );
    s.end_access_tokens(user.user_id).await.unwrap();
    assert_eq!(
        s.token_state(user.user_id).await.unwrap(),
        Some(TokenState {
            version: 1,
            role: Role::Operator
        })
    );
    let demoted = s
        .set_role(user.user_id, Role::Driver)
        .await
        .unwrap()
        .expect("the user exists");
    assert_eq!(demoted.role, Role::Driver);
    assert_eq!(
        s.user(user.user_id).await.unwrap().unwrap().role,
        Role::Driver
    );
    assert_eq!(
        s.token_state(user.user_id).await.unwrap(),
        Some(TokenState {
            version: 2,
            role: Role::Driver
        })
    );
    let nobody = uuid::Uuid::new_v4();
    assert_eq!(s.token_state(nobody).await.unwrap(), None);
    assert_eq!(s.set_role(nobody, Role::Admin).await.unwrap(), None);
}

async fn secrets_keep_their_first_value(s: &dyn Store) {
    assert_eq!(s.get_or_init_secret("k", "first").await.unwrap(), "first");
    assert_eq!(s.get_or_init_secret("k", "second").await.unwrap(), "first");
    s.ping().await.unwrap();
}

async fn session_changes_write_their_events_to_the_outbox(s: &dyn Store) {
    let start = new_session("CP-1", 1, "T1");
    let mut session = s.start_session(&start).await.unwrap();
    s.start_session(&start).await.unwrap();
    let pending = s.unpublished_events(10).await.unwrap();
    assert_eq!(pending.len(), 1, "a repeated start writes no second event");
    assert_eq!(
        (pending[0].event_type, pending[0].aggregate_id.clone()),
        (EventType::SessionStarted, session.session_id.to_string())
    );
    assert_eq!(pending[0].payload["charger_id"], "CP-1");

    let end = end_of(&session, Some(1100), now(), vec![]);
    session.end(&end).unwrap();
    s.stop_session(&session, &[]).await.unwrap();
    s.stop_session(&session, &[]).await.unwrap();
    let pending = s.unpublished_events(10).await.unwrap();
    let types: Vec<_> = pending.iter().map(|e| e.event_type).collect();
    assert_eq!(
        types,
        [EventType::SessionStarted, EventType::SessionEnded],
        "oldest first, one end"
    );
    assert_eq!(pending[1].payload["energy_wh"], 1000);

    let at = now();
    s.mark_published(&[pending[0].id], at).await.unwrap();
    assert_eq!(s.unpublished_events(10).await.unwrap().len(), 1);
    let recent = s.recent_events(None, 10).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(
        (recent[0].event.event_type, recent[0].published_at),
        (EventType::SessionEnded, None),
        "newest first"
    );
    assert_eq!(recent[1].published_at, Some(at));
    assert_eq!(
        s.recent_events(Some(EventType::SessionStarted), 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn a_user(s: &dyn Store, email: &str) -> uuid::Uuid {
    let user = User {
        user_id: uuid::Uuid::new_v4(),
        email: Email::parse(email).unwrap(),
        password_hash: "$argon2id$x".into(),
        role: Role::Driver,
        created_at: now(),
    };
    s.create_user(&user).await.unwrap();
    user.user_id
}

fn payg(name: &str, is_default: bool) -> TariffRecord {
    TariffRecord {
        tariff_id: uuid::Uuid::new_v4(),
        tariff: Tariff {
            name: name.into(),
            currency: Currency::EUR,
            vat_basis_points: 1900,
            kind: TariffKind::PayAsYouGo {
                price_per_kwh_milli: 59_500,
                session_fee: 50,
                idle_fee_per_minute: 10,
                idle_grace_minutes: 30,
            },
        },
        is_default,
        created_at: now(),
    }
}

fn session_invoice(
    user: uuid::Uuid,
    tariff: &TariffRecord,
    session: Option<SessionId>,
) -> NewInvoice {
    let charge = tariff
        .tariff
        .session_charge(&jucr::domain::tariff::SessionUsage {
            energy_wh: 12_345,
            idle_minutes: 0,
            month_energy_before_wh: 0,
        });
    NewInvoice {
        invoice_id: uuid::Uuid::new_v4(),
        user_id: user,
        kind: InvoiceKind::Session,
        session_id: session,
        period: None,
        tariff_id: tariff.tariff_id,
        tariff_name: tariff.tariff.name.clone(),
        energy_wh: 12_345,
        charge,
        issued_at: now(),
    }
}

fn receipt(event_id: uuid::Uuid) -> Receipt<'static> {
    Receipt {
        consumer: "billing",
        event_id,
    }
}

async fn invoices_are_numbered_without_gaps_and_issued_once(s: &dyn Store) {
    let user = a_user(s, "driver@example.org").await;
    let tariff = payg("PAYG", true);
    s.create_tariff(&tariff).await.unwrap();
    let first = s
        .start_session(&new_session("CP-1", 1, "T1"))
        .await
        .unwrap();
    let event = uuid::Uuid::new_v4();
    let issued = s
        .issue_invoice(
            Some(receipt(event)),
            &session_invoice(user, &tariff, Some(first.session_id)),
        )
        .await
        .unwrap()
        .expect("a new invoice");
    let year = issued.issued_at.format("%Y").to_string();
    assert_eq!(issued.invoice_number, format!("{year}-000001"));
    assert_eq!(
        issued.charge.gross.amount, 934,
        "7.35 + 0.50 fee, 19 % VAT 1.49"
    );
    assert_eq!(issued.status, InvoiceStatus::Open);
    // The same event again, or another event about the same session: nothing new.
    let again = session_invoice(user, &tariff, Some(first.session_id));
    assert_eq!(
        s.issue_invoice(Some(receipt(event)), &again).await.unwrap(),
        None
    );
    assert_eq!(
        s.issue_invoice(Some(receipt(uuid::Uuid::new_v4())), &again)
            .await
            .unwrap(),
        None
    );

    // Concurrent invoices take consecutive numbers, none lost to the refusals above.
    let mut sessions = Vec::new();
    for connector in 2..=9 {
        sessions.push(
            s.start_session(&new_session("CP-1", connector, "T1"))
                .await
                .unwrap(),
        );
    }
    let issues = sessions.iter().map(|session| {
        let invoice = session_invoice(user, &tariff, Some(session.session_id));
        async move {
            s.issue_invoice(Some(receipt(uuid::Uuid::new_v4())), &invoice)
                .await
        }
    });
    let mut numbers: Vec<String> = futures_util::future::join_all(issues)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap().invoice_number)
        .collect();
    numbers.sort();
    let expected: Vec<String> = (2..=9).map(|n| format!("{year}-{n:06}")).collect();
    assert_eq!(numbers, expected);

    // One subscription invoice per month.
    let month = NewInvoice {
        kind: InvoiceKind::Subscription,
        session_id: None,
        period: Some("2026-11".into()),
        ..session_invoice(user, &tariff, None)
    };
    assert!(s.issue_invoice(None, &month).await.unwrap().is_some());
    let twice = NewInvoice {
        invoice_id: uuid::Uuid::new_v4(),
        ..month
    };
    assert_eq!(s.issue_invoice(None, &twice).await.unwrap(), None);

    let all = s
        .invoices(&InvoiceFilter {
            user_id: Some(user),
            session_id: None,
            offset: 0,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 10);
    let of_first = s
        .invoices(&InvoiceFilter {
            user_id: None,
            session_id: Some(first.session_id),
            offset: 0,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(of_first, vec![issued.clone()]);
    assert_eq!(
        s.billed_sessions(&[first.session_id, SessionId(first.session_id.0 + 1000)])
            .await
            .unwrap(),
        vec![first.session_id],
        "invoiced sessions count as billed"
    );
    assert_eq!(
        s.invoices_of_sessions(&[first.session_id]).await.unwrap(),
        vec![issued.clone()]
    );
    assert_eq!(
        s.invoice(issued.invoice_id).await.unwrap(),
        Some(issued.clone())
    );
    assert_eq!(
        s.invoiced_energy_wh(user, tariff.tariff_id, now() - Duration::days(1))
            .await
            .unwrap(),
        9 * 12_345,
        "session invoices only"
    );
    let generated = s
        .recent_events(Some(EventType::InvoiceGenerated), 100)
        .await
        .unwrap();
    assert_eq!(generated.len(), 10, "one INVOICE_GENERATED per invoice");
    assert!(
        !s.mark_processed(receipt(event)).await.unwrap(),
        "the receipt is stored with the invoice"
    );
}

async fn payments_are_opened_once_claimed_by_one_and_recorded_with_their_event(s: &dyn Store) {
    let user = a_user(s, "payer@example.org").await;
    let tariff = payg("PAYG", false);
    s.create_tariff(&tariff).await.unwrap();
    let invoice = s
        .issue_invoice(None, &session_invoice(user, &tariff, None))
        .await
        .unwrap()
        .unwrap();
    let at = now();
    let payment = Payment {
        payment_id: uuid::Uuid::new_v4(),
        invoice_id: invoice.invoice_id,
        user_id: user,
        amount: invoice.charge.gross,
        status: PaymentStatus::Pending,
        attempts: 0,
        declines: 0,
        transient_streak: 0,
        reported_failures: 0,
        charge_key: uuid::Uuid::new_v4(),
        next_attempt_at: Some(at),
        last_error: None,
        gateway_charge_id: None,
        created_at: at,
        updated_at: at,
    };
    let event = uuid::Uuid::new_v4();
    assert!(s.open_payment(receipt(event), &payment).await.unwrap());
    assert!(
        !s.open_payment(receipt(event), &payment).await.unwrap(),
        "same event"
    );
    let other = Payment {
        payment_id: uuid::Uuid::new_v4(),
        ..payment.clone()
    };
    assert!(
        !s.open_payment(receipt(uuid::Uuid::new_v4()), &other)
            .await
            .unwrap(),
        "one payment per invoice"
    );
    assert_eq!(
        s.due_payments(at, 10).await.unwrap(),
        vec![payment.payment_id]
    );

    let lease = at + Duration::seconds(60);
    let claimed = s
        .claim_payment(payment.payment_id, at, lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.next_attempt_at, Some(lease));
    assert_eq!(
        s.claim_payment(payment.payment_id, at, lease)
            .await
            .unwrap(),
        None,
        "leased"
    );
    assert!(s.due_payments(at, 10).await.unwrap().is_empty());

    let paid = Payment {
        status: PaymentStatus::Completed,
        attempts: 1,
        next_attempt_at: None,
        gateway_charge_id: Some("ch_1".into()),
        updated_at: now(),
        ..claimed.clone()
    };
    let completed = DomainEvent::payment_outcome(&paid, false);
    assert!(
        s.record_payment_attempt(&paid, 0, Some(&completed))
            .await
            .unwrap()
    );
    assert!(
        !s.record_payment_attempt(&paid, 0, Some(&completed))
            .await
            .unwrap(),
        "a stale attempt is not stored twice"
    );
    assert_eq!(
        s.payment_of_invoice(invoice.invoice_id).await.unwrap(),
        Some(paid)
    );
    assert_eq!(
        s.invoice(invoice.invoice_id).await.unwrap().unwrap().status,
        InvoiceStatus::Paid
    );
    let events = s
        .recent_events(Some(EventType::PaymentCompleted), 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.aggregate_id, invoice.invoice_id.to_string());
    assert_eq!(events[0].event.payload["will_retry"], false);
}

async fn tariffs_resolve_charger_then_operator_then_plan_then_default(s: &dyn Store) {
    let user = a_user(s, "plan@example.org").await;
    let (default, plan, cpo, site) = (
        payg("Default", true),
        payg("Plan", false),
        payg("CPO", false),
        payg("Site", false),
    );
    for t in [&default, &plan, &cpo, &site] {
        s.create_tariff(t).await.unwrap();
    }
    assert!(matches!(
        s.create_tariff(&payg("Plan", false)).await,
        Err(StoreError::Conflict(_))
    ));
    s.save_registration(&registration("CP-1")).await.unwrap();
    let id = charger("CP-1");
    let name = |c: TariffCandidates| c.applicable().map(|t| t.tariff.name);
    assert_eq!(
        name(s.tariff_candidates(&id, Some(user)).await.unwrap()),
        Some("Default".into())
    );
    s.set_plan(user, Some(plan.tariff_id), now()).await.unwrap();
    assert_eq!(
        name(s.tariff_candidates(&id, Some(user)).await.unwrap()),
        Some("Plan".into())
    );
    assert_eq!(
        name(s.tariff_candidates(&id, None).await.unwrap()),
        Some("Default".into())
    );
    s.set_tariff_override(&TariffScope::Operator("cpo-1".into()), Some(cpo.tariff_id))
        .await
        .unwrap();
    assert_eq!(
        name(s.tariff_candidates(&id, Some(user)).await.unwrap()),
        Some("CPO".into())
    );
    s.set_tariff_override(&TariffScope::Charger(id.clone()), Some(site.tariff_id))
        .await
        .unwrap();
    assert_eq!(
        name(s.tariff_candidates(&id, Some(user)).await.unwrap()),
        Some("Site".into())
    );
    s.set_tariff_override(&TariffScope::Charger(id.clone()), None)
        .await
        .unwrap();
    assert_eq!(
        name(s.tariff_candidates(&id, Some(user)).await.unwrap()),
        Some("CPO".into())
    );

    let plans = s.plans().await.unwrap();
    assert_eq!(plans.len(), 1);
    assert_eq!((plans[0].0, plans[0].1.tariff_id), (user, plan.tariff_id));
    assert!(matches!(
        s.set_plan(uuid::Uuid::new_v4(), Some(plan.tariff_id), now())
            .await,
        Err(StoreError::NotFound(_))
    ));
    let newer = payg("Newer default", true);
    s.create_tariff(&newer).await.unwrap();
    let defaults: Vec<_> = s
        .tariffs()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.is_default)
        .collect();
    assert_eq!(defaults.len(), 1, "one default at a time");
    assert_eq!(s.tariff(newer.tariff_id).await.unwrap(), Some(newer));

    // Cards are kept as gateway tokens, newest first.
    for (token, last4) in [("tok_visa", "4242"), ("tok_mastercard", "4444")] {
        s.add_payment_method(&PaymentMethod {
            payment_method_id: uuid::Uuid::new_v4(),
            user_id: user,
            gateway: "sandbox".into(),
            gateway_token: token.into(),
            card: CardDetails {
                brand: "visa".into(),
                last4: last4.into(),
                exp_month: 12,
                exp_year: 2034,
            },
            created_at: now(),
        })
        .await
        .unwrap();
    }
    let methods = s.payment_methods(user).await.unwrap();
    assert_eq!(methods[0].gateway_token, "tok_mastercard");
    s.put_id_token(&IdTokenRecord {
        id_token: token("CARD-1"),
        status: AuthorizationStatus::Accepted,
        token_type: TokenType::Iso14443,
        expiry_date: None,
        group_id: None,
        user_id: Some(user),
        updated_at: now(),
    })
    .await
    .unwrap();
    assert_eq!(s.token_owner(&token("card-1")).await.unwrap(), Some(user));
    assert_eq!(s.token_owner(&token("nobody")).await.unwrap(), None);
}

async fn webhook_deliveries_are_queued_once_per_event_and_logged(s: &dyn Store) {
    let hook = Webhook {
        webhook_id: uuid::Uuid::new_v4(),
        url: "http://127.0.0.1:9/hook".into(),
        secret: "whsec_x".into(),
        event_types: vec![EventType::InvoiceGenerated],
        created_at: now(),
    };
    s.create_webhook(&hook).await.unwrap();
    let event = DomainEvent {
        id: uuid::Uuid::new_v4(),
        event_type: EventType::InvoiceGenerated,
        version: 1,
        occurred_at: now(),
        aggregate_id: "i-1".into(),
        payload: serde_json::json!({"gross": {"amount": 1, "currency": "EUR"}}),
    };
    let webhooks = |id| Receipt {
        consumer: "webhooks",
        event_id: id,
    };
    assert_eq!(
        s.queue_deliveries(webhooks(event.id), &event)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.queue_deliveries(webhooks(event.id), &event)
            .await
            .unwrap(),
        0
    );
    let unwanted = DomainEvent {
        id: uuid::Uuid::new_v4(),
        event_type: EventType::SessionStarted,
        ..event.clone()
    };
    assert_eq!(
        s.queue_deliveries(webhooks(unwanted.id), &unwanted)
            .await
            .unwrap(),
        0
    );

    let at = now();
    let due = s.due_deliveries(at, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let (mut delivery, claimed_hook) = s
        .claim_delivery(due[0], at, at + Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed_hook.secret, "whsec_x");
    assert_eq!(delivery.body["id"], event.id.to_string());
    assert!(
        s.claim_delivery(due[0], at, at).await.unwrap().is_none(),
        "leased"
    );
    delivery.attempts = 1;
    delivery.status = DeliveryStatus::Delivered;
    delivery.last_status_code = Some(204);
    delivery.delivered_at = Some(now());
    delivery.next_attempt_at = None;
    s.record_delivery_attempt(&delivery).await.unwrap();
    assert_eq!(
        s.deliveries(hook.webhook_id, 10).await.unwrap(),
        vec![delivery]
    );
    assert_eq!(s.webhooks().await.unwrap().len(), 1);
    assert!(s.delete_webhook(hook.webhook_id).await.unwrap());
    assert!(s.deliveries(hook.webhook_id, 10).await.unwrap().is_empty());
}

fn station(id: i64, lat: f64, lng: f64, updated: &str) -> jucr::domain::station::Station {
    jucr::domain::station::Station::from_ocm(&serde_json::json!({
        "ID": id, "OperatorID": 8, "StatusTypeID": 50, "DateLastStatusUpdate": updated,
        "AddressInfo": {"Title": format!("S{id}"), "Latitude": lat, "Longitude": lng},
        "Connections": [{"ConnectionTypeID": 33, "PowerKW": 50.0}]
    }))
    .unwrap()
}

async fn stations_upsert_idempotently_and_are_found_nearest_first(s: &dyn StationStore) {
    use jucr::domain::station::StationFilter;
    let near = station(1, 51.5010, -0.1200, "2024-01-01T00:00:00Z");
    let nearer = station(2, 51.5001, -0.1201, "2024-01-01T00:00:00Z");
    let far = station(3, 51.6000, -0.1200, "2024-01-01T00:00:00Z");
    let counts = s
        .upsert_stations(&[near.clone(), nearer.clone(), far.clone()])
        .await
        .unwrap();
    assert_eq!(
        (counts.inserted, counts.updated, counts.unchanged),
        (3, 0, 0)
    );
    let again = s
        .upsert_stations(std::slice::from_ref(&near))
        .await
        .unwrap();
    assert_eq!(again.unchanged, 1, "idempotent");

    // An older record never overwrites a newer one; a newer one does.
    let mut older = near.clone();
    older.title = "stale".into();
    older.date_last_status_update = Some("2023-01-01T00:00:00Z".parse().unwrap());
    assert_eq!(s.upsert_stations(&[older]).await.unwrap().unchanged, 1);
    assert_eq!(s.station(1).await.unwrap().unwrap().title, "S1");
    let mut newer = near.clone();
    newer.title = "renamed".into();
    newer.date_last_status_update = Some("2025-01-01T00:00:00Z".parse().unwrap());
    assert_eq!(s.upsert_stations(&[newer]).await.unwrap().updated, 1);

    let found = s
        .stations_near(51.5, -0.12, 5.0, &StationFilter::default(), 0, 10)
        .await
        .unwrap();
    let ids: Vec<i64> = found.iter().map(|(st, _)| st.ocm_id).collect();
    assert_eq!(ids, [2, 1], "within 5 km, nearest first");
    assert!(found[0].1 < found[1].1);
    let page = s
        .stations_near(51.5, -0.12, 50.0, &StationFilter::default(), 1, 1)
        .await
        .unwrap();
    assert_eq!(page[0].0.ocm_id, 1);
    let fast = StationFilter {
        min_power_kw: Some(100.0),
        ..Default::default()
    };
    assert!(
        s.stations_near(51.5, -0.12, 50.0, &fast, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // A removed POI is kept but hidden from search.
    let mut removed = nearer.clone();
    removed.active = false;
    removed.date_last_status_update = Some("2025-01-01T00:00:00Z".parse().unwrap());
    s.upsert_stations(&[removed]).await.unwrap();
    let ids: Vec<i64> = s
        .stations_near(51.5, -0.12, 5.0, &StationFilter::default(), 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|(st, _)| st.ocm_id)
        .collect();
    assert_eq!(ids, [1]);
    assert!(!s.station(2).await.unwrap().unwrap().active);
}

/// The London sample as stations.
fn london() -> Vec<jucr::domain::station::Station> {
    let raw = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ocm/poi-london-100.compact.json"
    ))
    .unwrap();
    let pois: Vec<serde_json::Value> = serde_json::from_str(&raw).unwrap();
    pois.iter()
        .map(|p| jucr::domain::station::Station::from_ocm(p).unwrap())
        .collect()
}

async fn radius_searches_cut_off_filter_and_page_like_the_formula_on_real_stations(
    s: &dyn StationStore,
) {
    use jucr::domain::station::StationFilter;
    let all = london();
    let counts = s.upsert_stations(&all).await.unwrap();
    assert_eq!(counts.inserted, 100);
    // A data provider whose licence forbids our use: its stations are left out.
    let excluded = all
        .iter()
        .find_map(|st| st.data_provider_id)
        .expect("stations name their data provider");
    let everything = s
        .stations_near(51.5, -0.12, 25.0, &StationFilter::default(), 0, 1000)
        .await
        .unwrap();
    assert!(
        everything
            .iter()
            .any(|(st, _)| st.data_provider_id == Some(excluded))
    );
    let allowed = s
        .stations_near(
            51.5,
            -0.12,
            25.0,
            &StationFilter {
                excluded_provider_ids: vec![excluded],
                ..Default::default()
            },
            0,
            1000,
        )
        .await
        .unwrap();
    assert!(
        allowed
            .iter()
            .all(|(st, _)| st.data_provider_id != Some(excluded)),
        "no station of an excluded data provider"
    );
    let filters = [
        StationFilter::default(),
        StationFilter {
            connection_type_ids: vec![33, 2],
            ..Default::default()
        },
        StationFilter {
            min_power_kw: Some(22.0),
            ..Default::default()
        },
        StationFilter {
            operator_ids: vec![3, 32],
            ..Default::default()
        },
        StationFilter {
            ocm_ids: Some(all.iter().step_by(3).map(|s| s.ocm_id).collect()),
            ..Default::default()
        },
        StationFilter {
            excluded_provider_ids: vec![excluded],
            ..Default::default()
        },
    ];
    for (lat, lng, radius) in [
        (51.515, -0.05, 3.0),
        (51.5, -0.12, 10.0),
        (51.45, 0.1, 25.0),
    ] {
        for filter in &filters {
            // What the formula says, independently of any store.
            let mut expected: Vec<(f64, i64)> = all
                .iter()
                .filter(|st| filter.matches(st))
                .map(|st| {
                    (
                        crate::stations::km(lat, lng, st.latitude, st.longitude),
                        st.ocm_id,
                    )
                })
                .filter(|(d, _)| *d <= radius)
                .collect();
            expected.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let found = s
                .stations_near(lat, lng, radius, filter, 0, 1000)
                .await
                .unwrap();
            let ids: Vec<i64> = found.iter().map(|(st, _)| st.ocm_id).collect();
            let want: Vec<i64> = expected.iter().map(|(_, id)| *id).collect();
            assert_eq!(ids, want, "({lat}, {lng}) within {radius} km, {filter:?}");
            for ((_, d), (e, _)) in found.iter().zip(&expected) {
                assert!((d - e).abs() < 1e-6, "distance {d} vs {e}");
            }
            // Pages of 4 put together are the whole answer.
            let mut paged = Vec::new();
            for page in 0.. {
                let got = s
                    .stations_near(lat, lng, radius, filter, page * 4, 4)
                    .await
                    .unwrap();
                let done = got.len() < 4;
                paged.extend(got.into_iter().map(|(st, _)| st.ocm_id));
                if done {
                    break;
                }
            }
            assert_eq!(paged, want);
        }
    }
    assert!(
        s.stations_near(51.5, -0.12, 10.0, &StationFilter::default(), 0, 5)
            .await
            .unwrap()
            .len()
            == 5
    );
}

async fn reference_data_is_kept_as_sent(s: &dyn StationStore) {
    assert_eq!(s.reference_data().await.unwrap(), None);
    let raw: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ocm/referencedata-2023.json"
        ))
        .unwrap(),
    )
    .unwrap();
    s.save_reference_data(&raw).await.unwrap();
    s.save_reference_data(&raw).await.unwrap();
    let kept = s.reference_data().await.unwrap().unwrap();
    assert_eq!(kept["DataProviders"], raw["DataProviders"]);
    let parsed = jucr::domain::ocm::ReferenceData::from_ocm(&kept).unwrap();
    assert!(
        parsed.data_providers[&26].non_commercial(),
        "Oplaadpalen.nl is CC BY-NC-SA"
    );
    assert!(!parsed.data_providers[&1].non_commercial());
}

async fn concurrent_upserts_keep_the_newest(s: &dyn StationStore) {
    let base = station(7, 51.5, -0.1, "2024-01-01T00:00:00Z");
    s.upsert_stations(std::slice::from_ref(&base))
        .await
        .unwrap();
    for round in 0..6_i64 {
        // Eight versions written at once, in an order unlike their dates.
        let versions: Vec<jucr::domain::station::Station> = [3, 8, 1, 6, 2, 7, 4, 5]
            .iter()
            .map(|i: &i64| {
                let mut v = base.clone();
                v.title = format!("v{round}-{i}");
                v.date_last_status_update =
                    Some(Utc::now() + Duration::days(round * 10) + Duration::hours(*i));
                v
            })
            .collect();
        let written = futures_util::future::join_all(
            versions
                .iter()
                .map(|v| s.upsert_stations(std::slice::from_ref(v))),
        )
        .await;
        for w in written {
            w.unwrap();
        }
        assert_eq!(
            s.station(7).await.unwrap().unwrap().title,
            format!("v{round}-8"),
            "the newest record stays, whatever the order of the writes"
        );
    }
}

async fn stations_no_full_import_saw_are_hidden(s: &dyn StationStore) {
    use jucr::domain::ocm::ScopeArea;
    use jucr::domain::station::StationFilter;
    let all = london();
    s.upsert_stations(&all).await.unwrap();
    let sweep = Utc::now();
    // The import saw all but three of the London stations.
    let seen: Vec<i64> = all.iter().skip(3).map(|st| st.ocm_id).collect();
    s.touch_stations(&seen, sweep).await.unwrap();
    // A box elsewhere hides nothing; another country hides nothing.
    let elsewhere = ScopeArea::Box {
        south: 40.0,
        west: 0.0,
        north: 41.0,
        east: 1.0,
    };
    assert_eq!(s.deactivate_unseen(&elsewhere, sweep).await.unwrap(), 0);
    assert_eq!(
        s.deactivate_unseen(&ScopeArea::Country(2), sweep)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.deactivate_unseen(&ScopeArea::Country(1), sweep)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        s.deactivate_unseen(&ScopeArea::Country(1), sweep)
            .await
            .unwrap(),
        0,
        "once"
    );
    for st in all.iter().take(3) {
        assert!(!s.station(st.ocm_id).await.unwrap().unwrap().active);
    }
    let shown = s
        .stations_near(51.5, -0.12, 100.0, &StationFilter::default(), 0, 1000)
        .await
        .unwrap();
    assert_eq!(shown.len(), 97);
    // Seen again by a later import, a listed station comes back through its upsert.
    let mut back = all[0].clone();
    back.date_last_status_update = Some(Utc::now());
    assert_eq!(s.upsert_stations(&[back]).await.unwrap().updated, 1);
    assert!(s.station(all[0].ocm_id).await.unwrap().unwrap().active);
}
