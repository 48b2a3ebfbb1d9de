//! Redis (cloud): counters every replica shares. Keys carry `redis.key_prefix`.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis;
use secrecy::{ExposeSecret, SecretString};

use crate::api::limit::FailureCounter;

/// Attempts per key, counted in Redis so that a limit holds across replicas.
pub struct RedisFailureCounter {
    pool: deadpool_redis::Pool,
    prefix: String,
    window: Duration,
}

impl RedisFailureCounter {
    pub fn new(url: &SecretString, prefix: &str, window: Duration) -> anyhow::Result<Self> {
        let pool = deadpool_redis::Config::from_url(url.expose_secret())
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))?;
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
