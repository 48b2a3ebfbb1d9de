//! The persistence contract: every test here runs against both backends (SQLite, as
//! the embedded profile uses it, and PostgreSQL, each in its own fresh database), through
//! the `Store` port only. Test names end in `sqlite` or `postgres`; the test script
//! reports how many ran for each.

use std::sync::Arc;

use chrono::{Duration, DurationRound, Utc};
use jucr::domain::ports::{SessionProgress, SessionSample, Store, StoreError, WriteBatch};
use jucr::domain::*;

use crate::helpers::TestDatabase;

/// A store on a fresh database; the guard keeps it alive (and drops it after).
pub async fn store(backend: &str) -> (Arc<dyn Store>, Box<dyn std::any::Any>) {
    match backend {
        "sqlite" => {
            let dir = tempfile::tempdir().unwrap();
            let store =
                jucr::persistence::sqlite::SqlStore::open(&dir.path().join("t.sqlite"), false, 4)
                    .await
                    .unwrap();
            jucr::persistence::sqlite::MIGRATOR
                .run(store.pool())
                .await
                .unwrap();
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
    progress_of_an_ended_session_is_ignored,
    users_are_unique_by_email,
    secrets_keep_their_first_value,
    session_changes_write_their_events_to_the_outbox,
);

/// Times as the stores return them (microsecond precision).
fn now() -> chrono::DateTime<Utc> {
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

fn registration(id: &str) -> ChargerRegistration {
    ChargerRegistration {
        charger_id: charger(id),
        password_hash: Some("$argon2id$hash".into()),
        security_profile: SecurityProfile::BASIC,
        registration_status: RegistrationStatus::Accepted,
        description: Some("bay 1".into()),
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

fn sample(at: chrono::DateTime<Utc>, wh: f64) -> MeterSample {
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
    let batch = WriteBatch {
        samples,
        progress: vec![SessionProgress {
            session_id: session.session_id,
            energy_wh: 1499,
            power_w: Some(7400.0),
            soc_percent: None,
            last_meter_at: Some(t0),
            id_token: Some(token("LATE-AUTH")),
        }],
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
    assert_eq!(
        stored.id_token,
        Some(token("LATE-AUTH")),
        "a token learnt after the start"
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
