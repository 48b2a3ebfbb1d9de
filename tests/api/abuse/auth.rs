//! Logins, tokens and accounts under attack: giant and many e-mails, password guessing
//! on both APIs and at the charger door, staff on the app's long-lived path, who may
//! create whom, tokens that must die, and what other local users may read.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use base64::Engine;
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use super::{memory_settles, rss_kib, rss_kib_of, still_serves};
use crate::graphql::{code, gql, ok, register};
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, CHARGER_PASSWORD, TestApp};

const LOGIN: &str = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken refreshToken user { role } } }";

/// The most the server's memory rose above `before` while `work` ran (sampled).
async fn peak_rise_during<F: std::future::Future>(app: &TestApp, work: F) -> (u64, F::Output) {
    let before = rss_kib(app);
    let pid = app.pid();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        loop {
            peak = peak.max(rss_kib_of(pid));
            if stopped.try_recv().is_ok() {
                return peak;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let output = work.await;
    let _ = stop.send(());
    let peak = sampler.await.unwrap();
    (peak.saturating_sub(before), output)
}

#[tokio::test]
async fn giant_e_mails_at_the_app_login_are_not_kept() {
    // Every attempt gets as far as the e-mail (no address limit in the way).
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("JUCR__AUTH__LOGIN_FAILURE_LIMIT_PER_ADDRESS", "100000")],
    )
    .await;
    let before = rss_kib(&app);
    // 200 anonymous logins, each with its own 900 KB "e-mail", 8 at a time.
    for batch in 0..25 {
        let logins = (0..8).map(|i| {
            let email = format!("{}{batch}-{i}@example.org", "x".repeat(900 * 1024));
            let app = &app;
            async move {
                let answer =
                    gql(app, None, LOGIN, json!({"e": email, "p": "wrong-password"})).await;
                assert_eq!(code(&answer), "UNAUTHENTICATED", "{answer}");
            }
        });
        join_all(logins).await;
    }
    memory_settles(&app, before).await;
    // A real driver still signs in.
    register(&app, "real@example.org").await;
    let data = ok(
        &app,
        None,
        LOGIN,
        json!({"e": "real@example.org", "p": "driver-password-1"}),
    )
    .await;
    assert_eq!(data["login"]["user"]["role"], "driver");
    still_serves(&app).await;
}

#[tokio::test]
async fn the_operator_login_is_limited_like_the_app_s() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let (status, _) = app
            .request(
                "POST",
                "/api/v1/auth/login",
                Some(json!({"email": ADMIN_EMAIL, "password": "not-the-password"})),
                None,
            )
            .await;
        statuses.push(status);
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::UNAUTHORIZED)
            .count(),
        5,
        "auth.login_failure_limit wrong passwords are checked: {statuses:?}"
    );
    assert!(
        statuses[5..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // Within the window the right password does not help the attacker either.
    let (status, body) = app
        .request(
            "POST",
            "/api/v1/auth/login",
            Some(json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "too_many_attempts");
}

#[tokio::test]
async fn parallel_wrong_logins_hash_a_bounded_number_of_passwords_at_once() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("JUCR__AUTH__PASSWORD_HASH_CONCURRENCY", "2"),
            ("JUCR__AUTH__LOGIN_FAILURE_LIMIT_PER_ADDRESS", "1000"),
        ],
    )
    .await;
    // 48 logins at once, each for another account: each needs an argon2 hash (19 MiB).
    let (rise, statuses) = peak_rise_during(&app, async {
        join_all((0..48).map(|i| {
            let app = &app;
            async move {
                app.request(
                    "POST",
                    "/api/v1/auth/login",
                    Some(json!({"email": format!("nobody{i}@example.org"), "password": "guess-guess"})),
                    None,
                )
                .await
                .0
            }
        }))
        .await
    })
    .await;
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED || *s == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    assert!(
        rise < 64 * 1024,
        "two hashes at a time, not 48: the server rose {rise} KiB"
    );
    still_serves(&app).await;
}

