//! Builds the application (storage, actors, HTTP server) and runs it until a signal.

use std::net::TcpListener;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::Actor;
use actix_web::dev::Service as _;
use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, web};
use anyhow::Context;
use secrecy::SecretString;
use tokio::task::JoinHandle;
use tracing_actix_web::TracingLogger;

use crate::actors::Services;
use crate::actors::batch_writer::BatchWriter;
use crate::actors::billing::{Billing, BillingActor, BillingConsumer};
use crate::actors::notifier::{LiveConsumer, LiveHub, Notifier, NotifierActor, WebhookConsumer};
use crate::actors::ocm_sync::{OcmSync, OcmSyncActor, stored_reference};
use crate::actors::outbox_relay::{self, RelayKick};
use crate::actors::registry::{ChargerDirectory, LocalDirectory, OpenSession, StationRegistry};
use crate::api::{self, ApiState};
use crate::config::{BusKind, GatewayKind, Settings};
use crate::domain::ports::{
    EventBus, EventConsumer, FailureCounter, PaymentGateway, Store, StoreError,
};
use crate::domain::{Email, Role};
use crate::metrics::Metrics;
use crate::payment::SandboxGateway;
use crate::persistence;
use crate::persistence::amqp::{self, AmqpBus};
use crate::persistence::memory::LocalBus;
use crate::security::{self, TokenKeys};
use crate::stations::StationSearch;

pub struct Application {
    bus: Arc<dyn EventBus>,
    relay_task: JoinHandle<()>,
    consumer_tasks: Vec<JoinHandle<()>>,
    port: u16,
    tls_port: Option<u16>,
    server: Server,
    services: Arc<Services>,
    directory: Arc<dyn ChargerDirectory>,
    writer_task: JoinHandle<()>,
}

impl Application {
    /// Opens storage, restores active sessions, starts the actors and binds the server.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // One crypto provider for every rustls user in the process: with two built in,
        // rustls cannot choose and panics (deny.toml keeps aws-lc and OpenSSL out).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let settings = Arc::new(settings);
        let store = persistence::open(&settings, settings.database.migrate_on_start).await?;
        let metrics = Arc::new(Metrics::new());
        // Each charger holds a descriptor: say it plainly when they run out.
        crate::metrics::watch_fds(metrics.clone());
        if matches!(settings.profile, crate::config::Profile::Embedded) {
            let wal = persistence::sqlite_wal_file(&settings.data_dir);
            crate::metrics::watch_sqlite_wal(metrics.clone(), wal);
        }
        let p = &settings.persistence;
        let (writer, writer_task) = BatchWriter::spawn(
            store.clone(),
            p.flush_interval(),
            p.max_batch,
            metrics.clone(),
        );
        // Live updates: within this process, and (cloud) between replicas through the bus.
        let events = &settings.events;
        let mut consumer_tasks = Vec::new();
        let live = match (events.bus, &events.amqp_url) {
            (BusKind::Rabbitmq, Some(url)) => {
                let (hub, outbound) = LiveHub::linked(metrics.clone());
                let hub = Arc::new(hub);
                let deliver = {
                    let hub = hub.clone();
                    Arc::new(move |update| hub.deliver(update))
                };
                consumer_tasks.push(tokio::spawn(amqp::run_live_link(
                    url.clone(),
                    events.amqp_exchange.clone(),
                    hub.replica.clone(),
                    outbound,
                    deliver,
                    metrics.live_link_up.clone(),
                )));
                hub
            }
            _ => Arc::new(LiveHub::local(metrics.clone())),
        };
        // Our chargers' live connector status, for the station search's overlay.
        let board = persistence::status_board(&settings)?;
        // Registries start before the server: its app factory runs once per worker.
        let registry = StationRegistry::new(
            store.clone(),
            writer.clone(),
            metrics.clone(),
            board.clone(),
        )
        .with_live(live.clone())
        .with_cost_updates(Duration::from_secs(
            settings.billing.cost_update_interval_secs,
        ))
        .start();
        let active = store
            .active_sessions()
            .await
            .context("loading active sessions")?;
        let restored = active.len();
        for session in active {
            registry
                .send(OpenSession(session, actix::Arbiter::current()))
                .await
                .context("restoring a session")?;
        }
        tracing::info!(
            restored,
            backend = store.backend(),
            profile = settings.profile.as_str(),
            "storage ready"
        );

