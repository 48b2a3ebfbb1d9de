//! Identifiers parsed once at the edge ("parse, don't validate").

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidId(pub String);

/// A charge point's identity: the last path segment of `/ocpp/{chargePointId}` and
/// the Basic-auth user name. OCPP limits it to 48 characters (1.6 chargeBoxIdentity,
/// 2.0.1 part 4 §3.1.1); we also refuse characters that would not survive a URL path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ChargerId(String);

impl ChargerId {
    pub const MAX_LEN: usize = 48;

    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidId> {
        let raw = raw.into();
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(InvalidId(format!(
                "charger id must be 1 to {} characters",
                Self::MAX_LEN
            )));
        }
        if let Some(c) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-_.*~@+".contains(*c)))
        {
            return Err(InvalidId(format!(
                "charger id may hold letters, digits and - _ . * ~ @ + only, not {c:?}"
            )));
        }
        Ok(ChargerId(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ChargerId {
    type Error = InvalidId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        ChargerId::parse(value)
    }
}

impl From<ChargerId> for String {
    fn from(id: ChargerId) -> Self {
        id.0
    }
}

impl fmt::Display for ChargerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An authorization token: a 1.6 idTag (CiString20) or a 2.0.1 idToken (up to 36).
/// Tokens are case-insensitive identifiers (CiString); [`IdToken::key`] is the
/// canonical form used for look-ups, the original spelling is kept for display.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdToken(String);

impl IdToken {
    pub const MAX_LEN: usize = 36;

    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidId> {
        let raw = raw.into();
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(InvalidId(format!(
                "id token must be 1 to {} characters",
                Self::MAX_LEN
            )));
        }
        // The schemas allow any text; control characters (NUL above all) cannot be
        // stored or shown safely, so they are refused.
        if raw.chars().any(char::is_control) {
            return Err(InvalidId("id token may not hold control characters".into()));
        }
        Ok(IdToken(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The case-folded form under which the token is stored and matched.
    pub fn key(&self) -> String {
        self.0.to_ascii_uppercase()
    }
}

impl TryFrom<String> for IdToken {
    type Error = InvalidId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        IdToken::parse(value)
    }
}

impl From<IdToken> for String {
    fn from(id: IdToken) -> Self {
        id.0
    }
}

impl fmt::Display for IdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A connector number on a charger; 0 addresses the charger as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnectorId(pub u32);

impl ConnectorId {
    pub const WHOLE_CHARGER: ConnectorId = ConnectorId(0);

    pub fn parse(raw: i64) -> Result<Self, InvalidId> {
        u32::try_from(raw)
            .map(ConnectorId)
            .map_err(|_| InvalidId(format!("connector id {raw} is out of range")))
    }
}

impl fmt::Display for ConnectorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Our own key of a charging session. OCPP 1.6 transaction ids are these numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub i64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A transaction as the charger names it: 1.6's integer (which we allocate) or
/// 2.0.1's string (which the charger allocates), unique per charger.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TransactionId(pub String);

impl fmt::Display for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charger_ids_are_bounded_and_url_safe() {
        assert!(ChargerId::parse("CP-001").is_ok());
        assert!(ChargerId::parse("").is_err());
        assert!(ChargerId::parse("a".repeat(49)).is_err());
        assert!(ChargerId::parse("a/b").is_err());
        assert!(ChargerId::parse("a b").is_err());
    }

    #[test]
    fn id_tokens_match_case_insensitively() {
        let a = IdToken::parse("abc123").unwrap();
        let b = IdToken::parse("ABC123").unwrap();
        assert_eq!(a.key(), b.key());
        assert!(IdToken::parse("x".repeat(37)).is_err());
        assert!(IdToken::parse("a b").is_ok(), "the schemas allow spaces");
        assert!(IdToken::parse("a\0b").is_err());
        assert!(
            ChargerId::parse("a:b").is_err(),
            "a colon would break Basic auth"
        );
    }
}
