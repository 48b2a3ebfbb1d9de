//! Password hashing (argon2id, a bounded number at once) and API tokens (HS256 JWT).

use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::distr::{Alphanumeric, SampleString};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::domain::{Email, Role, TokenState, User};

/// Hashes a password into an argon2id PHC string. CPU-heavy: call off the async threads.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters and a generated salt cannot fail; qed")
        .to_string()
}

/// Checks a password against a PHC string. A malformed hash never verifies.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// A random alphanumeric secret of `len` characters (generated passwords, JWT keys).
pub fn random_secret(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// The SHA-256 of an opaque token, hex: what is stored of refresh tokens.
pub fn token_hash(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub sub: Uuid,
    pub email: String,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
    /// The token's own id (for logs and audits; never reused).
    #[serde(default)]
    pub jti: Uuid,
    /// The version of the user's tokens when this one was issued: once the user logs
    /// out or changes role, the version moves on and this token is refused.
    #[serde(default)]
    pub ver: i64,
}

/// The shortest `auth.jwt_secret` accepted: HS256 with a shorter key can be guessed
/// offline from any token.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Issues and checks API tokens.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_secs: u64,
}

impl TokenKeys {
    pub fn new(secret: &SecretString, ttl_secs: u64) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        TokenKeys {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            ttl_secs,
        }
    }

    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// A token for `user` as their token state is now (see
    /// [`crate::domain::ports::AccountStore::token_state`]): its version, and its role.
    pub fn issue(
        &self,
        user: &User,
        state: TokenState,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: user.user_id,
            email: user.email.as_str().to_owned(),
            role: state.role,
            iat: now,
            exp: now + self.ttl_secs as i64,
            jti: Uuid::new_v4(),
            ver: state.version,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map(|data| data.claims)
    }
}

/// Runs argon2 on the blocking pool, at most `concurrency` at once and with at most
/// `queue` more waiting; beyond that it refuses at once. Each hash takes 19 MiB and
/// tens of milliseconds of a core: without a bound, parallel wrong logins (or charger
/// upgrades) would take the memory and every blocking thread.
pub struct PasswordHashing {
    permits: Arc<Semaphore>,
    /// Running and waiting.
    admitted: Arc<AtomicUsize>,
    capacity: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum HashingError {
    #[error("too many passwords are being checked right now; try again shortly")]
    Busy,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

impl PasswordHashing {
    pub fn new(concurrency: usize, queue: usize) -> Self {
        let concurrency = concurrency.max(1);
        PasswordHashing {
            permits: Arc::new(Semaphore::new(concurrency)),
            admitted: Arc::default(),
            capacity: concurrency + queue,
        }
    }

    /// Whether `password` matches the PHC string `phc`.
    pub async fn verify(&self, password: String, phc: String) -> Result<bool, HashingError> {
        self.run(move || verify_password(&password, &phc)).await
    }

    /// The argon2id PHC string of `password`.
    pub async fn hash(&self, password: String) -> Result<String, HashingError> {
        self.run(move || hash_password(&password)).await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashingError> {
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(HashingError::Busy);
        }
        // Given back when the work is done, even if the caller has gone meanwhile.
        let admitted = Admitted(self.admitted.clone());
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed; qed");
        tokio::task::spawn_blocking(move || {
            let out = work();
            drop((permit, admitted));
            out
        })
        .await
        .map_err(|e| HashingError::Failed(e.to_string()))
    }
}

/// Why a user could not be made.
#[derive(Debug, thiserror::Error)]
pub enum NewUserError {
    #[error("passwords need at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error("passwords have at most {MAX_PASSWORD_CHARS} characters")]
    TooLong,
    #[error(transparent)]
    Hashing(#[from] HashingError),
}

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 200;

/// A user with a freshly hashed password.
pub async fn new_user(
    hashing: &PasswordHashing,
    email: Email,
    password: String,
    role: Role,
) -> Result<User, NewUserError> {
    let length = password.chars().count();
    if length < MIN_PASSWORD_CHARS {
        return Err(NewUserError::TooShort);
    }
    if length > MAX_PASSWORD_CHARS {
        return Err(NewUserError::TooLong);
    }
    Ok(User {
        user_id: Uuid::new_v4(),
        email,
        password_hash: hashing.hash(password).await?,
        role,
        created_at: Utc::now(),
    })
}

struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password("correct horse");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn tokens_round_trip_and_foreign_tokens_fail() {
        let keys = TokenKeys::new(&SecretString::from("k".repeat(32)), 60);
        let other = TokenKeys::new(&SecretString::from("x".repeat(32)), 60);
        let user = User {
            user_id: Uuid::new_v4(),
            email: Email::parse("a@b.c").unwrap(),
            password_hash: String::new(),
            role: Role::Operator,
            created_at: Utc::now(),
        };
        let state = TokenState {
            version: 7,
            role: Role::Operator,
        };
        let token = keys.issue(&user, state).unwrap();
        let claims = keys.verify(&token).unwrap();
        assert_eq!(
            (claims.sub, claims.role, claims.ver),
            (user.user_id, Role::Operator, 7)
        );
        assert_ne!(
            claims.jti,
            keys.verify(&keys.issue(&user, state).unwrap()).unwrap().jti
        );
        assert!(other.verify(&token).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashing_beyond_its_queue_is_refused_at_once() {
        let hashing = Arc::new(PasswordHashing::new(1, 1));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(std::sync::Mutex::new(gate));
        let admitted = |n| {
            let hashing = hashing.clone();
            async move {
                while hashing.admitted.load(Ordering::Acquire) != n {
                    tokio::task::yield_now().await;
                }
            }
        };
        let mut held = Vec::new();
        for n in 1..=2 {
            // One runs (blocked on the gate), then one waits for it.
            let (hashing, gate) = (hashing.clone(), gate.clone());
            held.push(tokio::spawn(async move {
                hashing
                    .run(move || gate.lock().unwrap().recv().is_ok())
                    .await
            }));
            admitted(n).await;
        }
        let phc = hash_password("pw");
        assert!(matches!(
            hashing.verify("pw".into(), phc.clone()).await,
            Err(HashingError::Busy)
        ));
        release.send(()).unwrap();
        release.send(()).unwrap();
        for run in held {
            assert!(run.await.unwrap().unwrap());
        }
        // Once they are done, there is room again.
        assert!(hashing.verify("pw".into(), phc).await.unwrap());
    }
}