        let auth = &settings.auth;
        let hashing = Arc::new(security::PasswordHashing::new(
            auth.hash_concurrency(),
            auth.password_hash_queue,
        ));
        ensure_admin(&*store, &hashing).await?;
        // The hash an unknown account's login is checked against, made before the first.
        tokio::task::spawn_blocking(api::auth::dummy_hash).await?;
        let keys = TokenKeys::new(
            &jwt_secret(&settings, &*store).await?,
            settings.auth.token_ttl_secs,
        );

        // Billing and the notifier consume domain events; the relay publishes them.
        let relay = RelayKick::default();
        let gateway: Arc<dyn PaymentGateway> = match settings.billing.gateway {
            GatewayKind::Sandbox => Arc::new(SandboxGateway::new()),
        };
        // Workers run the billing and webhook schedules; a publish-only replica does not.
        let worker = events.bus == BusKind::InProcess || events.consume;
        let billing = BillingActor::new(
            Arc::new(Billing::new(
                store.clone(),
                gateway.clone(),
                settings.clone(),
                metrics.clone(),
                relay.clone(),
            )),
            worker,
        )
        .start();
        let notifier = Arc::new(Notifier::new(
            store.clone(),
            settings.clone(),
            metrics.clone(),
        )?);
        NotifierActor::new(notifier.clone(), worker).start();
        let consumers: Vec<Arc<dyn EventConsumer>> = vec![
            Arc::new(BillingConsumer(billing.clone())),
            Arc::new(WebhookConsumer(notifier.clone())),
        ];
        let bus: Arc<dyn EventBus> = match (events.bus, &events.amqp_url) {
            (BusKind::Rabbitmq, Some(url)) => {
                if events.consume {
                    for consumer in &consumers {
                        consumer_tasks.push(tokio::spawn(amqp::run_consumer(
                            url.clone(),
                            events.amqp_exchange.clone(),
                            consumer.clone(),
                            events.delivery_limit,
                        )));
                    }
                } else {
                    tracing::info!(
                        "events.consume is off: this replica publishes events, others consume them"
                    );
                }
                Arc::new(
                    AmqpBus::new(url.clone(), events.amqp_exchange.clone())
                        .with_topology(consumers, events.delivery_limit),
                )
            }
            _ => {
                let mut consumers = consumers;
                consumers.push(Arc::new(LiveConsumer(live.clone())));
                Arc::new(LocalBus::new(consumers))
            }
        };
        tracing::info!(bus = bus.name(), "event bus");
        let relay_task = outbox_relay::spawn(
            store.clone(),
            bus.clone(),
            Duration::from_millis(settings.events.relay_interval_ms),
            metrics.clone(),
            relay.clone(),
        );
        // The OpenChargeMap mirror, its reference data (licences), and its sync.
        let stations = persistence::open_stations(&settings, &store, &metrics).await?;
        let reference = Arc::new(RwLock::new(
            stored_reference(&*stations).await.unwrap_or_default(),
        ));
        let ocm_sync = OcmSyncActor::new(
            Arc::new(OcmSync::new(
                &settings.ocm,
                store.clone(),
                stations.clone(),
                reference.clone(),
                metrics.clone(),
            )?),
            if worker {
                Duration::from_secs(settings.ocm.sync_interval_secs)
            } else {
                Duration::ZERO
            },
        )
        .start();
        tracing::info!(store = stations.station_backend(), "station mirror");
        let stations = Arc::new(StationSearch::new(
            stations,
            store.clone(),
            board,
            reference,
            settings.ocm.licence_filter(),
        ));
        let services = Arc::new(Services {
            settings: settings.clone(),
            store,
            writer,
            registry: registry.clone(),
            metrics,
            relay,
            billing,
            notifier,
            gateway,
            live,
            stations,
            ocm_sync,
            hashing,
            charger_hashing: Arc::new(security::PasswordHashing::new(
                auth.hash_concurrency(),
                auth.password_hash_queue,
            )),
        });
        let directory: Arc<dyn ChargerDirectory> = Arc::new(LocalDirectory::new(registry));
        let window = auth.login_failure_window_secs;
        let logins = Arc::new(api::limit::LoginLimits {
            accounts: attempt_counter(&settings, window, auth.login_failure_limit)?,
            addresses: attempt_counter(&settings, window, auth.login_failure_limit_per_address)?,
            per_account_and_address: auth.login_failure_limit,
            per_account: auth.login_failure_limit_per_account,
            per_address: auth.login_failure_limit_per_address,
        });
        let graphql = api::graphql::schema(api::graphql::GraphqlState {
            services: services.clone(),
            directory: directory.clone(),
            keys: keys.clone(),
            logins: logins.clone(),
            signups: api::limit::SignupLimit::new(
                attempt_counter(
                    &settings,
                    auth.register_window_secs,
                    auth.register_limit_per_address,
                )?,
                auth.register_limit_per_address,
            ),
        });
        let state = web::Data::new(ApiState {
            graphql,
            services: services.clone(),
            directory: directory.clone(),
            keys,
            charger_auth: api::ocpp::AuthLimits::new(&settings.ocpp, auth.limiter_max_keys),
            logins,
        });

