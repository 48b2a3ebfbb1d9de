//! Cloud backend: PostgreSQL (the reference architecture's Aurora).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

type Db = sqlx::Postgres;
const BACKEND: &str = "postgres";
const BEGIN_WRITE: &str = "BEGIN";
/// Writers run concurrently; rows are locked, not the database.
const SERIAL_WRITES: bool = false;
/// Meter samples go straight to `meter_sample`: a commit logs rows, not pages.
const STAGED_SAMPLES: bool = false;

/// SQLSTATEs that say "not now" rather than "never": connection exceptions (08),
/// insufficient resources (53), operator intervention (57P0x: shutdown, restart),
/// serialization failures and deadlocks (40001, 40P01), lock not available (55P03).
fn transient(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P0")
        || matches!(code, "40001" | "40P01" | "55P03")
}

include!("sql_store.rs");
include!("sql_billing.rs");
include!("sql_accounts.rs");
include!("sql_stations.rs");

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl SqlStore {
    /// Connects a pool to the database at `url` (a `postgres://` URL, kept secret: it may hold a password).
    pub async fn connect(url: &SecretString, max_connections: u32) -> Result<Self, sqlx::Error> {
        let options: PgConnectOptions = url.expose_secret().parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(SqlStore::new(pool))
    }
}
