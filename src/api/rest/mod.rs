//! The operator REST API under `/api/v1`.

pub mod billing;
pub mod chargers;
pub mod events;
pub mod id_tokens;
pub mod live;
pub mod sessions;
pub mod stations;
pub mod users;
pub mod webhooks;
