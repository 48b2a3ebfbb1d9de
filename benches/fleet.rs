//! The fleet load generator: N simulated chargers over real WebSockets against a real
//! `jucr`, OCPP 1.6 and 2.0.1 mixed, booting at a set rate, then running a realistic
//! mix (heartbeats, status changes, transactions with MeterValues every S seconds) for
//! a set time. It reports the connect rate, calls per second, CALL→CALLRESULT latency
//! (p50, p99, p99.9), errors, and the server's resident memory per connected charger
//! ((RSS with N connected − RSS with none) / N, from /proc) and the CPU time the server
//! and the generator used (the server's per call), then stops the server and checks
//! that every meter value sent was persisted. It stops by itself. Besides the rate
//! over the whole run (boot storm and late tail included) it reports the sustained
//! rate: the median of the answers per second while every charger was connected,
//! before the planned end, with the latency of the calls sent then.
//!
//! ```text
//! cargo bench --bench fleet -- --chargers 15000 --boot-rate 500 --duration 60 \
//!     --meter-interval 10 --heartbeat-interval 30 --processes 4 --profile embedded
//! ```
//!
//! Options (also `JUCR_FLEET_<NAME>` variables): `--chargers`, `--boot-rate` (per
//! second), `--duration` (seconds of the mix once all are connected), `--meter-interval`,
//! `--heartbeat-interval`, `--meter-values` (per transaction), `--samples` (sampled
//! values per MeterValues), `--share-201` (0 to 1), `--processes` (generator processes,
//! one thread each: one holds at most ~20,000 sockets), `--source-ips` (127.0.0.1 … 127.0.0.N, so that
//! ephemeral ports never run out), `--profile embedded|cloud` (cloud: PostgreSQL from
//! `JUCR_FLEET_DATABASE_URL`, default the local server, a fresh database per run),
//! `--addr host:port` (a server already running, unknown chargers accepted; no
//! persistence check) with `--server-pid` for the memory and CPU figures,
//! `--timeline true|false` (every second of the run: answers, slow calls, Unix time).
//!
//! Run without `--bench` (as `cargo test --benches` does) it is a smoke test: a few
//! hundred chargers for a few seconds against both profiles, failing unless there were
//! no errors and every meter value sent was persisted.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Options {
    chargers: usize,
    boot_rate: f64,
    duration: f64,
    meter_interval: f64,
    heartbeat_interval: f64,
    meter_values: usize,
    samples: usize,
    share_201: f64,
    processes: usize,
    source_ips: usize,
    profile: String,
    addr: Option<String>,
    server_pid: Option<u32>,
    /// Print the run second by second (answers, slow calls, Unix time).
    timeline: bool,
}

impl Options {
    fn full() -> Options {
        Options {
            chargers: 1000,
            boot_rate: 500.0,
            duration: 30.0,
            meter_interval: 10.0,
            heartbeat_interval: 30.0,
            meter_values: 6,
            samples: 10,
            share_201: 0.3,
            processes: 2,
            source_ips: 8,
            profile: "embedded".into(),
            addr: None,
            server_pid: None,
            timeline: false,
        }
    }

    fn smoke(profile: &str) -> Options {
        Options {
            chargers: 300,
            boot_rate: 300.0,
            duration: 4.0,
            meter_interval: 0.5,
            heartbeat_interval: 1.0,
            meter_values: 3,
            samples: 10,
            share_201: 0.3,
            processes: 2,
            source_ips: 4,
            profile: profile.into(),
            addr: None,
            server_pid: None,
            timeline: false,
        }
    }

    /// Command-line options over `JUCR_FLEET_*` variables over the defaults.
    fn parse(mut self, args: &[String]) -> Options {
        let mut set = |name: &str, value: &str| {
            fn num<T: std::str::FromStr>(name: &str, value: &str) -> T {
                value
                    .parse()
                    .unwrap_or_else(|_| panic!("--{name}: {value:?} is not valid"))
            }
            match name {
                "chargers" => self.chargers = num(name, value),
                "boot-rate" => self.boot_rate = num(name, value),
                "duration" => self.duration = num(name, value),
                "meter-interval" => self.meter_interval = num(name, value),
                "heartbeat-interval" => self.heartbeat_interval = num(name, value),
                "meter-values" => self.meter_values = num(name, value),
                "samples" => self.samples = num(name, value),
                "share-201" => self.share_201 = num(name, value),
                "processes" => self.processes = num(name, value),
                "source-ips" => self.source_ips = num(name, value),
                "profile" => self.profile = value.into(),
                "addr" => self.addr = Some(value.into()),
                "server-pid" => self.server_pid = Some(num(name, value)),
                "timeline" => self.timeline = num(name, value),
                other => panic!("unknown option --{other}"),
            }
        };
        // `JUCR_FLEET_<NAME>` variables that are not options.
        const NOT_OPTIONS: &[&str] = &[
            "WORKER",
            "OPTIONS",
            "ADDR_RESOLVED",
            "DATABASE_URL",
            "REDIS_URL",
        ];
        for (key, value) in std::env::vars() {
            if let Some(name) = key.strip_prefix("JUCR_FLEET_")
                && !NOT_OPTIONS.contains(&name)
            {
                set(&name.to_ascii_lowercase().replace('_', "-"), &value);
            }
        }
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if let Some(name) = arg.strip_prefix("--") {
                let value = it
                    .next()
                    .unwrap_or_else(|| panic!("--{name} needs a value"));
                set(name, value);
            }
        }
        assert!(self.chargers > 0 && self.processes > 0 && self.source_ips > 0);
        assert!(
            self.source_ips < 250,
            "--source-ips: 127.0.0.1 to 127.0.0.249"
        );
        assert!((0.0..=1.0).contains(&self.share_201), "--share-201: 0 to 1");
        assert!(self.boot_rate > 0.0 && self.meter_interval > 0.0 && self.heartbeat_interval > 0.0);
        self
    }
}

