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

use crate::billing::{charge, driver, events, invoices_of, payg_default, settled_invoice};
use crate::helpers::{Backend, TestApp, eventually, now};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(20);

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
    app.register_token("T1", json!({"status": "Accepted"}))
        .await;
    let mut cp = app.registered_charger("CP-MQ").await;
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

/// The number of messages (ready and unacknowledged) in `queue` of `vhost`.
async fn queue_depth(node: Option<&str>, vhost: &str, queue: &str) -> Option<u64> {
    let mut args = vec!["-q"];
    if let Some(node) = node {
        args.extend(["-n", node]);
    }
    args.extend([
        "list_queues",
        "-p",
        vhost,
        "name",
        "messages",
        "--no-table-headers",
    ]);
    let out = tokio::process::Command::new("rabbitmqctl")
        .args(&args)
        .output()
        .await
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let mut cols = l.split_whitespace();
        (cols.next() == Some(queue))
            .then(|| cols.next()?.parse().ok())
            .flatten()
    })
}

#[tokio::test]
async fn with_rabbitmq_a_session_ended_delivered_twice_is_billed_once() {
    let vhost = TestVhost::create();
    let app = TestApp::spawn_with(
        Backend::Postgres,
        &[
            ("JUCR__EVENTS__BUS", "rabbitmq"),
            ("JUCR__EVENTS__AMQP_URL", &vhost.url),
        ],
    )
    .await;
    payg_default(&app).await;
    let user = driver(&app, "mq@example.org", "tok_visa", "RFID-MQ").await;
    charge(&app, "CP-MQ2", "RFID-MQ", 3_000).await;
    let invoice = settled_invoice(&app, &user).await;
    assert_eq!(invoice["payment"]["status"], "completed");

    // The broker hands the same SESSION_ENDED over again, twice (a redelivery after a
    // lost ack looks exactly like this).
    let stored = events(&app, "SESSION_ENDED").await;
    assert_eq!(stored.len(), 1);
    let mut ended = stored[0].clone();
    ended.as_object_mut().unwrap().remove("published_at");
    let ended: DomainEvent = serde_json::from_value(ended).unwrap();
    let bus = AmqpBus::new(SecretString::from(vhost.url.clone()), "jucr.events".into());
    bus.publish(&ended).await.unwrap();
    bus.publish(&ended).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the duplicates consumed",
        || async {
            (queue_depth(None, &vhost.name, "jucr.billing").await == Some(0)).then_some(())
        },
    )
    .await;
    assert_eq!(
        queue_depth(None, &vhost.name, "jucr.billing.dead").await,
        Some(0),
        "handled, not dead-lettered"
    );
    assert_eq!(invoices_of(&app, &user).await.len(), 1, "one invoice");
    assert_eq!(events(&app, "INVOICE_GENERATED").await.len(), 1);
    assert_eq!(events(&app, "PAYMENT_COMPLETED").await.len(), 1);
}

