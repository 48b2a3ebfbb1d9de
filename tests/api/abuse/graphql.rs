//! The app's GraphQL API under hostile documents: nesting that would overflow the
//! parser's stack, fragments that expand exponentially, subscriptions that outlive their
//! token or pile up on one socket, sign-ups by the dozen, and what introspection and the
//! IDE give away.

use std::time::Duration;

use serde_json::{Value, json};

use super::{impatient_client, memory_settles, rss_kib, still_serves};
use crate::graphql::{code, gql, register};
use crate::helpers::{Backend, TestApp};
use crate::subscriptions::GqlSocket;

const WAIT: Duration = Duration::from_secs(15);

/// A list literal nested `depth` deep in a real argument.
fn nested_list(depth: usize) -> String {
    format!(
        "{{ stations(near: {{lat: 52.5, lng: 13.4}}, radiusKm: 5, filter: {{operatorIds: {}1{}}}) {{ totalCount }} }}",
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

/// An object literal nested `depth` deep in a directive's argument.
fn nested_object(depth: usize) -> String {
    format!(
        "{{ __typename @skip(if: {}true{}) }}",
        "{a: ".repeat(depth),
        "}".repeat(depth)
    )
}

/// `levels` fragments, each spreading the next twice: 2^levels fields, under 1 KB.
fn fan_out(levels: usize, operation: &str) -> String {
    let mut doc = format!("{operation} {{ ...F0 }}\n");
    for i in 0..levels {
        doc.push_str(&format!(
            "fragment F{i} on {root} {{ ...F{n} ...F{n} }}\n",
            root = if operation == "subscription" {
                "Subscription"
            } else {
                "Query"
            },
            n = i + 1
        ));
    }
    doc.push_str(&format!("fragment F{levels} on Query {{ __typename }}\n"));
    doc
}

/// POST /graphql through a client that gives up after 30 s.
async fn post(app: &TestApp, token: Option<&str>, query: &str) -> Value {
    let mut request = impatient_client(30)
        .post(format!("{}/graphql", app.address))
        .json(&json!({"query": query}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .expect("the server answers the request");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    response.json().await.expect("a JSON answer")
}

#[tokio::test]
async fn value_literals_nested_2000_deep_are_refused_over_http_and_websocket() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for doc in [nested_list(2000), nested_object(2000)] {
        let answer = post(&app, None, &doc).await;
        assert_eq!(code(&answer), "BAD_USER_INPUT", "{answer}");
        let message = answer["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("nests deeper than 32"), "{message}");
    }
    // Within the bound, the same shapes are ordinary queries (whatever async-graphql
    // then makes of them).
    for doc in [nested_list(20), nested_object(20)] {
        let answer = post(&app, None, &doc).await;
        assert!(!answer.to_string().contains("nests deeper"), "{answer}");
    }

    // Anonymously, over the subscription socket after an empty connection_init.
    let mut socket = GqlSocket::open_with(&app, json!({}), false)
        .await
        .expect("an anonymous socket is accepted");
    socket
        .subscribe("deep", &nested_object(2000), json!({}))
        .await;
    let refused = socket.next("deep", WAIT).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{refused}"
    );
    still_serves(&app).await;
}

#[tokio::test]
async fn exponential_fragment_fan_out_is_refused_before_it_is_expanded() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let before = rss_kib(&app);
    let doc = fan_out(26, "query");
    assert!(doc.len() < 1100, "a document of about 1 KB");
    let answer = post(&app, None, &doc).await;
    assert_eq!(code(&answer), "BAD_USER_INPUT", "{answer}");
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("expands"),
        "{answer}"
    );
    // The same over the subscription socket.
    let mut socket = GqlSocket::open_with(&app, json!({}), false)
        .await
        .expect("an anonymous socket is accepted");
    socket
        .subscribe("fan", &fan_out(26, "subscription"), json!({}))
        .await;
    let refused = socket.next("fan", WAIT).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{refused}"
    );
    // A small fan-out is an ordinary query.
    let small = post(&app, None, &fan_out(3, "query")).await;
    assert_eq!(small["data"]["__typename"], "Query", "{small}");
    memory_settles(&app, before).await;
    still_serves(&app).await;
}

#[tokio::test]
async fn a_subscription_ends_when_its_access_token_expires() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("JUCR__AUTH__TOKEN_TTL_SECS", "3")]).await;
    app.register_charger("CP-EXPIRY", crate::helpers::CHARGER_PASSWORD)
        .await;
    let driver = register(&app, "expiring@example.org").await;
    let mut socket = GqlSocket::open(&app, &driver.access, false)
        .await
        .expect("a fresh token is accepted");
    socket
        .subscribe(
            "status",
            "subscription { chargerStatusChanged(chargerId: \"CP-EXPIRY\") { chargerId online } }",
            json!({}),
        )
        .await;
    let first = socket.next("status", WAIT).await;
    assert_eq!(first["data"]["chargerStatusChanged"]["online"], false);
    // Nothing else happens on the charger: the server closes the socket by itself once
    // the token has expired (4403, as a refused connection_init).
    let closed = loop {
        match socket.receive(WAIT).await {
            Ok(message) if message["type"] == "ping" || message["type"] == "ka" => continue,
            Ok(message) => panic!("unexpected {message}"),
            Err(code) => break code,
        }
    };
    assert_eq!(closed, 4403);
    still_serves(&app).await;
}