/// Latencies in buckets 2% wide, from 1 µs up (about 1,000 buckets to a minute).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Histogram {
    buckets: Vec<u64>,
}

impl Histogram {
    fn bucket(d: Duration) -> usize {
        let us = d.as_micros().max(1) as f64;
        (us.ln() / 1.02_f64.ln()) as usize
    }

    fn record_in(&mut self, b: usize) {
        if self.buckets.len() <= b {
            self.buckets.resize(b + 1, 0);
        }
        self.buckets[b] += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
    }

    fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The upper edge of the bucket holding quantile `q`.
    fn quantile(&self, q: f64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_micros(1.02_f64.powi(i as i32 + 1) as u64);
            }
        }
        Duration::MAX
    }
}

/// What a worker (or the whole fleet) did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Stats {
    connected: u64,
    connect_failures: u64,
    calls: u64,
    errors: u64,
    transactions: u64,
    samples_sent: u64,
    /// From the first connection to the last.
    boot_secs: f64,
    /// Of the mix, from the last connection until the last charger is done (later than
    /// planned when the server answers late).
    mix_secs: f64,
    latency: Histogram,
    /// The same, by action (write-through ones like StartTransaction apart from the
    /// hot ones).
    by_action: std::collections::BTreeMap<String, Histogram>,
    /// For the sustained rate: answers by the Unix second they arrived in (processes
    /// are merged by the clock), and the window, in Unix seconds, from when every
    /// charger was connected to the planned end (the boot storm and a late tail apart).
    answers_per_second: std::collections::BTreeMap<u64, u64>,
    window: Option<(f64, f64)>,
    /// The calls sent in this process's window: their latency, and how many failed.
    steady_latency: Histogram,
    steady_errors: u64,
    /// Calls sent in the window and answered after [`SLOW`], by the Unix second of
    /// their answer.
    slow_per_second: std::collections::BTreeMap<u64, u64>,
    first_errors: Vec<String>,
}

impl Stats {
    /// An answer to a call of `action` after `took`; `steady`: sent in the window.
    fn answered(&mut self, action: &'static str, took: Duration, steady: bool) {
        self.calls += 1;
        let bucket = Histogram::bucket(took);
        self.latency.record_in(bucket);
        match self.by_action.get_mut(action) {
            Some(h) => h.record_in(bucket),
            None => self
                .by_action
                .entry(action.to_owned())
                .or_default()
                .record_in(bucket),
        }
        let second = unix_secs() as u64;
        *self.answers_per_second.entry(second).or_default() += 1;
        if steady {
            self.steady_latency.record_in(bucket);
            if took > SLOW {
                *self.slow_per_second.entry(second).or_default() += 1;
            }
        }
    }

    /// An error; `what`, for the report's first errors.
    fn error(&mut self, what: Option<String>) {
        self.errors += 1;
        if self.first_errors.len() < 5 {
            self.first_errors.extend(what);
        }
    }

    /// A call that got no answer (or a CALLERROR).
    fn failed(&mut self, what: Option<String>, steady: bool) {
        self.calls += 1;
        self.steady_errors += u64::from(steady);
        self.error(what);
    }

    /// Answers that came in during Unix second `second`.
    fn answers_in(&self, second: u64) -> u64 {
        self.answers_per_second.get(&second).copied().unwrap_or(0)
    }

