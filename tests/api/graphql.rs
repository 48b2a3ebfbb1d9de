//! The driver app's GraphQL API through real HTTP: accounts and their tokens, cards,
//! charging with a scripted charger, sessions and invoices, who may see what.

use std::time::Duration;

use serde_json::{Value, json};

use crate::billing::payg_default;
use crate::charge_point::ChargePoint;
use crate::helpers::{Backend, CHARGER_PASSWORD, TestApp, eventually, now};

const WAIT: Duration = Duration::from_secs(15);

/// A GraphQL request; returns the whole response (`data` and `errors`).
pub async fn gql(app: &TestApp, token: Option<&str>, query: &str, variables: Value) -> Value {
    let mut request = app
        .http
        .post(format!("{}/graphql", app.address))
        .json(&json!({"query": query, "variables": variables}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("graphql request");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    response.json().await.expect("a JSON response")
}

/// `data` of a request that must succeed.
pub async fn ok(app: &TestApp, token: Option<&str>, query: &str, variables: Value) -> Value {
    let response = gql(app, token, query, variables).await;
    assert!(response.get("errors").is_none(), "{query}: {response}");
    response["data"].clone()
}

/// The `extensions.code` of the first error.
pub fn code(response: &Value) -> &str {
    response["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("an error with a code: {response}"))
}

pub struct Driver {
    pub id: String,
    pub access: String,
    pub refresh: String,
}

const AUTH: &str = "accessToken refreshToken user { id email name role }";

pub async fn register(app: &TestApp, email: &str) -> Driver {
    let data = ok(
        app,
        None,
        &format!(
            "mutation($e: String!, $p: String!) {{ register(email: $e, password: $p, name: \"Ada\") {{ {AUTH} }} }}"
        ),
        json!({"e": email, "p": "driver-password-1"}),
    )
    .await;
    let auth = &data["register"];
    assert_eq!(auth["user"]["email"], email);
    assert_eq!(auth["user"]["role"], "driver");
    Driver {
        id: auth["user"]["id"].as_str().unwrap().to_owned(),
        access: auth["accessToken"].as_str().unwrap().to_owned(),
        refresh: auth["refreshToken"].as_str().unwrap().to_owned(),
    }
}

#[tokio::test]
async fn the_committed_schema_is_the_code_s() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let out = app.cli(&["schema"]).await;
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql")).unwrap();
    assert!(
        printed == committed,
        "schema.graphql differs from the code's schema: run `cargo run -- schema > schema.graphql` and review the change"
    );
    for name in [
        "register(",
        "login(",
        "refreshToken(",
        "logout(",
        "addVehicle(",
        "removeVehicle(",
        "addIdToken(",
        "removeIdToken(",
        "addPaymentMethod(",
        "startCharging(",
        "stopCharging(",
        "mySessions(",
        "myInvoices(",
        "session(",
        "charger(",
    ] {
        assert!(committed.contains(name), "the contract names {name}");
    }
    let (status, page) = app.request("GET", "/graphiql", None, None).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert!(
        page.as_str().unwrap().contains("graphiql"),
        "the GraphiQL page"
    );
}

#[tokio::test]
async fn a_driver_registers_adds_a_card_and_a_token_charges_and_sees_the_invoice() {
    let app = TestApp::spawn(Backend::Postgres).await;
    payg_default(&app).await;
    let ada = register(&app, "ada@example.org").await;
    let me = ok(
        &app,
        Some(&ada.access),
        "{ me { id email name } }",
        json!({}),
    )
    .await;
    assert_eq!(me["me"]["name"], "Ada");

    let card = ok(
        &app,
        Some(&ada.access),
        "mutation { addPaymentMethod(gatewayToken: \"tok_visa\") { brand last4 expYear } }",
        json!({}),
    )
    .await;
    assert_eq!(card["addPaymentMethod"]["last4"], "4242");
    let token = ok(
        &app,
        Some(&ada.access),
        "mutation { addIdToken(token: \"RFID-ADA-1\") { token status } }",
        json!({}),
    )
    .await;
    assert_eq!(token["addIdToken"]["status"], "Accepted");
    let vehicle = ok(
        &app,
        Some(&ada.access),
        "mutation($v: VehicleInput!) { addVehicle(input: $v) { id make } }",
        json!({"v": {"make": "Kia", "model": "EV6", "batteryCapacityKwh": 77.4}}),
    )
    .await;
    assert_eq!(vehicle["addVehicle"]["make"], "Kia");

    // A scripted 1.6 charger authorizes the token and charges 12.345 kWh.
    let mut cp = app.registered_charger("CP-GQL").await;
    let auth = cp.call("Authorize", json!({"idTag": "RFID-ADA-1"})).await;
    assert_eq!(auth["idTagInfo"]["status"], "Accepted");
    let tx = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "RFID-ADA-1", "meterStart": 0, "timestamp": now()}),
        )
        .await["transactionId"]
        .as_i64()
        .unwrap();
    let running = ok(
        &app,
        Some(&ada.access),
        "query($id: ID!) { session(id: $id) { status chargerId connectorId energyWh } }",
        json!({"id": tx.to_string()}),
    )
    .await;
    assert_eq!(running["session"]["status"], "CHARGING");
    cp.call(
        "StopTransaction",
        json!({"transactionId": tx, "meterStop": 12_345, "timestamp": now()}),
    )
    .await;

    let sessions = eventually(WAIT, "the session completed with its invoice", || async {
        let data = ok(
            &app,
            Some(&ada.access),
            "{ mySessions(first: 10) { edges { node { id status energyWh invoice { number gross { amount currency } status } } } pageInfo { hasNextPage } } }",
            json!({}),
        )
        .await;
        let node = data["mySessions"]["edges"][0]["node"].clone();
        (node["status"] == "COMPLETED" && node["invoice"]["status"] == "paid").then_some(data)
    })
    .await;
    let node = &sessions["mySessions"]["edges"][0]["node"];
    assert_eq!(node["id"], tx.to_string());
    assert_eq!(node["energyWh"], 12_345);
    assert_eq!(
        node["invoice"]["gross"],
        json!({"amount": 934, "currency": "EUR"})
    );
    assert_eq!(sessions["mySessions"]["pageInfo"]["hasNextPage"], false);
    let invoices = ok(
        &app,
        Some(&ada.access),
        "{ myInvoices(first: 5) { edges { cursor node { number kind lines { description amount { amount } } } } } }",
        json!({}),
    )
    .await;
    let edges = invoices["myInvoices"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0]["node"]["kind"], "session");

    // Another driver sees none of it.
    let bob = register(&app, "bob@example.org").await;
    let theirs = gql(
        &app,
        Some(&bob.access),
        "query($id: ID!) { session(id: $id) { id } }",
        json!({"id": tx.to_string()}),
    )
    .await;
    assert_eq!(code(&theirs), "NOT_FOUND", "{theirs}");
    let bob_sessions = ok(
        &app,
        Some(&bob.access),
        "{ mySessions { edges { node { id } } } myInvoices { edges { node { id } } } }",
        json!({}),
    )
    .await;
    assert_eq!(bob_sessions["mySessions"]["edges"], json!([]));
    assert_eq!(bob_sessions["myInvoices"]["edges"], json!([]));
    let claim = gql(
        &app,
        Some(&bob.access),
        "mutation { addIdToken(token: \"RFID-ADA-1\") { token } }",
        json!({}),
    )
    .await;
    assert_eq!(
        code(&claim),
        "CONFLICT",
        "someone else's card cannot be claimed"
    );

    // A card passed on does not take its history along.
    let removed = ok(
        &app,
        Some(&ada.access),
        "mutation { removeIdToken(token: \"RFID-ADA-1\") }",
        json!({}),
    )
    .await;
    assert_eq!(removed["removeIdToken"], true);
    ok(
        &app,
        Some(&bob.access),
        "mutation { addIdToken(token: \"RFID-ADA-1\") { token } }",
        json!({}),
    )
    .await;
    let bob_now = ok(
        &app,
        Some(&bob.access),
        "{ mySessions { edges { node { id } } } }",
        json!({}),
    )
    .await;
    assert_eq!(bob_now["mySessions"]["edges"], json!([]));
    let still_hidden = gql(
        &app,
        Some(&bob.access),
        "query($id: ID!) { session(id: $id) { id } }",
        json!({"id": tx.to_string()}),
    )
    .await;
    assert_eq!(code(&still_hidden), "NOT_FOUND");
    let ada_still = ok(
        &app,
        Some(&ada.access),
        "{ mySessions { edges { node { id invoice { number } } } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        ada_still["mySessions"]["edges"][0]["node"]["id"],
        tx.to_string()
    );
    assert!(ada_still["mySessions"]["edges"][0]["node"]["invoice"]["number"].is_string());

    // A card the operator blocked cannot be removed and added again to unblock it.
    app.register_token("RFID-ADA-1", json!({"status": "Blocked"}))
        .await;
    let gone = ok(
        &app,
        Some(&bob.access),
        "mutation { removeIdToken(token: \"RFID-ADA-1\") }",
        json!({}),
    )
    .await;
    assert_eq!(gone["removeIdToken"], false);
    let (_, token) = app.api("GET", "/api/v1/id-tokens/RFID-ADA-1", None).await;
    assert_eq!(token["status"], "Blocked");
    let anonymous = gql(&app, None, "{ me { id } }", json!({})).await;
    assert_eq!(code(&anonymous), "UNAUTHENTICATED");
    let bad = gql(
        &app,
        None,
        "mutation { register(email: \"not-an-address\", password: \"driver-password-1\") { accessToken } }",
        json!({}),
    )
    .await;
    assert_eq!(code(&bad), "BAD_USER_INPUT");
}

