//! The command line: `jucr [serve]`, `jucr migrate`, `jucr user create`, `jucr charger add`.

use std::sync::{Arc, RwLock};

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::actors::ocm_sync::OcmSync;
use crate::domain::ocm::SyncTrigger;

use crate::config::Settings;
use crate::domain::{
    ChargerId, ChargerRegistration, Email, RegistrationStatus, Role, SecurityProfile,
};
use crate::startup::Application;
use crate::{persistence, security, telemetry};

#[derive(Parser)]
#[command(
    name = "jucr",
    version,
    about = "EV-charging central system (OCPP 1.6-J and 2.0.1) and driver platform"
)]
#[command(
    after_help = "Configuration: config/default.toml, config/<JUCR_PROFILE>.toml, then JUCR__SECTION__KEY variables."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the central system (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage platform users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage chargers.
    #[command(subcommand)]
    Charger(ChargerCommand),
    /// Print the GraphQL schema (SDL) of the app API.
    Schema,
    /// The OpenChargeMap mirror.
    #[command(subcommand)]
    Ocm(OcmCommand),
}

#[derive(Subcommand)]
enum OcmCommand {
    /// Load a POI export file (the JSON the OCM API returns: an array of POIs, or one).
    Import {
        /// The file.
        file: std::path::PathBuf,
    },
    /// Sync the mirror from the OpenChargeMap API now (ocm.scopes, ocm.api_key), and
    /// print the run; exits non-zero when the run fails (the next run resumes).
    Sync {
        /// Import every scope whole again (hides what OCM no longer lists), not only
        /// the changes.
        #[arg(long)]
        full: bool,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user.
    Create {
        #[arg(long)]
        email: String,
        /// At least 8 characters.
        #[arg(long)]
        password: String,
        #[arg(long, value_parser = ["admin", "operator", "driver"])]
        role: String,
    },
}

#[derive(Subcommand)]
enum ChargerCommand {
    /// Register a charger (or update its password and description).
    Add {
        /// The charge point id, as in /ocpp/{ID}.
        id: String,
        /// Basic-auth password (security profile 1; 16 to 40 characters). Without it the
        /// charger connects unauthenticated (profile 0).
        #[arg(long)]
        password: Option<String>,
        /// 0 (none), 1 (Basic), 2 (Basic over TLS) or 3 (client certificate). Default: 1
        /// with a password, else 0.
        #[arg(long)]
        security_profile: Option<u8>,
        #[arg(long)]
        description: Option<String>,
    },
}

/// Runs the command line; returns when the command is done (or the server stops).
pub async fn run() -> anyhow::Result<()> {
    // One crypto provider for every rustls user in the process (with two, rustls panics): the
    // server's listeners, and the clients of `jucr ocm sync` (OpenChargeMap, MongoDB).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    if let Some(Command::Schema) = cli.command {
        // Needs no configuration: the schema is the code's.
        print!("{}", crate::api::graphql::sdl());
        return Ok(());
    }
    let settings = Settings::load()?;
    telemetry::init(settings.log.format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(settings.clone()).await?;
            if let Some(tls_port) = app.tls_port() {
                let address = format!("{}:{tls_port}", settings.http.host);
                tracing::info!(%address, "jucr listening for wss://");
                println!("jucr listening (tls) on {address}");
            }
            let address = format!("{}:{}", settings.http.host, app.port());
            tracing::info!(%address, "jucr listening");
            // One machine-readable line on stdout (logs go to stderr) for scripts and tests.
            println!("jucr listening on {address}");
            app.run_until_stopped().await
        }
        Command::Schema => unreachable!("handled before the settings are loaded"),
        Command::Ocm(OcmCommand::Sync { full }) => {
            let store = persistence::open(&settings, true).await?;
            let metrics = Arc::new(crate::metrics::Metrics::new());
            let stations = persistence::open_stations(&settings, &store, &metrics).await?;
            let reference = Arc::new(RwLock::new(
                crate::actors::ocm_sync::stored_reference(&*stations)
                    .await
                    .unwrap_or_default(),
            ));
            let sync = OcmSync::new(&settings.ocm, store, stations, reference, metrics)?;
            let run = sync.start(SyncTrigger::Cli).await?;
            let run = sync.run(run, full).await;
            let c = run.counts;
            println!(
                "sync {} {}: {} fetched, {} inserted, {} updated, {} unchanged, {} excluded, {} failed",
                run.run_id,
                run.status.as_str(),
                c.fetched,
                c.inserted,
                c.updated,
                c.unchanged,
                c.excluded,
                c.failed
            );
            match run.error {
                Some(e) => anyhow::bail!(e),
                None => Ok(()),
            }
        }
        Command::Ocm(OcmCommand::Import { file }) => {
            let store = persistence::open(&settings, true).await?;
            let metrics = Arc::new(crate::metrics::Metrics::new());
            let mirror = persistence::open_stations(&settings, &store, &metrics).await?;
            let raw = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let json: serde_json::Value = serde_json::from_str(&raw)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let pois = match json {
                serde_json::Value::Array(pois) => pois,
                poi => vec![poi],
            };
            // The licence filter applies as in a sync (with the reference data last synced).
            let reference = crate::actors::ocm_sync::stored_reference(&*mirror)
                .await
                .unwrap_or_default();
            let licences = settings.ocm.licence_filter();
            let mut stations = Vec::with_capacity(pois.len());
            let (mut failed, mut excluded) = (0, 0);
            for poi in &pois {
                match crate::domain::station::Station::from_ocm(poi) {
                    Ok(mut station) => {
                        if !licences.allows(&reference, station.data_provider_id) {
                            station.active = false;
                            excluded += 1;
                        }
                        stations.push(station);
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("skipped: {e}");
                    }
                }
            }
            let counts = mirror.upsert_stations(&stations).await?;
            println!(
                "imported {}: {} inserted, {} updated, {} unchanged, {excluded} excluded, {failed} failed",
                file.display(),
                counts.inserted,
                counts.updated,
                counts.unchanged
            );
            Ok(())
        }
        Command::Migrate => {
            persistence::open(&settings, true).await?;
            println!("migrations applied ({})", settings.profile.as_str());
            Ok(())
        }
        Command::User(UserCommand::Create {
            email,
            password,
            role,
        }) => {
            let store = persistence::open(&settings, true).await?;
            let email = Email::parse(&email).map_err(anyhow::Error::msg)?;
            let role = Role::parse(&role).context("role must be admin, operator or driver")?;
            let user =
                security::new_user(&security::PasswordHashing::new(1, 0), email, password, role)
                    .await?;
            store
                .create_user(&user)
                .await
                .with_context(|| format!("creating {}", user.email.as_str()))?;
            println!(
                "created {} {} ({})",
                role,
                user.email.as_str(),
                user.user_id
            );
            Ok(())
        }
        Command::Charger(ChargerCommand::Add {
            id,
            password,
            security_profile,
            description,
        }) => {
            let store = persistence::open(&settings, true).await?;
            let id = ChargerId::parse(id)?;
            if let Some(p) = &password
                && !(16..=40).contains(&p.chars().count())
            {
                anyhow::bail!("password must be 16 to 40 characters (OCPP BasicAuthPassword)");
            }
            let current = store.charger(&id).await?.map(|c| c.registration);
            let password_hash = match password {
                Some(p) => {
                    Some(tokio::task::spawn_blocking(move || security::hash_password(&p)).await?)
                }
                None => current.as_ref().and_then(|c| c.password_hash.clone()),
            };
            let security_profile = match security_profile {
                Some(n) => SecurityProfile::parse(n.into()).map_err(anyhow::Error::msg)?,
                None if password_hash.is_some() => SecurityProfile::BASIC,
                None => SecurityProfile::NONE,
            };
            if security_profile.requires_password() && password_hash.is_none() {
                anyhow::bail!(
                    "security profile {} needs --password",
                    security_profile.number()
                );
            }
            let registration = ChargerRegistration {
                charger_id: id.clone(),
                security_profile,
                password_hash: if security_profile.requires_password() {
                    password_hash
                } else {
                    None
                },
                registration_status: current
                    .as_ref()
                    .map_or(RegistrationStatus::Accepted, |c| c.registration_status),
                operator_id: current.as_ref().and_then(|c| c.operator_id.clone()),
                description: description.or_else(|| current.and_then(|c| c.description)),
            };
            let created = store.save_registration(&registration).await?;
            println!(
                "{} charger {id} (security profile {})",
                if created { "registered" } else { "updated" },
                registration.security_profile.number()
            );
            Ok(())
        }
    }
}
