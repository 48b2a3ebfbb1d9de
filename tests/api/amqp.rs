//! The RabbitMQ event bus against the real broker, each test in its own vhost:
//! publisher confirms, per-consumer queues, dead letters, and the binary publishing its
//! session events through it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jucr::domain::ports::{BusError, EventBus, EventConsumer};
use jucr::domain::{DomainEvent, EventType};
use jucr::persistence::amqp::{self, AmqpBus};
use lapin::options::BasicGetOptions;
use secrecy::SecretString;
use serde_json::json;
use tokio::sync::mpsc;

use crate::charge_point::ChargePoint;
use crate::helpers::{Backend, TestApp, eventually, now};

/// A fresh RabbitMQ vhost, deleted when dropped.
pub struct TestVhost {
    pub name: String,
    pub url: String,
}

fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl must be installed for the tests");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestVhost {
    pub fn create() -> Self {
        let name = format!("jucr_test_{}", uuid::Uuid::new_v4().simple());
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        let base = std::env::var("JUCR_TEST_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".into());
        TestVhost {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
    }
}

/// Records what it is given; fails the first `failures` deliveries of each event.
struct Recorder {
    name: &'static str,
    wants: &'static [EventType],
    seen: mpsc::UnboundedSender<DomainEvent>,
    always_fail: bool,
}

#[async_trait]
impl EventConsumer for Recorder {
    fn name(&self) -> &'static str {
        self.name
    }

    fn wants(&self) -> &'static [EventType] {
        self.wants
    }

    async fn handle(&self, event: &DomainEvent) -> Result<(), BusError> {
        let _ = self.seen.send(event.clone());
        if self.always_fail {
            Err(BusError("this consumer always fails".into()))
        } else {
            Ok(())
        }
    }
}

fn ended_event(aggregate: &str) -> DomainEvent {
    DomainEvent {
        id: uuid::Uuid::new_v4(),
        event_type: EventType::SessionEnded,
        version: 1,
        occurred_at: chrono::Utc::now(),
        aggregate_id: aggregate.to_owned(),
        payload: json!({"energy_wh": 1}),
    }
}

async fn recv(rx: &mut mpsc::UnboundedReceiver<DomainEvent>) -> DomainEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event in time")
        .expect("open")
}

#[tokio::test]
async fn events_are_confirmed_routed_by_type_and_consumed() {
    let vhost = TestVhost::create();
    let url = SecretString::from(vhost.url.clone());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let billing: Arc<dyn EventConsumer> = Arc::new(Recorder {
        name: "test-billing",
        wants: &[EventType::SessionEnded],
        seen: tx,
        always_fail: false,
    });
    amqp::declare(&url, "jucr.events", &*billing, 5)
        .await
        .expect("queues declared");

    let bus = AmqpBus::new(url.clone(), "jucr.events".into());
    let started = DomainEvent {
        event_type: EventType::SessionStarted,
        ..ended_event("7")
    };
    let ended = ended_event("7");
    bus.publish(&started).await.expect("confirmed");
    bus.publish(&ended).await.expect("confirmed");

    let consumer = tokio::spawn(amqp::run_consumer(url, "jucr.events".into(), billing, 5));
    let got = recv(&mut rx).await;
    assert_eq!(
        (got.id, got.event_type, got.aggregate_id.as_str()),
        (ended.id, EventType::SessionEnded, "7")
    );
    assert_eq!(got, ended, "the event arrives whole");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "SESSION_STARTED is not routed to it"
    );
    consumer.abort();
}

#[tokio::test]
async fn an_event_a_consumer_keeps_failing_on_is_dead_lettered() {
    let vhost = TestVhost::create();
    let url = SecretString::from(vhost.url.clone());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let failing: Arc<dyn EventConsumer> = Arc::new(Recorder {
        name: "test-failing",
        wants: &[EventType::SessionEnded],
        seen: tx,
        always_fail: true,
    });
    amqp::declare(&url, "jucr.events", &*failing, 2)
        .await
        .unwrap();
    let event = ended_event("9");
    AmqpBus::new(url.clone(), "jucr.events".into())
        .publish(&event)
        .await
        .unwrap();
    let consumer = tokio::spawn(amqp::run_consumer(url, "jucr.events".into(), failing, 2));
    for _ in 0..2 {
        assert_eq!(
            recv(&mut rx).await.id,
            event.id,
            "delivered again after a failure"
        );
    }

    let connection = lapin::Connection::connect(&vhost.url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let dead = eventually(
        Duration::from_secs(10),
        "the event in the dead-letter queue",
        || {
            let channel = channel.clone();
            async move {
                let message = channel
                    .basic_get(
                        amqp::dead_letter_queue_name("test-failing").as_str().into(),
                        BasicGetOptions { no_ack: true },
                    )
                    .await
                    .ok()??;
                Some(serde_json::from_slice::<DomainEvent>(&message.delivery.data).unwrap())
            }
        },
    )
    .await;
    assert_eq!(dead.id, event.id);
    consumer.abort();
}

#[tokio::test]
async fn the_binary_publishes_its_session_events_to_rabbitmq() {
    let vhost = TestVhost::create();
    let url = SecretString::from(vhost.url.clone());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watcher: Arc<dyn EventConsumer> = Arc::new(Recorder {
        name: "test-watcher",
        wants: &[EventType::SessionStarted, EventType::SessionEnded],
        seen: tx,
        always_fail: false,
    });
    amqp::declare(&url, "jucr.events", &*watcher, 5)
        .await
        .unwrap();
    let consumer = tokio::spawn(amqp::run_consumer(url, "jucr.events".into(), watcher, 5));

    let app = TestApp::spawn_with(
        Backend::Postgres,
        &[
            ("JUCR__EVENTS__BUS", "rabbitmq"),
            ("JUCR__EVENTS__AMQP_URL", &vhost.url),
        ],
    )
    .await;
    app.register_charger("CP-MQ", "charger-password-0001").await;
    app.register_token("T1", json!({"status": "Accepted"}))
        .await;
    let mut cp =
        ChargePoint::connect(app.ws_url("CP-MQ"), "CP-MQ", Some("charger-password-0001")).await;
    let tx_id = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "T1", "meterStart": 0, "timestamp": now()}),
        )
        .await["transactionId"]
        .clone();
    cp.call(
        "StopTransaction",
        json!({"transactionId": tx_id, "meterStop": 900, "timestamp": now()}),
    )
    .await;

    let first = recv(&mut rx).await;
    let second = recv(&mut rx).await;
    assert_eq!(
        (first.event_type, second.event_type),
        (EventType::SessionStarted, EventType::SessionEnded)
    );
    assert_eq!(second.aggregate_id, tx_id.to_string());
    assert_eq!(second.payload["energy_wh"], 900);
    eventually(Duration::from_secs(5), "an empty outbox", || async {
        (app.metric("jucr_outbox_pending_events").await == 0.0).then_some(())
    })
    .await;
    consumer.abort();
}
