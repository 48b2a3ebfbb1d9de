//! The internal model: identifiers, units, tokens, chargers, sessions, users, the
//! requests chargers make (whatever their OCPP version) and the ports persistence
//! implements. Pure types and rules: no I/O, no async runtime, no web or database crates.

pub mod account;
pub mod attempts;
pub mod billing;
pub mod charger;
pub mod echo;
pub mod events;
pub mod ids;
pub mod live;
pub mod money;
pub mod ocm;
pub mod ports;
pub mod report;
pub mod requests;
pub mod session;
pub mod station;
pub mod tariff;
pub mod token;
pub mod user;
pub mod webhook;

pub use charger::*;
pub use events::*;
pub use ids::*;
pub use requests::*;
pub use session::*;
pub use token::*;
pub use user::*;
