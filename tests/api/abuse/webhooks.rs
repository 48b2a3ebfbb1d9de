//! Webhooks as a way into the network behind the server: URLs that name loopback,
//! private, link-local or metadata addresses, by literal or by a name that resolves there
//! only when the delivery is made.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::net::TcpListener;

use super::still_serves;
use crate::billing::charge;
use crate::helpers::{Backend, TestApp, eventually};

#[tokio::test]
async fn webhooks_to_internal_addresses_are_refused() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://127.1/hook",
        "http://2130706433/hook",
        "http://0x7f.0.0.1/hook",
        "http://localhost/hook",
        "http://LOCALHOST./hook",
        "http://api.localhost/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://10.1.2.3/hook",
        "http://172.16.0.1/hook",
        "http://192.168.0.10/hook",
        "http://100.64.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00::1]/hook",
        "http://[fe80::1]/hook",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://metadata/computeMetadata/v1/",
    ] {
        let (status, body) = app
            .api("POST", "/api/v1/webhooks", Some(json!({"url": url})))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not allowed"),
            "{url}: {body}"
        );
    }
    let (_, listed) = app.api("GET", "/api/v1/webhooks", None).await;
    assert_eq!(listed.as_array().unwrap().len(), 0);
    still_serves(&app).await;
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_at_delivery_is_not_connected_to() {
    // A receiver on loopback that counts what reaches it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let reached = Arc::new(AtomicUsize::new(0));
    let count = reached.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    // The name is public-looking when the webhook is made; by delivery time it resolves
    // to loopback (what a DNS rebinding attacker arranges; here a test-only resolver
    // entry stands in for their DNS server).
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("JUCR__TESTING__RESOLVE", "hooks.rebind.example=127.0.0.1"),
            ("JUCR__NOTIFIER__WEBHOOK_ATTEMPTS", "1"),
        ],
    )
    .await;
    let (status, hook) = app
        .api(
            "POST",
            "/api/v1/webhooks",
            Some(json!({"url": format!("http://hooks.rebind.example:{port}/hook"), "event_types": ["SESSION_STARTED"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    app.register_token("RFID-REBIND", json!({"status": "Accepted"}))
        .await;
    charge(&app, "CP-REBIND", "RFID-REBIND", 100).await;
    let id = hook["webhook_id"].as_str().unwrap();
    let failed = eventually(Duration::from_secs(15), "the delivery given up", || async {
        let (_, log) = app
            .api("GET", &format!("/api/v1/webhooks/{id}/deliveries"), None)
            .await;
        let first = log.as_array()?.first()?.clone();
        (first["status"] == "failed").then_some(first)
    })
    .await;
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("not allowed"),
        "{failed}"
    );
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "nothing reached the loopback receiver"
    );
}
