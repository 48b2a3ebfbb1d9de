//! Hostile input against the real binary, as anyone on the network could send it: each
//! test sends its abuse over real sockets, then checks that the server still answers
//! its health check and a legitimate request, and, where the abuse aimed at memory, that
//! what the process holds settles within [`MEMORY_BOUND_KIB`] of where it was.

mod auth;
mod graphql;
mod http;
mod ocpp;
mod webhooks;

use std::time::Duration;

use serde_json::json;

use crate::helpers::{TestApp, eventually};

/// What an abuse may leave the server holding, above what it held before: far below
/// what each abuse grew it by before it was bounded (hundreds of MB to GBs), above what
/// its own requests leave in the allocator's caches for a while.
pub const MEMORY_BOUND_KIB: u64 = 64 * 1024;

/// The server's resident memory (`VmRSS`), KiB.
pub fn rss_kib(app: &TestApp) -> u64 {
    rss_kib_of(app.pid())
}

/// Process `pid`'s resident memory (`VmRSS`), KiB.
pub fn rss_kib_of(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("the server process is running");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// Waits until the server holds at most [`MEMORY_BOUND_KIB`] more than `before` (freed
/// memory goes back to the system a few seconds after a burst).
pub async fn memory_settles(app: &TestApp, before: u64) {
    let bound = before + MEMORY_BOUND_KIB;
    eventually(
        Duration::from_secs(30),
        &format!("the server's memory back within {MEMORY_BOUND_KIB} KiB of {before} KiB"),
        || async { (rss_kib(app) <= bound).then_some(()) },
    )
    .await;
}

/// The server is up: its health check answers, and so do a legitimate operator request
/// and a GraphQL query.
pub async fn still_serves(app: &TestApp) {
    let health = app
        .http
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .expect("the server still answers");
    assert_eq!(health.status(), reqwest::StatusCode::OK);
    let (status, body) = app.api("GET", "/api/v1/chargers", None).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let data = crate::graphql::ok(app, None, "{ __typename }", json!({})).await;
    assert_eq!(data["__typename"], "Query");
}

/// A client that gives up on a request after `secs`: an abuse the server does not
/// bound fails the test instead of hanging it.
pub fn impatient_client(secs: u64) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(secs))
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .expect("a client builds")
}
