//! The per-message hot path, without I/O: reading a frame, checking it against its
//! schema, and translating it to the internal model (what the charger actor dispatches
//! on), for the messages chargers send most; encoding and checking answers; and the
//! live hub fanning a session update out to 1,000 subscribers; and a frame's round trip
//! through a `ChargerActor`. `cargo bench --bench ocpp`.
//!
//! It allocates with jemalloc, as the `jucr` binary does (ADR 0016): the hot path
//! allocates per message (the JSON tree), so the allocator is part of what is measured.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jucr::actors::notifier::LiveHub;
use jucr::domain::live::LiveUpdate;
use jucr::domain::{
    Availability, ChargerId, ChargerRequest, ChargerResponse, ConnectorId, ConnectorState,
    ConnectorStatus, RegistrationStatus, TransactionId,
};
use jucr::ocpp::frame;
use jucr::ocpp::schema::{PayloadKind, schemas};
use jucr::ocpp::{OcppVersion, v16, v201};

#[cfg(all(not(target_env = "msvc"), not(miri)))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const BOOT: &str = r#"[2,"b-1","BootNotification",{"chargePointVendor":"jucr-bench","chargePointModel":"Fleet","chargePointSerialNumber":"SN-0001","firmwareVersion":"1.2.3"}]"#;
const HEARTBEAT: &str = r#"[2,"h-1","Heartbeat",{}]"#;
const STATUS: &str = r#"[2,"s-1","StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"Charging","timestamp":"2026-11-24T10:00:00.000Z"}]"#;
/// Ten sampled values, as a three-phase AC charger reports them.
const METER_VALUES: &str = r#"[2,"m-1","MeterValues",{"connectorId":1,"transactionId":42,"meterValue":[{"timestamp":"2026-11-24T10:00:00.000Z","sampledValue":[{"value":"12345","measurand":"Energy.Active.Import.Register","unit":"Wh"},{"value":"11000","measurand":"Power.Active.Import","unit":"W"},{"value":"230.1","measurand":"Voltage","phase":"L1-N","unit":"V"},{"value":"229.8","measurand":"Voltage","phase":"L2-N","unit":"V"},{"value":"231.0","measurand":"Voltage","phase":"L3-N","unit":"V"},{"value":"16.0","measurand":"Current.Import","phase":"L1","unit":"A"},{"value":"15.9","measurand":"Current.Import","phase":"L2","unit":"A"},{"value":"16.1","measurand":"Current.Import","phase":"L3","unit":"A"},{"value":"55","measurand":"SoC","unit":"Percent"},{"value":"31.5","measurand":"Temperature","unit":"Celsius"}]}]}]"#;
const TRANSACTION_EVENT: &str = r#"[2,"t-1","TransactionEvent",{"eventType":"Updated","timestamp":"2026-11-24T10:00:00.000Z","triggerReason":"MeterValuePeriodic","seqNo":3,"transactionInfo":{"transactionId":"TX-42","chargingState":"Charging"},"evse":{"id":1,"connectorId":1},"meterValue":[{"timestamp":"2026-11-24T10:00:00.000Z","sampledValue":[{"value":12345.0,"measurand":"Energy.Active.Import.Register","unitOfMeasure":{"unit":"Wh"}},{"value":11000.0,"measurand":"Power.Active.Import","unitOfMeasure":{"unit":"W"}},{"value":55.0,"measurand":"SoC","unitOfMeasure":{"unit":"Percent"}}]}]}]"#;

/// Parse, validate and decode: what a charger actor does before it acts on a message.
fn inbound(version: OcppVersion, text: &str) -> ChargerRequest {
    let frame::Frame::Call(call) = frame::parse(text).expect("valid frame") else {
        unreachable!()
    };
    schemas(version)
        .check(&call.action, PayloadKind::Request, &call.payload)
        .expect("valid payload");
    match version {
        OcppVersion::V16 => v16::decode_request(&call.action, call.payload),
        OcppVersion::V201 => v201::decode_request(&call.action, call.payload),
    }
    .expect("decodes")
}

