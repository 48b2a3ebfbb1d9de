//! Settings: `config/default.toml`, then `config/<profile>.toml`, then environment
//! variables `JUCR__SECTION__KEY`. The profile comes from `JUCR_PROFILE`
//! (`embedded`, the default, or `cloud`). The files are compiled in, so the binary
//! runs anywhere; a `config/` directory beside it (or at `JUCR_CONFIG_DIR`) overrides them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use config::{Config, Environment, File, FileFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::domain::UnknownChargerPolicy;
use crate::domain::billing::RetryPolicy;
use crate::ocpp::OcppVersion;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Embedded,
    Cloud,
}

impl Profile {
    pub fn from_env() -> anyhow::Result<Self> {
        match std::env::var("JUCR_PROFILE").ok().as_deref().map(str::trim) {
            None | Some("") | Some("embedded") => Ok(Profile::Embedded),
            Some("cloud") => Ok(Profile::Cloud),
            Some(other) => anyhow::bail!("JUCR_PROFILE must be embedded or cloud, not {other:?}"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Embedded => "embedded",
            Profile::Cloud => "cloud",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Set from `JUCR_PROFILE`, not from the files.
    #[serde(skip_deserializing, default = "default_profile")]
    pub profile: Profile,
    /// Where the embedded profile keeps its data.
    pub data_dir: PathBuf,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub ocpp: OcppSettings,
    pub persistence: PersistenceSettings,
    pub auth: AuthSettings,
    #[serde(default)]
    pub tls: TlsSettings,
    pub events: EventSettings,
    pub redis: RedisSettings,
    pub billing: BillingSettings,
    pub notifier: NotifierSettings,
    pub stations: StationSettings,
    pub mongodb: MongoSettings,
    pub ocm: OcmSettings,
    pub log: LogSettings,
    pub graphql: GraphqlSettings,
    pub testing: TestingSettings,
}

fn default_profile() -> Profile {
    Profile::Embedded
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Behind a load balancer: take the client's address from the last
    /// `X-Forwarded-For` entry (the one the balancer added). Never without one: clients
    /// could claim any address.
    pub trust_forwarded_for: bool,
    pub host: String,
    /// 0 picks a free port (tests); the bound address is logged and printed.
    pub port: u16,
    /// Worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// SIGTERM grace period.
    pub shutdown_grace_secs: u64,
    /// A request's whole body must arrive within this long (408 otherwise), so that
    /// bodies trickled a byte at a time cannot hold connections open.
    pub body_timeout_secs: u64,
    /// When set, `GET /metrics` needs `Authorization: Bearer <this>` (a scraper's token).
    pub metrics_token: Option<SecretString>,
}

impl HttpSettings {
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// PostgreSQL URL for the cloud profile; secret because it may hold a password.
    pub url: Option<SecretString>,
    pub max_connections: u32,
    /// Embedded only: fsync every commit.
    pub sqlite_synchronous_full: bool,
    pub migrate_on_start: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OcppSettings {
    pub unknown_chargers: UnknownChargerPolicy,
    /// Subprotocols in server preference order (`ocpp1.6`, later `ocpp2.0.1`).
    pub subprotocols: Vec<String>,
    pub call_timeout_secs: u64,
    pub ping_interval_secs: u64,
    pub heartbeat_interval_secs: u32,
    pub boot_retry_interval_secs: u32,
    pub max_frame_bytes: usize,
    /// Charger authentications of one charger from one client address within the
    /// window before that pair gets 429 until the window ends (counted before the
    /// password is checked; a success clears them).
    pub auth_failure_limit: u32,
    /// The same for one client address across chargers.
    pub auth_failure_limit_per_address: u32,
    pub auth_failure_window_secs: u64,
    /// Connectors (1.6) or EVSEs (2.0.1) a charger may report, numbered from 1; higher
    /// numbers are refused (CALLERROR), which bounds what is stored per charger and the
    /// transactions it can hold open (one per connector).
    pub max_connectors: u32,
}

impl OcppSettings {
    pub fn call_timeout(&self) -> Duration {
        Duration::from_secs(self.call_timeout_secs)
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs)
    }

    /// The configured subprotocols as versions, in preference order.
    pub fn preference(&self) -> anyhow::Result<Vec<OcppVersion>> {
        self.subprotocols
            .iter()
            .map(|s| {
                OcppVersion::from_subprotocol(s)
                    .with_context(|| format!("unknown OCPP subprotocol {s:?}"))
            })
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// How often the outbox relay looks for unpublished events (it is also woken by
    /// every change that writes one).
    pub relay_interval_ms: u64,
    /// Which bus carries domain events.
    pub bus: BusKind,
    /// `amqp://` URL of RabbitMQ (bus = rabbitmq); secret, it holds a password.
    pub amqp_url: Option<SecretString>,
    /// The durable topic exchange events are published to.
    pub amqp_exchange: String,
    /// Deliveries of one event to a consumer before it is dead-lettered.
    pub delivery_limit: u32,
    /// Whether this replica runs the consumers (billing, webhooks) of a broker bus.
    /// Off: it only publishes, and other replicas (workers) consume.
    pub consume: bool,
}

/// Redis (cloud): counters the replicas share (login limits).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://` URL; the cloud profile needs it. Secret: it may hold a password.
    pub url: Option<SecretString>,
    /// Prepended to every key, so that several deployments (or tests) share a server.
    pub key_prefix: String,
}

/// Where the OpenChargeMap mirror is kept and how searches are cached.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationSettings {
    /// `database` (the profile's SQL database) or `mongodb`.
    pub store: StationStoreKind,
    /// With redis.url: search results are cached this long (0: not cached).
    pub search_cache_secs: u64,
    /// With redis.url: single stations are cached this long (0: not cached).
    pub detail_cache_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StationStoreKind {
    Database,
    Mongodb,
}

/// MongoDB (the cloud profile's station mirror).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoSettings {
    /// `mongodb://` URL (JUCR__MONGODB__URL). Secret: it may hold a password.
    pub url: Option<SecretString>,
    pub database: String,
}

/// The OpenChargeMap sync.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OcmSettings {
    pub base_url: String,
    /// OCM's API key (JUCR__OCM__API_KEY), sent as `X-API-Key`; OCM answers 403 without one.
    pub api_key: Option<SecretString>,
    /// How the sync introduces itself (OCM's fair-use policy asks for it).
    pub user_agent: String,
    /// What to mirror, separated by `;`: country codes (`GB`) and boxes
    /// (`south,west,north,east`). Empty: nothing is synced.
    pub scopes: String,
    /// POIs per request.
    pub batch_size: u32,
    /// A scheduled sync every this many seconds (0: only on demand).
    pub sync_interval_secs: u64,
    /// A full import again after this long, to hide what OCM no longer lists (0: never;
    /// `POST /api/v1/ocm/sync {"full": true}` asks for one).
    pub full_sweep_interval_secs: u64,
    pub request_timeout_secs: u64,
    /// Attempts per request when OCM answers 429 or 5xx or cannot be reached.
    pub max_attempts: u32,
    /// Without Retry-After, the first retry waits this long, doubling.
    pub retry_base_ms: u64,
    /// The longest wait a Retry-After may impose before the run gives up (and resumes later).
    pub max_retry_after_secs: u64,
    /// Leave out data providers whose licence forbids commercial use.
    pub exclude_non_commercial: bool,
    /// Leave out these data providers (OCM ids) whatever their licence.
    pub excluded_data_providers: Vec<i64>,
}

impl OcmSettings {
    pub fn scopes(&self) -> anyhow::Result<Vec<crate::domain::ocm::SyncScope>> {
        self.scopes
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                crate::domain::ocm::SyncScope::parse(s)
                    .map_err(|e| anyhow::anyhow!("ocm.scopes: {e}"))
            })
            .collect()
    }

    pub fn licence_filter(&self) -> crate::domain::ocm::LicenceFilter {
        crate::domain::ocm::LicenceFilter {
            exclude_non_commercial: self.exclude_non_commercial,
            excluded_providers: self.excluded_data_providers.clone(),
        }
    }
}

