//! The operator API's authentication, validation and error shape, and the WebSocket
//! endpoint's checks before the upgrade.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use base64::Engine;

use crate::charge_point::{ChargePoint, Connect, Refused, masked_text_frame, raw_handshake};
use crate::helpers::{Backend, CHARGER_PASSWORD, TestApp, eventually};

fn assert_error_shape(body: &serde_json::Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn login_and_roles_guard_the_operator_api() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let (status, body) = app
        .request(
            "POST",
            "/api/v1/auth/login",
            Some(json!({"email": "admin@test.local", "password": "wrong"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error_shape(&body, "invalid_credentials");
    let (status, body) = app
        .request(
            "POST",
            "/api/v1/auth/login",
            Some(json!({"email": "nobody@test.local", "password": "x"})),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("invalid_credentials"))
    );

    let (status, body) = app.request("GET", "/api/v1/chargers", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error_shape(&body, "unauthorized");
    let (status, _) = app
        .request("GET", "/api/v1/chargers", None, Some("not-a-jwt"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Users made with the CLI: a driver may not operate, an operator may.
    for (email, role) in [
        ("driver@test.local", "driver"),
        ("operator@test.local", "operator"),
    ] {
        let out = app
            .cli(&[
                "user",
                "create",
                "--email",
                email,
                "--password",
                "a-long-password",
                "--role",
                role,
            ])
            .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let duplicate = app
        .cli(&[
            "user",
            "create",
            "--email",
            "driver@test.local",
            "--password",
            "a-long-password",
            "--role",
            "driver",
        ])
        .await;
    assert!(!duplicate.status.success(), "a taken e-mail is refused");
    let driver = app.login("driver@test.local", "a-long-password").await;
    let (status, body) = app
        .request("GET", "/api/v1/chargers", None, Some(&driver))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_error_shape(&body, "forbidden");
    let operator = app.login("operator@test.local", "a-long-password").await;
    let (status, _) = app
        .request("GET", "/api/v1/chargers", None, Some(&operator))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn bad_input_gets_a_4xx_with_a_useful_message() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let cases = [
        (
            "PUT",
            "/api/v1/chargers/CP1",
            Some(json!({"password": "short"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            "/api/v1/chargers/CP1",
            Some(json!({"security_profile": 1})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            "/api/v1/chargers/CP1",
            Some(json!({"security_profile": 4, "password": "0123456789abcdef"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            "/api/v1/chargers/CP1",
            Some(json!({"registration_status": "Maybe"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            "/api/v1/chargers/CP1",
            Some(json!({"colour": "red"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            "/api/v1/chargers/bad%20id",
            Some(json!({})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            "/api/v1/id-tokens/T1",
            Some(json!({"status": "Sometimes"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            "/api/v1/id-tokens/T1",
            Some(json!({"status": "Accepted", "type": "Pigeon"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            "/api/v1/id-tokens/T1",
            Some(json!({"status": "Accepted", "expiry_date": "soon"})),
            StatusCode::BAD_REQUEST,
        ),
        ("GET", "/api/v1/id-tokens/NOPE", None, StatusCode::NOT_FOUND),
        (
            "DELETE",
            "/api/v1/id-tokens/NOPE",
            None,
            StatusCode::NOT_FOUND,
        ),
        ("GET", "/api/v1/chargers/NOPE", None, StatusCode::NOT_FOUND),
        ("GET", "/api/v1/sessions/abc", None, StatusCode::BAD_REQUEST),
        ("GET", "/api/v1/sessions/12345", None, StatusCode::NOT_FOUND),
        (
            "GET",
            "/api/v1/sessions?status=sleeping",
            None,
            StatusCode::BAD_REQUEST,
        ),
        ("GET", "/api/v1/nothing-here", None, StatusCode::NOT_FOUND),
    ];
    for (method, path, body, expected) in cases {
        let (status, answer) = app.api(method, path, body.clone()).await;
        assert_eq!(status, expected, "{method} {path} {body:?}: {answer}");
        assert!(
            answer["error"]["code"].is_string() && answer["error"]["message"].is_string(),
            "{method} {path}: {answer}"
        );
    }
    // Not JSON at all.
    let response = app
        .http
        .put(format!("{}/api/v1/id-tokens/T1", app.address))
        .bearer_auth(&app.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn id_tokens_are_created_read_updated_and_deleted() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let (status, body) = app
        .api(
            "PUT",
            "/api/v1/id-tokens/Tag-1",
            Some(json!({"status": "Accepted", "type": "ISO15693", "group_id": "G"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["type"], "ISO15693");
    let (status, _) = app
        .api(
            "PUT",
            "/api/v1/id-tokens/TAG-1",
            Some(json!({"status": "Blocked"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the same token, case-insensitively");
    let (_, body) = app.api("GET", "/api/v1/id-tokens/tag-1", None).await;
    assert_eq!(
        (body["status"].clone(), body["id_token"].clone()),
        (json!("Blocked"), json!("TAG-1"))
    );
    let (_, list) = app.api("GET", "/api/v1/id-tokens", None).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    let (status, _) = app.api("DELETE", "/api/v1/id-tokens/TAG-1", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.api("GET", "/api/v1/id-tokens/TAG-1", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_endpoint_checks_identity_and_protocol_before_the_upgrade() {
    let app = TestApp::spawn(Backend::Postgres).await;
    app.register_charger("CP-AUTH", CHARGER_PASSWORD).await;
    let url = app.ws_url("CP-AUTH");
    let attempt = |id: &'static str, password: Option<&'static str>, protocols: &'static str| {
        let url = if id == "CP-AUTH" {
            url.clone()
        } else {
            app.ws_url(id)
        };
        async move {
            ChargePoint::try_connect(Connect {
                url,
                id,
                password,
                protocols,
                tls: None,
            })
            .await
        }
    };

    assert!(
        matches!(
            attempt("CP-UNKNOWN", Some(CHARGER_PASSWORD), "ocpp1.6").await,
            Err(Refused::Status(404))
        ),
        "unknown under reject"
    );
    assert!(matches!(
        attempt("CP-AUTH", Some("wrong-password-000001"), "ocpp1.6").await,
        Err(Refused::Status(401))
    ));
    assert!(matches!(
        attempt("CP-AUTH", None, "ocpp1.6").await,
        Err(Refused::Status(401))
    ));
    assert!(
        app.metric("jucr_ocpp_auth_failures_total").await >= 2.0,
        "failures are counted"
    );

    // No supported subprotocol: the handshake completes without one and the socket closes with 1002.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("CP-AUTH:{CHARGER_PASSWORD}"))
    );
    let (head, frame) = raw_handshake(
        app.port,
        "/ocpp/CP-AUTH",
        &[
            ("Authorization", basic.clone()),
            ("Sec-WebSocket-Protocol", "ocpp1.5, ocpp9".into()),
        ],
        &[],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("sec-websocket-protocol"),
        "{head}"
    );
    assert_eq!(frame.and_then(|f| f.close_code()), Some(1002));
    let (head, frame) =
        raw_handshake(app.port, "/ocpp/CP-AUTH", &[("Authorization", basic)], &[]).await;
    assert!(
        head.starts_with("HTTP/1.1 101") && frame.and_then(|f| f.close_code()) == Some(1002),
        "no subprotocol offered at all: {head}"
    );

    // Server preference among the offered ones.
    let cp = attempt("CP-AUTH", Some(CHARGER_PASSWORD), "ocpp1.6, ocpp2.0.1")
        .await
        .expect("connects");
    assert_eq!(
        cp.subprotocol.as_deref(),
        Some("ocpp2.0.1"),
        "2.0.1 is preferred by default"
    );
    cp.close().await;
}

#[tokio::test]
async fn a_frame_sent_right_behind_the_handshake_is_answered() {
    // Some chargers send their first call without waiting for the 101: those bytes arrive
    // with the request head and must reach the charger's connection, not be dropped.
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.register_charger("CP-EAGER", CHARGER_PASSWORD).await;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("CP-EAGER:{CHARGER_PASSWORD}"))
    );
    let call = json!([2, "eager-1", "Heartbeat", {}]).to_string();

    let (head, frame) = raw_handshake(
        app.port,
        "/ocpp/CP-EAGER",
        &[
            ("Authorization", basic),
            ("Sec-WebSocket-Protocol", "ocpp1.6".into()),
        ],
        &masked_text_frame(&call),
    )
    .await;

    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let answer: serde_json::Value =
        serde_json::from_str(frame.as_ref().and_then(|f| f.text()).expect("a text frame"))
            .expect("JSON");
    assert_eq!(
        (&answer[0], &answer[1]),
        (&json!(3), &json!("eager-1")),
        "{answer}"
    );
    assert!(answer[2]["currentTime"].is_string(), "{answer}");
}

#[tokio::test]
async fn a_second_connection_replaces_the_first_and_unknown_chargers_can_be_accepted() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("JUCR__OCPP__UNKNOWN_CHARGERS", "accept")],
    )
    .await;
    let mut first = ChargePoint::connect(app.ws_url("CP-NEW"), "CP-NEW", None).await;
    first.call("Heartbeat", serde_json::json!({})).await;
    let charger = app.charger("CP-NEW").await;
    assert_eq!(
        (
            charger["security_profile"].clone(),
            charger["online"].clone()
        ),
        (json!(0), json!(true))
    );

    let mut second = ChargePoint::connect(app.ws_url("CP-NEW"), "CP-NEW", None).await;
    assert_eq!(
        first.closed_by_server(Duration::from_secs(5)).await,
        Some(1008)
    );
    second.call("Heartbeat", json!({})).await;
    eventually(Duration::from_secs(5), "one connected charger", || async {
        (app.metric("jucr_ocpp_connected_chargers").await == 1.0).then_some(())
    })
    .await;
    let (_, list) = app.api("GET", "/api/v1/chargers", None).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["online"], true);
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = TestApp::spawn(Backend::Postgres).await;
    assert_eq!(
        app.request("GET", "/healthz", None, None).await.0,
        StatusCode::OK
    );
    let (status, body) = app.request("GET", "/readyz", None, None).await;
    assert_eq!(
        (status, body["storage"].clone()),
        (StatusCode::OK, json!("postgres"))
    );
    let metrics = app.metrics().await;
    for name in [
        "jucr_ocpp_connected_chargers",
        "jucr_ocpp_queued_calls",
        "jucr_active_sessions",
    ] {
        assert!(metrics.contains(name), "{name} in {metrics}");
    }
}

#[tokio::test]
async fn the_command_line_migrates_registers_chargers_and_explains_itself() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let migrate = app.cli(&["migrate"]).await;
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );

    let add = app
        .cli(&[
            "charger",
            "add",
            "CP-CLI",
            "--password",
            "cli-password-000001",
            "--description",
            "bay 7",
        ])
        .await;
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let charger = app.charger("CP-CLI").await;
    assert_eq!(
        (
            charger["security_profile"].clone(),
            charger["description"].clone()
        ),
        (json!(1), json!("bay 7"))
    );
    let mut cp =
        ChargePoint::connect(app.ws_url("CP-CLI"), "CP-CLI", Some("cli-password-000001")).await;
    cp.call("Heartbeat", json!({})).await;

    let mtls = app
        .cli(&["charger", "add", "CP-M3", "--security-profile", "3"])
        .await;
    assert!(
        mtls.status.success(),
        "{}",
        String::from_utf8_lossy(&mtls.stderr)
    );
    assert_eq!(app.charger("CP-M3").await["security_profile"], 3);
    let no_password = app
        .cli(&["charger", "add", "CP-M2", "--security-profile", "2"])
        .await;
    assert!(!no_password.status.success(), "profile 2 needs a password");

    let short = app
        .cli(&["charger", "add", "CP-CLI2", "--password", "short"])
        .await;
    assert!(
        !short.status.success(),
        "OCPP passwords have at least 16 characters"
    );

    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["migrate", "--help"],
        &["user", "create", "--help"],
        &["charger", "add", "--help"],
    ] {
        let help = app.cli(args).await;
        assert!(help.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&help.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

#[tokio::test]
async fn a_charger_without_a_password_must_be_asked_for() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (status, body) = app
        .api(
            "PUT",
            "/api/v1/chargers/CP-OPEN",
            Some(json!({"description": "lab"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = app
        .api(
            "PUT",
            "/api/v1/chargers/CP-OPEN",
            Some(json!({"security_profile": 0})),
        )
        .await;
    assert_eq!(
        (status, body["security_profile"].clone()),
        (StatusCode::CREATED, json!(0))
    );
    let mut cp = ChargePoint::connect(app.ws_url("CP-OPEN"), "CP-OPEN", None).await;
    cp.call("Heartbeat", json!({})).await;
}

#[tokio::test]
async fn an_operator_call_body_over_the_frame_limit_gets_413_in_the_error_shape() {
    let app =
        TestApp::spawn_with(Backend::Sqlite, &[("JUCR__OCPP__MAX_FRAME_BYTES", "65536")]).await;
    app.register_charger("CP-LIMIT", CHARGER_PASSWORD).await;
    let big = json!({"vendorId": "acme", "data": "x".repeat(70_000)});
    let (status, body) = app
        .api(
            "POST",
            "/api/v1/chargers/CP-LIMIT/ocpp/DataTransfer",
            Some(big),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error_shape(&body, "payload_too_large");
}
