//! The live system: one [`charger::ChargerActor`] per connected charger, one
//! [`session::SessionActor`] per active transaction, the [`registry::StationRegistry`]
//! that knows them all, and the [`batch_writer::BatchWriter`] that persists behind them.
//! Each actor is a thin shell: it decodes, asks `crate::domain`, and performs the effects.

pub mod batch_writer;
pub mod billing;
pub mod charger;
pub mod notifier;
pub mod ocm_sync;
pub mod outbox_relay;
pub mod registry;
pub mod session;

use std::sync::Arc;

use actix::Addr;

use crate::config::Settings;
use crate::domain::ports::Store;
use crate::metrics::Metrics;

/// What every actor and handler shares, built once at start-up.
pub struct Services {
    pub settings: Arc<Settings>,
    pub store: Arc<dyn Store>,
    pub writer: batch_writer::BatchWriter,
    pub registry: Addr<registry::StationRegistry>,
    pub metrics: Arc<Metrics>,
    /// Wakes the outbox relay after a change that wrote domain events.
    pub relay: outbox_relay::RelayKick,
    pub billing: Addr<billing::BillingActor>,
    pub notifier: Arc<notifier::Notifier>,
    /// Live updates for whoever watches (operators' streams, the apps' subscriptions).
    pub live: Arc<notifier::LiveHub>,
    pub gateway: Arc<dyn crate::domain::ports::PaymentGateway>,
    /// The OpenChargeMap mirror as searches see it (cache, attribution, live overlay).
    pub stations: Arc<crate::stations::StationSearch>,
    pub ocm_sync: Addr<ocm_sync::OcmSyncActor>,
    /// Password hashing and checks (people: logins, sign-ups), a bounded number at once.
    pub hashing: Arc<crate::security::PasswordHashing>,
    /// The same for chargers' passwords, apart: a flood of logins does not keep
    /// chargers from reconnecting.
    pub charger_hashing: Arc<crate::security::PasswordHashing>,
}