#[tokio::test]
async fn refresh_tokens_rotate_a_reused_one_revokes_its_login_and_logout_ends_it() {
    let secret = "test-jwt-secret-that-is-long-enough-000000";
    let app = TestApp::spawn_with(Backend::Sqlite, &[("JUCR__AUTH__JWT_SECRET", secret)]).await;
    let ada = register(&app, "rotate@example.org").await;
    let refresh = "mutation($t: String!) { refreshToken(token: $t) { accessToken refreshToken } }";

    let first = ok(&app, None, refresh, json!({"t": ada.refresh})).await;
    let second_refresh = first["refreshToken"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(second_refresh, ada.refresh);
    let fresh = first["refreshToken"]["accessToken"].as_str().unwrap();
    ok(&app, Some(fresh), "{ me { id } }", json!({})).await;

    // The first token again: a replay. The whole login is revoked, its successor too.
    let replay = gql(&app, None, refresh, json!({"t": ada.refresh})).await;
    assert_eq!(code(&replay), "UNAUTHENTICATED");
    let successor = gql(&app, None, refresh, json!({"t": second_refresh})).await;
    assert_eq!(code(&successor), "UNAUTHENTICATED", "the family is revoked");

    // Logout ends a login.
    let login = ok(
        &app,
        None,
        "mutation { login(email: \"rotate@example.org\", password: \"driver-password-1\") { refreshToken } }",
        json!({}),
    )
    .await;
    let token = login["login"]["refreshToken"].as_str().unwrap().to_owned();
    let out = ok(
        &app,
        None,
        "mutation($t: String!) { logout(refreshToken: $t) }",
        json!({"t": token}),
    )
    .await;
    assert_eq!(out["logout"], true);
    let after = gql(&app, None, refresh, json!({"t": token})).await;
    assert_eq!(code(&after), "UNAUTHENTICATED");

    // An expired access token (signed with the right key) is refused.
    let now = chrono::Utc::now().timestamp();
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": ada.id, "email": "rotate@example.org", "role": "driver", "iat": now - 3600, "exp": now - 60}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let stale = gql(&app, Some(&expired), "{ me { id } }", json!({})).await;
    assert_eq!(code(&stale), "UNAUTHENTICATED");
}

#[tokio::test]
async fn failed_logins_are_limited_per_account() {
    let app =
        TestApp::spawn_with(Backend::Sqlite, &[("JUCR__AUTH__LOGIN_FAILURE_LIMIT", "3")]).await;
    register(&app, "limited@example.org").await;
    let login = "mutation($p: String!) { login(email: \"limited@example.org\", password: $p) { accessToken } }";
    // A success takes the account's count back to zero.
    for _ in 0..2 {
        let wrong = gql(&app, None, login, json!({"p": "wrong-password"})).await;
        assert_eq!(code(&wrong), "UNAUTHENTICATED");
    }
    ok(&app, None, login, json!({"p": "driver-password-1"})).await;
    for _ in 0..3 {
        let wrong = gql(&app, None, login, json!({"p": "wrong-password"})).await;
        assert_eq!(code(&wrong), "UNAUTHENTICATED");
    }
    let limited = gql(&app, None, login, json!({"p": "driver-password-1"})).await;
    assert_eq!(
        code(&limited),
        "RATE_LIMITED",
        "even the right password, for now"
    );
}

#[tokio::test]
async fn start_charging_reaches_the_charger_and_the_session_becomes_the_driver_s() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let ada = register(&app, "remote@example.org").await;
    let start = "mutation($c: ID!) { startCharging(chargerId: $c, connectorId: 1) { id status chargerId } }";

    let offline = gql(&app, Some(&ada.access), start, json!({"c": "CP-REMOTE"})).await;
    assert_eq!(code(&offline), "NOT_FOUND");
    app.register_charger("CP-REMOTE", CHARGER_PASSWORD).await;
    let offline = gql(&app, Some(&ada.access), start, json!({"c": "CP-REMOTE"})).await;
    assert_eq!(code(&offline), "CHARGER_OFFLINE");

    let mut cp =
        ChargePoint::connect(app.ws_url("CP-REMOTE"), "CP-REMOTE", Some(CHARGER_PASSWORD)).await;
    // Online once its actor has joined the registry (just after the handshake).
    eventually(WAIT, "the charger online", || async {
        (app.charger("CP-REMOTE").await["online"] == true).then_some(())
    })
    .await;
    let (started, call) = tokio::join!(
        ok(&app, Some(&ada.access), start, json!({"c": "CP-REMOTE"})),
        async {
            let (id, action, payload) = cp.next_server_call().await;
            cp.respond(&id, json!({"status": "Accepted"})).await;
            (action, payload)
        }
    );
    let (action, payload) = call;
    assert_eq!(action, "RemoteStartTransaction");
    assert_eq!(payload["connectorId"], 1);
    assert_eq!(started["startCharging"]["status"], "STARTING");
    let app_token = payload["idTag"].as_str().unwrap().to_owned();

    // The charger starts the transaction with the app token: the driver's session.
    let tx = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": app_token, "meterStart": 0, "timestamp": now()}),
        )
        .await["transactionId"]
        .as_i64()
        .unwrap();
    let mine = ok(
        &app,
        Some(&ada.access),
        "{ mySessions { edges { node { id status } } } }",
        json!({}),
    )
    .await;
    assert_eq!(mine["mySessions"]["edges"][0]["node"]["id"], tx.to_string());
    assert_eq!(mine["mySessions"]["edges"][0]["node"]["status"], "CHARGING");

    // A rejected start is an error.
    let (rejected, _) = tokio::join!(
        gql(
            &app,
            Some(&ada.access),
            "mutation { startCharging(chargerId: \"CP-REMOTE\", connectorId: 2) { id } }",
            json!({})
        ),
        async {
            let (id, _, _) = cp.next_server_call().await;
            cp.respond(&id, json!({"status": "Rejected"})).await;
        }
    );
    assert_eq!(code(&rejected), "CHARGER_REJECTED");

    // Stop from the phone: RemoteStopTransaction with the session's transaction.
    let stop = "mutation($s: ID!) { stopCharging(sessionId: $s) { id status } }";
    let (stopped, call) = tokio::join!(
        ok(&app, Some(&ada.access), stop, json!({"s": tx.to_string()})),
        async {
            let (id, action, payload) = cp.next_server_call().await;
            cp.respond(&id, json!({"status": "Accepted"})).await;
            (action, payload)
        }
    );
    assert_eq!(call.0, "RemoteStopTransaction");
    assert_eq!(call.1["transactionId"], tx);
    assert_eq!(stopped["stopCharging"]["id"], tx.to_string());
}

