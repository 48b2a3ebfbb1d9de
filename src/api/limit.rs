//! Counting attempts (charger authentications, logins, sign-ups) per key within a window,
//! and refusing a key that tried too often until its window ends. In one process
//! ([`AttemptLimiter`], holding at most a fixed number of keys, oldest out), or shared by
//! every replica ([`FailureCounter`] on Redis). [`LoginLimits`] is the rule both login
//! endpoints apply.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::Email;

pub struct AttemptLimiter<K> {
    limit: u32,
    window: Duration,
    max_keys: usize,
    tracked: Mutex<Tracked<K>>,
}

/// Attempts per key, and the keys in the order their windows began (oldest first), so
/// that expired keys are dropped and, when too many are held, the oldest goes, each in
/// constant time. A key forgotten or renewed leaves its old place in `order` behind; it
/// is skipped when it comes up.
struct Tracked<K> {
    attempts: HashMap<K, (u32, Instant)>,
    order: VecDeque<(K, Instant)>,
}

impl<K: Hash + Eq + Clone> AttemptLimiter<K> {
    pub fn new(limit: u32, window: Duration, max_keys: usize) -> Self {
        AttemptLimiter {
            limit,
            window,
            max_keys: max_keys.max(1),
            tracked: Mutex::new(Tracked {
                attempts: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracked<K>> {
        self.tracked
            .lock()
            .expect("the limiter lock is never held across a panic; qed")
    }

    /// Whether `key` has used up its attempts for now.
    pub fn blocked(&self, key: &K) -> bool {
        self.lock()
            .attempts
            .get(key)
            .is_some_and(|(count, since)| *count >= self.limit && since.elapsed() < self.window)
    }

    /// Counts an attempt of `key`; returns the attempts within the current window.
    pub fn hit(&self, key: &K) -> u32 {
        let mut tracked = self.lock();
        let now = Instant::now();
        tracked.drop_expired(now, self.window);
        let renewed = match tracked.attempts.get_mut(key) {
            Some(entry) if now.duration_since(entry.1) < self.window => {
                entry.0 += 1;
                return entry.0;
            }
            Some(entry) => {
                *entry = (1, now);
                true
            }
            None => false,
        };
        if !renewed {
            while tracked.attempts.len() >= self.max_keys {
                tracked.drop_oldest();
            }
            tracked.attempts.insert(key.clone(), (1, now));
        }
        tracked.order.push_back((key.clone(), now));
        1
    }

    /// Takes one attempt of `key` back (it succeeded).
    pub fn forgive(&self, key: &K) {
        if let Some(entry) = self.lock().attempts.get_mut(key) {
            entry.0 = entry.0.saturating_sub(1);
        }
    }

    /// Forgets `key`'s attempts.
    pub fn reset(&self, key: &K) {
        self.lock().attempts.remove(key);
    }

    /// How many keys are held (for tests of the bound).
    pub fn tracked_keys(&self) -> usize {
        self.lock().attempts.len()
    }
}

impl<K: Hash + Eq> Tracked<K> {
    /// Whether `key`'s current window is the one that began at `since`.
    fn current(&self, key: &K, since: Instant) -> bool {
        self.attempts.get(key).is_some_and(|(_, s)| *s == since)
    }

    fn drop_expired(&mut self, now: Instant, window: Duration) {
        while let Some((key, since)) = self.order.front() {
            if now.duration_since(*since) < window {
                break;
            }
            if self.current(key, *since) {
                self.attempts.remove(key);
            }
            self.order.pop_front();
        }
    }

    fn drop_oldest(&mut self) {
        while let Some((key, since)) = self.order.pop_front() {
            if self.current(&key, since) {
                self.attempts.remove(&key);
                return;
            }
        }
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
        AttemptLimiter::forgive(self, &key.to_owned());
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

/// Too many attempts from this account or address; try again after the window.
#[derive(Debug, thiserror::Error)]
#[error("too many attempts; try again later")]
pub struct RateLimited;

/// The rule of both login endpoints (the operator API's and the app's): every attempt
/// is counted before its password is checked, per account and per client address, and
/// refused past either limit; a success takes its attempts back. Only a parsed e-mail
/// address names an account, so the keys are bounded (254 bytes) whatever is sent.
pub struct LoginLimits {
    counter: Box<dyn FailureCounter>,
    per_account: u32,
    per_address: u32,
}

/// An attempt that was let through; [`LoginAttempt::succeeded`] takes it back.
pub struct LoginAttempt<'a> {
    limits: &'a LoginLimits,
    account: Option<String>,
    address: Option<String>,
}

impl LoginLimits {
    pub fn new(counter: Box<dyn FailureCounter>, per_account: u32, per_address: u32) -> Self {
        LoginLimits {
            counter,
            per_account,
            per_address,
        }
    }

    /// Counts a login attempt for `email` (when it parses) from `address`. A counter that
    /// cannot be reached does not lock everybody out: the attempt goes on, logged.
    pub async fn attempt(
        &self,
        email: Option<&Email>,
        address: Option<IpAddr>,
    ) -> Result<LoginAttempt<'_>, RateLimited> {
        let account = email.map(|e| format!("account:{}", e.as_str()));
        let address = address.map(|a| format!("address:{a}"));
        let over = |key: &Option<String>, limit: u32| {
            let key = key.clone();
            async move {
                match key {
                    Some(key) => self.count(&key).await > limit,
                    None => false,
                }
            }
        };
        let account_over = over(&account, self.per_account).await;
        let address_over = over(&address, self.per_address).await;
        if account_over || address_over {
            return Err(RateLimited);
        }
        Ok(LoginAttempt {
            limits: self,
            account,
            address,
        })
    }

    async fn count(&self, key: &str) -> u32 {
        self.counter.hit(key).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, counter = self.counter.name(), "attempt limit unavailable");
            0
        })
    }
}

impl LoginAttempt<'_> {
    /// The password was right: the account's failures are forgotten, and the address's
    /// attempt taken back.
    pub async fn succeeded(self) {
        let counter = &self.limits.counter;
        let taken_back = async {
            if let Some(account) = &self.account {
                counter.reset(account).await?;
            }
            match &self.address {
                Some(address) => counter.forgive(address).await,
                None => Ok(()),
            }
        };
        if let Err(e) = taken_back.await {
            tracing::warn!(error = %e, counter = counter.name(), "login attempts not taken back");
        }
    }
}

