//! Embedded backend: one SQLite file under the data directory, in WAL mode.
//!
//! `synchronous = NORMAL` with WAL makes every committed transaction survive a crash
//! or SIGKILL of the process (the WAL is in the OS page cache); only a power loss can
//! drop the last commits. `JUCR__DATABASE__SQLITE_SYNCHRONOUS=full` closes that gap.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

type Db = sqlx::Sqlite;
const BACKEND: &str = "sqlite";
/// Write transactions take the write lock up front: a deferred one that reads first
/// would fail with SQLITE_BUSY (not wait) when it later needs to write.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";
/// One writer at a time: this process's writers queue for their turn in order.
const SERIAL_WRITES: bool = true;

/// SQLITE_BUSY and SQLITE_LOCKED (and their extended codes): another writer held the
/// database past the busy timeout.
fn transient(code: &str) -> bool {
    code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
}

include!("sql_store.rs");
include!("sql_billing.rs");
include!("sql_accounts.rs");
include!("sql_stations.rs");

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How much of the database file is memory-mapped (address space, not memory).
const MMAP_BYTES: u64 = 1 << 30;

/// Each reading connection's page cache.
const READER_CACHE_KIB: u32 = 8 * 1024;

/// The writer's page cache. A batch of meter values touches an index page per charging
/// session; with too small a cache SQLite spills dirty pages to the WAL in the middle
/// of the transaction and reads them back (ADR 0018).
const WRITER_CACHE_KIB: u32 = 64 * 1024;

/// `cache_size` in KiB (a negative value; a positive one counts pages).
fn cache_size(kib: u32) -> String {
    format!("-{kib}")
}

impl SqlStore {
    /// Opens (creating if needed) the database file at `path`.
    pub async fn open(
        path: &Path,
        full_sync: bool,
        max_connections: u32,
    ) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if full_sync {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // Pages are read through a shared memory map (the OS page cache) rather
            // than copied by a read call each; each connection keeps a cache of its own.
            .pragma("mmap_size", MMAP_BYTES.to_string())
            .pragma("cache_size", cache_size(READER_CACHE_KIB));
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .connect_with(options.clone())
            .await?;
        // The one writer: write transactions take turns anyway (`SERIAL_WRITES`).
        // It is used only in this process's write turn: no ping before each use, a
        // round trip that would hold everyone's turn. Its statement journals (a
        // multi-row insert needs one) stay in memory instead of a temporary file.
        let writes = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(
                options
                    .pragma("cache_size", cache_size(WRITER_CACHE_KIB))
                    .pragma("temp_store", "memory"),
            )
            .await?;
        Ok(SqlStore::with_writer(pool, writes))
    }
}
