//! Counting failed attempts (charger authentications, logins) per key within a window,
//! and refusing a key that failed too often until its window ends. In one process
//! ([`AttemptLimiter`]), or shared by every replica ([`FailureCounter`] on Redis).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct AttemptLimiter<K> {
    limit: u32,
    window: Duration,
    failures: Mutex<HashMap<K, (u32, Instant)>>,
}

impl<K: Hash + Eq + Clone> AttemptLimiter<K> {
    /// Entries kept before expired ones are swept.
    const SWEEP_AT: usize = 10_000;

    pub fn new(limit: u32, window: Duration) -> Self {
        AttemptLimiter {
            limit,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key` has used up its failures for now.
    pub fn blocked(&self, key: &K) -> bool {
        let failures = self
            .failures
            .lock()
            .expect("the limiter lock is never held across a panic; qed");
        failures
            .get(key)
            .is_some_and(|(count, since)| *count >= self.limit && since.elapsed() < self.window)
    }

    /// Counts a failure of `key`.
    pub fn failed(&self, key: &K) {
        self.hit(key);
    }

    /// Counts an attempt of `key`; returns the attempts within the current window.
    pub fn hit(&self, key: &K) -> u32 {
        let mut failures = self
            .failures
            .lock()
            .expect("the limiter lock is never held across a panic; qed");
        if failures.len() >= Self::SWEEP_AT {
            let window = self.window;
            failures.retain(|_, (_, since)| since.elapsed() < window);
        }
        let entry = failures.entry(key.clone()).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
        entry.0
    }

    /// Forgets `key`'s failures (after a success).
    pub fn reset(&self, key: &K) {
        self.failures
            .lock()
            .expect("the limiter lock is never held across a panic; qed")
            .remove(key);
    }
}

/// Attempts counted wherever the replicas can share them (logins: Redis in the cloud,
/// this process when embedded). An attempt is counted *before* it is checked, so that
/// parallel attempts cannot all slip under the limit.
#[async_trait::async_trait]
pub trait FailureCounter: Send + Sync {
    /// Counts an attempt of `key`; returns the attempts within the current window.
    async fn hit(&self, key: &str) -> Result<u32, String>;
    /// Takes one attempt back (it succeeded).
    async fn forgive(&self, key: &str) -> Result<(), String>;
    /// Forgets `key`'s attempts.
    async fn reset(&self, key: &str) -> Result<(), String>;
    fn name(&self) -> &'static str;
}

#[async_trait::async_trait]
impl FailureCounter for AttemptLimiter<String> {
    async fn hit(&self, key: &str) -> Result<u32, String> {
        Ok(AttemptLimiter::hit(self, &key.to_owned()))
    }

    async fn forgive(&self, key: &str) -> Result<(), String> {
        let mut failures = self
            .failures
            .lock()
            .expect("the limiter lock is never held across a panic; qed");
        if let Some(entry) = failures.get_mut(key) {
            entry.0 = entry.0.saturating_sub(1);
        }
        Ok(())
    }

    async fn reset(&self, key: &str) -> Result<(), String> {
        AttemptLimiter::reset(self, &key.to_owned());
        Ok(())
    }

    fn name(&self) -> &'static str {
        "in-process"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_blocked_after_the_limit_and_only_within_the_window() {
        let limiter = AttemptLimiter::new(2, Duration::from_millis(50));
        let key = "a".to_owned();
        limiter.failed(&key);
        assert!(!limiter.blocked(&key));
        limiter.failed(&key);
        assert!(limiter.blocked(&key));
        assert!(!limiter.blocked(&"b".to_owned()));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!limiter.blocked(&key), "the window has passed");
        limiter.failed(&key);
        limiter.reset(&key);
        assert!(!limiter.blocked(&key));
    }
}
