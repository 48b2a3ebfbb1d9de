//! Persistence adapters, one module per backend, each implementing the ports of
//! [`crate::domain::ports`]. `sqlite` backs the embedded profile, `postgres` the cloud one.

pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use anyhow::Context;

use crate::config::{Profile, Settings};
use crate::domain::ports::Store;

/// Opens the store the settings' profile calls for.
pub async fn open(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let db = &settings.database;
    match settings.profile {
        Profile::Embedded => {
            std::fs::create_dir_all(&settings.data_dir).with_context(|| {
                format!("creating data directory {}", settings.data_dir.display())
            })?;
            let path = settings.data_dir.join("jucr.sqlite");
            let store =
                sqlite::SqlStore::open(&path, db.sqlite_synchronous_full, db.max_connections)
                    .await
                    .with_context(|| format!("opening SQLite database {}", path.display()))?;
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
            Ok(Arc::new(store))
        }
    }
}

/// Applies pending migrations for the settings' profile.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let db = &settings.database;
    match settings.profile {
        Profile::Embedded => {
            std::fs::create_dir_all(&settings.data_dir).with_context(|| {
                format!("creating data directory {}", settings.data_dir.display())
            })?;
            let path = settings.data_dir.join("jucr.sqlite");
            let store = sqlite::SqlStore::open(&path, db.sqlite_synchronous_full, 1).await?;
            sqlite::MIGRATOR
                .run(store.pool())
                .await
                .context("migrating SQLite")?;
        }
        Profile::Cloud => {
            let url = db
                .url
                .as_ref()
                .context("the cloud profile needs JUCR__DATABASE__URL")?;
            let store = postgres::SqlStore::connect(url, 1)
                .await
                .context("connecting to PostgreSQL")?;
            postgres::MIGRATOR
                .run(store.pool())
                .await
                .context("migrating PostgreSQL")?;
        }
    }
    Ok(())
}
