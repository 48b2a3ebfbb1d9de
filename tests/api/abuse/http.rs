//! HTTP itself: bodies trickled to hold connections, and what the public may read.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::still_serves;
use crate::helpers::{Backend, TestApp};

/// Sends `head`, then the body a byte every 200 ms (the abuse itself); returns what the
/// server answered, or panics if it never cut the trickle off.
async fn trickle(app: &TestApp, head: &str) -> String {
    let mut socket = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let cut_off = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 1024];
        loop {
            tokio::select! {
                read = socket.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                },
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if socket.write_all(b" ").await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await;
    assert!(cut_off.is_ok(), "the trickle was never cut off: {head}");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_body_trickled_byte_by_byte_is_cut_off() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("JUCR__HTTP__BODY_TIMEOUT_SECS", "2")]).await;
    let plain = trickle(
        &app,
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
    )
    .await;
    assert!(plain.starts_with("HTTP/1.1 408"), "{plain}");
    // Saying `Connection: upgrade` does not make a login a WebSocket.
    let upgrade = trickle(
        &app,
        "POST /graphql HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
    )
    .await;
    assert!(upgrade.starts_with("HTTP/1.1 408"), "{upgrade}");
    still_serves(&app).await;
}

#[tokio::test]
async fn metrics_can_require_a_token() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[(
            "JUCR__HTTP__METRICS_TOKEN",
            "a-scraper-token-of-32-characters",
        )],
    )
    .await;
    let url = format!("{}/metrics", app.address);
    let anonymous = app.http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), reqwest::StatusCode::UNAUTHORIZED);
    let wrong = app
        .http
        .get(&url)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), reqwest::StatusCode::UNAUTHORIZED);
    let scraper = app
        .http
        .get(&url)
        .bearer_auth("a-scraper-token-of-32-characters")
        .send()
        .await
        .unwrap();
    assert_eq!(scraper.status(), reqwest::StatusCode::OK);
    assert!(
        scraper
            .text()
            .await
            .unwrap()
            .contains("jucr_ocpp_connected_chargers")
    );
}
