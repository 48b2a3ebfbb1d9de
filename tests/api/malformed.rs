//! Bad frames get the CALLERROR OCPP-J 1.6 names, and the connection stays open.

use serde_json::json;

use crate::charge_point::{ChargePoint, TIMEOUT};
use crate::helpers::{Backend, CHARGER_PASSWORD, TestApp};

#[tokio::test]
async fn malformed_frames_get_the_right_call_error_and_the_socket_stays_open() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let mut cp = app.registered_charger("CP-BAD").await;

    let start = |extra: serde_json::Value| {
        let mut p = json!({"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": "2026-01-01T00:00:00Z"});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                p.as_object_mut().unwrap().remove(k);
            } else {
                p[k] = v.clone();
            }
        }
        json!([2, "m1", "StartTransaction", p]).to_string()
    };
    // (frame, expected message id, expected 1.6 error code)
    let cases = [
        ("this is not json".to_owned(), "-1", "FormationViolation"),
        ("{\"a\": 1}".to_owned(), "-1", "ProtocolError"),
        ("[2, 42, \"Heartbeat\", {}]".to_owned(), "-1", "ProtocolError"),
        (format!("[2, \"{}\", \"Heartbeat\", {{}}]", "x".repeat(37)), "-1", "ProtocolError"),
        ("[2, \"m2\", \"Heartbeat\"]".to_owned(), "m2", "ProtocolError"),
        ("[9, \"m3\", \"Heartbeat\", {}]".to_owned(), "m3", "ProtocolError"),
        ("[2, \"m4\", \"Heartbeat\", [1]]".to_owned(), "m4", "FormationViolation"),
        ("[2, \"m5\", \"FlyToTheMoon\", {}]".to_owned(), "m5", "NotImplemented"),
        ("[2, \"m6\", \"Reset\", {\"type\": \"Hard\"}]".to_owned(), "m6", "NotSupported"),
        (start(json!({"idTag": null})), "m1", "OccurenceConstraintViolation"),
        (start(json!({"connectorId": "one"})), "m1", "TypeConstraintViolation"),
        (start(json!({"idTag": "X".repeat(21)})), "m1", "PropertyConstraintViolation"),
        (start(json!({"timestamp": "yesterday"})), "m1", "PropertyConstraintViolation"),
        (start(json!({"colour": "red"})), "m1", "FormationViolation"),
        (
            json!([2, "m7", "StatusNotification", {"connectorId": 1, "errorCode": "Oops", "status": "Available"}]).to_string(),
            "m7",
            "PropertyConstraintViolation",
        ),
        (json!([2, "m8", "MeterValues", {"connectorId": 1, "meterValue": []}]).to_string(), "m8", "OccurenceConstraintViolation"),
        (json!([2, "m9", "DataTransfer", {"vendorId": "acme"}]).to_string(), "m9", "CALLRESULT"),
    ];
    for (frame, id, code) in cases {
        cp.send_text(&frame).await;
        let answer = cp
            .recv_frame(TIMEOUT)
            .await
            .unwrap_or_else(|c| panic!("closed after {frame}: {c:?}"));
        if code == "CALLRESULT" {
            assert_eq!(
                answer,
                json!([3, id, {"status": "UnknownVendorId"}]),
                "{frame}"
            );
            continue;
        }
        assert_eq!(
            answer.as_array().map(Vec::len),
            Some(5),
            "CALLERROR has 5 elements: {answer}"
        );
        assert_eq!(
            (answer[0].clone(), answer[1].clone(), answer[2].clone()),
            (json!(4), json!(id), json!(code)),
            "{frame} → {answer}"
        );
        assert!(
            answer[3].as_str().is_some_and(|d| !d.is_empty()),
            "a description: {answer}"
        );
        assert!(answer[4].is_object());
    }

    // Answers to calls we never made, and broken answers, are dropped without reply.
    cp.send_text(&json!([3, "never-sent", {}]).to_string())
        .await;
    cp.send_text(&json!([4, "never-sent", "GenericError", "x", {}]).to_string())
        .await;
    cp.send_text("[3, \"broken\"]").await;

    // The connection is still up, and the very next frame is the Heartbeat's answer:
    // nothing answered the dropped frames.
    cp.send_text(&json!([2, "hb", "Heartbeat", {}]).to_string())
        .await;
    let next = cp.recv_frame(TIMEOUT).await.expect("open");
    assert_eq!(
        (next[0].clone(), next[1].clone()),
        (json!(3), json!("hb")),
        "{next}"
    );
    assert!(next[2]["currentTime"].is_string());
    assert_eq!(app.charger("CP-BAD").await["online"], true);
    let counted = app.metrics().await;
    assert!(
        counted.contains("result=\"NotImplemented\""),
        "errors are counted by code"
    );
}

