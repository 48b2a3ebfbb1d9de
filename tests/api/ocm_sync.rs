//! The OpenChargeMap sync against a local OCM: a real HTTP server that serves real OCM
//! data (tests/fixtures/ocm) the way the v3 API does: API key, paging by id and by
//! modification time, country and box scopes, 429 with Retry-After, failures.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::graphql::ok;
use crate::helpers::{Backend, TestApp, eventually};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ocm");
pub const API_KEY: &str = "ocm-test-key";

fn fixture(path: &str) -> Value {
    let raw = std::fs::read_to_string(format!("{FIXTURES}/{path}")).expect("fixture");
    serde_json::from_str(&raw).expect("fixture is JSON")
}

/// London (GB) and Liechtenstein (LI) POIs, and one in Andorra (AD).
pub fn real_pois() -> Vec<Value> {
    let mut pois: Vec<Value> = fixture("poi-london-100.compact.json")
        .as_array()
        .unwrap()
        .clone();
    for dir in ["LI", "AD"] {
        let mut files: Vec<_> = std::fs::read_dir(format!("{FIXTURES}/export/{dir}"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            pois.push(serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap());
        }
    }
    pois
}

/// A request the fake OCM saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub query: HashMap<String, String>,
    pub api_key: Option<String>,
    pub user_agent: Option<String>,
    pub at: Instant,
    pub status: u16,
}

#[derive(Default)]
struct State {
    pois: Vec<Value>,
    seen: Vec<Seen>,
    /// The next this many POI requests are answered 429 with Retry-After: 1.
    rate_limited: u32,
    /// POI requests answered successfully before every further one fails with 500.
    fail_after: Option<usize>,
}

/// A local OpenChargeMap API v3.
#[derive(Clone)]
pub struct FakeOcm {
    pub url: String,
    state: Arc<Mutex<State>>,
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.get("DateLastStatusUpdate")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn answer(state: &Mutex<State>, req: &HttpRequest, path: &str) -> HttpResponse {
    let query: HashMap<String, String> =
        web::Query::<HashMap<String, String>>::from_query(req.query_string())
            .map(|q| q.into_inner())
            .unwrap_or_default();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut s = state.lock().unwrap();
    let (status, body) = if header("x-api-key").as_deref() != Some(API_KEY) {
        (403, json!("You must specify an API key"))
    } else if path == "/v3/referencedata" {
        (200, fixture("referencedata-2023.json"))
    } else if s.rate_limited > 0 {
        s.rate_limited -= 1;
        (429, json!("slow down"))
    } else if s.fail_after.is_some_and(|n| {
        s.seen
            .iter()
            .filter(|r| r.path == "/v3/poi" && r.status == 200)
            .count()
            >= n
    }) {
        (500, json!("broken"))
    } else {
        (200, Value::Array(select(&s.pois, &query)))
    };
    s.seen.push(Seen {
        path: path.to_owned(),
        query,
        api_key: header("x-api-key"),
        user_agent: header("user-agent"),
        at: Instant::now(),
        status,
    });
    let mut response = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
    if status == 429 {
        response.insert_header(("Retry-After", "1"));
    }
    response.json(body)
}

/// What `/v3/poi` answers: OCM's filters, order and page size.
fn select(pois: &[Value], q: &HashMap<String, String>) -> Vec<Value> {
    let countries: HashMap<String, i64> = fixture("referencedata-2023.json")["Countries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["ISOCode"].as_str().unwrap().to_owned(),
                c["ID"].as_i64().unwrap(),
            )
        })
        .collect();
    let mut found: Vec<Value> = pois
        .iter()
        .filter(|p| {
            let a = &p["AddressInfo"];
            let country = q
                .get("countrycode")
                .is_none_or(|c| countries.get(c.as_str()) == a["CountryID"].as_i64().as_ref());
            let in_box = q.get("boundingbox").is_none_or(|b| {
                let n: Vec<f64> = b
                    .replace(['(', ')'], "")
                    .split(',')
                    .map(|x| x.trim().parse().unwrap())
                    .collect();
                let (lat, lng) = (
                    a["Latitude"].as_f64().unwrap(),
                    a["Longitude"].as_f64().unwrap(),
                );
                (n[0]..=n[2]).contains(&lat) && (n[1]..=n[3]).contains(&lng)
            });
            let after_id = q
                .get("greaterthanid")
                .is_none_or(|id| p["ID"].as_i64().unwrap() > id.parse::<i64>().unwrap());
            let modified = q.get("modifiedsince").is_none_or(|since| {
                let since = DateTime::parse_from_rfc3339(since).unwrap();
                time(p).is_some_and(|t| t >= since)
            });
            // As OCM: published POIs only unless asked for others; never "not public"
            // (1010) ones, never removed (status 200) ones.
            let submission = p["SubmissionStatusTypeID"].as_i64().unwrap_or(200);
            let listed = match q.get("submissionstatustypeid") {
                Some(ids) => ids
                    .split(',')
                    .any(|id| id.parse::<i64>().ok() == Some(submission)),
                None => [100, 200].contains(&submission),
            } && submission != 1010
                && p["StatusTypeID"].as_i64() != Some(200);
            country && in_box && after_id && modified && listed
        })
        .cloned()
        .collect();
    match q.get("sortby").map(String::as_str) {
        // As OCM: by time only; ties come in whatever order.
        Some("modified_asc") => found.sort_by_key(time),
        Some("id_asc") => found.sort_by_key(|p| p["ID"].as_i64()),
        _ => found.sort_by_key(|p| std::cmp::Reverse(p["ID"].as_i64())),
    }
    let max: usize = q.get("maxresults").map_or(100, |m| m.parse().unwrap());
    found.truncate(max);
    found
}

