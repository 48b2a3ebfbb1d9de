//! Prometheus metrics, served at `/metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Chargers with an open WebSocket on this replica.
    pub connected_chargers: IntGauge,
    /// Sessions with a live SessionActor on this replica.
    pub active_sessions: IntGauge,
    /// OCPP messages by direction (`in` = charger→CSMS call, `out` = CSMS→charger call), action and result.
    pub messages: IntCounterVec,
    /// CSMS→charger calls waiting behind an outstanding one (one at a time per charger).
    pub queued_calls: IntGauge,
    /// Round-trip time of CSMS→charger calls, by action.
    pub call_duration: HistogramVec,
    /// Connections refused for failed charger authentication.
    pub auth_failures: IntCounter,
    /// Time to write one batch of hot-path updates.
    pub flush_duration: Histogram,
    /// Failed batch writes (retried at the next window).
    pub flush_failures: IntCounter,
    /// Updates waiting for the next batch write.
    pub pending_writes: IntGauge,
    /// Updates dropped: refused by the database, or past the backlog cap during an outage.
    pub dropped_writes: IntCounter,
    /// Charger connections waiting for storage to catch up before their next frame.
    pub backpressure_waiting: IntGauge,
    /// 1 while the batch writer finds storage down (a write timed out, or failed and
    /// a ping did not answer): updates are kept, nobody waits, retries back off. Also
    /// 1 once the writer has stopped (nobody may wait for it any longer).
    pub storage_down: IntGauge,
    /// Domain events in the outbox not yet published.
    pub outbox_pending: IntGauge,
    /// Domain events published, by type.
    pub events_published: IntCounterVec,
    /// Ended sessions by what billing did with them (`invoiced`, `no_account`, `no_tariff`).
    pub sessions_billed: IntCounterVec,
    /// Payment attempts by outcome (`completed`, `declined`, `unavailable`, `invalid_token`).
    pub payment_attempts: IntCounterVec,
    /// Webhook delivery attempts by outcome (`delivered`, `failed`).
    pub webhook_attempts: IntCounterVec,
    /// Live updates not sent to other replicas (the outbound buffer was full).
    pub live_dropped: IntCounter,
    /// 1 while this replica's live link to the other replicas (cloud) is up.
    pub live_link_up: IntGauge,
    /// Station searches and lookups answered from the Redis cache (`hit`) or not (`miss`).
    pub station_cache: IntCounterVec,
    /// OpenChargeMap sync runs by how they ended.
    pub ocm_sync_runs: IntCounterVec,
    /// File descriptors this process has open, and may have (each charger holds one).
    pub open_fds: IntGauge,
    pub max_fds: IntGauge,
    /// The embedded database's write-ahead log file, in bytes (ADR 0020).
    pub sqlite_wal_bytes: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("jucr".into()), None).expect("static prefix is valid; qed");
        let connected_chargers = IntGauge::new(
            "ocpp_connected_chargers",
            "Chargers connected to this replica",
        )
        .expect("static metric definition; qed");
        let active_sessions =
            IntGauge::new("active_sessions", "Charging sessions live on this replica")
                .expect("static metric; qed");
        let messages = IntCounterVec::new(
            Opts::new(
                "ocpp_messages_total",
                "OCPP calls by direction, action and result",
            ),
            &["direction", "action", "result"],
        )
        .expect("static metric definition; qed");
        let queued_calls = IntGauge::new(
            "ocpp_queued_calls",
            "CSMS-to-charger calls waiting for an outstanding one",
        )
        .expect("static metric definition; qed");
        let call_duration = HistogramVec::new(
            HistogramOpts::new(
                "ocpp_call_duration_seconds",
                "Latency of CSMS-to-charger calls",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["action"],
        )
        .expect("static metric definition; qed");
        let auth_failures = IntCounter::new(
            "ocpp_auth_failures_total",
            "Charger connections refused for bad credentials",
        )
        .expect("static metric definition; qed");
        let flush_duration = Histogram::with_opts(
            HistogramOpts::new(
                "persistence_flush_duration_seconds",
                "Time to write one batch",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
        )
        .expect("static metric definition; qed");
        let flush_failures =
            IntCounter::new("persistence_flush_failures_total", "Failed batch writes")
                .expect("static metric; qed");
        let pending_writes = IntGauge::new(
            "persistence_pending_writes",
            "Updates waiting for the next batch",
        )
        .expect("static metric; qed");
        let dropped_writes = IntCounter::new(
            "persistence_dropped_writes_total",
            "Updates refused or dropped",
        )
        .expect("static metric definition; qed");
        let backpressure_waiting = IntGauge::new(
            "persistence_backpressure_waiting",
            "Charger connections waiting for storage to catch up",
        )
        .expect("static metric; qed");
        let storage_down = IntGauge::new(
            "persistence_storage_down",
            "1 while the batch writer finds storage down and backs off",
        )
        .expect("static metric; qed");
        let outbox_pending = IntGauge::new(
            "outbox_pending_events",
            "Domain events waiting in the outbox",
        )
        .expect("static metric; qed");
        let events_published = IntCounterVec::new(
            Opts::new("events_published_total", "Domain events published, by type"),
            &["type"],
        )
        .expect("static metric definition; qed");
        let sessions_billed = IntCounterVec::new(
            Opts::new(
                "billing_sessions_total",
                "Ended sessions by billing outcome",
            ),
            &["outcome"],
        )
        .expect("static metric definition; qed");
        let payment_attempts = IntCounterVec::new(
            Opts::new("payment_attempts_total", "Payment attempts by outcome"),
            &["outcome"],
        )
        .expect("static metric definition; qed");
        let webhook_attempts = IntCounterVec::new(
            Opts::new(
                "webhook_attempts_total",
                "Webhook delivery attempts by outcome",
            ),
            &["outcome"],
        )
        .expect("static metric definition; qed");
        let live_dropped = IntCounter::new(
            "live_updates_dropped_total",
            "Live updates not sent to other replicas",
        )
        .expect("static metric definition; qed");
        let live_link_up = IntGauge::new(
            "live_link_up",
            "1 while the live link to the other replicas is up",
        )
        .expect("static metric definition; qed");
        let station_cache = IntCounterVec::new(
            Opts::new(
                "station_cache_total",
                "Station searches and lookups by cache result",
            ),
            &["result"],
        )
        .expect("static metric definition; qed");
        let ocm_sync_runs = IntCounterVec::new(
            Opts::new("ocm_sync_runs_total", "OpenChargeMap sync runs by status"),
            &["status"],
        )
        .expect("static metric definition; qed");
        let open_fds = IntGauge::new("process_open_fds", "File descriptors open")
            .expect("static metric definition; qed");
        let sqlite_wal_bytes = IntGauge::new(
            "persistence_sqlite_wal_bytes",
            "Size of the embedded database's write-ahead log file (grows while checkpoints fall behind)",
        )
        .expect("static metric; qed");
        let max_fds = IntGauge::new("process_max_fds", "File descriptors this process may open")
            .expect("static metric definition; qed");
        for metric in [
            Box::new(connected_chargers.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(active_sessions.clone()),
            Box::new(messages.clone()),
            Box::new(queued_calls.clone()),
            Box::new(call_duration.clone()),
            Box::new(auth_failures.clone()),
            Box::new(flush_duration.clone()),
            Box::new(flush_failures.clone()),
            Box::new(pending_writes.clone()),
            Box::new(dropped_writes.clone()),
            Box::new(backpressure_waiting.clone()),
            Box::new(storage_down.clone()),
            Box::new(outbox_pending.clone()),
            Box::new(events_published.clone()),
            Box::new(sessions_billed.clone()),
            Box::new(payment_attempts.clone()),
            Box::new(webhook_attempts.clone()),
            Box::new(live_dropped.clone()),
            Box::new(live_link_up.clone()),
            Box::new(station_cache.clone()),
            Box::new(ocm_sync_runs.clone()),
            Box::new(open_fds.clone()),
            Box::new(max_fds.clone()),
            Box::new(sqlite_wal_bytes.clone()),
        ] {
            registry
                .register(metric)
                .expect("each metric is registered once; qed");
        }
        Metrics {
            registry,
            connected_chargers,
            active_sessions,
            messages,
            queued_calls,
            call_duration,
            auth_failures,
            flush_duration,
            flush_failures,
            pending_writes,
            dropped_writes,
            backpressure_waiting,
            storage_down,
            outbox_pending,
            events_published,
            sessions_billed,
            payment_attempts,
            webhook_attempts,
            live_dropped,
            live_link_up,
            station_cache,
            ocm_sync_runs,
            open_fds,
            max_fds,
            sqlite_wal_bytes,
        }
    }

    /// Counts one OCPP message.
    pub fn message(&self, direction: &str, action: &str, result: &str) {
        self.messages
            .with_label_values(&[direction, action, result])
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding gathered metrics into a Vec cannot fail; qed");
        String::from_utf8(out).expect("the text encoder writes UTF-8; qed")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The soft limit on open files, from /proc (Linux); `None` elsewhere or unlimited.
fn fd_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// How the process stands with file descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FdState {
    Fine,
    /// Nine tenths or more in use.
    Low,
    /// None left: new connections are refused.
    Out,
}

/// errno for "too many open files".
const EMFILE: i32 = 24;

/// Exports the size of the embedded database's write-ahead log every few seconds
/// (ADR 0020): it stays near its limit while checkpoints keep up, and grows when they
/// fall behind. A missing file counts as empty.
pub fn watch_sqlite_wal(
    metrics: std::sync::Arc<Metrics>,
    wal: std::path::PathBuf,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            let bytes = tokio::fs::metadata(&wal).await.map_or(0, |m| m.len());
            metrics
                .sqlite_wal_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    })
}