#[tokio::test]
async fn staff_accounts_cannot_sign_in_through_the_app() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let answer = gql(
        &app,
        None,
        LOGIN,
        json!({"e": ADMIN_EMAIL, "p": ADMIN_PASSWORD}),
    )
    .await;
    assert_eq!(code(&answer), "FORBIDDEN", "{answer}");
    assert!(answer["data"].is_null(), "no tokens: {answer}");
}

#[tokio::test]
async fn an_operator_cannot_create_operators_or_admins() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (status, _) = app
        .api(
            "POST",
            "/api/v1/users",
            Some(json!({"email": "op@test.local", "password": "a-long-password", "role": "operator"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let operator = app.login("op@test.local", "a-long-password").await;
    for role in ["operator", "admin"] {
        let (status, body) = app
            .request(
                "POST",
                "/api/v1/users",
                Some(json!({"email": format!("{role}2@test.local"), "password": "a-long-password", "role": role})),
                Some(&operator),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{role}: {body}");
    }
    let (status, _) = app
        .request(
            "POST",
            "/api/v1/users",
            Some(json!({"email": "driver@test.local", "password": "a-long-password"})),
            Some(&operator),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "operators create drivers");
}

#[tokio::test]
async fn logout_and_demotion_end_access_tokens_at_once() {
    let app = TestApp::spawn(Backend::Postgres).await;
    // A driver logs out: the access token of that login stops working.
    let driver = register(&app, "leaving@example.org").await;
    ok(&app, Some(&driver.access), "{ me { id } }", json!({})).await;
    let out = ok(
        &app,
        None,
        "mutation($r: String!) { logout(refreshToken: $r) }",
        json!({"r": driver.refresh}),
    )
    .await;
    assert_eq!(out["logout"], true);
    let after = gql(&app, Some(&driver.access), "{ me { id } }", json!({})).await;
    assert_eq!(code(&after), "UNAUTHENTICATED", "{after}");

    // An operator demoted to driver: the operator token stops working on every replica
    // (the check is in the shared database).
    let (_, user) = app
        .api(
            "POST",
            "/api/v1/users",
            Some(json!({"email": "demoted@test.local", "password": "a-long-password", "role": "operator"})),
        )
        .await;
    let operator = app.login("demoted@test.local", "a-long-password").await;
    let (status, _) = app
        .request("GET", "/api/v1/chargers", None, Some(&operator))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app
        .api(
            "PUT",
            &format!("/api/v1/users/{}/role", user["user_id"].as_str().unwrap()),
            Some(json!({"role": "driver"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["role"], "driver");
    let (status, body) = app
        .request("GET", "/api/v1/chargers", None, Some(&operator))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // Only admins change roles.
    let fresh = app.login("demoted@test.local", "a-long-password").await;
    let (status, _) = app
        .request(
            "PUT",
            &format!("/api/v1/users/{}/role", user["user_id"].as_str().unwrap()),
            Some(json!({"role": "admin"})),
            Some(&fresh),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// An upgrade to the OCPP endpoint with Basic credentials, optionally as if forwarded
/// by a load balancer for `client`; returns the HTTP status.
async fn upgrade(app: &TestApp, id: &str, password: &str, client: Option<&str>) -> u16 {
    let mut request = app
        .http
        .get(format!("{}/ocpp/{id}", app.address))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Sec-WebSocket-Protocol", "ocpp1.6")
        .header(
            "Authorization",
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{id}:{password}"))
            ),
        );
    if let Some(client) = client {
        request = request.header("X-Forwarded-For", client);
    }
    request.send().await.expect("an answer").status().as_u16()
}

#[tokio::test]
async fn parallel_wrong_charger_passwords_are_counted_before_they_are_checked() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.register_charger("CP-GUESSED", CHARGER_PASSWORD).await;
    let statuses: Vec<u16> = join_all((0..60).map(|i| {
        let app = &app;
        async move { upgrade(app, "CP-GUESSED", &format!("wrong-password-{i:04}"), None).await }
    }))
    .await;
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        checked <= 10,
        "at most ocpp.auth_failure_limit (10) passwords are checked: {statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        60 - checked,
        "{statuses:?}"
    );
    assert_eq!(
        app.metric("jucr_ocpp_auth_failures_total").await as usize,
        checked
    );
}

#[tokio::test]
async fn behind_a_balancer_one_charger_s_failures_lock_out_neither_others_nor_its_own_address() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("JUCR__HTTP__TRUST_FORWARDED_FOR", "true")],
    )
    .await;
    app.register_charger("CP-ATTACKED", CHARGER_PASSWORD).await;
    app.register_charger("CP-NEIGHBOUR", CHARGER_PASSWORD).await;
    // An attacker at 203.0.113.9 guesses CP-ATTACKED's password until refused.
    let mut last = 0;
    for i in 0..12 {
        last = upgrade(
            &app,
            "CP-ATTACKED",
            &format!("guess-number-{i:04}"),
            Some("203.0.113.9"),
        )
        .await;
    }
    assert_eq!(last, 429);
    // Every request came from the balancer's address; the others are not locked out.
    assert_eq!(
        upgrade(&app, "CP-NEIGHBOUR", CHARGER_PASSWORD, Some("198.51.100.7")).await,
        101
    );
    assert_eq!(
        upgrade(&app, "CP-ATTACKED", CHARGER_PASSWORD, Some("198.51.100.8")).await,
        101,
        "the real charger, from its own address, still connects"
    );
    assert_eq!(
        upgrade(&app, "CP-ATTACKED", CHARGER_PASSWORD, Some("203.0.113.9")).await,
        429,
        "the attacker's address stays refused for this charger within the window"
    );
}

#[tokio::test]
async fn the_data_directory_and_database_are_private_to_the_service_user() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let data = app.dir.path().join("data");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the data directory");
    let mut files = 0;
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            files += 1;
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    assert!(files >= 1, "the SQLite file at least");
}

#[tokio::test]
async fn a_short_jwt_secret_is_refused_at_start() {
    let mut app = TestApp::spawn(Backend::Sqlite).await;
    app.set_setting("JUCR__AUTH__JWT_SECRET", Some("too-short-a-secret"));
    let out = app.cli_within(&["serve"], Duration::from_secs(30)).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("jwt_secret") && stderr.contains("32"),
        "{stderr}"
    );
}

/// Reads a server-sent event stream until `needle` comes, or panics after `within`.
async fn stream_until(mut response: reqwest::Response, needle: &str, within: Duration) -> String {
    let mut seen = String::new();
    let found = tokio::time::timeout(within, async {
        while let Some(chunk) = response.chunk().await.expect("the stream reads") {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains(needle) {
                return true;
            }
        }
        false
    })
    .await;
    assert!(matches!(found, Ok(true)), "no {needle:?} in {seen:?}");
    seen
}

#[tokio::test]
async fn the_operator_live_stream_ends_with_its_token() {
    // It ends when the token it was opened with expires...
    let app = TestApp::spawn_with(Backend::Sqlite, &[("JUCR__AUTH__TOKEN_TTL_SECS", "3")]).await;
    let live = app
        .http
        .get(format!("{}/api/v1/live", app.address))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    stream_until(live, "access token expired", Duration::from_secs(20)).await;

    // ...and within 15 s of its user's role changing, however busy the stream is.
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut cp = app.registered_charger("CP-BUSY").await;
    let (_, user) = app
        .api(
            "POST",
            "/api/v1/users",
            Some(json!({"email": "watcher@test.local", "password": "a-long-password", "role": "operator"})),
        )
        .await;
    let operator = app.login("watcher@test.local", "a-long-password").await;
    let live = app
        .http
        .get(format!("{}/api/v1/live", app.address))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    let (status, _) = app
        .api(
            "PUT",
            &format!("/api/v1/users/{}/role", user["user_id"].as_str().unwrap()),
            Some(json!({"role": "driver"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // A charger changes status every 200 ms meanwhile: the stream is never idle.
    let busy = async {
        for i in 0.. {
            let status = if i % 2 == 0 { "Available" } else { "Preparing" };
            cp.call(
                "StatusNotification",
                json!({"connectorId": 1, "errorCode": "NoError", "status": status}),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        seen = stream_until(live, "access token revoked", Duration::from_secs(30)) => {
            assert!(seen.contains("charger_status"), "the stream was busy: {seen}");
        }
        _ = busy => unreachable!("the charger calls forever"),
    }
}
