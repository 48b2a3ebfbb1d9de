//! Embedded backend: one SQLite file under the data directory, in WAL mode.
//!
//! `synchronous = NORMAL` with WAL makes every committed transaction survive a crash
//! or SIGKILL of the process (the WAL is in the OS page cache); only a power loss can
//! drop the last commits. `JUCR__DATABASE__SQLITE_SYNCHRONOUS=full` closes that gap.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};

type Db = sqlx::Sqlite;
const BACKEND: &str = "sqlite";
/// Write transactions take the write lock up front: a deferred one that reads first
/// would fail with SQLITE_BUSY (not wait) when it later needs to write.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";
/// One writer at a time: this process's writers queue for their turn in order.
const SERIAL_WRITES: bool = true;
/// Meter samples are staged, and reach `meter_sample` a slot at a time (ADR 0023): a
/// commit writes whole pages to the WAL, one per index page a batch touches.
const STAGED_SAMPLES: bool = true;

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

/// How often the WAL is copied back into the database file, on a connection of its own
/// (ADR 0020). A flush of meter values rewrites about one index page per charging
/// session; between two checkpoints a page rewritten by several flushes is copied once.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);

/// The writer checkpoints by itself only past this many WAL pages (256 MiB with 4 KiB
/// pages): a safety net should the checkpoints above fall behind. At SQLite's default
/// (1,000 pages) every flush ended with a checkpoint inside the write turn.
const WRITER_AUTOCHECKPOINT_PAGES: u32 = 65_536;

/// When a checkpoint has let the WAL start over, its file is cut back to this size.
const WAL_SIZE_LIMIT_BYTES: u64 = 64 << 20;

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
            .pragma("journal_size_limit", WAL_SIZE_LIMIT_BYTES.to_string())
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
                    .clone()
                    .pragma("cache_size", cache_size(WRITER_CACHE_KIB))
                    .pragma("temp_store", "memory")
                    .pragma(
                        "wal_autocheckpoint",
                        WRITER_AUTOCHECKPOINT_PAGES.to_string(),
                    ),
            )
            .await?;
        let checkpointer = checkpoint_connection(options.clone()).await?;
        let store = SqlStore::with_writer(pool, writes);
        // On the write thread, so that it ends with the last clone of the store. (There
        // is always one with SQLite: `SERIAL_WRITES`.)
        if let Some(thread) = &store.write_thread {
            thread.runtime.spawn(checkpoints(checkpointer, options));
        }
        Ok(store)
    }
}

/// Copies the WAL back into the database file every [`CHECKPOINT_INTERVAL`], beside the
/// writer (a passive checkpoint neither waits for nor holds up writers and readers).
/// While checkpoints fail, it tries less often, up to once a minute.
async fn checkpoints(mut connection: SqliteConnection, options: SqliteConnectOptions) {
    let mut failures = 0_u32;
    let mut behind = false;
    loop {
        tokio::time::sleep(checkpoint_delay(failures)).await;
        // (busy, pages in the WAL, pages of it now in the database file)
        let done = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut connection)
            .await;
        match done {
            Ok((_, wal, copied)) => {
                if failures > 0 {
                    tracing::info!(failures, "WAL checkpoints succeed again");
                }
                failures = 0;
                let past_safety_net = wal > i64::from(WRITER_AUTOCHECKPOINT_PAGES);
                if past_safety_net && !behind {
                    tracing::warn!(
                        wal_pages = wal,
                        "the WAL is past the writer's own checkpoint size: checkpoints are not keeping up"
                    );
                } else if behind && !past_safety_net {
                    tracing::info!(wal_pages = wal, "WAL checkpoints keep up again");
                }
                behind = past_safety_net;
                tracing::trace!(wal_pages = wal, copied_pages = copied, "WAL checkpoint");
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(error.cause_chain = ?e, error.message = %e, "WAL checkpoint failed; retrying less often");
                } else {
                    tracing::debug!(error.cause_chain = ?e, error.message = %e, failures, "WAL checkpoint failed again");
                }
                // Only a connection whose thread is gone is worth replacing; other
                // errors (a full disk, say) would come back on a new one.
                if matches!(e, sqlx::Error::WorkerCrashed | sqlx::Error::Io(_)) {
                    match checkpoint_connection(options.clone()).await {
                        Ok(fresh) => connection = fresh,
                        Err(e) => {
                            tracing::debug!(error.cause_chain = ?e, error.message = %e, "no new connection for WAL checkpoints")
                        }
                    }
                }
            }
        }
    }
}

/// The wait before the next checkpoint: [`CHECKPOINT_INTERVAL`], doubled for each
/// failure in a row, at most a minute.
fn checkpoint_delay(failures: u32) -> Duration {
    (CHECKPOINT_INTERVAL * 2_u32.pow(failures.min(5))).min(Duration::from_secs(60))
}

/// The checkpoints' connection. Its SQLite thread (`sqlite-ckpt-N`) runs at the lowest
/// CPU priority (nice 19) on Linux, so that checkpoints take the cores only when the
/// OCPP path leaves them idle. The thread is started while the connection opens, and
/// Linux threads inherit their creator's priority: so it is opened from a short-lived
/// thread that lowers its own first. Its statements are not logged: a checkpoint
/// starved of CPU would be reported as a slow statement every time.
async fn checkpoint_connection(
    options: SqliteConnectOptions,
) -> Result<SqliteConnection, sqlx::Error> {
    let options = options
        .thread_name(|id| format!("sqlite-ckpt-{id}"))
        .disable_statement_logging();
    let (opened, open) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("ckpt-opener".into())
        .spawn(move || {
            lower_own_priority();
            let connection = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(sqlx::Error::Io)
                .and_then(|runtime| runtime.block_on(SqliteConnection::connect_with(&options)));
            let _ = opened.send(connection);
        })
        .map_err(sqlx::Error::Io)?;
    open.await.map_err(|_| sqlx::Error::WorkerCrashed)?
}

/// Lowers the calling thread's CPU priority to nice 19. If that is refused, the thread
/// keeps its priority: checkpoints are then as urgent as the rest, as before ADR 0020.
#[cfg(target_os = "linux")]
fn lower_own_priority() {
    // SAFETY: setpriority takes plain integers and touches no memory of ours. On Linux,
    // `PRIO_PROCESS` with id 0 means the calling thread only.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } != 0 {
        let error = std::io::Error::last_os_error();
        tracing::debug!(error.message = %error, "SQLite's checkpoint thread keeps its priority");
    }
}

/// Elsewhere `setpriority` would lower the whole process: checkpoints keep the
/// process's priority.
#[cfg(not(target_os = "linux"))]
fn lower_own_priority() {}
