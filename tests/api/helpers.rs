//! `TestApp`: the real `jucr` binary, started per test with its own database (a fresh
//! PostgreSQL database, or a fresh SQLite file), driven over real HTTP and WebSockets.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const ADMIN_EMAIL: &str = "admin@test.local";
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";
/// The password `TestApp::registered_charger` registers chargers with.
pub const CHARGER_PASSWORD: &str = "charger-password-0001";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("JUCR_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The Redis server tests use (`JUCR_TEST_REDIS_URL`, default the local one).
pub fn redis_url() -> String {
    std::env::var("JUCR_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The MongoDB-compatible server the cloud tests keep stations on (`JUCR_TEST_MONGODB_URL`;
/// the test script starts SecantusDB there, or points it at a real MongoDB).
pub fn mongodb_url() -> String {
    std::env::var("JUCR_TEST_MONGODB_URL")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27018/?directConnection=true".into())
}

/// Runs `work` to its end from a `Drop` (outside async): on a short-lived runtime of
/// its own thread, so that it also works while the test's runtime shuts down.
pub fn cleanup(work: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(work);
    })
    .join();
}

/// A fresh, empty PostgreSQL database, dropped when this is dropped.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        use sqlx::Connection;
        let admin = postgres_admin_url();
        let name = format!("jucr_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL must be running for the tests ({admin}): {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("creating a test database");
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base)
            .to_owned();
        TestDatabase {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        cleanup(async move {
            use sqlx::Connection;
            if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await;
            }
        });
    }
}

pub struct TestApp {
    pub port: u16,
    /// The wss:// listener's port, when the app was started with TLS settings.
    pub tls_port: Option<u16>,
    pub address: String,
    pub http: reqwest::Client,
    pub token: String,
    pub dir: TempDir,
    /// Dropped with the app (drops the database).
    _db: Option<TestDatabase>,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_jucr"))
}

