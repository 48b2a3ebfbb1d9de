//! The attempt rules of the APIs: [`LoginLimits`], the one rule of both login endpoints,
//! and [`SignupLimit`], counted through the domain's `FailureCounter` port (Redis in the
//! cloud, `domain::attempts::AttemptLimiter` in the process when embedded). Client
//! addresses are counted by [`client_key`]: IPv6 by its /64, which one subscriber gets
//! whole.

use std::net::{IpAddr, Ipv6Addr};

use crate::domain::Email;
use crate::domain::ports::FailureCounter;

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
    use crate::domain::attempts::AttemptLimiter;
    use std::time::Duration;

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
