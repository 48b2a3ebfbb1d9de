//! Platform users: drivers, operators and admins.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Driver,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Driver => "driver",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "driver" => Some(Role::Driver),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Operators and admins may use the operator API.
    pub fn may_operate(self) -> bool {
        self >= Role::Operator
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an access token must still match to be accepted: its user's token version (moved
/// on by logout and by a change of role) and role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenState {
    pub version: i64,
    pub role: Role,
}

/// A lower-cased, syntactically plausible e-mail address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    /// The longest address (RFC 5321's path limit).
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.trim().len() > Self::MAX_LEN {
            return Err(format!(
                "an e-mail address has at most {} characters",
                Self::MAX_LEN
            ));
        }
        let raw = raw.trim().to_lowercase();
        let valid = raw.len() <= Self::MAX_LEN
            && raw.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !domain.is_empty()
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            })
            && !raw.chars().any(|c| c.is_whitespace() || c.is_control());
        if valid {
            Ok(Email(raw))
        } else {
            Err(format!(
                "{:?} is not an e-mail address",
                super::echo::echo(&raw)
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Email::parse(&value)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> Self {
        e.0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub user_id: Uuid,
    pub email: Email,
    /// argon2 PHC string.
    pub password_hash: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(
            Email::parse(" Ada@Example.org ").unwrap().as_str(),
            "ada@example.org"
        );
        assert!(Email::parse("nobody").is_err());
        assert!(Email::parse("@x.org").is_err());
        assert!(Email::parse("a@").is_err());
    }

    #[test]
    fn only_operators_and_admins_operate() {
        assert!(!Role::Driver.may_operate());
        assert!(Role::Operator.may_operate());
        assert!(Role::Admin.may_operate());
    }
}