        let address = settings.bind_address()?;
        let listener = TcpListener::bind(address).with_context(|| format!("binding {address}"))?;
        let port = listener.local_addr()?.port();
        let mut tls = None;
        if let Some(port) = settings.tls.port {
            let config = api::tls::server_config(&settings.tls)?;
            let address = format!("{}:{port}", settings.http.host);
            let listener = TcpListener::bind(&address)
                .with_context(|| format!("binding {address} for TLS"))?;
            tls = Some((listener, config));
        }
        let tls_port = match &tls {
            Some((listener, _)) => Some(listener.local_addr()?.port()),
            None => None,
        };
        let body_timeout = Duration::from_secs(settings.http.body_timeout_secs);
        let app = move || {
            App::new()
                .wrap_fn(move |request, service| {
                    service.call(api::deadline::body_deadline(request, body_timeout))
                })
                .wrap(
                    actix_web::middleware::DefaultHeaders::new()
                        .add(("X-Content-Type-Options", "nosniff")),
                )
                .wrap(TracingLogger::default())
                .app_data(state.clone())
                .configure(api::configure)
        };
        let server = api::server::serve(app, &settings.http, listener, tls)?;
        Ok(Application {
            bus,
            relay_task,
            consumer_tasks,
            port,
            tls_port,
            server,
            services,
            directory,
            writer_task,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the actors share (for benchmarks that drive an actor without a socket).
    pub fn services(&self) -> Arc<Services> {
        self.services.clone()
    }

    /// The port of the TLS listener, when one is configured.
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully: stop accepting,
    /// close every charger socket with a close frame, flush pending writes, and exit
    /// within `http.shutdown_grace_secs`.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Application {
            server,
            services,
            directory,
            writer_task,
            bus,
            relay_task,
            consumer_tasks,
            ..
        } = self;
        let handle = server.handle();
        let mut serving = actix_web::rt::spawn(server);
        let signal = tokio::select! {
            result = &mut serving => {
                result.context("server task panicked")?.context("server failed")?;
                return Ok(());
            }
            signal = shutdown_signal() => signal?,
        };
        tracing::info!(signal, "shutting down");
        let grace = services.settings.http.shutdown_grace();
        relay_task.abort();
        shutdown(&handle, &services, &*directory, &*bus, grace).await;
        drop(services);
        writer_task.abort();
        for task in consumer_tasks {
            task.abort();
        }
        Ok(())
    }
}

