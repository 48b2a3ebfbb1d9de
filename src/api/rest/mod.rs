//! The operator REST API under `/api/v1`.

pub mod chargers;
pub mod events;
pub mod id_tokens;
pub mod sessions;