#[tokio::test]
async fn start_charging_reaches_a_2_0_1_station_as_request_start_transaction() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let ada = register(&app, "remote201@example.org").await;
    let mut cs = crate::ocpp201::station(&app, "CS-REMOTE").await;
    eventually(WAIT, "the station online", || async {
        (app.charger("CS-REMOTE").await["online"] == true).then_some(())
    })
    .await;
    let (started, call) = tokio::join!(
        ok(
            &app,
            Some(&ada.access),
            "mutation { startCharging(chargerId: \"CS-REMOTE\", connectorId: 1) { status } }",
            json!({})
        ),
        async {
            let (id, action, payload) = cs.next_server_call().await;
            cs.respond(&id, json!({"status": "Accepted"})).await;
            (action, payload)
        }
    );
    assert_eq!(started["startCharging"]["status"], "STARTING");
    assert_eq!(call.0, "RequestStartTransaction");
    assert_eq!(call.1["evseId"], 1);
    assert_eq!(call.1["idToken"]["type"], "Central");
}

#[tokio::test]
async fn queries_that_are_too_deep_are_refused() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let ada = register(&app, "deep@example.org").await;
    ok(&app, Some(&ada.access), "{ me { id } }", json!({})).await;
    let nested = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } } }";
    let refused = gql(&app, Some(&ada.access), nested, json!({})).await;
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nested too deep"),
        "{refused}"
    );
    assert_eq!(code(&refused), "BAD_USER_INPUT", "every error has a code");
}

