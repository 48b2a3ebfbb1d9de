//! Migrations that rewrite data, on both backends: the database migrated up to the
//! migration before, rows written as an older release left them, then the rest of the
//! migrations, and the rows read back through the `Store` port.

use chrono::{DateTime, Duration, Utc};
use jucr::domain::SessionId;
use jucr::domain::ports::{SessionSample, Store, WriteBatch};

use crate::contract::{now, registration, sample};
use crate::helpers::{Backend, TestDatabase, migrated_sqlite_to};

/// The last migration before the idle clock's energy (`idle_energy_wh`).
const BEFORE_IDLE_ENERGY: i64 = 20261204000002;

/// The database under test, for the statements an older release would have run.
enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// `$body` with `$pool` the pool of either backend (the same code, two types).
macro_rules! on_pool {
    ($raw:expr, $pool:ident => $body:expr) => {
        match $raw {
            Raw::Sqlite($pool) => $body,
            Raw::Postgres($pool) => $body,
        }
    };
}

impl Raw {
    /// An active session as an older release starts it (its reads select columns that
    /// are not there yet).
    async fn start_session(&self, connector: i64, meter_start_wh: i64) -> SessionId {
        const SQL: &str = "INSERT INTO session (charger_id, connector_id, status, meter_start_wh, started_at) \
                           VALUES ('CP-M', $1, 'active', $2, $3) RETURNING session_id";
        let id: i64 = on_pool!(self, pool => sqlx::query_scalar(SQL)
            .bind(connector)
            .bind(meter_start_wh)
            .bind(now())
            .fetch_one(pool)
            .await)
        .expect("starting a session");
        SessionId(id)
    }

    /// The row as an older release leaves it: its energy and its clock.
    async fn set_clock(&self, session: SessionId, energy_wh: i64, since: DateTime<Utc>) {
        const SQL: &str =
            "UPDATE session SET energy_wh = $2, idle_since = $3 WHERE session_id = $1";
        let done = on_pool!(self, pool => sqlx::query(SQL)
            .bind(session.0)
            .bind(energy_wh)
            .bind(since)
            .execute(pool)
            .await
            .map(|d| d.rows_affected()));
        assert_eq!(done.expect("setting the clock"), 1);
    }

    async fn migrate_the_rest(&self) {
        match self {
            Raw::Sqlite(pool) => jucr::persistence::sqlite::MIGRATOR.run(pool).await,
            Raw::Postgres(pool) => jucr::persistence::postgres::MIGRATOR.run(pool).await,
        }
        .expect("the remaining migrations");
    }
}

/// A store on a fresh database migrated up to `version`; the guard keeps it alive.
async fn store_migrated_to(
    backend: Backend,
    version: i64,
) -> (Box<dyn Store>, Raw, Box<dyn std::any::Any>) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let store = migrated_sqlite_to(&dir.path().join("t.sqlite"), version).await;
            let raw = Raw::Sqlite(store.pool().clone());
            (Box::new(store), raw, Box::new(dir))
        }
        Backend::Postgres => {
            let db = TestDatabase::create().await;
            let url = secrecy::SecretString::from(db.url.clone());
            let store = jucr::persistence::postgres::SqlStore::connect(&url, 4)
                .await
                .unwrap();
            jucr::persistence::postgres::MIGRATOR
                .run_to(version, store.pool())
                .await
                .unwrap();
            let raw = Raw::Postgres(store.pool().clone());
            (Box::new(store), raw, Box::new(db))
        }
    }
}

/// Clocks set before `idle_energy_wh` existed: kept where a register reading of the
/// row's energy is at the clock's time; not where an older replica moved the energy
/// and left the clock, nor where the clock is the session's end (no reading there);
/// the store gives a clock only where it is kept.
async fn only_clocks_at_a_reading_of_the_rows_energy_are_kept(backend: Backend) {
    let (s, raw, _guard) = store_migrated_to(backend, BEFORE_IDLE_ENERGY).await;
    s.save_registration(&registration("CP-M")).await.unwrap();
    let t0 = now() - Duration::minutes(50);
    let (t1, t2, end) = (
        t0 + Duration::minutes(10),
        t0 + Duration::minutes(20),
        t0 + Duration::minutes(40),
    );
    let mut sessions = Vec::new();
    let mut samples = Vec::new();
    for connector in 1..=3 {
        let session_id = raw.start_session(connector, 100).await;
        // Started at 100 Wh: 5,000 Wh delivered at t0, 12,345 from t1 on (a half
        // rounded away from zero, as the session does).
        for (at, wh) in [(t0, 5_100.0), (t1, 12_444.5), (t2, 12_444.5)] {
            samples.push(SessionSample {
                session_id,
                sample: sample(at, wh),
            });
        }
        sessions.push(session_id);
    }
    // Through the batch writer: on SQLite, the samples stay staged.
    s.write_batch(&WriteBatch {
        samples,
        ..WriteBatch::default()
    })
    .await
    .unwrap();
    let [kept, behind, at_end] = sessions[..] else {
        unreachable!()
    };
    raw.set_clock(kept, 12_345, t1).await;
    raw.set_clock(behind, 12_345, t0).await;
    raw.set_clock(at_end, 12_345, end).await;

    raw.migrate_the_rest().await;
    let clock = |id| {
        let s = &s;
        async move { s.session(id).await.unwrap().unwrap().idle_since }
    };
    assert_eq!(
        clock(kept).await,
        Some(t1),
        "at the first reading of 12,345 Wh"
    );
    assert_eq!(clock(behind).await, None, "at a reading of 5,000 Wh");
    assert_eq!(clock(at_end).await, None, "at no reading");
}

mod sqlite {
    #[tokio::test]
    async fn only_clocks_at_a_reading_of_the_rows_energy_are_kept() {
        super::only_clocks_at_a_reading_of_the_rows_energy_are_kept(
            crate::helpers::Backend::Sqlite,
        )
        .await;
    }
}

mod postgres {
    #[tokio::test]
    async fn only_clocks_at_a_reading_of_the_rows_energy_are_kept() {
        super::only_clocks_at_a_reading_of_the_rows_energy_are_kept(
            crate::helpers::Backend::Postgres,
        )
        .await;
    }
}