fn hot_path(c: &mut Criterion) {
    // Compile the schemas once, outside the measurement.
    schemas(OcppVersion::V16);
    schemas(OcppVersion::V201);
    let mut group = c.benchmark_group("inbound");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_frame/MeterValues", |b| {
        b.iter(|| frame::parse(black_box(METER_VALUES)))
    });
    for (name, version, text) in [
        ("1.6/BootNotification", OcppVersion::V16, BOOT),
        ("1.6/Heartbeat", OcppVersion::V16, HEARTBEAT),
        ("1.6/StatusNotification", OcppVersion::V16, STATUS),
        ("1.6/MeterValues_10_samples", OcppVersion::V16, METER_VALUES),
        (
            "2.0.1/TransactionEvent",
            OcppVersion::V201,
            TRANSACTION_EVENT,
        ),
    ] {
        group.bench_function(format!("parse_validate_decode/{name}"), |b| {
            b.iter(|| inbound(version, black_box(text)))
        });
    }
    group.finish();

    let now = chrono::Utc::now();
    let mut group = c.benchmark_group("outbound");
    group.throughput(Throughput::Elements(1));
    for (name, version, action, response) in [
        (
            "1.6/BootNotification",
            OcppVersion::V16,
            "BootNotification",
            ChargerResponse::BootNotification {
                status: RegistrationStatus::Accepted,
                current_time: now,
                interval_secs: 300,
            },
        ),
        (
            "1.6/Heartbeat",
            OcppVersion::V16,
            "Heartbeat",
            ChargerResponse::Heartbeat { current_time: now },
        ),
        (
            "1.6/MeterValues",
            OcppVersion::V16,
            "MeterValues",
            ChargerResponse::Ack,
        ),
        (
            "2.0.1/TransactionEvent",
            OcppVersion::V201,
            "TransactionEvent",
            ChargerResponse::Transaction {
                transaction_id: TransactionId("TX-42".to_owned()),
                id_token_info: None,
                total_cost: None,
            },
        ),
    ] {
        group.bench_function(format!("encode_validate_frame/{name}"), |b| {
            b.iter(|| {
                let payload = match version {
                    OcppVersion::V16 => v16::encode_response(action, black_box(&response)),
                    OcppVersion::V201 => v201::encode_response(action, black_box(&response)),
                }
                .expect("encodes");
                schemas(version)
                    .check(action, PayloadKind::Response, &payload)
                    .expect("valid answer");
                frame::Frame::CallResult(frame::CallResult {
                    message_id: "m-1".into(),
                    payload,
                })
                .to_text()
            })
        });
    }
    group.finish();
}

/// One live update reaching 1,000 subscribers (the app's sessionUpdated and the
/// operators' streams all listen on the hub).
fn fan_out(c: &mut Criterion) {
    let hub = LiveHub::local(Arc::new(jucr::metrics::Metrics::new()));
    let mut subscribers: Vec<_> = (0..1000).map(|_| hub.subscribe()).collect();
    let update = LiveUpdate::ChargerStatus {
        charger_id: ChargerId::parse("CP-1".to_owned()).expect("id"),
        connector: ConnectorState {
            connector_id: ConnectorId(1),
            status: ConnectorStatus::Charging,
            error_code: None,
            info: None,
            availability: Availability::Operative,
            updated_at: chrono::Utc::now(),
        },
    };
    let mut group = c.benchmark_group("live");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("publish_to_1000_subscribers", |b| {
        b.iter(|| {
            hub.publish(black_box(update.clone()));
            let mut received = 0;
            for s in subscribers.iter_mut() {
                if s.try_recv().is_ok() {
                    received += 1;
                }
            }
            assert_eq!(received, 1000);
        })
    });
    group.finish();
}

/// The actor's link, as a channel of the texts it writes.
struct Answers(tokio::sync::mpsc::UnboundedSender<String>);

impl jucr::actors::charger::Link for Answers {
    fn text(&self, text: &str) {
        let _ = self.0.send(text.to_owned());
    }
    fn ping(&self) -> bool {
        true
    }
    fn pong(&self, _: &[u8]) {}
    fn close(&self, _: Option<(u16, &str)>) {}
}

