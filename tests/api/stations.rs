//! The OpenChargeMap mirror with real OCM data: imported by `jucr ocm import`, searched
//! through GraphQL and the operator API, nearest first.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::graphql::{code, gql, ok};
use crate::helpers::{Backend, TestApp};

const LONDON: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/ocm/poi-london-100.compact.json"
);

/// Great-circle distance, written again here so that the test does not trust the code.
pub fn km(lat1: f64, lng1: f64, lat2: f64, lng2: f64) -> f64 {
    let r = 6371.0088_f64;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let a = ((p2 - p1) / 2.0).sin().powi(2)
        + p1.cos() * p2.cos() * ((lng2 - lng1).to_radians() / 2.0).sin().powi(2);
    2.0 * r * a.sqrt().asin()
}

async fn import(app: &TestApp) -> Vec<Value> {
    let out = app.cli(&["ocm", "import", LONDON]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("100 inserted"), "{stdout}");
    let again = app.cli(&["ocm", "import", LONDON]).await;
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 inserted, 0 updated, 100 unchanged")
    );
    serde_json::from_str(&std::fs::read_to_string(LONDON).unwrap()).unwrap()
}

#[tokio::test]
async fn imported_stations_are_found_nearest_first() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let pois = import(&app).await;
    let (lat, lng, radius) = (51.515, -0.05, 3.0);
    let mut expected: Vec<(f64, String)> = pois
        .iter()
        .map(|p| {
            let a = &p["AddressInfo"];
            let d = km(
                lat,
                lng,
                a["Latitude"].as_f64().unwrap(),
                a["Longitude"].as_f64().unwrap(),
            );
            (d, p["ID"].to_string())
        })
        .filter(|(d, _)| *d <= radius)
        .collect();
    expected.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(expected.len() >= 3, "the sample has stations there");

    let query = "query($n: LatLng!, $r: Float!, $after: String) { stations(near: $n, radiusKm: $r, first: 2, after: $after) { edges { cursor node { id title distanceKm attribution } } pageInfo { hasNextPage endCursor } } }";
    let mut ids = Vec::new();
    let mut after = Value::Null;
    loop {
        let data = ok(
            &app,
            None,
            query,
            json!({"n": {"lat": lat, "lng": lng}, "r": radius, "after": after}),
        )
        .await;
        let page = &data["stations"];
        for edge in page["edges"].as_array().unwrap() {
            assert_eq!(
                edge["node"]["attribution"],
                "© Open Charge Map contributors"
            );
            ids.push(edge["node"]["id"].as_str().unwrap().to_owned());
        }
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    let expected_ids: Vec<String> = expected.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(
        ids, expected_ids,
        "every station within the radius, nearest first, across pages"
    );

    let one = ok(
        &app,
        None,
        "query($id: ID!) { station(id: $id) { title latitude connections { powerKw } } }",
        json!({"id": expected_ids[0]}),
    )
    .await;
    assert!(one["station"]["title"].is_string());
    let none = ok(&app, None, "{ station(id: \"1\") { title } }", json!({})).await;
    assert!(none["station"].is_null());
    let bad = gql(
        &app,
        None,
        "{ stations(near: {lat: 51.5, lng: 0}, radiusKm: 500) { edges { cursor } } }",
        json!({}),
    )
    .await;
    assert_eq!(code(&bad), "BAD_USER_INPUT");

    // The operator API, for dashboards.
    let (status, body) = app
        .api(
            "GET",
            &format!("/api/v1/stations?lat={lat}&lng={lng}&radius_km={radius}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rest: Vec<String> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["station"]["ocm_id"].to_string())
        .collect();
    assert_eq!(rest, expected_ids);
    let (status, _) = app
        .api("GET", "/api/v1/stations?lat=95&lng=0&radius_km=1", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
