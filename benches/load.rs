//! The load generator: many scripted OCPP 1.6 chargers against a real `jucr` on
//! loopback. Each boots, starts a transaction, sends meter values one after another
//! (waiting for each answer, as chargers do) and stops. Reports throughput and
//! round-trip latency. Bounded in count and time; it stops by itself.
//!
//! `cargo bench --bench load` starts its own server (embedded profile, fresh data dir).
//! Knobs: JUCR_LOAD_CHARGERS (default 200), JUCR_LOAD_MESSAGES per charger (default 50),
//! JUCR_LOAD_ADDR (host:port of a server already running with unknown chargers accepted;
//! loopback only).

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const DEADLINE: Duration = Duration::from_secs(300);

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

struct Run {
    latencies: Vec<Duration>,
}

async fn charger(addr: String, index: usize, messages: usize) -> Run {
    let id = format!("LOAD-{index:05}");
    let mut request = format!("ws://{addr}/ocpp/{id}")
        .into_client_request()
        .expect("url");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("ocpp1.6"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("charger connects");
    let mut latencies = Vec::with_capacity(messages + 3);
    let mut seq = 0u64;
    let mut call = async |ws: &mut tokio_tungstenite::WebSocketStream<_>,
                          action: &str,
                          payload: Value|
           -> Value {
        seq += 1;
        let message_id = format!("{seq}");
        let sent = Instant::now();
        ws.send(Message::text(
            json!([2, message_id, action, payload]).to_string(),
        ))
        .await
        .expect("send");
        loop {
            match ws.next().await.expect("open").expect("frame") {
                Message::Text(text) => {
                    let frame: Value = serde_json::from_str(text.as_str()).expect("json");
                    assert_eq!(frame[0], 3, "{action} refused: {frame}");
                    latencies.push(sent.elapsed());
                    return frame[2].clone();
                }
                _ => continue,
            }
        }
    };
    call(
        &mut ws,
        "BootNotification",
        json!({"chargePointVendor": "Load", "chargePointModel": "Gen"}),
    )
    .await;
    let start = json!({"connectorId": 1, "idTag": format!("TAG{index}"), "meterStart": 0, "timestamp": now()});
    let tx = call(&mut ws, "StartTransaction", start).await["transactionId"].clone();
    for i in 1..=messages {
        let sample = json!({"connectorId": 1, "transactionId": tx, "meterValue": [{"timestamp": now(), "sampledValue": [
            {"value": (i * 100).to_string(), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
            {"value": "11000", "measurand": "Power.Active.Import", "unit": "W"}]}]});
        call(&mut ws, "MeterValues", sample).await;
    }
    call(
        &mut ws,
        "StopTransaction",
        json!({"transactionId": tx, "meterStop": messages * 100, "timestamp": now()}),
    )
    .await;
    let _ = ws.close(None).await;
    Run { latencies }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let chargers = knob("JUCR_LOAD_CHARGERS", 200);
    let messages = knob("JUCR_LOAD_MESSAGES", 50);
    let (addr, _server, _dir) = match std::env::var("JUCR_LOAD_ADDR") {
        Ok(addr) => (addr, None, None),
        Err(_) => {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_jucr"))
                .env("JUCR_PROFILE", "embedded")
                .env(
                    "JUCR_CONFIG_DIR",
                    concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
                )
                .env("JUCR__HTTP__PORT", "0")
                .env("JUCR__DATA_DIR", dir.path())
                .env("JUCR__OCPP__UNKNOWN_CHARGERS", "accept")
                .env("JUCR_ADMIN_EMAIL", "load@bench.local")
                .env("JUCR_ADMIN_PASSWORD", "load-bench-password")
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .expect("starting jucr");
            let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
            let addr = loop {
                let line = lines
                    .next_line()
                    .await
                    .expect("stdout")
                    .expect("jucr exited before listening");
                if let Some(a) = line.strip_prefix("jucr listening on ") {
                    break a.to_owned();
                }
            };
            (addr, Some(child), Some(dir))
        }
    };
    assert!(
        addr.starts_with("127.") || addr.starts_with("localhost") || addr.starts_with("[::1]"),
        "loopback only: {addr}"
    );

    println!("load: {chargers} chargers x ({messages} MeterValues + 3 calls) against {addr}");
    let started = Instant::now();
    let runs = tokio::time::timeout(DEADLINE, async {
        let tasks: Vec<_> = (0..chargers)
            .map(|i| tokio::spawn(charger(addr.clone(), i, messages)))
            .collect();
        let mut runs = Vec::with_capacity(chargers);
        for task in tasks {
            runs.push(task.await.expect("charger task"));
        }
        runs
    })
    .await
    .expect("the load run finishes within its deadline");
    let elapsed = started.elapsed();
    let mut latencies: Vec<Duration> = runs.into_iter().flat_map(|r| r.latencies).collect();
    latencies.sort();
    println!(
        "load: {} calls in {:.2?} = {:.0} calls/s; round trip p50 {:.2?} p95 {:.2?} p99 {:.2?} max {:.2?}",
        latencies.len(),
        elapsed,
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
}