/// Hands `text` to the actor and returns what it answers.
async fn round_trip(
    incoming: &tokio::sync::mpsc::UnboundedSender<jucr::actors::charger::Incoming>,
    text: String,
    out: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
) -> String {
    incoming
        .send(jucr::actors::charger::Incoming::Text(text))
        .expect("the actor reads");
    out.recv().await.expect("the actor answers")
}

/// A frame through a `ChargerActor` and its answer back, as its socket sees it: the
/// actor reads, checks and decodes the frame (waiting while storage is behind), acts
/// (for MeterValues: the session actor folds the samples in and hands them to the
/// batch writer), and writes the CALLRESULT. The embedded profile, on a temporary
/// SQLite file.
fn charger_actor(c: &mut Criterion) {
    use jucr::actors::charger::ChargerActor;
    use jucr::domain::{AuthorizationStatus, IdToken, IdTokenRecord, TokenType};

    let data = tempfile::tempdir().expect("a temporary directory");
    // SAFETY: set before any other thread of this process reads the environment.
    unsafe {
        std::env::set_var("JUCR_PROFILE", "embedded");
        std::env::set_var(
            "JUCR_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
        );
        std::env::set_var("JUCR__DATA_DIR", data.path());
        std::env::set_var("JUCR__HTTP__HOST", "127.0.0.1");
        std::env::set_var("JUCR__HTTP__PORT", "0");
        std::env::set_var("JUCR_ADMIN_EMAIL", "bench@jucr.local");
        std::env::set_var("JUCR_ADMIN_PASSWORD", "bench-password");
    }
    let system = actix::System::new();
    let (incoming, mut out) = system.block_on(async {
        let settings = jucr::config::Settings::load().expect("settings");
        let app = jucr::startup::Application::build(settings)
            .await
            .expect("the application builds");
        let services = app.services();
        let tag = IdToken::parse("BENCH-TAG").expect("token");
        services
            .store
            .put_id_token(&IdTokenRecord {
                id_token: tag,
                status: AuthorizationStatus::Accepted,
                token_type: TokenType::Central,
                expiry_date: None,
                group_id: None,
                user_id: None,
                updated_at: chrono::Utc::now(),
            })
            .await
            .expect("a token");
        let (tx, out) = tokio::sync::mpsc::unbounded_channel();
        let (incoming, mut frames) = tokio::sync::mpsc::unbounded_channel();
        ChargerActor::new(
            ChargerId::parse("CP-BENCH".to_owned()).expect("id"),
            OcppVersion::V16,
            services,
            Box::new(Answers(tx)),
            RegistrationStatus::Accepted,
            Vec::new(),
        )
        .start_reading(futures_util::stream::poll_fn(move |cx| {
            frames.poll_recv(cx)
        }));
        // The application is only needed for what it built; its listener is never run.
        std::mem::forget(app);
        (incoming, out)
    });
    let started = system.block_on(round_trip(
        &incoming,
        r#"[2,"st-1","StartTransaction",{"connectorId":1,"idTag":"BENCH-TAG","meterStart":0,"timestamp":"2026-11-24T10:00:00.000Z"}]"#.to_owned(),
        &mut out,
    ));
    let answer: serde_json::Value = serde_json::from_str(&started).expect("JSON");
    let transaction_id = answer[2]["transactionId"]
        .as_i64()
        .expect("a transaction id");
    let meter_values = METER_VALUES.replace(
        r#""transactionId":42"#,
        &format!(r#""transactionId":{transaction_id}"#),
    );

    let mut group = c.benchmark_group("charger_actor");
    group.throughput(Throughput::Elements(1));
    for (name, text) in [
        ("1.6/Heartbeat", HEARTBEAT.to_owned()),
        ("1.6/MeterValues_10_samples", meter_values),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                system.block_on(async {
                    let start = std::time::Instant::now();
                    for _ in 0..iters {
                        let answer = round_trip(&incoming, text.clone(), &mut out).await;
                        assert!(answer.starts_with("[3,"), "{answer}");
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, hot_path, fan_out, charger_actor);
criterion_main!(benches);
