//! Persistence adapters, one module per backend, each implementing the ports of
//! [`crate::domain::ports`]. `sqlite` backs the embedded profile, `postgres` the cloud one.

pub mod amqp;
pub mod postgres;
pub mod redis;
pub mod sqlite;

use std::sync::Arc;

use anyhow::Context;

use crate::config::{Profile, Settings};
use crate::domain::ports::Store;

/// Opens the store the settings' profile calls for, first applying pending migrations
/// when `migrate` is set.
pub async fn open(settings: &Settings, migrate: bool) -> anyhow::Result<Arc<dyn Store>> {
    let db = &settings.database;
    match settings.profile {
        Profile::Embedded => {
            let dir = &settings.data_dir;
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating data directory {}", dir.display()))?;
            let path = dir.join("jucr.sqlite");
            let store =
                sqlite::SqlStore::open(&path, db.sqlite_synchronous_full, db.max_connections)
                    .await
                    .with_context(|| format!("opening SQLite database {}", path.display()))?;
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