/// Invoices, payments and subscriptions (the billing actor).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingSettings {
    /// The payment gateway: `sandbox` (built in, offline, documented test tokens).
    pub gateway: GatewayKind,
    /// A charge the gateway has not answered within this long counts as a transient failure.
    pub gateway_timeout_ms: u64,
    /// How often due payment retries (and, every `subscription_interval_secs`, the
    /// monthly subscription invoices) are looked for.
    pub schedule_interval_ms: u64,
    pub subscription_interval_secs: u64,
    /// Transient failures are retried after this long, doubling, `transient_attempts` times.
    pub transient_retry_ms: u64,
    pub transient_attempts: u32,
    /// OCPP 2.0.1 chargers are told a session's running cost (CostUpdated) when it
    /// changes, at most this often.
    pub cost_update_interval_secs: u64,
    /// After a decline, the payment is tried again after each of these in turn (dunning).
    /// From the environment: `JUCR__BILLING__DECLINE_RETRY_SECS=86400,259200` (or one number).
    #[serde(deserialize_with = "one_or_many")]
    pub decline_retry_secs: Vec<u64>,
}

impl BillingSettings {
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            transient_base: Duration::from_millis(self.transient_retry_ms),
            transient_attempts: self.transient_attempts,
            decline_retries: self
                .decline_retry_secs
                .iter()
                .map(|s| Duration::from_secs(*s))
                .collect(),
        }
    }
}