/// Sign-ups per client address within a window (aliases in one request count each).
pub struct SignupLimit {
    counter: Box<dyn FailureCounter>,
    per_address: u32,
}

impl SignupLimit {
    pub fn new(counter: Box<dyn FailureCounter>, per_address: u32) -> Self {
        SignupLimit {
            counter,
            per_address,
        }
    }

    /// Counts a sign-up from `address`; refused past the limit. Without an address (no
    /// peer: not over TCP) nothing is counted.
    pub async fn attempt(&self, address: Option<IpAddr>) -> Result<(), RateLimited> {
        let Some(address) = address else {
            return Ok(());
        };
        let count = self
            .counter
            .hit(&format!("signup:{address}"))
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, counter = self.counter.name(), "sign-up limit unavailable");
                0
            });
        if count > self.per_address {
            return Err(RateLimited);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_blocked_after_the_limit_and_only_within_the_window() {
        let limiter = AttemptLimiter::new(2, Duration::from_millis(50), 100);
        let key = "a".to_owned();
        limiter.hit(&key);
        assert!(!limiter.blocked(&key));
        limiter.hit(&key);
        assert!(limiter.blocked(&key));
        assert!(!limiter.blocked(&"b".to_owned()));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!limiter.blocked(&key), "the window has passed");
        assert_eq!(limiter.hit(&key), 1, "a new window");
        limiter.reset(&key);
        assert!(!limiter.blocked(&key));
    }

    #[test]
    fn the_oldest_keys_go_first_when_too_many_are_held() {
        let limiter = AttemptLimiter::new(5, Duration::from_secs(60), 3);
        for key in ["a", "b", "c", "d", "e"] {
            limiter.hit(&key.to_owned());
        }
        assert_eq!(limiter.tracked_keys(), 3);
        // "a" and "b" went: counting them starts again; "e" is still counted.
        assert_eq!(limiter.hit(&"e".to_owned()), 2);
        assert_eq!(limiter.hit(&"a".to_owned()), 1);
        assert_eq!(limiter.tracked_keys(), 3);
    }

    #[test]
    fn forgotten_keys_leave_no_trace_once_their_window_is_over() {
        let limiter = AttemptLimiter::new(5, Duration::from_millis(20), 1000);
        for i in 0..100 {
            let key = format!("k{i}");
            limiter.hit(&key);
            limiter.reset(&key);
        }
        std::thread::sleep(Duration::from_millis(30));
        limiter.hit(&"last".to_owned());
        let tracked = limiter.lock();
        assert_eq!(tracked.attempts.len(), 1);
        assert_eq!(tracked.order.len(), 1, "stale places were dropped");
    }

    #[tokio::test]
    async fn logins_are_counted_per_parsed_account_and_per_address() {
        let limits = LoginLimits::new(
            Box::new(AttemptLimiter::<String>::new(
                0,
                Duration::from_secs(60),
                100,
            )),
            2,
            3,
        );
        let ada = Email::parse("ada@example.org").unwrap();
        let here: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limits.attempt(Some(&ada), Some(here)).await.is_ok());
        assert!(limits.attempt(Some(&ada), Some(here)).await.is_ok());
        assert!(
            limits.attempt(Some(&ada), Some(here)).await.is_err(),
            "the account"
        );
        let bob = Email::parse("bob@example.org").unwrap();
        assert!(
            limits.attempt(Some(&bob), Some(here)).await.is_err(),
            "the address"
        );
        let there: IpAddr = "192.0.2.2".parse().unwrap();
        let attempt = limits.attempt(Some(&bob), Some(there)).await.unwrap();
        attempt.succeeded().await;
        assert!(
            limits.attempt(None, Some(there)).await.is_ok(),
            "no account named"
        );
    }
}