impl TestApp {
    /// Starts the binary on `backend` with test defaults (unknown chargers rejected).
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, &[]).await
    }

    /// Starts the binary with extra `JUCR__…` settings.
    pub async fn spawn_with(backend: Backend, settings: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = match backend {
            Backend::Postgres => Some(TestDatabase::create().await),
            Backend::Sqlite => None,
        };
        let mut env: Vec<(String, String)> = vec![
            (
                "JUCR_PROFILE".into(),
                if db.is_some() { "cloud" } else { "embedded" }.into(),
            ),
            (
                "JUCR_CONFIG_DIR".into(),
                concat!(env!("CARGO_MANIFEST_DIR"), "/config").into(),
            ),
            ("JUCR__HTTP__HOST".into(), "127.0.0.1".into()),
            ("JUCR__HTTP__PORT".into(), "0".into()),
            ("JUCR__HTTP__WORKERS".into(), "2".into()),
            (
                "JUCR__DATA_DIR".into(),
                dir.path().join("data").display().to_string(),
            ),
            ("JUCR__OCPP__UNKNOWN_CHARGERS".into(), "reject".into()),
            ("JUCR__LOG__FORMAT".into(), "pretty".into()),
            // RabbitMQ only where a test asks for it (with its own vhost).
            ("JUCR__EVENTS__BUS".into(), "in-process".into()),
            ("JUCR_ADMIN_EMAIL".into(), ADMIN_EMAIL.into()),
            ("JUCR_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
            (
                "RUST_LOG".into(),
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            ),
        ];
        if let (Backend::Postgres, Some(db)) = (backend, &db) {
            env.push(("JUCR__DATABASE__URL".into(), db.url.clone()));
            // Redis (cloud): the machine's server, keys under a prefix of the test's own.
            env.push(("JUCR__REDIS__URL".into(), redis_url()));
            env.push((
                "JUCR__REDIS__KEY_PREFIX".into(),
                format!("jucr_test_{}:", uuid::Uuid::new_v4().simple()),
            ));
            // MongoDB (cloud's station mirror): a database of the test's own.
            env.push(("JUCR__MONGODB__URL".into(), mongodb_url()));
            env.push((
                "JUCR__MONGODB__DATABASE".into(),
                format!("jucr_test_{}", uuid::Uuid::new_v4().simple()),
            ));
        }
        for (k, v) in settings {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
        }
        let mut app = TestApp {
            port: 0,
            tls_port: None,
            address: String::new(),
            http: http_client(),
            token: String::new(),
            dir,
            _db: db,
            env,
            child: None,
        };
        app.start().await;
        app.token = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        app
    }

    /// Starts the process and waits for its "listening" line.
    async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("jucr.log"))
            .expect("log file");
        let mut command = Command::new(binary());
        command
            .arg("serve")
            .envs(self.env.iter().cloned())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        if std::env::var_os("TEST_LOG").is_some() {
            command.stderr(Stdio::inherit());
        } else {
            command.stderr(log);
        }
        // `JUCR_TEST_NOFILE`: the process may open at most this many files (a test of
        // running out of file descriptors).
        if let Some(limit) = self.setting("JUCR_TEST_NOFILE") {
            let limit: libc::rlim_t = limit.parse().expect("JUCR_TEST_NOFILE is a number");
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let rl = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command.spawn().expect("starting jucr");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let mut tls = None;
        let line = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.expect("reading jucr's stdout") {
                if let Some(address) = line.strip_prefix("jucr listening (tls) on ") {
                    tls = address.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
                }
                if let Some(address) = line.strip_prefix("jucr listening on ") {
                    return address.to_owned();
                }
            }
            panic!("jucr exited before listening; log: {}", self.log());
        })
        .await
        .unwrap_or_else(|_| panic!("jucr did not start within 60 s; log: {}", self.log()));
        // Keep draining stdout so the process never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.port = line
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("port in the listening line");
        self.address = format!("http://127.0.0.1:{}", self.port);
        self.tls_port = tls;
        self.child = Some(child);
    }

    /// The app's own PostgreSQL database (cloud), for a test that plays another client.
    pub fn database_url(&self) -> &str {
        &self._db.as_ref().expect("a PostgreSQL app").url
    }

    /// A connection of the test's own to the app's SQLite file (embedded): to play another
    /// client, count what was stored, or edit what a stopped app left.
    pub async fn sqlite_connection(&self) -> Result<sqlx::SqliteConnection, sqlx::Error> {
        use sqlx::Connection;
        let file = jucr::persistence::sqlite_file(&self.dir.path().join("data"));
        sqlx::SqliteConnection::connect_with(
            &sqlx::sqlite::SqliteConnectOptions::new().filename(file),
        )
        .await
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("jucr.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().and_then(Child::id).expect("running") as i32
    }

    /// Sends `signal` and waits for the process to exit; returns how long that took.
    pub async fn stop(&mut self, signal: i32) -> Duration {
        let started = std::time::Instant::now();
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe { libc::kill(self.pid(), signal) };
        let mut child = self.child.take().expect("running");
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("jucr exits after a signal")
            .expect("waiting for jucr");
        if signal == libc::SIGTERM {
            assert!(
                status.success(),
                "graceful shutdown exits 0, got {status}; log: {}",
                self.log()
            );
        }
        started.elapsed()
    }

    /// Stops the process with `signal` and starts it again on the same data.
    pub async fn restart(&mut self, signal: i32) {
        self.stop(signal).await;
        self.start().await;
    }

    /// Waits for the process to exit by itself (a crash test); returns its status.
    pub async fn exited(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => status.expect("waiting for jucr"),
            Err(_) => panic!("jucr did not exit within {timeout:?}; log: {}", self.log()),
        }
    }

    /// A setting this app was started with (e.g. `JUCR__DATABASE__URL`, to start a
    /// second replica on the same database).
    pub fn setting(&self, key: &str) -> Option<String> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// Changes (or with `None` removes) a setting for the next start.
    pub fn set_setting(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            self.env.push((key.to_owned(), value.to_owned()));
        }
    }

    /// Starts the process again after [`TestApp::stop`].
    pub async fn restart_stopped(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.start().await;
    }

    /// Runs a `jucr` subcommand with this app's settings.
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(binary())
            .args(args)
            .envs(self.env.iter().cloned())
            .output()
            .await
            .expect("running jucr")
    }

    /// Runs a `jucr` subcommand with this app's settings, killed after `timeout` (a
    /// `serve` that should have refused to start fails the test instead of hanging it).
    pub async fn cli_within(&self, args: &[&str], timeout: Duration) -> std::process::Output {
        let child = Command::new(binary())
            .args(args)
            .envs(self.env.iter().cloned())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("running jucr");
        tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("jucr {args:?} still ran after {timeout:?}"))
            .expect("waiting for jucr")
    }

    pub fn wss_url(&self, charger_id: &str) -> String {
        format!(
            "wss://127.0.0.1:{}/ocpp/{charger_id}",
            self.tls_port.expect("started with TLS")
        )
    }

    pub fn ws_url(&self, charger_id: &str) -> String {
        format!("ws://127.0.0.1:{}/ocpp/{charger_id}", self.port)
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        let (status, body) = self
            .request(
                "POST",
                "/api/v1/auth/login",
                Some(json!({"email": email, "password": password})),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login failed: {body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// An HTTP request with an optional bearer token; returns status and JSON body (Null if none).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let response = req.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// As the admin.
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.request(method, path, body, Some(&self.token)).await
    }

    pub async fn register_charger(&self, id: &str, password: &str) {
        let (status, body) = self
            .api(
                "PUT",
                &format!("/api/v1/chargers/{id}"),
                Some(json!({"password": password})),
            )
            .await;
        assert!(status.is_success(), "registering {id}: {status} {body}");
    }

    /// Registers charger `id` with [`CHARGER_PASSWORD`] and connects it (OCPP 1.6).
    pub async fn registered_charger(&self, id: &str) -> crate::charge_point::ChargePoint {
        self.register_charger(id, CHARGER_PASSWORD).await;
        crate::charge_point::ChargePoint::connect(self.ws_url(id), id, Some(CHARGER_PASSWORD)).await
    }

    pub async fn register_token(&self, token: &str, body: Value) {
        let (status, answer) = self
            .api("PUT", &format!("/api/v1/id-tokens/{token}"), Some(body))
            .await;
        assert!(
            status.is_success(),
            "registering token {token}: {status} {answer}"
        );
    }

    pub async fn charger(&self, id: &str) -> Value {
        let (status, body) = self
            .api("GET", &format!("/api/v1/chargers/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// The value of a metric line (name with labels, if any); panics when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or_else(|| panic!("no metric {name}"))
    }
}

/// An HTTP client for the tests. reqwest's rustls has no built-in crypto provider in
/// this build (the service installs ring, the one provider in the build); the tests install it too.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Idle connections are dropped before the server's 5 s keep-alive closes them, so
    // that a request never races a closing connection.
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .expect("a default client builds")
}

/// The embedded store on a fresh SQLite file at `path`, migrated.
pub async fn migrated_sqlite(path: &std::path::Path) -> jucr::persistence::sqlite::SqlStore {
    migrated_sqlite_to(path, i64::MAX).await
}

/// The embedded store on a fresh SQLite file at `path`, migrated up to `version`.
pub async fn migrated_sqlite_to(
    path: &std::path::Path,
    version: i64,
) -> jucr::persistence::sqlite::SqlStore {
    let store = jucr::persistence::sqlite::SqlStore::open(path, false, 4)
        .await
        .expect("opening SQLite");
    jucr::persistence::sqlite::MIGRATOR
        .run_to(version, store.pool())
        .await
        .expect("migrating SQLite");
    store
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// An RFC 3339 time `secs` from now.
pub fn time_in(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn now() -> String {
    time_in(0)
}