#[tokio::test]
async fn in_the_cloud_failed_logins_are_counted_across_replicas_in_redis() {
    let a = TestApp::spawn_with(
        Backend::Postgres,
        &[("JUCR__AUTH__LOGIN_FAILURE_LIMIT", "2")],
    )
    .await;
    let shared = [
        ("JUCR__AUTH__LOGIN_FAILURE_LIMIT", "2".to_owned()),
        (
            "JUCR__DATABASE__URL",
            a.setting("JUCR__DATABASE__URL").unwrap(),
        ),
        (
            "JUCR__REDIS__KEY_PREFIX",
            a.setting("JUCR__REDIS__KEY_PREFIX").unwrap(),
        ),
    ];
    let shared: Vec<(&str, &str)> = shared.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let b = TestApp::spawn_with(Backend::Postgres, &shared).await;
    register(&a, "shared@example.org").await;
    let login = "mutation($p: String!) { login(email: \"shared@example.org\", password: $p) { accessToken } }";
    for replica in [&a, &b] {
        let wrong = gql(replica, None, login, json!({"p": "wrong-password"})).await;
        assert_eq!(code(&wrong), "UNAUTHENTICATED");
    }
    // One failure on each replica: the limit of two is reached everywhere.
    for replica in [&a, &b] {
        let limited = gql(replica, None, login, json!({"p": "driver-password-1"})).await;
        assert_eq!(code(&limited), "RATE_LIMITED", "{limited}");
    }
}
