//! GraphQL subscriptions over real WebSockets: a driver watches their session live as a
//! scripted charger sends meter values (1.6 and 2.0.1); the legacy `graphql-ws`
//! protocol; a thousand subscribers on one session; who may subscribe.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::billing::payg_default;
use crate::charge_point::ChargePoint;
use crate::graphql::{Driver, ok, register};
use crate::helpers::{Backend, CHARGER_PASSWORD, TestApp, eventually, now};
use crate::ocpp201::{energy, event, station};

/// The bounded wait for one update (the "bounded wait, 1 s").
const UPDATE: Duration = Duration::from_secs(1);

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// A GraphQL-over-WebSocket client speaking `graphql-transport-ws` (or, `legacy`,
/// `graphql-ws`).
pub struct GqlSocket {
    ws: Ws,
    legacy: bool,
    /// Payloads that arrived for subscriptions other than the one awaited.
    pending: HashMap<String, Vec<Value>>,
}

impl GqlSocket {
    /// Connects and initialises with `{"Authorization": "Bearer <token>"}`; returns the
    /// socket, or the close frame's code when the server refuses.
    pub async fn open(app: &TestApp, token: &str, legacy: bool) -> Result<Self, u16> {
        Self::open_with(
            app,
            json!({"Authorization": format!("Bearer {token}")}),
            legacy,
        )
        .await
    }