/// Stops accepting, closes the charger sockets (waiting at most half the grace period for
/// them), flushes pending writes and relays the outbox (always, within what is left),
/// then stops the server.
async fn shutdown(
    handle: &ServerHandle,
    services: &Services,
    directory: &dyn ChargerDirectory,
    bus: &dyn EventBus,
    grace: Duration,
) {
    let deadline = tokio::time::Instant::now() + grace;
    handle.pause().await;
    let told = directory.close_all().await;
    tracing::info!(chargers = told, "closing charger connections");
    let closed = tokio::time::timeout(grace / 2, async {
        while services.metrics.connected_chargers.get() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    if closed.await.is_err() {
        tracing::warn!(
            left = services.metrics.connected_chargers.get(),
            "some chargers did not close in time"
        );
    }
    match tokio::time::timeout_at(deadline, services.writer.flush()).await {
        Ok(()) => tracing::info!("pending writes flushed"),
        Err(_) => tracing::error!("grace period over before pending writes were stored"),
    }
    // What is left in the outbox is durable and goes out at the next start; try now.
    match tokio::time::timeout_at(
        deadline,
        outbox_relay::relay_once(&*services.store, bus, &services.metrics),
    )
    .await
    {
        Ok(Ok(n)) => tracing::info!(published = n, "outbox relayed"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "outbox not fully relayed; it will be at the next start")
        }
        Err(_) => tracing::warn!("grace period over before the outbox was relayed"),
    }
    if tokio::time::timeout_at(deadline, handle.stop(true))
        .await
        .is_err()
    {
        tracing::warn!("grace period over; exiting with requests in flight");
    }
}

async fn shutdown_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// Where attempts (logins, sign-ups) are counted, in windows of `window_secs`: Redis
/// when configured (every replica sees the same counts; keys expire with their window),
/// else this process (at most `auth.limiter_max_keys` keys; when full, an old one still
/// under `limit` goes first).
fn attempt_counter(
    settings: &Settings,
    window_secs: u64,
    limit: u32,
) -> anyhow::Result<Box<dyn FailureCounter>> {
    let window = Duration::from_secs(window_secs);
    Ok(match &settings.redis.url {
        Some(url) => Box::new(
            persistence::redis::RedisFailureCounter::new(url, &settings.redis.key_prefix, window)
                .context("configuring Redis")?,
        ),
        None => Box::new(crate::domain::attempts::AttemptLimiter::<String>::new(
            limit,
            window,
            settings.auth.limiter_max_keys,
        )),
    })
}

/// The API's token key: configured, or generated once and kept in the database so
/// that tokens survive restarts and every replica accepts them.
async fn jwt_secret(settings: &Settings, store: &dyn Store) -> anyhow::Result<SecretString> {
    if let Some(secret) = &settings.auth.jwt_secret {
        return Ok(secret.clone());
    }
    let secret = store
        .get_or_init_secret("jwt_hs256", &security::random_secret(64))
        .await?;
    Ok(SecretString::from(secret))
}

/// Makes sure an admin exists: from `JUCR_ADMIN_EMAIL`/`JUCR_ADMIN_PASSWORD` when set,
/// otherwise (when there is none yet) with a random password logged once.
async fn ensure_admin(
    store: &dyn Store,
    hashing: &security::PasswordHashing,
) -> anyhow::Result<()> {
    let email = std::env::var("JUCR_ADMIN_EMAIL")
        .ok()
        .filter(|s| !s.is_empty());
    let password = std::env::var("JUCR_ADMIN_PASSWORD")
        .ok()
        .filter(|s| !s.is_empty());
    let (email, password, generated) = match (email, password) {
        (Some(email), Some(password)) => {
            let email = Email::parse(&email)
                .map_err(anyhow::Error::msg)
                .context("JUCR_ADMIN_EMAIL")?;
            if store.user_by_email(&email).await?.is_some() {
                return Ok(());
            }
            (email, password, false)
        }
        (None, None) => {
            if store.admin_exists().await? {
                return Ok(());
            }
            let email = Email::parse("admin@jucr.local").expect("a literal, valid address; qed");
            (email, security::random_secret(24), true)
        }
        _ => anyhow::bail!("set both JUCR_ADMIN_EMAIL and JUCR_ADMIN_PASSWORD, or neither"),
    };
    let user = security::new_user(hashing, email.clone(), password.clone(), Role::Admin).await?;
    match store.create_user(&user).await {
        // Another replica created it first.
        Err(StoreError::Conflict(_)) => return Ok(()),
        other => other?,
    }
    if generated {
        tracing::warn!(
            email = email.as_str(),
            password = password.as_str(),
            "no admin existed: created one with this generated password, shown only this once; \
             set JUCR_ADMIN_EMAIL/JUCR_ADMIN_PASSWORD to choose your own"
        );
    } else {
        tracing::info!(
            email = email.as_str(),
            "admin created from JUCR_ADMIN_EMAIL"
        );
    }
    Ok(())
}
