//! Webhooks through the real binary to a real HTTP endpoint: signed deliveries,
//! retries with backoff, a delivery log, and the operator API.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::billing::charge;
use crate::helpers::{Backend, TestApp, eventually};

const WAIT: Duration = Duration::from_secs(15);

/// One request as the endpoint received it.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A webhook endpoint: `/flaky` answers 503 to its first request and 204 after,
/// `/down` always 500. It records every request.
struct Endpoint {
    address: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Endpoint {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let received: Arc<Mutex<Vec<Received>>> = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut socket).await else {
                        return;
                    };
                    let status = {
                        let mut log = log.lock().unwrap();
                        let earlier = log.iter().filter(|r| r.path == request.path).count();
                        log.push(request.clone());
                        match (request.path.as_str(), earlier) {
                            ("/flaky", 0) => "503 Service Unavailable",
                            ("/flaky", _) => "204 No Content",
                            _ => "500 Internal Server Error",
                        }
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        Endpoint { address, received }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<Received> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split_whitespace().nth(1)?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Some(Received {
        path,
        headers,
        body,
    })
}

/// Checks `X-Jucr-Signature: t=<ts>,v1=<hex>` against HMAC-SHA256(secret, "<ts>.<body>").
fn assert_signed(request: &Received, secret: &str) {
    let header = request.header("x-jucr-signature").expect("signed");
    let (t, v1) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("signature header shape: {header}"));
    let sent: i64 = t.parse().unwrap();
    assert!(
        (chrono::Utc::now().timestamp() - sent).abs() < 300,
        "a current timestamp"
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(&request.body);
    let expected: String = ring::hmac::sign(&key, &signed)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v1, expected, "HMAC-SHA256 over timestamp and body");
}

#[tokio::test]
async fn webhooks_get_signed_events_with_retries_and_a_delivery_log() {
    let endpoint = Endpoint::start().await;
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("JUCR__NOTIFIER__WEBHOOK_RETRY_MS", "100"),
            ("JUCR__NOTIFIER__WEBHOOK_ATTEMPTS", "3"),
            ("JUCR__NOTIFIER__SCHEDULE_INTERVAL_MS", "100"),
            // The endpoint is on loopback (refused by default: tests/api/abuse/webhooks.rs).
            ("JUCR__NOTIFIER__ALLOW_PRIVATE_TARGETS", "true"),
        ],
    )
    .await;
    for (bad, why) in [
        (json!({"url": "ftp://example.org/x"}), "scheme"),
        (json!({"url": "not a url"}), "url"),
        (
            json!({"url": "http://example.org/x", "event_types": ["SESSION_PAUSED"]}),
            "event type",
        ),
        (
            json!({"url": "http://example.org/x", "event_types": []}),
            "no event type",
        ),
        (
            json!({"url": "https://user:secret@example.org/x"}),
            "credentials in the url",
        ),
    ] {
        let (status, body) = app.api("POST", "/api/v1/webhooks", Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {body}");
    }
    let (status, flaky) = app
        .api(
            "POST",
            "/api/v1/webhooks",
            Some(json!({
                "url": format!("{}/flaky", endpoint.address),
                "event_types": ["SESSION_STARTED", "SESSION_ENDED"]
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{flaky}");
    let secret = flaky["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    let (_, down) = app
        .api(
            "POST",
            "/api/v1/webhooks",
            Some(json!({"url": format!("{}/down", endpoint.address), "event_types": ["SESSION_ENDED"]})),
        )
        .await;
    let (_, listed) = app.api("GET", "/api/v1/webhooks", None).await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w.get("secret").is_none()),
        "secrets are shown once: {listed}"
    );

    app.register_token("RFID-WH", json!({"status": "Accepted"}))
        .await;
    let tx = charge(&app, "CP-WH", "RFID-WH", 1_500).await;

    let flaky_id = flaky["webhook_id"].as_str().unwrap();
    let log = eventually(WAIT, "both events delivered to /flaky", || async {
        let (_, log) = app
            .api(
                "GET",
                &format!("/api/v1/webhooks/{flaky_id}/deliveries"),
                None,
            )
            .await;
        let log = log.as_array()?.clone();
        (log.len() == 2 && log.iter().all(|d| d["status"] == "delivered")).then_some(log)
    })
    .await;
    let attempts: Vec<u64> = {
        let mut a: Vec<u64> = log
            .iter()
            .map(|d| d["attempts"].as_u64().unwrap())
            .collect();
        a.sort();
        a
    };
    assert_eq!(
        attempts,
        [1, 2],
        "the first request got 503 and was retried: {log:?}"
    );
    assert!(log.iter().all(|d| d["last_status_code"] == 204));

    let to_flaky: Vec<Received> = endpoint
        .received()
        .into_iter()
        .filter(|r| r.path == "/flaky")
        .collect();
    assert_eq!(to_flaky.len(), 3);
    let mut types = Vec::new();
    for request in &to_flaky {
        assert_signed(request, &secret);
        let event: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(request.header("x-jucr-event"), event["type"].as_str());
        assert_eq!(request.header("x-jucr-event-id"), event["id"].as_str());
        assert!(request.header("x-jucr-delivery").is_some());
        assert_eq!(event["aggregate_id"], tx.to_string());
        types.push(event["type"].as_str().unwrap().to_owned());
    }
    types.sort();
    types.dedup();
    assert_eq!(types, ["SESSION_ENDED", "SESSION_STARTED"]);

    // An endpoint that keeps failing: logged as failed after the configured attempts.
    let down_id = down["webhook_id"].as_str().unwrap();
    let failed = eventually(WAIT, "the /down delivery given up", || async {
        let (_, log) = app
            .api(
                "GET",
                &format!("/api/v1/webhooks/{down_id}/deliveries"),
                None,
            )
            .await;
        let first = log.as_array()?.first()?.clone();
        (first["status"] == "failed").then_some(first)
    })
    .await;
    assert_eq!(failed["attempts"], 3);
    assert_eq!(failed["last_status_code"], 500);
    assert_eq!(failed["event_type"], "SESSION_ENDED");
    assert_eq!(
        endpoint
            .received()
            .iter()
            .filter(|r| r.path == "/down")
            .count(),
        3
    );

    let (status, _) = app
        .api("DELETE", &format!("/api/v1/webhooks/{down_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app
        .api("DELETE", &format!("/api/v1/webhooks/{down_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .api(
            "GET",
            &format!("/api/v1/webhooks/{down_id}/deliveries"),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the log went with the webhook"
    );
    assert_eq!(
        app.metric("jucr_webhook_attempts_total{outcome=\"delivered\"}")
            .await,
        2.0
    );
}