    /// Connects and initialises with `payload` (`{}`: anonymous).
    pub async fn open_with(app: &TestApp, payload: Value, legacy: bool) -> Result<Self, u16> {
        let mut request = format!("ws://127.0.0.1:{}/graphql", app.port)
            .into_client_request()
            .unwrap();
        let protocol = if legacy {
            "graphql-ws"
        } else {
            "graphql-transport-ws"
        };
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
        let (ws, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("connects");
        assert_eq!(response.headers()["Sec-WebSocket-Protocol"], protocol);
        let mut socket = GqlSocket {
            ws,
            legacy,
            pending: HashMap::new(),
        };
        socket
            .send(json!({"type": "connection_init", "payload": payload}))
            .await;
        loop {
            match socket.receive(Duration::from_secs(5)).await {
                Ok(m) if m["type"] == "connection_ack" => return Ok(socket),
                Ok(m) if m["type"] == "ka" => continue,
                Ok(other) => panic!("expected connection_ack, got {other}"),
                Err(code) => return Err(code),
            }
        }
    }

    pub async fn send(&mut self, message: Value) {
        self.ws
            .send(Message::Text(message.to_string().into()))
            .await
            .expect("sent");
    }

    /// The next protocol message, or the close code.
    pub async fn receive(&mut self, wait: Duration) -> Result<Value, u16> {
        loop {
            let frame = tokio::time::timeout(wait, self.ws.next())
                .await
                .expect("a message in time");
            match frame {
                Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text).unwrap()),
                Some(Ok(Message::Close(frame))) => {
                    return Err(frame.map_or(1005, |f| u16::from(f.code)));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let kind = if self.legacy { "start" } else { "subscribe" };
        self.send(
            json!({"id": id, "type": kind, "payload": {"query": query, "variables": variables}}),
        )
        .await;
    }

    /// Ends subscription `id` from the client's side.
    pub async fn complete(&mut self, id: &str) {
        let kind = if self.legacy { "stop" } else { "complete" };
        self.send(json!({"id": id, "type": kind})).await;
    }

    /// The next payload (`{data}` or `{errors}`) of subscription `id`, within `wait`.
    pub async fn next(&mut self, id: &str, wait: Duration) -> Value {
        if let Some(queued) = self.pending.get_mut(id).filter(|q| !q.is_empty()) {
            return queued.remove(0);
        }
        loop {
            let message = self.receive(wait).await.expect("the socket stays open");
            let kind = message["type"].as_str().unwrap_or_default();
            let payload = match kind {
                "next" | "data" => message["payload"].clone(),
                "error" => json!({"errors": message["payload"]}),
                "ka" | "ping" | "pong" => continue,
                "complete" => json!({"complete": true}),
                other => panic!("unexpected message {other}: {message}"),
            };
            let from = message["id"].as_str().unwrap_or_default();
            if from == id {
                return payload;
            }
            self.pending
                .entry(from.to_owned())
                .or_default()
                .push(payload);
        }
    }
}

/// The next update of subscription `id` that shows `wh`: an update without new energy
/// (the cost becoming known) may come before it, one with more energy may not.
async fn energy_update(socket: &mut GqlSocket, id: &str, wh: i64, wait: Duration) -> Value {
    loop {
        let update = socket.next(id, wait).await;
        let energy = update["data"]["sessionUpdated"]["energyWh"]
            .as_i64()
            .unwrap_or_else(|| panic!("{update}"));
        assert!(energy <= wh, "no reading skipped: {update}");
        if energy == wh {
            return update;
        }
    }
}

const SESSION_UPDATED: &str = "subscription($s: ID!) { sessionUpdated(sessionId: $s) { id status energyWh costEstimate { amount } invoice { number } } }";

/// A driver with a card and an RFID token on a pay-as-you-go default tariff.
async fn driver_with_card(app: &TestApp, email: &str, rfid: &str) -> Driver {
    let driver = register(app, email).await;
    ok(
        app,
        Some(&driver.access),
        "mutation($t: String!) { addIdToken(token: $t) { token } addPaymentMethod(gatewayToken: \"tok_visa\") { last4 } }",
        json!({"t": rfid}),
    )
    .await;
    driver
}

async fn meter_values(cp: &mut ChargePoint, tx: i64, wh: i64) {
    cp.call(
        "MeterValues",
        json!({"connectorId": 1, "transactionId": tx, "meterValue": [{"timestamp": now(), "sampledValue": [
            {"value": wh.to_string(), "measurand": "Energy.Active.Import.Register", "unit": "Wh"}
        ]}]}),
    )
    .await;
}

#[tokio::test]
async fn a_driver_watches_their_1_6_session_live_until_it_is_billed() {
    let app = TestApp::spawn(Backend::Postgres).await;
    payg_default(&app).await;
    let ada = driver_with_card(&app, "live16@example.org", "RFID-LIVE16").await;
    let mut cp = app.registered_charger("CP-SUB").await;
    let tx = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "RFID-LIVE16", "meterStart": 0, "timestamp": now()}),
        )
        .await["transactionId"]
        .as_i64()
        .unwrap();

    let mut socket = GqlSocket::open(&app, &ada.access, false).await.unwrap();
    socket
        .subscribe("s1", SESSION_UPDATED, json!({"s": tx.to_string()}))
        .await;
    let first = socket.next("s1", Duration::from_secs(5)).await;
    assert_eq!(
        first["data"]["sessionUpdated"]["status"], "CHARGING",
        "{first}"
    );
    assert_eq!(first["data"]["sessionUpdated"]["energyWh"], 0);

    for wh in [1_000, 2_500, 4_000] {
        meter_values(&mut cp, tx, wh).await;
        let update = energy_update(&mut socket, "s1", wh, UPDATE).await;
        assert_eq!(update["data"]["sessionUpdated"]["id"], tx.to_string());
        assert!(
            update["data"]["sessionUpdated"]["costEstimate"]["amount"]
                .as_i64()
                .unwrap()
                > 0
        );
    }
    cp.call(
        "StopTransaction",
        json!({"transactionId": tx, "meterStop": 4_000, "timestamp": now()}),
    )
    .await;
    let mut last = Value::Null;
    for _ in 0..10 {
        last = socket.next("s1", Duration::from_secs(10)).await;
        if last["data"]["sessionUpdated"]["status"] == "COMPLETED" {
            break;
        }
        assert_eq!(
            last["data"]["sessionUpdated"]["status"], "FINISHING",
            "{last}"
        );
    }
    assert_eq!(
        last["data"]["sessionUpdated"]["status"], "COMPLETED",
        "{last}"
    );
    assert!(
        last["data"]["sessionUpdated"]["invoice"]["number"].is_string(),
        "billed: {last}"
    );

    // Somebody else cannot watch it.
    let bob = register(&app, "bob-live@example.org").await;
    let mut theirs = GqlSocket::open(&app, &bob.access, false).await.unwrap();
    theirs
        .subscribe("x", SESSION_UPDATED, json!({"s": tx.to_string()}))
        .await;
    let refused = theirs.next("x", Duration::from_secs(5)).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{refused}"
    );
}

#[tokio::test]
async fn a_driver_watches_a_2_0_1_session_live() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    payg_default(&app).await;
    let ada = driver_with_card(&app, "live201@example.org", "RFID-LIVE201").await;
    let mut cs = station(&app, "CS-SUB").await;
    let token = json!({"idToken": "RFID-LIVE201", "type": "ISO14443"});
    cs.call(
        "TransactionEvent",
        event(
            "Started",
            0,
            "TX-S",
            "Authorized",
            json!({"idToken": token, "meterValue": energy(0.0)}),
        ),
    )
    .await;
    let mine = ok(
        &app,
        Some(&ada.access),
        "{ mySessions { edges { node { id } } } }",
        json!({}),
    )
    .await;
    let session = mine["mySessions"]["edges"][0]["node"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut socket = GqlSocket::open(&app, &ada.access, false).await.unwrap();
    socket
        .subscribe("s", SESSION_UPDATED, json!({"s": session}))
        .await;
    socket.next("s", Duration::from_secs(5)).await;
    for (seq, wh) in [(1, 1_500.0), (2, 3_000.0)] {
        cs.call(
            "TransactionEvent",
            event(
                "Updated",
                seq,
                "TX-S",
                "MeterValuePeriodic",
                json!({"meterValue": energy(wh)}),
            ),
        )
        .await;
        energy_update(&mut socket, "s", wh as i64, UPDATE).await;
    }
}

