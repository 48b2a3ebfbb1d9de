//! Redis (cloud): what every replica shares: counters (login limits), the station
//! cache, and the live connector status of the chargers. Keys carry `redis.key_prefix`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::domain::ports::{
    ConnectorView, FailureCounter, StationStore, StatusBoard, StoreError, StoreResult, UpsertCounts,
};
use crate::domain::station::{Station, StationFilter};
use crate::domain::{ChargerId, ConnectorState};
use crate::metrics::Metrics;

/// Attempts per key, counted in Redis so that a limit holds across replicas.
pub struct RedisFailureCounter {
    pool: deadpool_redis::Pool,
    prefix: String,
    window: Duration,
}

impl RedisFailureCounter {
    pub fn new(url: &SecretString, prefix: &str, window: Duration) -> anyhow::Result<Self> {
        let pool = pool(url)?;
        Ok(RedisFailureCounter {
            pool,
            prefix: format!("{prefix}attempts:"),
            window,
        })
    }

    async fn connection(&self) -> Result<deadpool_redis::Connection, String> {
        self.pool.get().await.map_err(|e| e.to_string())
    }
}

/// INCR, and start the window on the first attempt (works on every Redis version,
/// unlike `EXPIRE … NX`); returns the count.
const HIT: &str = "local n = redis.call('INCR', KEYS[1]) \
    if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end \
    return n";

/// DECR, never below zero.
const FORGIVE: &str = "local n = tonumber(redis.call('GET', KEYS[1]) or '0') \
    if n > 0 then redis.call('DECR', KEYS[1]) end \
    return 0";

