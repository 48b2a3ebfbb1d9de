//! Counting attempts (charger authentications, logins, sign-ups) per key within a window,
//! and refusing a key that tried too often until its window ends. In one process
//! ([`AttemptLimiter`], holding at most a fixed number of keys: when full, the oldest key
//! still under its limit goes), or shared by every replica ([`FailureCounter`] on Redis,
//! keys expiring with their window). [`LoginLimits`] is the rule both login endpoints
//! apply. Client addresses are counted by [`client_key`]: IPv6 by its /64, which one
//! subscriber gets whole.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
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
/// that expired keys are dropped and, when too many are held, an old one goes, in
/// constant time per attempt. A key forgotten or renewed leaves its old place in `order`
/// behind; it is skipped when it comes up, and `order` is compacted when such places
/// outnumber the keys.
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
                tracked.evict(self.limit);
            }
            tracked.attempts.insert(key.clone(), (1, now));
        }
        tracked.order.push_back((key.clone(), now));
        if tracked.order.len() > 2 * self.max_keys + 1024 {
            tracked.compact();
        }
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

    /// Drops one key to make room: among the 64 oldest keys, the first still under
    /// `limit` (a key an attacker sprayed), so that flooding the table with new keys does
    /// not wipe out a blocked one unless the 64 oldest are all blocked; failing that,
    /// the oldest.
    fn evict(&mut self, limit: u32) {
        const LOOK_AT: usize = 64;
        while let Some((key, since)) = self.order.front() {
            if self.current(key, *since) {
                break;
            }
            self.order.pop_front();
        }
        let attempts = &self.attempts;
        let spare = self
            .order
            .iter()
            .enumerate()
            .filter_map(|(i, (key, since))| {
                let (count, s) = attempts.get(key)?;
                (s == since).then_some((i, *count))
            })
            .take(LOOK_AT)
            .find(|(_, count)| *count < limit)
            .map(|(i, _)| i);
        if let Some(i) = spare {
            let (key, _) = self
                .order
                .remove(i)
                .expect("found at this position just above; qed");
            self.attempts.remove(&key);
            return;
        }
        while let Some((key, since)) = self.order.pop_front() {
            if self.current(&key, since) {
                self.attempts.remove(&key);
                return;
            }
        }
    }

    /// Drops the places of keys forgotten or renewed since.
    fn compact(&mut self) {
        let attempts = &self.attempts;
        self.order
            .retain(|(key, since)| attempts.get(key).is_some_and(|(_, s)| s == since));
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

/// The key a client address is counted by: an IPv4 address itself (also when IPv6
/// carries it), an IPv6 address by its /64, the block a single subscriber is given.
pub fn client_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// Too many attempts from this account or address; try again after the window.
#[derive(Debug, thiserror::Error)]
#[error("too many attempts; try again later")]
pub struct RateLimited;

/// Counts an attempt of `key`; a counter that cannot be reached does not lock everybody
/// out: the attempt goes on, and the trouble is logged.
async fn count(counter: &dyn FailureCounter, key: &str) -> u32 {
    counter.hit(key).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, counter = counter.name(), "attempt limit unavailable");
        0
    })
}

/// The rule of both login endpoints (the operator API's and the app's). Every attempt is
/// counted before its password is checked, so that parallel attempts cannot all slip
/// through, and each count only when the one before let the attempt through: first per
/// client address (`per_address`), then per account from that address
/// (`per_account_and_address`: guesses from one address lock out that address only),
/// then per account from anywhere (`per_account`, higher: a bound on guessing from many
/// addresses, and so also a lever to lock the account out, for someone with many
/// addresses). A success takes its attempts back. Only a parsed e-mail address (254
/// bytes at most, never a space) names an account.
pub struct LoginLimits {
    /// Account keys, and account-and-address keys.
    pub accounts: Box<dyn FailureCounter>,
    pub addresses: Box<dyn FailureCounter>,
    pub per_account_and_address: u32,
    pub per_account: u32,
    pub per_address: u32,
}

/// An attempt that was let through; [`LoginAttempt::succeeded`] takes it back.
pub struct LoginAttempt<'a> {
    limits: &'a LoginLimits,
    /// The account's key and the account-and-address key.
    account: Option<(String, String)>,
    address: Option<String>,
}

impl LoginLimits {
    /// Counts a login attempt for `email` (when it parses) from `address`.
    pub async fn attempt(
        &self,
        email: Option<&Email>,
        address: Option<IpAddr>,
    ) -> Result<LoginAttempt<'_>, RateLimited> {
        let address = address.map(client_key);
        let address_key = address.map(|a| format!("address:{a}"));
        if let Some(key) = &address_key
            && count(&*self.addresses, key).await > self.per_address
        {
            return Err(RateLimited);
        }
        // Spaces separate the parts: an e-mail address has none, so no account's keys
        // can be spelt as another's.
        let account = email.map(|e| {
            let from = address.map_or_else(|| "-".to_owned(), |a| a.to_string());
            (
                format!("account {}", e.as_str()),
                format!("account {} from {from}", e.as_str()),
            )
        });
        if let Some((anywhere, here)) = &account
            && (count(&*self.accounts, here).await > self.per_account_and_address
                || count(&*self.accounts, anywhere).await > self.per_account)
        {
            return Err(RateLimited);
        }
        Ok(LoginAttempt {
            limits: self,
            account,
            address: address_key,
        })
    }
}