#[tokio::test]
async fn legacy_graphql_ws_clients_watch_a_charger_and_bad_tokens_are_refused() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let ada = register(&app, "legacy@example.org").await;
    app.register_charger("CP-LEGACY", CHARGER_PASSWORD).await;
    let mut socket = GqlSocket::open(&app, &ada.access, true).await.unwrap();
    socket
        .subscribe(
            "c",
            "subscription { chargerStatusChanged(chargerId: \"CP-LEGACY\") { chargerId online connectors { connectorId status } } }",
            json!({}),
        )
        .await;
    let first = socket.next("c", Duration::from_secs(5)).await;
    assert_eq!(
        first["data"]["chargerStatusChanged"]["online"], false,
        "{first}"
    );
    let mut cp =
        ChargePoint::connect(app.ws_url("CP-LEGACY"), "CP-LEGACY", Some(CHARGER_PASSWORD)).await;
    cp.call(
        "StatusNotification",
        json!({"connectorId": 1, "errorCode": "NoError", "status": "Preparing"}),
    )
    .await;
    let update = socket.next("c", Duration::from_secs(5)).await;
    let status = &update["data"]["chargerStatusChanged"];
    assert_eq!(status["online"], true, "{update}");
    assert_eq!(status["connectors"][0]["status"], "Preparing");

    let refused = GqlSocket::open(&app, "not-a-token", false).await;
    assert_eq!(
        refused.err(),
        Some(4403),
        "an invalid token in connection_init"
    );
}

#[tokio::test]
async fn a_thousand_subscriptions_on_one_session_each_get_every_update() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let ada = driver_with_card(&app, "many@example.org", "RFID-MANY").await;
    let mut cp = app.registered_charger("CP-MANY").await;
    let tx = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "RFID-MANY", "meterStart": 0, "timestamp": now()}),
        )
        .await["transactionId"]
        .as_i64()
        .unwrap();

    // 20 connections × 50 subscriptions each.
    const SOCKETS: usize = 20;
    const PER_SOCKET: usize = 50;
    let mut sockets = Vec::new();
    for _ in 0..SOCKETS {
        let mut socket = GqlSocket::open(&app, &ada.access, false).await.unwrap();
        for i in 0..PER_SOCKET {
            socket
                .subscribe(
                    &format!("s{i}"),
                    SESSION_UPDATED,
                    json!({"s": tx.to_string()}),
                )
                .await;
        }
        for i in 0..PER_SOCKET {
            let first = socket.next(&format!("s{i}"), Duration::from_secs(30)).await;
            assert_eq!(first["data"]["sessionUpdated"]["energyWh"], 0, "{first}");
        }
        sockets.push(socket);
    }
    let readings = [500, 1_000, 1_500, 2_000, 2_500];
    for wh in readings {
        meter_values(&mut cp, tx, wh).await;
    }
    // Every subscription gets every reading, in order: 1000 × 5 updates, counted.
    let received = futures_util::future::join_all(sockets.iter_mut().map(|socket| async move {
        let mut count = 0;
        for i in 0..PER_SOCKET {
            for wh in readings {
                energy_update(socket, &format!("s{i}"), wh, Duration::from_secs(30)).await;
                count += 1;
            }
        }
        count
    }))
    .await;
    assert_eq!(
        received.iter().sum::<usize>(),
        SOCKETS * PER_SOCKET * readings.len()
    );
    eventually(
        Duration::from_secs(5),
        "the charger still served",
        || async { (app.metric("jucr_ocpp_connected_chargers").await == 1.0).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_socket_that_never_initialises_is_closed_with_4408() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut request = format!("ws://127.0.0.1:{}/graphql", app.port)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut socket = GqlSocket {
        ws,
        legacy: false,
        pending: HashMap::new(),
    };
    // No connection_init: the server gives up after its deadline (10 s).
    let closed = socket.receive(Duration::from_secs(20)).await;
    assert_eq!(closed.err(), Some(4408));
}