#[tokio::test]
async fn one_socket_holds_a_bounded_number_of_subscriptions() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("JUCR__GRAPHQL__MAX_SUBSCRIPTIONS_PER_SOCKET", "5")],
    )
    .await;
    app.register_charger("CP-MANY", crate::helpers::CHARGER_PASSWORD)
        .await;
    let driver = register(&app, "many@example.org").await;
    let mut socket = GqlSocket::open(&app, &driver.access, false)
        .await
        .expect("accepted");
    let query =
        "subscription { chargerStatusChanged(chargerId: \"CP-MANY\") { chargerId online } }";
    for i in 0..5 {
        socket.subscribe(&format!("s{i}"), query, json!({})).await;
        let first = socket.next(&format!("s{i}"), WAIT).await;
        assert_eq!(
            first["data"]["chargerStatusChanged"]["chargerId"],
            "CP-MANY"
        );
    }
    socket.subscribe("s5", query, json!({})).await;
    let refused = socket.next("s5", WAIT).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "RATE_LIMITED",
        "{refused}"
    );
    // Ending one makes room for another.
    socket.complete("s0").await;
    socket.subscribe("s6", query, json!({})).await;
    let again = socket.next("s6", WAIT).await;
    assert_eq!(
        again["data"]["chargerStatusChanged"]["chargerId"],
        "CP-MANY"
    );
    // The same message in serde's sequence form, and a subscription stopped and started
    // again in one breath: what counts is the subscriptions running, not the messages.
    socket
        .send(json!(["subscribe", "s7", {"query": query}]))
        .await;
    socket.complete("s6").await;
    socket.subscribe("s6", query, json!({})).await;
    socket.subscribe("s8", query, json!({})).await;
    let mut started = Vec::new();
    loop {
        match socket.receive(WAIT).await {
            Ok(m) if m["payload"]["data"].is_object() => started.push(m["id"].clone()),
            Ok(m) if m["id"] == "s8" => break,
            Ok(_) => continue,
            // The engine may refuse the sequence form by closing; the cap held anyway.
            Err(_) => break,
        }
    }
    assert!(started.iter().all(|id| id == "s6"), "{started:?}");
    still_serves(&app).await;
}

#[tokio::test]
async fn sign_ups_are_limited_per_address_and_aliases_count_each() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("JUCR__AUTH__REGISTER_LIMIT_PER_ADDRESS", "5")],
    )
    .await;
    let aliases: String = (0..20)
        .map(|i| {
            format!(
                "a{i}: register(email: \"bulk{i}@example.org\", password: \"driver-password-1\") {{ user {{ id }} }} "
            )
        })
        .collect();
    let answer = gql(&app, None, &format!("mutation {{ {aliases} }}"), json!({})).await;
    let made = (0..20)
        .filter(|i| answer["data"][format!("a{i}")]["user"]["id"].is_string())
        .count();
    assert_eq!(made, 5, "{answer}");
    let errors = answer["errors"].as_array().expect("the others refused");
    assert_eq!(errors.len(), 15);
    assert!(
        errors
            .iter()
            .all(|e| e["extensions"]["code"] == "RATE_LIMITED"),
        "{answer}"
    );
    let one_more = gql(
        &app,
        None,
        "mutation { register(email: \"late@example.org\", password: \"driver-password-1\") { user { id } } }",
        json!({}),
    )
    .await;
    assert_eq!(code(&one_more), "RATE_LIMITED");
    still_serves(&app).await;
}

#[tokio::test]
async fn introspection_is_off_in_the_cloud_profile_by_default() {
    let query = "{ __schema { types { name } } }";
    let embedded = TestApp::spawn(Backend::Sqlite).await;
    let open = gql(&embedded, None, query, json!({})).await;
    assert!(open["data"]["__schema"]["types"].is_array(), "{open}");
    let cloud = TestApp::spawn(Backend::Postgres).await;
    let closed = gql(&cloud, None, query, json!({})).await;
    assert!(closed["data"]["__schema"].is_null(), "{closed}");
    still_serves(&cloud).await;
}

#[tokio::test]
async fn graphiql_is_served_from_the_binary_with_security_headers() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let page = app
        .http
        .get(format!("{}/graphiql", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    let headers = page.headers().clone();
    let html = page.text().await.unwrap();
    for needed in [
        "x-content-type-options",
        "x-frame-options",
        "content-security-policy",
        "referrer-policy",
    ] {
        assert!(headers.contains_key(needed), "{needed} on the page");
    }
    // Every script and stylesheet comes from this server: none from a CDN.
    let mut assets = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for (i, _) in html.match_indices(attribute) {
            let rest = &html[i + attribute.len()..];
            let url = &rest[..rest.find('"').unwrap()];
            assert!(
                url.starts_with('/'),
                "{url} is loaded from elsewhere than this server"
            );
            assets.push(url.to_owned());
        }
    }
    assert!(assets.len() >= 3, "GraphiQL's scripts and styles: {html}");
    for asset in assets {
        let response = app
            .http
            .get(format!("{}{asset}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK, "{asset}");
        assert!(
            !response.bytes().await.unwrap().is_empty(),
            "{asset} has content"
        );
    }
}