/// A RabbitMQ node of the test's own (own port, own data directory), so that it can be
/// restarted without disturbing the tests that share the machine's broker.
pub struct PrivateBroker {
    pub node: String,
    pub port: u16,
    _dir: TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn on_node(node: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new("rabbitmqctl")
        .args(["-q", "-n", node])
        .args(args)
        .output()
        .await
        .expect("rabbitmqctl must be installed for the tests")
}

impl PrivateBroker {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().display().to_string();
        let (port, dist) = (free_port(), free_port());
        let node = format!(
            "jucr_test_{}@localhost",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        std::fs::write(dir.path().join("enabled_plugins"), "").unwrap();
        std::fs::write(
            dir.path().join("rabbitmq.conf"),
            format!("listeners.tcp.default = 127.0.0.1:{port}\n"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("env.conf"),
            format!(
                "NODENAME={node}\nERL_EPMD_ADDRESS=127.0.0.1\nDIST_PORT={dist}\nMNESIA_BASE={path}/mnesia\n\
                 LOG_BASE={path}/log\nENABLED_PLUGINS_FILE={path}/enabled_plugins\nPID_FILE={path}/pid\n\
                 CONFIG_FILE={path}/rabbitmq.conf\n"
            ),
        )
        .unwrap();
        // The broker runs as the rabbitmq user when started by root (the Debian wrapper).
        let _ = std::process::Command::new("chown")
            .args(["-R", "rabbitmq", &path])
            .status();
        let started = std::process::Command::new("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_CONF_ENV_FILE", dir.path().join("env.conf"))
            .status()
            .expect("rabbitmq-server must be installed for the tests");
        assert!(started.success(), "rabbitmq-server -detached: {started}");
        let broker = PrivateBroker {
            node,
            port,
            _dir: dir,
        };
        broker.await_running().await;
        broker
    }

    async fn await_running(&self) {
        eventually(Duration::from_secs(60), "the private broker up", || async {
            on_node(&self.node, &["await_startup", "--timeout", "5"])
                .await
                .status
                .success()
                .then_some(())
        })
        .await;
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Stops the broker (the Erlang node stays up, the broker and its listeners go).
    pub async fn stop_app(&self) {
        let out = on_node(&self.node, &["stop_app"]).await;
        assert!(
            out.status.success(),
            "stop_app: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub async fn start_app(&self) {
        let out = on_node(&self.node, &["start_app"]).await;
        assert!(
            out.status.success(),
            "start_app: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.await_running().await;
    }

    pub async fn depth(&self, queue: &str) -> Option<u64> {
        queue_depth(Some(&self.node), "/", queue).await
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        // Synchronous: Drop cannot await. The data directory goes with `_dir` after this.
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["-q", "-n", &self.node, "stop"])
            .output();
    }
}

#[tokio::test]
async fn across_a_broker_restart_the_outbox_drains_and_every_session_is_billed_once() {
    let broker = PrivateBroker::start().await;
    // This replica publishes only; the consumers run after the broker restart.
    let mut app = TestApp::spawn_with(
        Backend::Postgres,
        &[
            ("JUCR__EVENTS__BUS", "rabbitmq"),
            ("JUCR__EVENTS__AMQP_URL", &broker.url()),
            ("JUCR__EVENTS__CONSUME", "false"),
            ("JUCR__EVENTS__RELAY_INTERVAL_MS", "100"),
        ],
    )
    .await;
    payg_default(&app).await;
    let user = driver(&app, "restart@example.org", "tok_visa", "RFID-RST").await;

    // Published before the restart, consumed after it.
    charge(&app, "CP-R1", "RFID-RST", 1_000).await;
    eventually(
        WAIT,
        "SESSION_ENDED waiting in the billing queue",
        || async { (broker.depth("jucr.billing").await == Some(1)).then_some(()) },
    )
    .await;

    // Ended while the broker is down: the event waits in the outbox.
    broker.stop_app().await;
    charge(&app, "CP-R2", "RFID-RST", 2_000).await;
    eventually(WAIT, "the relay failing, the event kept", || async {
        (app.metric("jucr_outbox_pending_events").await >= 1.0).then_some(())
    })
    .await;

    broker.start_app().await;
    eventually(
        Duration::from_secs(60),
        "the outbox drained into the broker",
        || async {
            let drained = app.metric("jucr_outbox_pending_events").await == 0.0
                && events(&app, "SESSION_ENDED")
                    .await
                    .iter()
                    .all(|e| e["published_at"].is_string());
            (drained && broker.depth("jucr.billing").await == Some(2)).then_some(())
        },
    )
    .await;

    // Consumers start: both sessions are billed, each once.
    app.set_setting("JUCR__EVENTS__CONSUME", Some("true"));
    app.restart(libc::SIGTERM).await;
    let invoices = eventually(WAIT, "both sessions invoiced and paid", || async {
        let all = invoices_of(&app, &user).await;
        (all.len() == 2 && all.iter().all(|i| i["status"] == "paid")).then_some(all)
    })
    .await;
    let mut energies: Vec<i64> = invoices
        .iter()
        .map(|i| i["energy_wh"].as_i64().unwrap())
        .collect();
    energies.sort();
    assert_eq!(energies, [1_000, 2_000]);
    eventually(WAIT, "two payments, published", || async {
        (events(&app, "PAYMENT_COMPLETED").await.len() == 2).then_some(())
    })
    .await;
    assert_eq!(events(&app, "INVOICE_GENERATED").await.len(), 2);
    assert_eq!(broker.depth("jucr.billing.dead").await, Some(0));
}
