//! Redis (cloud): counters every replica shares. Keys carry `redis.key_prefix`.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis;
use secrecy::{ExposeSecret, SecretString};

use crate::api::limit::FailureCounter;

/// Failed attempts per key, counted in Redis so that a limit holds across replicas:
/// `INCR` and, on the first failure of a window, `EXPIRE`.
pub struct RedisFailureCounter {
    pool: deadpool_redis::Pool,
    prefix: String,
    limit: u32,
    window: Duration,
}

impl RedisFailureCounter {
    pub fn new(
        url: &SecretString,
        prefix: &str,
        limit: u32,
        window: Duration,
    ) -> anyhow::Result<Self> {
        let pool = deadpool_redis::Config::from_url(url.expose_secret())
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))?;
        Ok(RedisFailureCounter {
            pool,
            prefix: format!("{prefix}failures:"),
            limit,
            window,
        })
    }

    async fn connection(&self) -> Result<deadpool_redis::Connection, String> {
        self.pool.get().await.map_err(|e| e.to_string())
    }
}

#[async_trait]
impl FailureCounter for RedisFailureCounter {
    async fn blocked(&self, key: &str) -> Result<bool, String> {
        let mut conn = self.connection().await?;
        let count: Option<u32> = redis::cmd("GET")
            .arg(format!("{}{key}", self.prefix))
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(count.is_some_and(|n| n >= self.limit))
    }

    async fn failed(&self, key: &str) -> Result<(), String> {
        let mut conn = self.connection().await?;
        let key = format!("{}{key}", self.prefix);
        let (count,): (u32,) = redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg(&key)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(self.window.as_secs().max(1))
            .arg("NX")
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let _ = count;
        Ok(())
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
