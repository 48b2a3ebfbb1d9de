//! What drivers keep in their account besides the user record: refresh tokens (as
//! hashes) and vehicles.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// A refresh token as stored: only its SHA-256 hash. Tokens of one login form a family;
/// each use replaces the token with a new one of the same family, and presenting a used
/// token again revokes the whole family (it was stolen, or the app is confused).
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshToken {
    pub refresh_token_id: Uuid,
    pub user_id: Uuid,
    pub family_id: Uuid,
    pub token_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// It was valid: it is used up and its successor is stored.
    Rotated { user_id: Uuid },
    /// It had been used before: its family is revoked.
    Reused,
    /// Unknown, expired or revoked.
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vehicle {
    pub vehicle_id: Uuid,
    pub user_id: Uuid,
    pub make: String,
    pub model: String,
    pub license_plate: Option<String>,
    pub battery_capacity_kwh: Option<f64>,
    pub created_at: DateTime<Utc>,
}