#[async_trait]
impl FailureCounter for RedisFailureCounter {
    async fn hit(&self, key: &str) -> Result<u32, String> {
        let mut conn = self.connection().await?;
        redis::cmd("EVAL")
            .arg(HIT)
            .arg(1)
            .arg(format!("{}{key}", self.prefix))
            .arg(self.window.as_secs().max(1))
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())
    }

    async fn forgive(&self, key: &str) -> Result<(), String> {
        let mut conn = self.connection().await?;
        redis::cmd("EVAL")
            .arg(FORGIVE)
            .arg(1)
            .arg(format!("{}{key}", self.prefix))
            .query_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn reset(&self, key: &str) -> Result<(), String> {
        let mut conn = self.connection().await?;
        redis::cmd("DEL")
            .arg(format!("{}{key}", self.prefix))
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

/// A connection pool to the Redis at `url`. Waiting for a connection, making one and
/// checking one each give up after two seconds: a Redis that does not answer costs the
/// cache and the live status, never a hung request.
pub fn pool(url: &SecretString) -> anyhow::Result<deadpool_redis::Pool> {
    let mut config = deadpool_redis::Config::from_url(url.expose_secret());
    let limit = Some(Duration::from_secs(2));
    config.pool = Some(deadpool_redis::PoolConfig {
        timeouts: deadpool_redis::Timeouts {
            wait: limit,
            create: limit,
            recycle: limit,
        },
        ..Default::default()
    });
    Ok(config.create_pool(Some(deadpool_redis::Runtime::Tokio1))?)
}

/// The station mirror behind a Redis cache: searches and single stations are kept for a
/// while under a generation number that every change to the mirror moves on, so that a
/// sync invalidates them at once on every replica (the old entries just expire). A
/// Redis failure costs the cache, never the answer.
pub struct CachedStations {
    inner: Arc<dyn StationStore>,
    pool: deadpool_redis::Pool,
    prefix: String,
    search_ttl: Duration,
    detail_ttl: Duration,
    metrics: Arc<Metrics>,
}

impl CachedStations {
    pub fn new(
        inner: Arc<dyn StationStore>,
        pool: deadpool_redis::Pool,
        prefix: &str,
        search_ttl: Duration,
        detail_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        CachedStations {
            inner,
            pool,
            prefix: format!("{prefix}stations:"),
            search_ttl,
            detail_ttl,
            metrics,
        }
    }

    /// The key of `what` in the current generation; `None` when Redis is unreachable.
    async fn key(&self, conn: &mut deadpool_redis::Connection, what: &str) -> Option<String> {
        let generation: Option<u64> = redis::cmd("GET")
            .arg(format!("{}generation", self.prefix))
            .query_async(conn)
            .await
            .map_err(|e| tracing::warn!(error = %e, "station cache unavailable"))
            .ok()?;
        Some(format!(
            "{}g{}:{what}",
            self.prefix,
            generation.unwrap_or(0)
        ))
    }

    /// The cached value of `what`, or `load`ed and cached for `ttl`.
    async fn cached<T, F>(&self, what: String, ttl: Duration, load: F) -> StoreResult<T>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
        F: std::future::Future<Output = StoreResult<T>>,
    {
        if ttl.is_zero() {
            return load.await;
        }
        let Ok(mut conn) = self.pool.get().await else {
            tracing::warn!("station cache unavailable");
            return load.await;
        };
        let Some(key) = self.key(&mut conn, &what).await else {
            return load.await;
        };
        let stored: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap_or(None);
        if let Some(value) = stored.and_then(|raw| serde_json::from_str(&raw).ok()) {
            self.metrics.station_cache.with_label_values(&["hit"]).inc();
            return Ok(value);
        }
        self.metrics
            .station_cache
            .with_label_values(&["miss"])
            .inc();
        let value = load.await?;
        if let Ok(raw) = serde_json::to_string(&value) {
            let stored: Result<(), _> = redis::cmd("SET")
                .arg(&key)
                .arg(raw)
                .arg("EX")
                .arg(ttl.as_secs().max(1))
                .query_async(&mut conn)
                .await;
            if let Err(e) = stored {
                tracing::warn!(error = %e, "station cache not written");
            }
        }
        Ok(value)
    }

    /// Moves the generation on: every cached search and station is stale.
    async fn invalidate(&self) {
        let done: Result<u64, String> = async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            redis::cmd("INCR")
                .arg(format!("{}generation", self.prefix))
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = done {
            // Entries then live out their TTL: say so.
            tracing::warn!(error = %e, "station cache not invalidated; entries expire by themselves");
        }
    }
}

#[async_trait]
impl StationStore for CachedStations {
    async fn upsert_stations(&self, stations: &[Station]) -> StoreResult<UpsertCounts> {
        let counts = self.inner.upsert_stations(stations).await?;
        if counts.inserted + counts.updated > 0 {
            self.invalidate().await;
        }
        Ok(counts)
    }

    async fn stations_near(
        &self,
        lat: f64,
        lng: f64,
        radius_km: f64,
        filter: &StationFilter,
        offset: u32,
        limit: u32,
    ) -> StoreResult<Vec<(Station, f64)>> {
        let load = self
            .inner
            .stations_near(lat, lng, radius_km, filter, offset, limit);
        // Searches narrowed by live availability change by the second: never cached.
        if filter.ocm_ids.is_some() {
            return load.await;
        }
        let what = format!("near:{lat:.6}:{lng:.6}:{radius_km}:{offset}:{limit}:{filter:?}");
        self.cached(what, self.search_ttl, load).await
    }

    async fn station(&self, ocm_id: i64) -> StoreResult<Option<Station>> {
        self.cached(
            format!("id:{ocm_id}"),
            self.detail_ttl,
            self.inner.station(ocm_id),
        )
        .await
    }

    async fn touch_stations(
        &self,
        ocm_ids: &[i64],
        at: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<()> {
        self.inner.touch_stations(ocm_ids, at).await
    }

    async fn deactivate_unseen(
        &self,
        area: &crate::domain::ocm::ScopeArea,
        before: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<u64> {
        let gone = self.inner.deactivate_unseen(area, before).await?;
        if gone > 0 {
            self.invalidate().await;
        }
        Ok(gone)
    }

    async fn save_reference_data(&self, raw: &serde_json::Value) -> StoreResult<()> {
        self.inner.save_reference_data(raw).await
    }

    async fn reference_data(&self) -> StoreResult<Option<serde_json::Value>> {
        self.inner.reference_data().await
    }

    fn station_backend(&self) -> &'static str {
        self.inner.station_backend()
    }
}

enum BoardOp {
    Set(ChargerId, Uuid, String),
    Remove(ChargerId, Uuid),
}

/// Deletes a charger's entry only if it is still the given connection's.
const REMOVE_IF_OURS: &str = "if redis.call('HGET', KEYS[1], 'conn') == ARGV[1] then \
    redis.call('DEL', KEYS[1]) end return 0";

/// The live connector status of every replica's chargers, in Redis (cloud). Written
/// behind, in order, by one task; an entry outlives its replica by at most `ttl`
/// (heartbeats renew it).
pub struct RedisBoard {
    pool: deadpool_redis::Pool,
    prefix: String,
    writes: tokio::sync::mpsc::Sender<BoardOp>,
}

/// Board writes waiting for Redis at most; beyond, they are dropped (the next refresh
/// publishes every charger again).
const BOARD_BACKLOG: usize = 100_000;

impl RedisBoard {
    /// Must be called within a Tokio runtime (it starts the writer).
    pub fn new(pool: deadpool_redis::Pool, prefix: &str, ttl: Duration) -> Self {
        let prefix = format!("{prefix}live:charger:");
        let (writes, mut pending) = tokio::sync::mpsc::channel::<BoardOp>(BOARD_BACKLOG);
        let (writer_pool, writer_prefix) = (pool.clone(), prefix.clone());
        tokio::spawn(async move {
            while let Some(first) = pending.recv().await {
                let mut ops = vec![first];
                while let Ok(op) = pending.try_recv() {
                    ops.push(op);
                }
                let mut pipe = redis::pipe();
                for op in &ops {
                    match op {
                        BoardOp::Set(charger, conn, connectors) => {
                            let key = format!("{writer_prefix}{}", charger.as_str());
                            pipe.cmd("HSET")
                                .arg(&key)
                                .arg("conn")
                                .arg(conn.to_string())
                                .arg("connectors")
                                .arg(connectors)
                                .ignore()
                                .cmd("EXPIRE")
                                .arg(&key)
                                .arg(ttl.as_secs().max(1))
                                .ignore();
                        }
                        BoardOp::Remove(charger, conn) => {
                            pipe.cmd("EVAL")
                                .arg(REMOVE_IF_OURS)
                                .arg(1)
                                .arg(format!("{writer_prefix}{}", charger.as_str()))
                                .arg(conn.to_string())
                                .ignore();
                        }
                    }
                }
                let written: Result<(), String> = async {
                    let mut conn = writer_pool.get().await.map_err(|e| e.to_string())?;
                    pipe.query_async(&mut conn).await.map_err(|e| e.to_string())
                }
                .await;
                if let Err(e) = written {
                    tracing::warn!(error = %e, lost = ops.len(), "live connector status not written to Redis");
                }
            }
        });
        RedisBoard {
            pool,
            prefix,
            writes,
        }
    }
}

impl RedisBoard {
    fn send(&self, op: BoardOp) {
        if let Err(tokio::sync::mpsc::error::TrySendError::Full(_)) = self.writes.try_send(op) {
            tracing::warn!(
                "live connector status backlog full (Redis slow or down): an update dropped"
            );
        }
    }
}

#[async_trait]
impl StatusBoard for RedisBoard {
    fn publish(&self, charger: &ChargerId, conn_id: Uuid, connectors: &[ConnectorState]) {
        let view: ConnectorView = connectors
            .iter()
            .map(|c| (c.connector_id, c.status))
            .collect();
        if let Ok(json) = serde_json::to_string(&view) {
            self.send(BoardOp::Set(charger.clone(), conn_id, json));
        }
    }

    fn remove(&self, charger: &ChargerId, conn_id: Uuid) {
        self.send(BoardOp::Remove(charger.clone(), conn_id));
    }

    async fn statuses(
        &self,
        chargers: &[ChargerId],
    ) -> StoreResult<HashMap<ChargerId, ConnectorView>> {
        if chargers.is_empty() {
            return Ok(HashMap::new());
        }
        let unavailable = |e: String| StoreError::Backend(format!("Redis: {e}").into());
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let mut pipe = redis::pipe();
        for charger in chargers {
            pipe.cmd("HGET")
                .arg(format!("{}{}", self.prefix, charger.as_str()))
                .arg("connectors");
        }
        let found: Vec<Option<String>> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(chargers
            .iter()
            .zip(found)
            .filter_map(|(charger, raw)| {
                let view = serde_json::from_str(&raw?).ok()?;
                Some((charger.clone(), view))
            })
            .collect())
    }
}
