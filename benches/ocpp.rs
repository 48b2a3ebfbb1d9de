//! The per-message hot path, without I/O: reading a frame, checking it against its
//! schema, and translating it to the internal model. `cargo bench --bench ocpp`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jucr::ocpp::frame;
use jucr::ocpp::schema::{PayloadKind, schemas};
use jucr::ocpp::{OcppVersion, v16};

const METER_VALUES: &str = r#"[2,"m-1","MeterValues",{"connectorId":1,"transactionId":42,"meterValue":[{"timestamp":"2026-11-24T10:00:00.000Z","sampledValue":[{"value":"12345","measurand":"Energy.Active.Import.Register","unit":"Wh"},{"value":"11000","measurand":"Power.Active.Import","unit":"W"},{"value":"230.1","measurand":"Voltage","phase":"L1-N","unit":"V"},{"value":"16.0","measurand":"Current.Import","phase":"L1","unit":"A"},{"value":"55","measurand":"SoC","unit":"Percent"}]}]}]"#;
const HEARTBEAT: &str = r#"[2,"h-1","Heartbeat",{}]"#;

fn inbound(text: &str) -> jucr::domain::ChargerRequest {
    let frame::Frame::Call(call) = frame::parse(text).expect("valid frame") else {
        unreachable!()
    };
    schemas(OcppVersion::V16)
        .check(&call.action, PayloadKind::Request, &call.payload)
        .expect("valid payload");
    v16::decode_request(&call.action, call.payload).expect("decodes")
}

fn hot_path(c: &mut Criterion) {
    schemas(OcppVersion::V16); // compile once, outside the measurement
    let mut group = c.benchmark_group("inbound");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_frame/MeterValues", |b| {
        b.iter(|| frame::parse(black_box(METER_VALUES)))
    });
    group.bench_function("parse_validate_decode/MeterValues", |b| {
        b.iter(|| inbound(black_box(METER_VALUES)))
    });
    group.bench_function("parse_validate_decode/Heartbeat", |b| {
        b.iter(|| inbound(black_box(HEARTBEAT)))
    });
    group.finish();

    let response = jucr::domain::ChargerResponse::Heartbeat {
        current_time: chrono::Utc::now(),
    };
    c.bench_function("outbound/encode_validate/HeartbeatResponse", |b| {
        b.iter(|| {
            let payload = v16::encode_response("Heartbeat", black_box(&response)).unwrap();
            schemas(OcppVersion::V16)
                .check("Heartbeat", PayloadKind::Response, &payload)
                .unwrap();
            payload
        })
    });
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