/// Watches the process's file descriptors (each charger's socket is one): exports them
/// as metrics and says plainly, once per change, when they run low or out. Running out
/// only refuses new connections: the chargers already connected are served on.
pub fn watch_fds(metrics: std::sync::Arc<Metrics>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(limit) = fd_limit() else {
            return;
        };
        metrics
            .max_fds
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
        let mut state = FdState::Fine;
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            // Counting needs a descriptor too: when even that fails, none are left.
            // One entry per open descriptor (one per charger): off the runtime's threads.
            let counted = tokio::task::spawn_blocking(|| {
                std::fs::read_dir("/proc/self/fd").map(|entries| entries.count() as u64)
            })
            .await;
            let open = match counted {
                Ok(Ok(open)) => open,
                Ok(Err(e)) if e.raw_os_error() == Some(EMFILE) => limit,
                _ => return,
            };
            metrics
                .open_fds
                .set(i64::try_from(open).unwrap_or(i64::MAX));
            let now = if open + 2 >= limit {
                FdState::Out
            } else if open * 10 >= limit * 9 {
                FdState::Low
            } else {
                FdState::Fine
            };
            if now != state {
                match now {
                    FdState::Out => tracing::error!(
                        open,
                        limit,
                        "out of file descriptors: new charger and API connections are refused until some close; \
                         connected chargers are served on. Raise the limit (ulimit -n, systemd LimitNOFILE, \
                         the container's nofile) or spread the chargers over more replicas"
                    ),
                    FdState::Low => tracing::warn!(
                        open,
                        limit,
                        "file descriptors running low: nine tenths in use; new connections will be refused when none are left"
                    ),
                    FdState::Fine => {
                        tracing::info!(open, limit, "file descriptors available again")
                    }
                }
                state = now;
            }
        }
    })
}