impl FakeOcm {
    pub fn start(pois: Vec<Value>) -> FakeOcm {
        let state = Arc::new(Mutex::new(State {
            pois,
            ..Default::default()
        }));
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = state.clone();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    let state = shared.clone();
                    App::new().default_service(web::to(move |req: HttpRequest| {
                        let state = state.clone();
                        async move {
                            let path = req.path().to_owned();
                            answer(&state, &req, &path)
                        }
                    }))
                })
                .workers(1)
                .bind("127.0.0.1:0")
                .unwrap();
                tx.send(server.addrs()[0]).unwrap();
                server.run().await.unwrap();
            });
        });
        let address = rx.recv().unwrap();
        FakeOcm {
            url: format!("http://{address}"),
            state,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn rate_limit(&self, times: u32) {
        self.state.lock().unwrap().rate_limited = times;
    }

    pub fn fail_after(&self, ok_pages: Option<usize>) {
        self.state.lock().unwrap().fail_after = ok_pages;
    }

    /// Changes a POI as OCM would (and stamps it modified now).
    pub fn edit(&self, id: i64, change: impl FnOnce(&mut Value)) {
        let mut s = self.state.lock().unwrap();
        let poi = s
            .pois
            .iter_mut()
            .find(|p| p["ID"].as_i64() == Some(id))
            .expect("a POI with that id");
        change(poi);
        // OCM's timestamps are whole minutes.
        poi["DateLastStatusUpdate"] = json!(Utc::now().format("%Y-%m-%dT%H:%M:00Z").to_string());
    }
}

