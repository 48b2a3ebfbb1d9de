//! Live updates (the notifier's live half) as an operator's server-sent-event stream:
//! charger status, running sessions, domain events; across replicas through RabbitMQ.

use std::time::Duration;

use serde_json::{Value, json};

use crate::amqp::TestVhost;
use crate::charge_point::ChargePoint;
use crate::helpers::{Backend, TestApp, eventually, now};

/// A `GET /api/v1/live` stream, read frame by frame.
pub struct LiveStream {
    response: reqwest::Response,
    buffer: String,
}

impl LiveStream {
    pub async fn open(app: &TestApp, query: &str) -> Self {
        let response = app
            .http
            .get(format!("{}/api/v1/live?{query}", app.address))
            .bearer_auth(&app.token)
            .send()
            .await
            .expect("the stream opens");
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "server-sent events"
        );
        let mut stream = LiveStream {
            response,
            buffer: String::new(),
        };
        // The stream's first frame: subscribed from here on.
        assert_eq!(stream.frame().await, ": open");
        stream
    }

    async fn frame(&mut self) -> String {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame = self.buffer[..end].to_owned();
                self.buffer.drain(..end + 2);
                return frame;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("a live update in time")
                .expect("reading the stream")
                .expect("the stream stays open");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next update (kind and JSON), skipping comments.
    pub async fn next(&mut self) -> (String, Value) {
        loop {
            let frame = self.frame().await;
            if frame.starts_with(':') {
                continue;
            }
            let kind = frame
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .expect("an event name")
                .to_owned();
            let data = frame
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .expect("data");
            return (kind, serde_json::from_str(data).unwrap());
        }
    }

    /// Reads updates until `wanted` matches one; returns it.
    pub async fn until(&mut self, what: &str, wanted: impl Fn(&str, &Value) -> bool) -> Value {
        for _ in 0..200 {
            let (kind, update) = self.next().await;
            if wanted(&kind, &update) {
                return update;
            }
        }
        panic!("no {what} in 200 updates");
    }
}

/// A 1.6 session on `cp`: status, start, meter values `readings`, stop.
async fn run_session(cp: &mut ChargePoint, readings: &[i64]) -> i64 {
    cp.call(
        "StatusNotification",
        json!({"connectorId": 1, "errorCode": "NoError", "status": "Charging"}),
    )
    .await;
    let tx = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "LIVE", "meterStart": 0, "timestamp": now()}),
        )
        .await["transactionId"]
        .as_i64()
        .unwrap();
    for wh in readings {
        cp.call(
            "MeterValues",
            json!({"connectorId": 1, "transactionId": tx, "meterValue": [{"timestamp": now(), "sampledValue": [
                {"value": wh.to_string(), "measurand": "Energy.Active.Import.Register", "unit": "Wh"}
            ]}]}),
        )
        .await;
    }
    cp.call(
        "StopTransaction",
        json!({"transactionId": tx, "meterStop": readings.last().copied().unwrap_or(0), "timestamp": now()}),
    )
    .await;
    tx
}

async fn watch_one_session(watched: &TestApp, charging: &TestApp) {
    let mut stream = LiveStream::open(watched, "charger_id=CP-LIVE").await;
    charging
        .register_token("LIVE", json!({"status": "Accepted"}))
        .await;
    let mut cp = charging.registered_charger("CP-LIVE").await;
    let readings = [1_000, 2_500, 4_000];
    let tx = run_session(&mut cp, &readings).await;

    let status = stream
        .until("a charger status", |kind, _| kind == "charger_status")
        .await;
    assert_eq!(status["connector"]["status"], "Charging");
    for wh in readings {
        let update = stream
            .until("the session's energy", |kind, u| {
                kind == "session_updated" && u["session"]["energy_wh"] == wh
            })
            .await;
        assert_eq!(update["session"]["session_id"], tx);
    }
    let ended = stream
        .until("SESSION_ENDED", |kind, u| {
            kind == "event" && u["event"]["type"] == "SESSION_ENDED"
        })
        .await;
    assert_eq!(ended["event"]["payload"]["energy_wh"], 4_000);
}

#[tokio::test]
async fn an_operator_watches_a_charger_live() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    watch_one_session(&app, &app).await;
    let (status, body) = app.request("GET", "/api/v1/live", None, None).await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn an_update_on_one_replica_reaches_a_watcher_on_another() {
    let vhost = TestVhost::create();
    let bus = [
        ("JUCR__EVENTS__BUS", "rabbitmq"),
        ("JUCR__EVENTS__AMQP_URL", vhost.url.as_str()),
    ];
    let a = TestApp::spawn_with(Backend::Postgres, &bus).await;
    let database = a.setting("JUCR__DATABASE__URL").unwrap();
    let mut shared = bus.to_vec();
    shared.push(("JUCR__DATABASE__URL", &database));
    let b = TestApp::spawn_with(Backend::Postgres, &shared).await;
    for replica in [&a, &b] {
        eventually(Duration::from_secs(10), "the live link up", || async {
            (replica.metric("jucr_live_link_up").await == 1.0).then_some(())
        })
        .await;
    }
    // The charger is on A; the operator watches on B.
    watch_one_session(&b, &a).await;
}