#[tokio::test]
async fn large_frames_up_to_the_limit_are_read_and_larger_ones_close_with_1009() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("JUCR__OCPP__MAX_FRAME_BYTES", "1048576")],
    )
    .await;
    let mut cp = app.registered_charger("CP-BIG").await;

    // NotifyReport and SendLocalList sized payloads: 900 KiB in one frame is fine.
    let big = "x".repeat(900 * 1024);
    let answer = cp
        .call("DataTransfer", json!({"vendorId": "acme", "data": big}))
        .await;
    assert_eq!(answer["status"], "UnknownVendorId");

    // Past the limit the connection closes with 1009 (message too big).
    let too_big = "x".repeat(1100 * 1024);
    cp.send_text(
        &json!([2, "huge", "DataTransfer", {"vendorId": "acme", "data": too_big}]).to_string(),
    )
    .await;
    assert_eq!(cp.closed_by_server(TIMEOUT).await, Some(1009));
}

#[tokio::test]
async fn a_message_in_continuation_frames_is_read_whole() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut cp = app.registered_charger("CP-FRAG").await;

    cp.send_fragments(&[b"[2,\"hb-1\",", b"\"Heartb", b"eat\",{}]"], true)
        .await;

    let answer = cp.answer_to("hb-1").await;
    assert_eq!(answer[0], 3, "a CALLRESULT: {answer}");
    assert!(answer[2]["currentTime"].is_string(), "{answer}");
    // The connection goes on as before.
    cp.call("Heartbeat", json!({})).await;
}

#[tokio::test]
async fn broken_websocket_framing_closes_with_the_code_rfc_6455_gives() {
    let app =
        TestApp::spawn_with(Backend::Sqlite, &[("JUCR__OCPP__MAX_FRAME_BYTES", "65536")]).await;
    app.register_charger("CP-FRAMING", CHARGER_PASSWORD).await;
    let connect = || {
        ChargePoint::connect(
            app.ws_url("CP-FRAMING"),
            "CP-FRAMING",
            Some(CHARGER_PASSWORD),
        )
    };

    // A continuation with no message started: protocol error.
    let mut cp = connect().await;
    cp.send_fragments(&[b"[2,\"x\",", b"\"Heartbeat\",{}]"], false)
        .await;
    assert_eq!(cp.closed_by_server(TIMEOUT).await, Some(1002));

    // Fragments each under the limit that add up to more than it: too big.
    let mut cp = connect().await;
    let part = vec![b' '; 40_000];
    cp.send_fragments(&[b"[2,\"x\",\"Heartbeat\",{}", &part, &part, b"]"], true)
        .await;
    assert_eq!(cp.closed_by_server(TIMEOUT).await, Some(1009));

    // A text frame that is not UTF-8: inconsistent data.
    let mut cp = connect().await;
    cp.send_fragments(&[&[b'[', 0xff, 0xfe, b']']], true).await;
    assert_eq!(cp.closed_by_server(TIMEOUT).await, Some(1007));

    // The charger can connect again after each: nothing was left behind.
    let mut cp = connect().await;
    cp.call("Heartbeat", json!({})).await;
}
