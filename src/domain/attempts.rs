//! Attempts counted per key within a window, in one process: charger authentications,
//! and (embedded) logins and sign-ups. At most a fixed number of keys is held: when full,
//! an old key still under its limit goes first, so that flooding the table with new keys
//! does not erase a blocked one. Every operation takes constant time (amortised).
//! `persistence::memory` makes it the embedded twin of the Redis attempt counter.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
}
