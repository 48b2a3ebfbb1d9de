//! Authorization tokens and the rule that decides whether one may charge.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ids::IdToken;

/// A token's authorization status, in OCPP 2.0.1's set (the richer of the two).
/// 1.6 adapters map it down to 1.6's five with [`AuthorizationStatus::to_v16`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuthorizationStatus {
    Accepted,
    Blocked,
    ConcurrentTx,
    Expired,
    Invalid,
    NoCredit,
    NotAllowedTypeSource,
    NotAtThisLocation,
    NotAtThisTime,
    Unknown,
}

impl AuthorizationStatus {
    pub const ALL: [AuthorizationStatus; 10] = [
        Self::Accepted,
        Self::Blocked,
        Self::ConcurrentTx,
        Self::Expired,
        Self::Invalid,
        Self::NoCredit,
        Self::NotAllowedTypeSource,
        Self::NotAtThisLocation,
        Self::NotAtThisTime,
        Self::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "Accepted",
            Self::Blocked => "Blocked",
            Self::ConcurrentTx => "ConcurrentTx",
            Self::Expired => "Expired",
            Self::Invalid => "Invalid",
            Self::NoCredit => "NoCredit",
            Self::NotAllowedTypeSource => "NotAllowedTypeSource",
            Self::NotAtThisLocation => "NotAtThisLocation",
            Self::NotAtThisTime => "NotAtThisTime",
            Self::Unknown => "Unknown",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// OCPP 1.6 knows Accepted, Blocked, Expired, Invalid and ConcurrentTx; every
    /// other refusal (no credit, wrong place or time, unknown) is `Invalid` there.
    pub fn to_v16(self) -> &'static str {
        match self {
            Self::Accepted => "Accepted",
            Self::Blocked => "Blocked",
            Self::Expired => "Expired",
            Self::ConcurrentTx => "ConcurrentTx",
            Self::Invalid
            | Self::NoCredit
            | Self::NotAllowedTypeSource
            | Self::NotAtThisLocation
            | Self::NotAtThisTime
            | Self::Unknown => "Invalid",
        }
    }
}

/// The kind of token (2.0.1 IdTokenEnumType); 1.6 id tags are `Central`-managed RFID tags by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenType {
    Central,
    #[serde(rename = "eMAID")]
    EMaid,
    #[serde(rename = "ISO14443")]
    Iso14443,
    #[serde(rename = "ISO15693")]
    Iso15693,
    KeyCode,
    Local,
    MacAddress,
    NoAuthorization,
}

impl TokenType {
    pub const ALL: [TokenType; 8] = [
        Self::Central,
        Self::EMaid,
        Self::Iso14443,
        Self::Iso15693,
        Self::KeyCode,
        Self::Local,
        Self::MacAddress,
        Self::NoAuthorization,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Central => "Central",
            Self::EMaid => "eMAID",
            Self::Iso14443 => "ISO14443",
            Self::Iso15693 => "ISO15693",
            Self::KeyCode => "KeyCode",
            Self::Local => "Local",
            Self::MacAddress => "MacAddress",
            Self::NoAuthorization => "NoAuthorization",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == raw)
    }
}

/// A token as the operator registered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdTokenRecord {
    pub id_token: IdToken,
    pub status: AuthorizationStatus,
    pub token_type: TokenType,
    pub expiry_date: Option<DateTime<Utc>>,
    /// The parent id tag (1.6) / group id token (2.0.1).
    pub group_id: Option<IdToken>,
    /// The driver it belongs to (who pays for its sessions).
    pub user_id: Option<uuid::Uuid>,
    pub updated_at: DateTime<Utc>,
}

/// What a charger is told about a token.
#[derive(Debug, Clone, PartialEq)]
pub struct IdTokenInfo {
    pub status: AuthorizationStatus,
    pub expiry_date: Option<DateTime<Utc>>,
    pub group_id: Option<IdToken>,
}

impl IdTokenInfo {
    pub fn with_status(status: AuthorizationStatus) -> Self {
        IdTokenInfo {
            status,
            expiry_date: None,
            group_id: None,
        }
    }
}

/// Decides a token's authorization at `now`.
///
/// - an unregistered token is `Unknown` (which 1.6 says as `Invalid`);
/// - a registered `Accepted` token past its expiry date is `Expired`;
/// - an `Accepted` token already charging elsewhere is `ConcurrentTx`;
/// - any other registered status is answered as stored.
pub fn authorize(
    record: Option<&IdTokenRecord>,
    now: DateTime<Utc>,
    has_active_session: bool,
) -> IdTokenInfo {
    let Some(record) = record else {
        return IdTokenInfo::with_status(AuthorizationStatus::Unknown);
    };
    let status = match record.status {
        AuthorizationStatus::Accepted if record.expiry_date.is_some_and(|e| e <= now) => {
            AuthorizationStatus::Expired
        }
        AuthorizationStatus::Accepted if has_active_session => AuthorizationStatus::ConcurrentTx,
        other => other,
    };
    IdTokenInfo {
        status,
        expiry_date: record.expiry_date,
        group_id: record.group_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn record(status: AuthorizationStatus, expiry: Option<DateTime<Utc>>) -> IdTokenRecord {
        IdTokenRecord {
            id_token: IdToken::parse("TAG").unwrap(),
            status,
            token_type: TokenType::Iso14443,
            expiry_date: expiry,
            group_id: Some(IdToken::parse("FLEET").unwrap()),
            user_id: None,
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn unknown_tokens_are_unknown_which_1_6_says_as_invalid() {
        let status = authorize(None, Utc::now(), false).status;
        assert_eq!(
            (status, status.to_v16()),
            (AuthorizationStatus::Unknown, "Invalid")
        );
    }

    #[test]
    fn accepted_tokens_past_their_expiry_are_expired() {
        let now = Utc::now();
        let past = record(
            AuthorizationStatus::Accepted,
            Some(now - Duration::seconds(1)),
        );
        let future = record(AuthorizationStatus::Accepted, Some(now + Duration::days(1)));
        assert_eq!(
            authorize(Some(&past), now, false).status,
            AuthorizationStatus::Expired
        );
        let info = authorize(Some(&future), now, false);
        assert_eq!(info.status, AuthorizationStatus::Accepted);
        assert_eq!(info.group_id.unwrap().as_str(), "FLEET");
    }

    #[test]
    fn a_token_already_charging_is_concurrent_and_blocked_stays_blocked() {
        let now = Utc::now();
        let ok = record(AuthorizationStatus::Accepted, None);
        assert_eq!(
            authorize(Some(&ok), now, true).status,
            AuthorizationStatus::ConcurrentTx
        );
        let blocked = record(AuthorizationStatus::Blocked, None);
        assert_eq!(
            authorize(Some(&blocked), now, true).status,
            AuthorizationStatus::Blocked
        );
    }

    #[test]
    fn the_2_0_1_statuses_fold_into_1_6s_five() {
        let folded: std::collections::BTreeSet<_> = AuthorizationStatus::ALL
            .iter()
            .map(|s| s.to_v16())
            .collect();
        assert_eq!(
            folded.into_iter().collect::<Vec<_>>(),
            ["Accepted", "Blocked", "ConcurrentTx", "Expired", "Invalid"]
        );
    }
}
