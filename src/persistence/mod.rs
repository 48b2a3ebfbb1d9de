//! Persistence adapters, one module per backend, each implementing the ports of
//! [`crate::domain::ports`]. `sqlite` backs the embedded profile, `postgres` the cloud one.

pub mod amqp;
pub mod memory;
pub mod mongo;
pub mod postgres;
pub mod redis;
pub mod sqlite;

use std::sync::Arc;

use anyhow::Context;

use crate::config::{Profile, Settings, StationStoreKind};
use crate::domain::ports::{StationStore, StatusBoard, Store};

/// The embedded profile's database file in `data_dir`.
pub fn sqlite_file(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("jucr.sqlite")
}

/// The embedded database's write-ahead log: SQLite keeps it beside the database file,
/// named after it with `-wal` appended.
pub fn sqlite_wal_file(data_dir: &std::path::Path) -> std::path::PathBuf {
    let mut wal = sqlite_file(data_dir).into_os_string();
    wal.push("-wal");
    wal.into()
}

/// The data directory holds the JWT key, webhook secrets and password hashes: it is
/// created readable by the service's user only (0700), and an existing one is made so.
fn private_directory(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    restrict(dir, 0o700)
}

/// A file of the data directory: created 0600 when missing, made 0600 when it exists.
fn private_file(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    restrict(path, 0o600)
}

/// Takes away what `path` allows beyond `mode`, saying so.
fn restrict(path: &std::path::Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path)
        .with_context(|| format!("reading the mode of {}", path.display()))?
        .permissions()
        .mode()
        & 0o777;
    if current & !mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("making {} private", path.display()))?;
        tracing::warn!(path = %path.display(), was = format!("{current:o}"), now = format!("{mode:o}"), "made private to the service's user");
    }
    Ok(())
}

fn with_suffix(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// Opens the store the settings' profile calls for, first applying pending migrations
/// when `migrate` is set.
pub async fn open(settings: &Settings, migrate: bool) -> anyhow::Result<Arc<dyn Store>> {
    let db = &settings.database;
    match settings.profile {
        Profile::Embedded => {
            let dir = &settings.data_dir;
            private_directory(dir)?;
            let path = sqlite_file(dir);
            private_file(&path)?;
            let store =
                sqlite::SqlStore::open(&path, db.sqlite_synchronous_full, db.max_connections)
                    .await
                    .with_context(|| format!("opening SQLite database {}", path.display()))?;
            // SQLite gives its log and shared-memory files the database's mode; older
            // releases left them readable by all.
            for companion in [sqlite_wal_file(dir), with_suffix(&path, "-shm")] {
                if companion.exists() {
                    private_file(&companion)?;
                }
            }
            if migrate {
                sqlite::MIGRATOR
                    .run(store.pool())
                    .await
                    .context("migrating SQLite")?;
            }
            Ok(Arc::new(store))
        }
        Profile::Cloud => {
            let url = db
                .url
                .as_ref()
                .context("the cloud profile needs JUCR__DATABASE__URL")?;
            let store = postgres::SqlStore::connect(url, db.max_connections)
                .await
                .context("connecting to PostgreSQL")?;
            if migrate {
                postgres::MIGRATOR
                    .run(store.pool())
                    .await
                    .context("migrating PostgreSQL")?;
            }
            Ok(Arc::new(store))
        }
    }
}

/// The station mirror the settings call for (the profile's database, or MongoDB), behind
/// the Redis cache when Redis is configured.
pub async fn open_stations(
    settings: &Settings,
    store: &Arc<dyn Store>,
    metrics: &Arc<crate::metrics::Metrics>,
) -> anyhow::Result<Arc<dyn StationStore>> {
    let base: Arc<dyn StationStore> = match settings.stations.store {
        StationStoreKind::Database => store.clone(),
        StationStoreKind::Mongodb => {
            let url = settings
                .mongodb
                .url
                .as_ref()
                .context("stations.store = mongodb needs JUCR__MONGODB__URL")?;
            let mongo = Arc::new(
                mongo::MongoStationStore::connect(url, &settings.mongodb.database)
                    .await
                    .context("configuring MongoDB")?,
            );
            // Searches need the 2dsphere index: made now if MongoDB answers, else as
            // soon as it does (the service does not wait for it).
            let ready =
                tokio::time::timeout(std::time::Duration::from_secs(15), mongo.ensure_indexes())
                    .await;
            if !matches!(ready, Ok(Ok(()))) {
                tracing::error!(
                    "MongoDB does not answer yet; station indexes will be made when it does"
                );
                let mongo = mongo.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                        match mongo.ensure_indexes().await {
                            Ok(()) => break tracing::info!("MongoDB station indexes ready"),
                            Err(e) => {
                                tracing::warn!(error = %e, "MongoDB station indexes not made yet")
                            }
                        }
                    }
                });
            }
            mongo
        }
    };
    let s = &settings.stations;
    Ok(match &settings.redis.url {
        Some(url) if s.search_cache_secs > 0 || s.detail_cache_secs > 0 => {
            Arc::new(redis::CachedStations::new(
                base,
                redis::pool(url).context("configuring Redis")?,
                &settings.redis.key_prefix,
                std::time::Duration::from_secs(s.search_cache_secs),
                std::time::Duration::from_secs(s.detail_cache_secs),
                metrics.clone(),
            ))
        }
        _ => base,
    })
}

/// Where the live connector status of the chargers is kept: Redis when configured
/// (shared by the replicas), else this process.
pub fn status_board(settings: &Settings) -> anyhow::Result<Arc<dyn StatusBoard>> {
    Ok(match &settings.redis.url {
        Some(url) => Arc::new(redis::RedisBoard::new(
            redis::pool(url).context("configuring Redis")?,
            &settings.redis.key_prefix,
            // The registry publishes every charger again each STATUS_REFRESH; a replica
            // that died leaves its chargers shown at most this long.
            crate::domain::ports::STATUS_REFRESH * 3,
        )),
        None => Arc::new(memory::LocalBoard::default()),
    })
}
