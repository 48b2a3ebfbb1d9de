//! jucr: an actor-based, real-time EV-charging central system (OCPP 1.6-J and 2.0.1) and the
//! driver platform around it. See README.md and docs/architecture.md.

pub mod actors;
pub mod api;
pub mod cli;
pub mod config;
pub mod domain;
pub mod metrics;
pub mod ocpp;
pub mod outbound;
pub mod payment;
pub mod persistence;
pub mod security;
pub mod startup;
pub mod stations;
pub mod telemetry;