/// Settings that point the app at `ocm`.
pub fn ocm_settings(ocm: &FakeOcm, scopes: &str, batch: &str) -> Vec<(String, String)> {
    [
        ("JUCR__OCM__BASE_URL", ocm.url.as_str()),
        ("JUCR__OCM__API_KEY", API_KEY),
        ("JUCR__OCM__SCOPES", scopes),
        ("JUCR__OCM__BATCH_SIZE", batch),
        ("JUCR__OCM__SYNC_INTERVAL_SECS", "0"),
        ("JUCR__OCM__RETRY_BASE_MS", "50"),
        ("JUCR__OCM__MAX_ATTEMPTS", "3"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

pub async fn spawn(backend: Backend, settings: &[(String, String)]) -> TestApp {
    let settings: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    TestApp::spawn_with(backend, &settings).await
}

/// Starts a run through the API and waits for its end.
pub async fn sync(app: &TestApp) -> Value {
    let (status, run) = app.api("POST", "/api/v1/ocm/sync", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    assert_eq!(run["status"], "running");
    finished(app, run["run_id"].as_str().unwrap()).await
}

pub async fn finished(app: &TestApp, run_id: &str) -> Value {
    eventually(Duration::from_secs(60), "the sync run to end", || async {
        let (status, run) = app
            .api("GET", &format!("/api/v1/ocm/runs/{run_id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{run}");
        (run["status"] != "running").then_some(run)
    })
    .await
}

fn poi_requests(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter().filter(|s| s.path == "/v3/poi").collect()
}

fn sorted_ids(pois: &[Value], country: i64) -> Vec<i64> {
    let mut ids: Vec<i64> = pois
        .iter()
        .filter(|p| p["AddressInfo"]["CountryID"].as_i64() == Some(country))
        .map(|p| p["ID"].as_i64().unwrap())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn the_mirror_is_synced_page_by_page_then_by_changes() {
    let mut pois = real_pois();
    // One Liechtenstein POI from a provider whose licence is non-commercial
    // (Oplaadpalen.nl, CC BY-NC-SA): the licence filter hides it.
    let li = sorted_ids(&pois, 130);
    assert_eq!(li.len(), 7, "the Liechtenstein sample");
    let nc = li[0];
    pois.iter_mut()
        .find(|p| p["ID"].as_i64() == Some(nc))
        .unwrap()["DataProviderID"] = json!(26);
    let gb = sorted_ids(&pois, 1);
    assert_eq!(gb.len(), 100);
    let ocm = FakeOcm::start(pois.clone());
    ocm.rate_limit(1);
    let app = spawn(Backend::Sqlite, &ocm_settings(&ocm, "GB; LI", "30")).await;

    let (status, run) = app.api("POST", "/api/v1/ocm/sync", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    // The run waits out the 429's Retry-After: a second one is refused meanwhile.
    let (status, body) = app.api("POST", "/api/v1/ocm/sync", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let run = finished(&app, run["run_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        (
            &run["fetched"],
            &run["inserted"],
            &run["updated"],
            &run["excluded"],
            &run["failed"]
        ),
        (&json!(107), &json!(107), &json!(0), &json!(1), &json!(0)),
        "{run}"
    );

    let seen = ocm.seen();
    assert!(seen.iter().all(|s| {
        s.api_key.as_deref() == Some(API_KEY)
            && s.user_agent
                .as_deref()
                .is_some_and(|ua| ua.starts_with("jucr"))
    }));
    let pages = poi_requests(&seen);
    assert_eq!(pages[0].status, 429);
    assert!(
        pages[1].at - pages[0].at >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    // The full import pages by id, 30 at a time, per scope, until OCM has no more.
    let by_id: Vec<(String, String)> = pages
        .iter()
        .filter(|s| s.status == 200 && !s.query.contains_key("modifiedsince"))
        .map(|s| {
            assert_eq!(s.query["sortby"], "id_asc");
            assert_eq!(s.query["maxresults"], "30");
            let scope = s.query.get("countrycode").cloned().unwrap_or_default();
            (scope, s.query["greaterthanid"].clone())
        })
        .collect();
    let expected: Vec<(String, String)> = [0, gb[29], gb[59], gb[89], gb[99]]
        .iter()
        .map(|id| ("GB".to_owned(), id.to_string()))
        .chain(
            [0, li[6]]
                .iter()
                .map(|id| ("LI".to_owned(), id.to_string())),
        )
        .collect();
    assert_eq!(by_id, expected);
    assert!(
        pages.iter().all(|s| s
            .query
            .get("submissionstatustypeid")
            .is_some_and(|l| l.contains("1001"))),
        "delisted POIs are asked for"
    );

    // The mirror has what OCM has, the right places, nothing from Andorra.
    let (status, near) = app
        .api(
            "GET",
            "/api/v1/stations?lat=51.5&lng=-0.12&radius_km=100&limit=1000",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{near}");
    let mut found: Vec<i64> = near
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["station"]["ocm_id"].as_i64().unwrap())
        .collect();
    found.sort();
    let london: Vec<i64> = pois
        .iter()
        .filter(|p| {
            p["AddressInfo"]["CountryID"] == 1
                && crate::stations::km(
                    51.5,
                    -0.12,
                    p["AddressInfo"]["Latitude"].as_f64().unwrap(),
                    p["AddressInfo"]["Longitude"].as_f64().unwrap(),
                ) <= 100.0
        })
        .map(|p| p["ID"].as_i64().unwrap())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(found, london);
    let andorra = sorted_ids(&pois, 10)[0];
    let (status, _) = app
        .api("GET", &format!("/api/v1/stations/{andorra}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "out of scope");
    let (status, hidden) = app
        .api("GET", &format!("/api/v1/stations/{nc}"), None)
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a non-commercial licence: never shown {hidden}"
    );
    let (_, vaduz) = app
        .api(
            "GET",
            "/api/v1/stations?lat=47.14&lng=9.52&radius_km=30",
            None,
        )
        .await;
    let shown: Vec<i64> = vaduz
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["station"]["ocm_id"].as_i64().unwrap())
        .collect();
    assert!(!shown.contains(&nc) && !shown.is_empty(), "{vaduz}");

    // Attribution names the data provider and its licence (from the reference data).
    let registry_poi = pois
        .iter()
        .find(|p| p["DataProviderID"] == 18)
        .expect("a UK registry POI in the sample")["ID"]
        .as_i64()
        .unwrap();
    let data = ok(
        &app,
        None,
        "query($id: ID!) { station(id: $id) { attribution dataProvider { id title license } } }",
        json!({"id": registry_poi.to_string()}),
    )
    .await;
    let station = &data["station"];
    assert_eq!(station["dataProvider"]["id"], 18);
    assert!(
        station["attribution"]
            .as_str()
            .unwrap()
            .contains("© Open Charge Map contributors; data: UK National Charge Point Registry (Contains public sector information licensed under the Open Government Licence"),
        "{station}"
    );

    // OCM changes one POI and delists another, and 45 more change within the same
    // minute (more than a page): the next run pulls only changes, and all of them.
    let (renamed, delisted) = (gb[10], gb[20]);
    ocm.edit(renamed, |p| {
        p["AddressInfo"]["Title"] = json!("Renamed by OCM")
    });
    ocm.edit(delisted, |p| p["SubmissionStatusTypeID"] = json!(1001));
    for id in &gb[50..95] {
        ocm.edit(*id, |p| p["UsageCost"] = json!("£0.79/kWh"));
    }
    let before = ocm.seen().len();
    let run = sync(&app).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        (&run["fetched"], &run["updated"], &run["inserted"]),
        (&json!(47), &json!(47), &json!(0)),
        "{run}"
    );
    let seen = ocm.seen();
    for s in poi_requests(&seen[before..]) {
        assert!(
            s.query.contains_key("modifiedsince"),
            "no second full import"
        );
    }
    for id in &gb[50..95] {
        let (_, one) = app
            .api("GET", &format!("/api/v1/stations/{id}"), None)
            .await;
        assert_eq!(
            one["station"]["usage_cost"], "£0.79/kWh",
            "every change of the minute"
        );
    }
    let (_, one) = app
        .api("GET", &format!("/api/v1/stations/{renamed}"), None)
        .await;
    assert_eq!(one["station"]["title"], "Renamed by OCM");
    let (_, gone) = app
        .api("GET", &format!("/api/v1/stations/{delisted}"), None)
        .await;
    assert_eq!(gone["station"]["active"], false);
    let (_, near) = app
        .api(
            "GET",
            "/api/v1/stations?lat=51.5&lng=-0.12&radius_km=100&limit=1000",
            None,
        )
        .await;
    assert!(
        near.as_array()
            .unwrap()
            .iter()
            .all(|h| h["station"]["ocm_id"] != delisted),
        "delisted POIs are hidden"
    );
    assert_eq!(near.as_array().unwrap().len(), london.len() - 1);

    let (_, runs) = app.api("GET", "/api/v1/ocm/runs", None).await;
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["run_id"], run["run_id"], "newest first");
    assert_eq!(runs[1]["trigger"], "api");
}

#[tokio::test]
async fn a_failed_sync_resumes_where_it_stopped_and_a_missing_key_is_said_plainly() {
    let pois = real_pois();
    let gb = sorted_ids(&pois, 1);
    let ocm = FakeOcm::start(pois);
    let mut app = spawn(Backend::Sqlite, &ocm_settings(&ocm, "GB", "25")).await;

    // Without a key OCM answers 403: the run fails and says what to set.
    let key = app.setting("JUCR__OCM__API_KEY");
    app.set_setting("JUCR__OCM__API_KEY", None);
    let out = app.cli(&["ocm", "sync"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("ocm.api_key"), "{stderr}");
    app.set_setting("JUCR__OCM__API_KEY", key.as_deref());

    // OCM breaks after two pages: the run fails, keeping what it stored.
    ocm.fail_after(Some(2));
    let run = sync(&app).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(run["error"].as_str().unwrap().contains("resumes"), "{run}");
    assert_eq!(run["inserted"], 50);

    // The next run (from the command line) starts after the last stored POI.
    ocm.fail_after(None);
    let before = ocm.seen().len();
    let out = app.cli(&["ocm", "sync"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("succeeded: 50 fetched, 50 inserted"),
        "{stdout}"
    );
    let seen = ocm.seen();
    let first = poi_requests(&seen[before..])[0].clone();
    assert_eq!(first.query["greaterthanid"], gb[49].to_string());

    let (_, runs) = app.api("GET", "/api/v1/ocm/runs", None).await;
    let statuses: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["succeeded", "failed", "failed"]);
    assert!(runs[2]["error"].as_str().unwrap().contains("403"));
    let near = "/api/v1/stations?lat=51.5&lng=-0.12&radius_km=100&limit=1000";
    let (_, all) = app.api("GET", near, None).await;
    let listed = all.as_array().unwrap().len();
    assert!(listed >= 90, "{listed}");

    // OCM removes a POI (status 200): it is never listed again, not even as a change.
    let removed = gb[7];
    ocm.edit(removed, |p| p["StatusTypeID"] = json!(200));
    let run = sync(&app).await;
    assert_eq!(
        (&run["status"], &run["fetched"]),
        (&json!("succeeded"), &json!(0)),
        "{run}"
    );
    let (_, still) = app
        .api("GET", &format!("/api/v1/stations/{removed}"), None)
        .await;
    assert_eq!(still["station"]["active"], true);
    // A full import (weekly, or asked for) finds what OCM no longer lists, and hides it.
    let (status, body) = app
        .api("POST", "/api/v1/ocm/sync", Some(json!({"full": "yes"})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, run) = app
        .api("POST", "/api/v1/ocm/sync", Some(json!({"full": true})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let run = finished(&app, run["run_id"].as_str().unwrap()).await;
    assert_eq!(
        (&run["status"], &run["fetched"], &run["updated"]),
        (&json!("succeeded"), &json!(99), &json!(1)),
        "{run}"
    );
    let (_, gone) = app
        .api("GET", &format!("/api/v1/stations/{removed}"), None)
        .await;
    assert_eq!(gone["station"]["active"], false, "{gone}");
    let (_, now) = app.api("GET", near, None).await;
    assert_eq!(now.as_array().unwrap().len(), listed - 1);
}

/// A counter's value, 0 before it was first counted.
async fn counter(app: &TestApp, name: &str) -> f64 {
    app.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

const HITS: &str = "jucr_station_cache_total{result=\"hit\"}";
const MISSES: &str = "jucr_station_cache_total{result=\"miss\"}";

#[tokio::test]
async fn cloud_searches_are_cached_invalidated_by_a_sync_and_show_our_chargers_live() {
    use crate::charge_point::ChargePoint;
    let pois = real_pois();
    let ocm = FakeOcm::start(pois.clone());
    // Cloud: PostgreSQL, the mirror in MongoDB, the cache and the live status in Redis.
    let app = spawn(Backend::Postgres, &ocm_settings(&ocm, "GB", "1000")).await;
    let run = sync(&app).await;
    assert_eq!(
        (&run["status"], &run["inserted"]),
        (&json!("succeeded"), &json!(100)),
        "{run}"
    );

    let (lat, lng) = (51.515, -0.05);
    let url = format!("/api/v1/stations?lat={lat}&lng={lng}&radius_km=5&limit=1000");
    let (status, first) = app.api("GET", &url, None).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let nearest = first[0]["station"]["ocm_id"]
        .as_i64()
        .expect("stations there");
    let hits = counter(&app, HITS).await;
    let (_, second) = app.api("GET", &url, None).await;
    assert_eq!(second, first);
    assert_eq!(
        counter(&app, HITS).await,
        hits + 1.0,
        "the second search is a cache hit"
    );
    let (_, one) = app
        .api("GET", &format!("/api/v1/stations/{nearest}"), None)
        .await;
    let (_, again) = app
        .api("GET", &format!("/api/v1/stations/{nearest}"), None)
        .await;
    assert_eq!(one, again);
    assert_eq!(counter(&app, HITS).await, hits + 2.0);

    // A sync that changes the mirror invalidates every cached answer at once.
    ocm.edit(nearest, |p| {
        p["AddressInfo"]["Title"] = json!("Renamed by OCM")
    });
    let run = sync(&app).await;
    assert_eq!(
        (&run["status"], &run["updated"]),
        (&json!("succeeded"), &json!(1)),
        "{run}"
    );
    let misses = counter(&app, MISSES).await;
    let (_, third) = app.api("GET", &url, None).await;
    assert_eq!(third[0]["station"]["title"], "Renamed by OCM");
    let (_, one) = app
        .api("GET", &format!("/api/v1/stations/{nearest}"), None)
        .await;
    assert_eq!(one["station"]["title"], "Renamed by OCM");
    assert_eq!(counter(&app, MISSES).await, misses + 2.0);
    assert!(one["live"].is_null(), "none of ours stands there yet");

    // One of our chargers stands at that station.
    let password = "live-overlay-password-1";
    app.register_charger("CP-LIVE", password).await;
    let link = |ocm_id: Value| json!({ "ocm_id": ocm_id });
    let (status, body) = app
        .api(
            "PUT",
            "/api/v1/chargers/CP-LIVE/station",
            Some(link(json!(nearest))),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = app
        .api(
            "PUT",
            "/api/v1/chargers/CP-LIVE/station",
            Some(link(json!(1))),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "not in the mirror"
    );
    let (status, _) = app
        .api(
            "PUT",
            "/api/v1/chargers/NOPE/station",
            Some(link(json!(nearest))),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, offline) = app
        .api("GET", &format!("/api/v1/stations/{nearest}"), None)
        .await;
    assert_eq!(
        (&offline["live"]["chargers"], &offline["live"]["connected"]),
        (&json!(1), &json!(0))
    );

    let mut cp = ChargePoint::connect(app.ws_url("CP-LIVE"), "CP-LIVE", Some(password)).await;
    cp.boot().await;
    let status_of =
        |status: &str| json!({"connectorId": 1, "errorCode": "NoError", "status": status});
    cp.call("StatusNotification", status_of("Available")).await;
    let available = format!("{url}&available_now=true");
    let open = eventually(
        Duration::from_secs(10),
        "the station to show available",
        || async {
            let (_, hits) = app.api("GET", &available, None).await;
            (hits.as_array().unwrap().len() == 1).then_some(hits)
        },
    )
    .await;
    assert_eq!(open[0]["station"]["ocm_id"], nearest);
    assert_eq!(
        (&open[0]["live"]["available"], &open[0]["live"]["connected"]),
        (&json!(1), &json!(1))
    );
    let data = ok(
        &app,
        None,
        "query($n: LatLng!) { stations(near: $n, radiusKm: 5, filter: {availableNow: true}) { edges { node { id live { available connectors { connectorId status } } } } } }",
        json!({"n": {"lat": lat, "lng": lng}}),
    )
    .await;
    let edges = data["stations"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1);
    assert_eq!(
        edges[0]["node"]["live"]["connectors"],
        json!([{"connectorId": 1, "status": "Available"}])
    );

    // Charging: no longer available now, shown occupied.
    cp.call("StatusNotification", status_of("Charging")).await;
    eventually(
        Duration::from_secs(10),
        "the station to show occupied",
        || async {
            let (_, hits) = app.api("GET", &available, None).await;
            let (_, one) = app
                .api("GET", &format!("/api/v1/stations/{nearest}"), None)
                .await;
            (hits.as_array().unwrap().is_empty() && one["live"]["occupied"] == 1).then_some(())
        },
    )
    .await;
    cp.close().await;
    eventually(
        Duration::from_secs(10),
        "the charger to show offline",
        || async {
            let (_, one) = app
                .api("GET", &format!("/api/v1/stations/{nearest}"), None)
                .await;
            (one["live"]["connected"] == 0).then_some(())
        },
    )
    .await;
}