/// A list of numbers as a file gives it, or as the environment does: split into
/// strings (`"60,120"`), or a single value parsed as a number (`"60"`).
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Int(u64),
        Text(String),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Number),
        Many(Vec<Number>),
    }
    let numbers = match OneOrMany::deserialize(d)? {
        OneOrMany::One(n) => vec![n],
        OneOrMany::Many(v) => v,
    };
    numbers
        .into_iter()
        .map(|n| match n {
            Number::Int(v) => Ok(v),
            Number::Text(t) => t
                .trim()
                .parse()
                .map_err(|_| serde::de::Error::custom(format!("{t:?} is not a number of seconds"))),
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GatewayKind {
    Sandbox,
}

/// Webhook delivery (the notifier actor).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierSettings {
    /// A webhook must answer 2xx within this long.
    pub webhook_timeout_ms: u64,
    /// Attempts per delivery before it is logged failed.
    pub webhook_attempts: u32,
    /// The first retry waits this long, doubling each time (at most an hour).
    pub webhook_retry_ms: u64,
    /// How often due retries are looked for.
    pub schedule_interval_ms: u64,
    /// Whether webhooks may target loopback, private, link-local and cloud metadata
    /// addresses. Off: such URLs are refused, and names are resolved and checked again
    /// when delivering. On only for development and tests.
    pub allow_private_targets: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BusKind {
    /// In the process (embedded).
    InProcess,
    /// RabbitMQ (cloud).
    Rabbitmq,
}

/// The TLS listener for chargers on security profiles 2 and 3 (`wss://`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Port of the TLS listener (0 picks a free one); unset: no TLS listener.
    pub port: Option<u16>,
    /// PEM certificate chain of the server.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the server.
    pub key_file: Option<PathBuf>,
    /// PEM CA certificates that sign charger client certificates (profile 3).
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistenceSettings {
    pub flush_interval_ms: u64,
    pub max_batch: usize,
}

impl PersistenceSettings {
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub jwt_secret: Option<SecretString>,
    /// Lifetime of access tokens (operator API and the app).
    pub token_ttl_secs: u64,
    /// Logins (app and operator API): attempts for one account from one client address
    /// within the window before further ones are refused until it ends.
    pub login_failure_limit: u32,
    /// The same for one account from anywhere (a bound on guessing from many addresses).
    pub login_failure_limit_per_account: u32,
    /// The same per client address (higher: a carrier's NAT puts many drivers behind one).
    pub login_failure_limit_per_address: u32,
    pub login_failure_window_secs: u64,
    /// App sign-ups (`register`) from one client address within the window; aliases in
    /// one request count one each.
    pub register_limit_per_address: u32,
    pub register_window_secs: u64,
    /// Keys (accounts, addresses) the in-process limiters hold at most, oldest out.
    pub limiter_max_keys: usize,
    /// Password hashes (argon2: 19 MiB and tens of milliseconds each) computed at once;
    /// 0: one per CPU core.
    pub password_hash_concurrency: usize,
    /// Password checks that may wait for one of those; more are refused at once (503,
    /// or for chargers 503 before the upgrade).
    pub password_hash_queue: usize,
}

impl AuthSettings {
    /// `password_hash_concurrency`, with 0 meaning one per core.
    pub fn hash_concurrency(&self) -> usize {
        match self.password_hash_concurrency {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

/// The app's GraphQL API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphqlSettings {
    /// Whether `__schema` and `__type` answer (GraphiQL needs them). Off in the cloud.
    pub introspection: bool,
    /// Subscriptions one WebSocket may hold at once; more are refused (RATE_LIMITED).
    pub max_subscriptions_per_socket: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestingSettings {
    pub fault_injection: bool,
    /// With `fault_injection`: the process aborts at this point, to test recovery
    /// (`billing.before_invoice`: as billing takes up an ended session, before it reads it;
    /// `billing.after_invoice`: after an invoice is stored, before its event is acknowledged).
    pub crash_point: Option<String>,
    /// Test-only: names the webhook client resolves to fixed addresses, as
    /// `name=address` pairs separated by `,` (what a DNS server under an attacker's
    /// control would answer). Unset in production.
    pub resolve: Option<String>,
}

impl TestingSettings {
    /// Aborts the process when `point` is the configured crash point.
    pub fn maybe_crash(&self, point: &str) {
        if self.fault_injection && self.crash_point.as_deref() == Some(point) {
            eprintln!("jucr: crashing at {point} (testing.crash_point)");
            std::process::abort();
        }
    }
}

const DEFAULT_TOML: &str = include_str!("../config/default.toml");
const EMBEDDED_TOML: &str = include_str!("../config/embedded.toml");
const CLOUD_TOML: &str = include_str!("../config/cloud.toml");

impl Settings {
    /// Loads the settings of the profile named by `JUCR_PROFILE`.
    pub fn load() -> anyhow::Result<Self> {
        let profile = Profile::from_env()?;
        let dir = std::env::var_os("JUCR_CONFIG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("config"));
        Self::load_from(profile, &dir, Environment::with_prefix("JUCR"))
    }

    fn load_from(profile: Profile, dir: &Path, env: Environment) -> anyhow::Result<Self> {
        let profile_toml = match profile {
            Profile::Embedded => EMBEDDED_TOML,
            Profile::Cloud => CLOUD_TOML,
        };
        let on_disk = |name: &str| {
            File::from(dir.join(name))
                .format(FileFormat::Toml)
                .required(false)
        };
        let mut settings: Settings = Config::builder()
            .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
            .add_source(on_disk("default.toml"))
            .add_source(File::from_str(profile_toml, FileFormat::Toml))
            .add_source(on_disk(&format!("{}.toml", profile.as_str())))
            .add_source(
                env.prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("ocpp.subprotocols")
                    .with_list_parse_key("billing.decline_retry_secs")
                    .with_list_parse_key("ocm.excluded_data_providers"),
            )
            .build()
            .context("reading configuration")?
            .try_deserialize()
            .context("invalid configuration")?;
        settings.profile = profile;
        settings.validate()?;
        Ok(settings)
    }

    /// Refuses values that would break the service at run time.
    fn validate(&self) -> anyhow::Result<()> {
        self.ocpp.preference()?;
        let positive = [
            ("ocpp.ping_interval_secs", self.ocpp.ping_interval_secs),
            ("ocpp.call_timeout_secs", self.ocpp.call_timeout_secs),
            (
                "persistence.flush_interval_ms",
                self.persistence.flush_interval_ms,
            ),
            ("persistence.max_batch", self.persistence.max_batch as u64),
            ("events.relay_interval_ms", self.events.relay_interval_ms),
            (
                "billing.gateway_timeout_ms",
                self.billing.gateway_timeout_ms,
            ),
            (
                "billing.schedule_interval_ms",
                self.billing.schedule_interval_ms,
            ),
            (
                "billing.subscription_interval_secs",
                self.billing.subscription_interval_secs,
            ),
            (
                "billing.transient_retry_ms",
                self.billing.transient_retry_ms,
            ),
            (
                "notifier.webhook_timeout_ms",
                self.notifier.webhook_timeout_ms,
            ),
            (
                "notifier.webhook_attempts",
                u64::from(self.notifier.webhook_attempts),
            ),
            ("notifier.webhook_retry_ms", self.notifier.webhook_retry_ms),
            ("http.body_timeout_secs", self.http.body_timeout_secs),
            ("auth.register_window_secs", self.auth.register_window_secs),
            (
                "auth.login_failure_window_secs",
                self.auth.login_failure_window_secs,
            ),
            (
                "notifier.schedule_interval_ms",
                self.notifier.schedule_interval_ms,
            ),
            (
                "database.max_connections",
                u64::from(self.database.max_connections),
            ),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            anyhow::bail!("{name} must be greater than 0");
        }
        // Secrets short enough to guess (an HS256 key from any token it signed).
        let secrets = [
            (
                "auth.jwt_secret",
                &self.auth.jwt_secret,
                crate::security::MIN_JWT_SECRET_BYTES,
            ),
            ("http.metrics_token", &self.http.metrics_token, 16),
        ];
        for (name, secret, least) in secrets {
            if secret
                .as_ref()
                .is_some_and(|s| s.expose_secret().trim().len() < least)
            {
                anyhow::bail!("{name} must be at least {least} bytes; leave it unset instead");
            }
        }
        if self.ocpp.max_connectors == 0 || self.graphql.max_subscriptions_per_socket == 0 {
            anyhow::bail!(
                "ocpp.max_connectors and graphql.max_subscriptions_per_socket must be greater than 0"
            );
        }
        if self.ocpp.max_frame_bytes < 64 * 1024 {
            anyhow::bail!(
                "ocpp.max_frame_bytes must be at least 65536 (OCPP messages can be large)"
            );
        }
        if self.profile == Profile::Cloud && self.redis.url.is_none() {
            anyhow::bail!("the cloud profile needs redis.url (JUCR__REDIS__URL)");
        }
        if self.events.bus == BusKind::Rabbitmq && self.events.amqp_url.is_none() {
            anyhow::bail!("events.bus = rabbitmq needs events.amqp_url (JUCR__EVENTS__AMQP_URL)");
        }
        if self.events.delivery_limit == 0 {
            anyhow::bail!("events.delivery_limit must be greater than 0");
        }
        if self.tls.port.is_some() && (self.tls.cert_file.is_none() || self.tls.key_file.is_none())
        {
            anyhow::bail!("tls.port needs tls.cert_file and tls.key_file");
        }
        if self.ocpp.subprotocols.is_empty() {
            anyhow::bail!("ocpp.subprotocols needs at least one subprotocol");
        }
        if self.stations.store == StationStoreKind::Mongodb && self.mongodb.url.is_none() {
            anyhow::bail!("stations.store = mongodb needs mongodb.url (JUCR__MONGODB__URL)");
        }
        self.ocm.scopes()?;
        if !(1..=5000).contains(&self.ocm.batch_size) {
            anyhow::bail!("ocm.batch_size must be 1 to 5000");
        }
        if self.ocm.max_attempts == 0 || self.ocm.request_timeout_secs == 0 {
            anyhow::bail!("ocm.max_attempts and ocm.request_timeout_secs must be greater than 0");
        }
        Ok(())
    }

    /// The address to bind.
    pub fn bind_address(&self) -> anyhow::Result<SocketAddr> {
        format!("{}:{}", self.http.host, self.http.port)
            .parse()
            .or_else(|_| {
                use std::net::ToSocketAddrs;
                (self.http.host.as_str(), self.http.port)
                    .to_socket_addrs()?
                    .next()
                    .ok_or_else(|| std::io::Error::other("no address"))
            })
            .with_context(|| format!("cannot resolve {}:{}", self.http.host, self.http.port))
    }
}

#[cfg(test)]
mod tests;