impl LoginAttempt<'_> {
    /// The password was right: the account's failures from this address are forgotten,
    /// and this attempt is taken back from the others.
    pub async fn succeeded(self) {
        let LoginLimits {
            accounts,
            addresses,
            ..
        } = self.limits;
        let taken_back = async {
            if let Some((anywhere, here)) = &self.account {
                accounts.reset(here).await?;
                accounts.forgive(anywhere).await?;
            }
            match &self.address {
                Some(address) => addresses.forgive(address).await,
                None => Ok(()),
            }
        };
        if let Err(e) = taken_back.await {
            tracing::warn!(error = %e, "login attempts not taken back");
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
        let Some(address) = address.map(client_key) else {
            return Ok(());
        };
        if count(&*self.counter, &format!("signup:{address}")).await > self.per_address {
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

    #[test]
    fn a_flood_of_new_keys_does_not_wipe_out_a_blocked_one() {
        let limiter = AttemptLimiter::new(3, Duration::from_secs(60), 100);
        let victim = "victim".to_owned();
        for _ in 0..3 {
            limiter.hit(&victim);
        }
        assert!(limiter.blocked(&victim));
        for i in 0..10_000 {
            limiter.hit(&format!("sprayed{i}"));
        }
        assert!(limiter.blocked(&victim), "kept while sprayed keys went");
        assert_eq!(limiter.tracked_keys(), 100);
        assert!(limiter.lock().order.len() <= 2 * 100 + 1024 + 1);
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    fn limits() -> LoginLimits {
        let counter = || -> Box<dyn FailureCounter> {
            Box::new(AttemptLimiter::<String>::new(
                2,
                Duration::from_secs(60),
                100,
            ))
        };
        LoginLimits {
            accounts: counter(),
            addresses: counter(),
            per_account_and_address: 2,
            per_account: 4,
            per_address: 3,
        }
    }

    #[tokio::test]
    async fn logins_are_counted_per_address_then_per_account_from_it_and_from_anywhere() {
        let limits = limits();
        let ada = Email::parse("ada@example.org").unwrap();
        let here: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limits.attempt(Some(&ada), Some(here)).await.is_ok());
        assert!(limits.attempt(Some(&ada), Some(here)).await.is_ok());
        assert!(
            limits.attempt(Some(&ada), Some(here)).await.is_err(),
            "the account from here"
        );
        // Someone guessing from here does not lock Ada out at her own address.
        let hers: IpAddr = "198.51.100.1".parse().unwrap();
        let attempt = limits.attempt(Some(&ada), Some(hers)).await.unwrap();
        attempt.succeeded().await;
        // The address is over its limit: refused, and nothing else counted.
        let bob = Email::parse("bob@example.org").unwrap();
        assert!(
            limits.attempt(Some(&bob), Some(here)).await.is_err(),
            "the address"
        );
        let elsewhere: IpAddr = "203.0.113.5".parse().unwrap();
        assert!(limits.attempt(Some(&bob), Some(elsewhere)).await.is_ok());
        assert!(
            limits.attempt(Some(&bob), Some(elsewhere)).await.is_ok(),
            "bob not counted from here"
        );
        assert!(
            limits.attempt(None, Some(elsewhere)).await.is_ok(),
            "no account named"
        );
    }

    #[tokio::test]
    async fn no_e_mail_address_counts_as_another_account_s_attempts() {
        let limits = limits();
        let hers: IpAddr = "198.51.100.1".parse().unwrap();
        // An address that parses, and that a ':'-separated key would have spelt as
        // "ada@example.org from 198.51.100.1".
        let lookalike = Email::parse("ada@example.org:198.51.100.1").unwrap();
        let elsewhere: IpAddr = "203.0.113.9".parse().unwrap();
        for _ in 0..3 {
            let _ = limits.attempt(Some(&lookalike), Some(elsewhere)).await;
        }
        let ada = Email::parse("ada@example.org").unwrap();
        assert!(limits.attempt(Some(&ada), Some(hers)).await.is_ok());
    }

    #[tokio::test]
    async fn guesses_from_many_addresses_meet_the_account_s_own_limit() {
        let limits = limits();
        let ada = Email::parse("ada@example.org").unwrap();
        let mut refused = 0;
        for i in 0..10u8 {
            let from = IpAddr::from([192, 0, 2, i]);
            if limits.attempt(Some(&ada), Some(from)).await.is_err() {
                refused += 1;
            }
        }
        assert_eq!(refused, 6, "per_account (4) from anywhere");
    }
}