    fn merge(&mut self, o: &Stats) {
        self.connected += o.connected;
        self.connect_failures += o.connect_failures;
        self.calls += o.calls;
        self.errors += o.errors;
        self.transactions += o.transactions;
        self.samples_sent += o.samples_sent;
        self.boot_secs = self.boot_secs.max(o.boot_secs);
        self.mix_secs = self.mix_secs.max(o.mix_secs);
        self.latency.merge(&o.latency);
        for (action, h) in &o.by_action {
            self.by_action.entry(action.clone()).or_default().merge(h);
        }
        for (second, n) in &o.answers_per_second {
            *self.answers_per_second.entry(*second).or_default() += n;
        }
        for (second, n) in &o.slow_per_second {
            *self.slow_per_second.entry(*second).or_default() += n;
        }
        // The whole fleet's window: where every process's windows overlap.
        self.window = match (self.window, o.window) {
            (Some((a, b)), Some((c, d))) => Some((a.max(c), b.min(d))),
            (w, None) | (None, w) => w,
        };
        self.steady_latency.merge(&o.steady_latency);
        self.steady_errors += o.steady_errors;
        self.first_errors.extend(
            o.first_errors
                .iter()
                .take(5usize.saturating_sub(self.first_errors.len()))
                .cloned(),
        );
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// One simulated charger's connection, making one call at a time as chargers do.
///
/// Frames are written as text from templates and answers are matched by their
/// prefix, so that the generator spends its CPU on the wire rather than on building
/// and parsing JSON trees: it shares the two cores with the server it measures.
struct Charger {
    ws: Socket,
    seq: u64,
    shared: Arc<Shared>,
    end: tokio::time::Instant,
    errors: u64,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A call answered later than this counts as slow (the p99 target in `embedded`).
const SLOW: Duration = Duration::from_millis(20);

/// An answer's payload, when a call was answered with a CALLRESULT.
struct Answer(tokio_tungstenite::tungstenite::Utf8Bytes);

impl Answer {
    /// The payload as JSON (only StartTransaction's is read).
    fn payload(&self) -> Value {
        serde_json::from_str::<Value>(self.0.as_str())
            .ok()
            .and_then(|mut f| f.get_mut(2).map(Value::take))
            .unwrap_or_default()
    }
}

impl Charger {
    /// A call and its answer; server calls arriving meanwhile are answered. `payload`
    /// is the call's JSON object.
    async fn call(&mut self, action: &'static str, payload: &str) -> Option<Answer> {
        self.seq += 1;
        let id = self.seq;
        let sent = Instant::now();
        let steady =
            self.shared.steady.load(Ordering::Relaxed) && tokio::time::Instant::now() < self.end;
        let frame = format!(r#"[2,"{id}","{action}",{payload}]"#);
        if let Err(e) = self.ws.send(Message::text(frame)).await {
            return self.fail(format!("{action}: send failed: {e}"), steady);
        }
        let id = id.to_string();
        let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
        loop {
            let text = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => {
                    return self.fail(
                        format!("{action}: no answer within {CALL_TIMEOUT:?}"),
                        steady,
                    );
                }
                Ok(None) => return self.fail(format!("{action}: connection closed"), steady),
                Ok(Some(Err(e))) => return self.fail(format!("{action}: {e}"), steady),
                Ok(Some(Ok(Message::Text(text)))) => text,
                Ok(Some(Ok(_))) => continue,
            };
            // The answer to this call, as the server writes it (compact JSON), is
            // known by its start without parsing it; anything else is parsed.
            if is_result_for(text.as_str(), &id) {
                self.shared
                    .record()
                    .answered(action, sent.elapsed(), steady);
                return Some(Answer(text));
            }
            let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
                return self.fail(format!("{action}: not JSON: {text}"), steady);
            };
            let ours = frame[1] == id.as_str();
            match frame[0].as_i64() {
                // Ours, written otherwise (spaces, say).
                Some(3) if ours => {
                    self.shared
                        .record()
                        .answered(action, sent.elapsed(), steady);
                    return Some(Answer(text));
                }
                Some(4) if ours => {
                    return self.fail(format!("{action}: CALLERROR {frame}"), steady);
                }
                // The server's own call (CostUpdated to 2.0.1 stations, …): answered.
                Some(2) => {
                    let answer = json!([3, frame[1], {}]).to_string();
                    if self.ws.send(Message::text(answer)).await.is_err() {
                        return self.fail(format!("{action}: connection lost"), steady);
                    }
                }
                _ => {}
            }
        }
    }

    /// Counts a failed call; the report shows each charger's first failure only (a
    /// charger whose connection is gone fails every call after it).
    fn fail(&mut self, what: String, steady: bool) -> Option<Answer> {
        let what = self.counted(what);
        self.shared.record().failed(what, steady);
        None
    }

    /// An answer the charger cannot go on with (the call itself was answered).
    fn unusable(&mut self, what: String) {
        let what = self.counted(what);
        self.shared.record().error(what);
    }

    /// Counts an error of this charger; `what` if it is its first.
    fn counted(&mut self, what: String) -> Option<String> {
        self.errors += 1;
        (self.errors == 1).then_some(what)
    }
}

/// Whether `text` is a CALLRESULT to call `id`, as the server writes it.
fn is_result_for(text: &str, id: &str) -> bool {
    text.strip_prefix(r#"[3,""#)
        .and_then(|rest| rest.strip_prefix(id))
        .is_some_and(|rest| rest.starts_with(r#"","#))
}

/// The current time as chargers send it (RFC 3339, milliseconds, UTC), unquoted.
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn status_16(status: &str) -> String {
    format!(
        r#"{{"connectorId":1,"errorCode":"NoError","status":"{status}","timestamp":"{}"}}"#,
        now()
    )
}

fn status_201(status: &str) -> String {
    format!(
        r#"{{"timestamp":"{}","connectorStatus":"{status}","evseId":1,"connectorId":1}}"#,
        now()
    )
}

/// A charger's sampled values, written once: the energy register first (its value
/// changes), then `n − 1` more that stay the same.
struct Samples {
    v201: bool,
    /// `,{…},{…}]`: what follows the energy register.
    rest: String,
    /// Values per reading.
    count: u64,
}

impl Samples {
    fn new(v201: bool, n: usize) -> Samples {
        let others_16 = [
            json!({"value": "11000", "measurand": "Power.Active.Import", "unit": "W"}),
            json!({"value": "230.1", "measurand": "Voltage", "phase": "L1-N", "unit": "V"}),
            json!({"value": "229.8", "measurand": "Voltage", "phase": "L2-N", "unit": "V"}),
            json!({"value": "231.0", "measurand": "Voltage", "phase": "L3-N", "unit": "V"}),
            json!({"value": "16.0", "measurand": "Current.Import", "phase": "L1", "unit": "A"}),
            json!({"value": "15.9", "measurand": "Current.Import", "phase": "L2", "unit": "A"}),
            json!({"value": "16.1", "measurand": "Current.Import", "phase": "L3", "unit": "A"}),
            json!({"value": "55", "measurand": "SoC", "unit": "Percent"}),
            json!({"value": "31.5", "measurand": "Temperature", "unit": "Celsius"}),
        ];
        let others_201 = [
            json!({"value": 11000.0, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "W"}}),
            json!({"value": 230.1, "measurand": "Voltage", "phase": "L1-N", "unitOfMeasure": {"unit": "V"}}),
            json!({"value": 229.8, "measurand": "Voltage", "phase": "L2-N", "unitOfMeasure": {"unit": "V"}}),
            json!({"value": 231.0, "measurand": "Voltage", "phase": "L3-N", "unitOfMeasure": {"unit": "V"}}),
            json!({"value": 16.0, "measurand": "Current.Import", "phase": "L1", "unitOfMeasure": {"unit": "A"}}),
            json!({"value": 15.9, "measurand": "Current.Import", "phase": "L2", "unitOfMeasure": {"unit": "A"}}),
            json!({"value": 16.1, "measurand": "Current.Import", "phase": "L3", "unitOfMeasure": {"unit": "A"}}),
            json!({"value": 55.0, "measurand": "SoC", "unitOfMeasure": {"unit": "Percent"}}),
            json!({"value": 50.0, "measurand": "Frequency"}),
        ];
        let others = if v201 { &others_201 } else { &others_16 };
        let count = n.clamp(1, 10);
        let mut rest = String::new();
        for value in others.iter().take(count - 1) {
            rest.push(',');
            rest.push_str(&value.to_string());
        }
        rest.push(']');
        Samples {
            v201,
            rest,
            count: count as u64,
        }
    }

    /// The sampled values of one reading, as a JSON array.
    fn reading(&self, energy_wh: u64) -> String {
        if self.v201 {
            format!(
                r#"[{{"value":{energy_wh}.0,"measurand":"Energy.Active.Import.Register","unitOfMeasure":{{"unit":"Wh"}}}}{}"#,
                self.rest
            )
        } else {
            format!(
                r#"[{{"value":"{energy_wh}","measurand":"Energy.Active.Import.Register","unit":"Wh"}}{}"#,
                self.rest
            )
        }
    }
}

/// Waits until `at`, sending heartbeats on the way when they fall due.
async fn idle_until(
    c: &mut Charger,
    at: tokio::time::Instant,
    next_beat: &mut tokio::time::Instant,
    every: Duration,
) {
    while *next_beat < at {
        tokio::time::sleep_until(*next_beat).await;
        c.call("Heartbeat", "{}").await;
        *next_beat += every;
    }
    tokio::time::sleep_until(at).await;
}

/// One charger's life: connect, boot, then transactions and idle spells until `end`.
async fn run_charger(
    index: usize,
    o: Arc<Options>,
    addr: String,
    start: tokio::time::Instant,
    end: tokio::time::Instant,
    shared: Arc<Shared>,
) {
    tokio::time::sleep_until(start).await;
    let v201 = ((index * 7919) % 1000) as f64 / 1000.0 < o.share_201;
    let id = format!("FLEET-{index:06}");
    let source = format!("127.0.0.{}:0", 1 + index % o.source_ips);
    let connect = async {
        let socket = TcpSocket::new_v4()?;
        socket.bind(source.parse().expect("source address"))?;
        let stream = socket
            .connect(addr.parse().expect("server address is an IP:port"))
            .await?;
        stream.set_nodelay(true)?;
        let mut request = format!("ws://{addr}/ocpp/{id}")
            .into_client_request()
            .expect("url");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(if v201 { "ocpp2.0.1" } else { "ocpp1.6" }),
        );
        // tungstenite zeroes its read buffer up to its size on every read: 128 KiB by
        // default, a fifth of the generator's CPU. OCPP frames here are far smaller.
        let config = WebSocketConfig::default().read_buffer_size(4096);
        tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map(|(ws, _)| ws)
            .map_err(std::io::Error::other)
    };
    let ws = match tokio::time::timeout(CALL_TIMEOUT, connect).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => return failed_connect(&shared, format!("{id} from {source}: {e}")),
        Err(_) => return failed_connect(&shared, format!("{id}: connect timed out")),
    };
    let mut c = Charger {
        ws,
        seq: 0,
        shared: shared.clone(),
        end,
        errors: 0,
    };
    let (mut transactions, mut samples) = (0u64, 0u64);
    let readings = Samples::new(v201, o.samples);
    if v201 {
        c.call(
            "BootNotification",
            r#"{"reason":"PowerUp","chargingStation":{"model":"Fleet","vendorName":"jucr-bench"}}"#,
        )
        .await;
        c.call("StatusNotification", &status_201("Available")).await;
    } else {
        c.call(
            "BootNotification",
            r#"{"chargePointVendor":"jucr-bench","chargePointModel":"Fleet"}"#,
        )
        .await;
        c.call("StatusNotification", &status_16("Available")).await;
    }
    shared.connected.fetch_add(1, Ordering::Relaxed);

    let beat = Duration::from_secs_f64(o.heartbeat_interval);
    let meter = Duration::from_secs_f64(o.meter_interval);
    // Spread the fleet's timers: each charger starts its cycle at its own offset.
    let offset = Duration::from_secs_f64(o.meter_interval * ((index % 97) as f64 / 97.0));
    let mut next_beat = tokio::time::Instant::now() + beat.mul_f64((index % 89) as f64 / 89.0);
    let mut energy = 0u64;
    let mut cycle = 0u64;
    let mut at = tokio::time::Instant::now() + offset;
    // A transaction must fit before the end, or it is not begun.
    let tx_length = meter * (o.meter_values as u32 + 1);
    while at + tx_length < end && c.errors == 0 {
        idle_until(&mut c, at, &mut next_beat, beat).await;
        cycle += 1;
        let tag = format!("TAG{index}");
        if v201 {
            let tx = format!("{id}-{cycle}");
            c.call("StatusNotification", &status_201("Occupied")).await;
            c.call("TransactionEvent", &format!(r#"{{"eventType":"Started","timestamp":"{}","triggerReason":"Authorized","seqNo":0,"transactionInfo":{{"transactionId":"{tx}","chargingState":"Charging"}},"idToken":{{"idToken":"{tag}","type":"ISO14443"}},"evse":{{"id":1,"connectorId":1}}}}"#, now())).await;
            transactions += 1;
            for n in 1..=o.meter_values {
                at += meter;
                idle_until(&mut c, at, &mut next_beat, beat).await;
                energy += 150;
                let ts = now();
                let payload = format!(
                    r#"{{"eventType":"Updated","timestamp":"{ts}","triggerReason":"MeterValuePeriodic","seqNo":{n},"transactionInfo":{{"transactionId":"{tx}"}},"meterValue":[{{"timestamp":"{ts}","sampledValue":{}}}]}}"#,
                    readings.reading(energy)
                );
                // Counted when accepted: what the server refused it need not keep.
                if c.call("TransactionEvent", &payload).await.is_some() {
                    samples += readings.count;
                }
            }
            c.call("TransactionEvent", &format!(r#"{{"eventType":"Ended","timestamp":"{}","triggerReason":"StopAuthorized","seqNo":{},"transactionInfo":{{"transactionId":"{tx}","stoppedReason":"Local"}}}}"#, now(), o.meter_values + 1)).await;
            c.call("StatusNotification", &status_201("Available")).await;
        } else {
            c.call("StatusNotification", &status_16("Preparing")).await;
            let started = c
                .call("StartTransaction", &format!(r#"{{"connectorId":1,"idTag":"{tag}","meterStart":{energy},"timestamp":"{}"}}"#, now()))
                .await;
            let Some(started) = started else { break };
            let Some(tx) = started.payload()["transactionId"].as_i64() else {
                c.unusable("StartTransaction: no integer transactionId in the answer".into());
                break;
            };
            transactions += 1;
            c.call("StatusNotification", &status_16("Charging")).await;
            for _ in 0..o.meter_values {
                at += meter;
                idle_until(&mut c, at, &mut next_beat, beat).await;
                energy += 150;
                let payload = format!(
                    r#"{{"connectorId":1,"transactionId":{tx},"meterValue":[{{"timestamp":"{}","sampledValue":{}}}]}}"#,
                    now(),
                    readings.reading(energy)
                );
                // Counted when accepted: what the server refused it need not keep.
                if c.call("MeterValues", &payload).await.is_some() {
                    samples += readings.count;
                }
            }
            c.call("StopTransaction", &format!(r#"{{"transactionId":{tx},"meterStop":{energy},"timestamp":"{}","reason":"Local"}}"#, now())).await;
            c.call("StatusNotification", &status_16("Available")).await;
        }
        // Idle for a while (heartbeating) before the next car.
        at += meter * 2;
    }
    idle_until(&mut c, end, &mut next_beat, beat).await;
    let _ = c.ws.close(None).await;
    let mut out = shared.record();
    out.transactions += transactions;
    out.samples_sent += samples;
}

fn failed_connect(shared: &Shared, what: String) {
    let mut s = shared.record();
    s.connect_failures += 1;
    s.error(Some(what));
}

/// What the chargers of a generator process share.
#[derive(Default)]
struct Shared {
    connected: AtomicU64,
    /// Set once every charger of the process is connected (or failed to): calls from
    /// then until the planned end are the sustained mix.
    steady: AtomicBool,
    /// What the chargers measured, recorded as answers arrive (one thread: never
    /// contended).
    out: std::sync::Mutex<Stats>,
}

impl Shared {
    fn record(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn unix_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A generator process: its share of the fleet (every `processes`-th charger).
async fn worker(index: usize, o: Options, addr: String) {
    let o = Arc::new(o);
    let mine: Vec<usize> = (0..o.chargers)
        .filter(|i| i % o.processes == index)
        .collect();
    let shared = Arc::new(Shared::default());
    let t0 = tokio::time::Instant::now() + Duration::from_millis(200);
    let boot_span = Duration::from_secs_f64(o.chargers as f64 / o.boot_rate);
    // The mix ends `duration` after the whole fleet (every process) is connected.
    let end = t0 + boot_span + Duration::from_secs_f64(o.duration);
    let end_unix = unix_secs() + (end - tokio::time::Instant::now()).as_secs_f64();
    let tasks: Vec<_> = mine
        .iter()
        .map(|&i| {
            let start = t0 + Duration::from_secs_f64(i as f64 / o.boot_rate);
            tokio::spawn(run_charger(
                i,
                o.clone(),
                addr.clone(),
                start,
                end,
                shared.clone(),
            ))
        })
        .collect();
    // Say when this process's chargers are all up (or failed), for the memory figure.
    let total = mine.len() as u64;
    let watcher = {
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                let failed = shared.record().connect_failures;
                let up = shared.connected.load(Ordering::Relaxed);
                if up + failed >= total {
                    shared.steady.store(true, Ordering::Relaxed);
                    println!("{}", json!({"connected": up, "failed": failed}));
                    return (tokio::time::Instant::now(), unix_secs());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    for t in tasks {
        if let Err(e) = t.await {
            let mut s = shared.record();
            s.errors += 1;
            s.first_errors.push(format!("a charger task failed: {e}"));
        }
    }
    let (all_up, up_unix) = watcher.await.unwrap_or((t0, end_unix));
    let mut s = shared.record().clone();
    s.connected = shared.connected.load(Ordering::Relaxed);
    s.boot_secs = (all_up - t0).as_secs_f64();
    s.window = Some((up_unix, end_unix));
    // Until the last charger is done, not the planned end: a server that answers late
    // stretches the mix, and the rate must count that time.
    s.mix_secs = (tokio::time::Instant::now().max(end) - all_up).as_secs_f64();
    println!("{}", json!({"stats": s}));
}

/// CPU time (user and system) a process has used so far, from /proc.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (in parentheses, may hold spaces) comes field 3, the state;
    // utime and stime are fields 14 and 15, in clock ticks (proc(5)).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_sec > 0).then(|| ticks as f64 / per_sec as f64)
}

/// CPU time (user and system) of this process's children that have been waited for.
fn children_cpu_secs() -> f64 {
    // SAFETY: getrusage fills the struct it is given; all-zero is a valid `rusage`.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The server under load, when the generator starts it.
struct Server {
    child: tokio::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
    database: Option<String>,
    sqlite: std::path::PathBuf,
}

async fn start_server(profile: &str) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_jucr"));
    command
        .env("JUCR_PROFILE", profile)
        .env(
            "JUCR_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
        )
        .env("JUCR__HTTP__HOST", "127.0.0.1")
        .env("JUCR__HTTP__PORT", "0")
        .env("JUCR__DATA_DIR", dir.path())
        .env("JUCR__OCPP__UNKNOWN_CHARGERS", "accept")
        .env("JUCR__EVENTS__BUS", "in-process")
        .env("JUCR__STATIONS__STORE", "database")
        .env("JUCR__LOG__FORMAT", "pretty")
        .env("JUCR_ADMIN_EMAIL", "fleet@bench.local")
        .env("JUCR_ADMIN_PASSWORD", "fleet-bench-password")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut database = None;
    if profile == "cloud" {
        use sqlx::Connection;
        let admin = std::env::var("JUCR_FLEET_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("jucr_fleet_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("the cloud profile needs PostgreSQL at {admin}: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("creating the run's database");
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        command
            .env("JUCR__DATABASE__URL", &url)
            .env(
                "JUCR__REDIS__URL",
                std::env::var("JUCR_FLEET_REDIS_URL")
                    .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
            )
            .env("JUCR__REDIS__KEY_PREFIX", format!("{name}:"));
        database = Some(url);
    }
    let mut child = command.spawn().expect("starting jucr");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let line = lines
                .next_line()
                .await
                .expect("stdout")
                .expect("jucr exited before listening");
            if let Some(a) = line.strip_prefix("jucr listening on ") {
                return a.to_owned();
            }
        }
    })
    .await
    .expect("jucr listens within 60 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Server {
        child,
        addr,
        sqlite: dir.path().join("jucr.sqlite"),
        _dir: dir,
        database,
    }
}

/// What the server persisted: meter values and sessions.
async fn persisted(server: &Server) -> (u64, u64) {
    use sqlx::{Connection, Row};
    const COUNTS: &str = "SELECT (SELECT COUNT(*) FROM meter_sample) AS samples, (SELECT COUNT(*) FROM session) AS sessions";
    // SQLite stages samples before they reach meter_sample (ADR 0023).
    const SQLITE_COUNTS: &str = "SELECT (SELECT COUNT(*) FROM meter_sample) + (SELECT COUNT(*) FROM meter_sample_staged) AS samples, \
         (SELECT COUNT(*) FROM session) AS sessions";
    let row = match &server.database {
        Some(url) => {
            let mut c = sqlx::PgConnection::connect(url).await.expect("PostgreSQL");
            let row = sqlx::query(COUNTS).fetch_one(&mut c).await.expect("counts");
            let (a, b): (i64, i64) = (row.get("samples"), row.get("sessions"));
            (a, b)
        }
        None => {
            let url = format!("sqlite://{}", server.sqlite.display());
            let mut c = sqlx::SqliteConnection::connect(&url).await.expect("SQLite");
            let row = sqlx::query(SQLITE_COUNTS)
                .fetch_one(&mut c)
                .await
                .expect("counts");
            let (a, b): (i64, i64) = (row.get("samples"), row.get("sessions"));
            (a, b)
        }
    };
    (row.0 as u64, row.1 as u64)
}

/// Runs the fleet (in worker processes) against a server; prints the report. Returns
/// whether the run was clean (no errors, everything persisted).
async fn run(o: Options) -> bool {
    let mut server = match &o.addr {
        Some(_) => None,
        None => Some(start_server(&o.profile).await),
    };
    let addr = o
        .addr
        .clone()
        .unwrap_or_else(|| server.as_ref().expect("started").addr.clone());
    let pid = o
        .server_pid
        .or_else(|| server.as_ref().and_then(|s| s.child.id()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = pid.and_then(rss_kib);
    let (idle_cpu, generators_before, started) = (
        pid.and_then(cpu_secs),
        children_cpu_secs(),
        std::time::Instant::now(),
    );
    println!(
        "fleet: {} chargers ({}% 2.0.1), {} processes, {} source addresses, boot {}/s, mix {} s (MeterValues every {} s x {} x {} samples, heartbeat every {} s) against {addr} ({})",
        o.chargers,
        (o.share_201 * 100.0).round(),
        o.processes,
        o.source_ips,
        o.boot_rate,
        o.duration,
        o.meter_interval,
        o.meter_values,
        o.samples,
        o.heartbeat_interval,
        if o.addr.is_some() {
            "external"
        } else {
            o.profile.as_str()
        },
    );
    let exe = std::env::current_exe().expect("own executable");
    let mut workers = Vec::new();
    for i in 0..o.processes {
        let mut child = tokio::process::Command::new(&exe)
            .env("JUCR_FLEET_WORKER", i.to_string())
            .env(
                "JUCR_FLEET_OPTIONS",
                serde_json::to_string(&o).expect("options"),
            )
            .env("JUCR_FLEET_ADDR_RESOLVED", &addr)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("starting a generator process");
        let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        workers.push((child, lines));
    }
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs_f64(o.chargers as f64 / o.boot_rate + o.duration + 120.0);
    let mut total = Stats::default();
    // Each worker says first that its chargers are up, then what it measured.
    let next = async |i: usize, lines: &mut tokio::io::Lines<_>| -> Value {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("generator process {i} did not finish in time"))
            .expect("reading a generator process")
            .unwrap_or_else(|| panic!("generator process {i} exited without its figures"));
        serde_json::from_str(&line).expect("a generator line")
    };
    for (i, (_, lines)) in workers.iter_mut().enumerate() {
        assert!(
            next(i, lines).await.get("connected").is_some(),
            "the connected line first"
        );
    }
    let up_rss = pid.and_then(rss_kib);
    // And once more near the end of the mix, chargers still connected: what a node holds
    // once the boot storm's buffers are freed.
    let mix_end = started + Duration::from_secs_f64(o.chargers as f64 / o.boot_rate + o.duration)
        - Duration::from_secs_f64(o.duration.min(4.0) / 2.0);
    let settled_rss = match pid {
        Some(pid) if std::time::Instant::now() < mix_end => {
            tokio::time::sleep(mix_end - std::time::Instant::now()).await;
            rss_kib(pid)
        }
        _ => None,
    };
    for (i, (child, lines)) in workers.iter_mut().enumerate() {
        let stats = next(i, lines).await;
        let s: Stats = serde_json::from_value(stats["stats"].clone()).expect("stats");
        total.merge(&s);
        let _ = child.wait().await;
    }
    let (busy_cpu, generators, wall) = (
        pid.and_then(cpu_secs),
        children_cpu_secs() - generators_before,
        started.elapsed().as_secs_f64(),
    );
    let mut clean = total.errors == 0 && total.connected == o.chargers as u64;
    println!(
        "fleet: {} connected ({} failed) in {:.1} s = {:.0} connections/s",
        total.connected,
        total.connect_failures,
        total.boot_secs,
        total.connected as f64 / total.boot_secs.max(1e-3),
    );
    let span = total.boot_secs + total.mix_secs;
    println!(
        "fleet: {} calls in {:.1} s = {:.0} calls/s; CALL->CALLRESULT p50 {:.2?} p99 {:.2?} p99.9 {:.2?}; {} errors",
        total.calls,
        span,
        total.calls as f64 / span.max(1e-3),
        total.latency.quantile(0.50),
        total.latency.quantile(0.99),
        total.latency.quantile(0.999),
        total.errors,
    );
    print_sustained(&total);
    if o.timeline {
        print_timeline(&total);
    }
    for (action, h) in &total.by_action {
        println!(
            "fleet:   {action}: {} calls, p50 {:.2?} p99 {:.2?} p99.9 {:.2?}",
            h.count(),
            h.quantile(0.50),
            h.quantile(0.99),
            h.quantile(0.999),
        );
    }
    for e in &total.first_errors {
        println!("fleet: error: {e}");
    }
    let per_charger =
        |idle: u64, up: u64| up.saturating_sub(idle) as f64 / total.connected.max(1) as f64;
    if let (Some(idle), Some(up)) = (idle_rss, up_rss) {
        println!(
            "fleet: server RSS {idle} KiB idle, {up} KiB with {} connected = {:.1} KiB per charger",
            total.connected,
            per_charger(idle, up),
        );
        if let Some(settled) = settled_rss {
            println!(
                "fleet: server RSS {settled} KiB at the end of the mix, still connected = {:.1} KiB per charger",
                per_charger(idle, settled),
            );
        }
    }
    if let (Some(idle), Some(busy)) = (idle_cpu, busy_cpu) {
        let server_cpu = busy - idle;
        println!(
            "fleet: CPU: server {server_cpu:.1} s = {:.1} µs per call, generator {generators:.1} s, in {wall:.1} s: {:.2} cores busy of {}",
            server_cpu * 1e6 / total.calls.max(1) as f64,
            (server_cpu + generators) / wall.max(1e-3),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        );
    }
    if let Some(mut s) = server.take() {
        // SIGTERM: the server flushes what it holds, then exits.
        if let Some(pid) = s.child.id() {
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        let status = tokio::time::timeout(Duration::from_secs(60), s.child.wait())
            .await
            .expect("jucr stops within 60 s of SIGTERM")
            .expect("jucr's exit");
        let (samples, sessions) = persisted(&s).await;
        let ok = samples == total.samples_sent && sessions == total.transactions;
        println!(
            "fleet: persisted {samples} of {} meter values and {sessions} of {} sessions: {}; server exit {status}",
            total.samples_sent,
            total.transactions,
            if ok { "all" } else { "MISMATCH" },
        );
        clean &= ok && status.success();
    }
    println!("fleet: {}", if clean { "clean run" } else { "FAILED" });
    clean
}

/// The sustained rate: the median of the answers per second over the whole seconds
/// in which every charger was connected, up to the planned end (a median, so that the
/// sessions' wind-down before the end does not pull it down), and the latency of the
/// calls sent in that window.
fn print_sustained(total: &Stats) {
    let seconds = total
        .window
        .map_or(0..0, |(from, to)| from.ceil() as u64..to.floor() as u64);
    let mut rates: Vec<u64> = seconds.map(|s| total.answers_in(s)).collect();
    rates.sort_unstable();
    let (Some(lowest), Some(highest)) = (rates.first(), rates.last()) else {
        println!(
            "fleet: sustained: no whole second with every charger connected before the planned end"
        );
        return;
    };
    println!(
        "fleet: sustained, every charger connected ({} whole seconds to the planned end): median {} calls/s (lowest {lowest}, highest {highest}); calls sent then: p50 {:.2?} p99 {:.2?} p99.9 {:.2?}, {} failed",
        rates.len(),
        rates[rates.len() / 2],
        total.steady_latency.quantile(0.50),
        total.steady_latency.quantile(0.99),
        total.steady_latency.quantile(0.999),
        total.steady_errors,
    );
    print_slow_seconds(total);
}

/// Where the tail comes from: a steady trickle, or a few seconds where everyone waited
/// (a stall of the machine). Calls are filed by the second their answer came in,
/// counted from the fleet's window's first whole second: a negative one holds calls of
/// a process whose own window began earlier.
fn print_slow_seconds(total: &Stats) {
    let first = first_window_second(total);
    let mut slow: Vec<(u64, u64)> = total
        .slow_per_second
        .iter()
        .map(|(&second, &n)| (second, n))
        .collect();
    slow.sort_by_key(|&(second, n)| (std::cmp::Reverse(n), second));
    let worst: Vec<String> = slow
        .iter()
        .take(5)
        .map(|&(second, n)| {
            let answered = total.answers_in(second);
            format!("second {} ({n} of {answered})", second as i64 - first)
        })
        .collect();
    println!(
        "fleet: sustained calls over {} ms: {} in {} seconds; most in {}",
        SLOW.as_millis(),
        total.slow_per_second.values().sum::<u64>(),
        slow.len(),
        if worst.is_empty() {
            "none".to_owned()
        } else {
            worst.join(", ")
        },
    );
}

/// The Unix second the fleet's window begins with (its first whole second).
fn first_window_second(total: &Stats) -> i64 {
    total.window.map_or(0, |w| w.0.ceil() as i64)
}

/// Every second of the run (`--timeline true`), boot and tail included, numbered as in
/// the slow-seconds line, with its Unix time, to lay beside the server's metrics or a
/// `perf` recording. A second without answers is printed too: a stall shows as zeros.
/// Slow calls are counted for the calls sent in the window only (as in the p99).
fn print_timeline(total: &Stats) {
    let first = first_window_second(total);
    let answers = &total.answers_per_second;
    let (Some((&from, _)), Some((&to, _))) = (answers.first_key_value(), answers.last_key_value())
    else {
        return;
    };
    for second in from..=to {
        let slow = total.slow_per_second.get(&second).copied().unwrap_or(0);
        println!(
            "fleet: timeline second {} (unix {second}): {} answers, {slow} window calls over {} ms",
            second as i64 - first,
            total.answers_in(second),
            SLOW.as_millis()
        );
    }
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Ok(index) = std::env::var("JUCR_FLEET_WORKER") {
        let o: Options =
            serde_json::from_str(&std::env::var("JUCR_FLEET_OPTIONS").expect("options"))
                .expect("options are JSON");
        let addr = std::env::var("JUCR_FLEET_ADDR_RESOLVED").expect("address");
        // A generator process is one thread: its chargers take turns on it, and the
        // machine's cores are shared out by running several processes (`--processes`),
        // without a multi-threaded scheduler's wake-ups and work stealing between them.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        return runtime.block_on(worker(index.parse().expect("worker index"), o, addr));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(coordinate());
}

/// The coordinating process: starts the server (unless `--addr`) and the generator
/// processes, then reports.
async fn coordinate() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let full = std::env::args().any(|a| a == "--bench");
    let runs: Vec<Options> = if full {
        vec![Options::full().parse(&args)]
    } else {
        // `cargo test --benches`: the smoke run, on both profiles.
        ["embedded", "cloud"]
            .iter()
            .map(|p| Options::smoke(p))
            .collect()
    };
    let mut clean = true;
    for o in runs {
        clean &= run(o).await;
    }
    if !clean {
        std::process::exit(1);
    }
}
