//! Radius search over a 50,000-station mirror: the embedded store (SQLite) and the cloud
//! one (MongoDB behind the Redis cache: a miss goes to MongoDB, a hit is Redis only).
//! `cargo bench --bench stations`. The cloud part needs `JUCR_BENCH_MONGODB_URL` (or
//! `JUCR_TEST_MONGODB_URL`, as the test script exports it) and `JUCR_BENCH_REDIS_URL`
//! (default redis://127.0.0.1:6379); without a MongoDB it says so and measures the
//! embedded store only. `JUCR_BENCH_STATIONS` changes the size.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use jucr::domain::ports::StationStore;
use jucr::domain::station::{Station, StationFilter};
use secrecy::SecretString;
use serde_json::Value;

/// The real London sample, the shape every generated station takes.
fn templates() -> Vec<Value> {
    let raw = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ocm/poi-london-100.compact.json"
    ))
    .expect("the OCM sample");
    serde_json::from_str::<Vec<Value>>(&raw).expect("JSON")
}

/// A small deterministic generator (no dependency, same stations every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` stations shaped like the sample, spread over Great Britain (49.9–58.6 N,
/// 6.2 W–1.8 E), a third of them around London as in real life.
pub fn generate(n: usize) -> Vec<Station> {
    let templates = templates();
    let mut rng = Lcg(42);
    (0..n)
        .map(|i| {
            let mut poi = templates[i % templates.len()].clone();
            let (lat, lng) = if i % 3 == 0 {
                (51.28 + rng.next() * 0.42, -0.51 + rng.next() * 0.84)
            } else {
                (49.9 + rng.next() * 8.7, -6.2 + rng.next() * 8.0)
            };
            poi["ID"] = Value::from(1_000_000 + i as i64);
            poi["AddressInfo"]["Latitude"] = Value::from(lat);
            poi["AddressInfo"]["Longitude"] = Value::from(lng);
            Station::from_ocm(&poi).expect("generated POIs are valid")
        })
        .collect()
}

/// 50,000 under `cargo bench`; a quick 2,000 when run as a test (`cargo test --benches`).
fn size() -> usize {
    let measuring = std::env::args().any(|a| a == "--bench");
    std::env::var("JUCR_BENCH_STATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if measuring { 50_000 } else { 2_000 })
}

async fn load(store: &dyn StationStore, stations: &[Station]) {
    for chunk in stations.chunks(1000) {
        store
            .upsert_stations(chunk)
            .await
            .expect("loading stations");
    }
}

/// Search centres: London and around the country, fixed.
const CENTRES: [(f64, f64); 4] = [
    (51.507, -0.128),
    (53.48, -2.24),
    (55.95, -3.19),
    (51.45, -2.59),
];

fn bench_store(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    store: &dyn StationStore,
    samples: usize,
) {
    let mut group = c.benchmark_group(format!("stations_near/{name}"));
    group.measurement_time(Duration::from_secs(5));
    group.sample_size(samples);
    let fast = StationFilter {
        min_power_kw: Some(50.0),
        ..Default::default()
    };
    for (label, radius, filter) in [
        ("5km_first20", 5.0, StationFilter::default()),
        ("25km_first20", 25.0, StationFilter::default()),
        ("25km_50kW_first20", 25.0, fast),
    ] {
        let mut i = 0usize;
        group.bench_function(label, |b| {
            b.iter(|| {
                let (lat, lng) = CENTRES[i % CENTRES.len()];
                i += 1;
                rt.block_on(store.stations_near(lat, lng, radius, black_box(&filter), 0, 20))
                    .expect("search")
            })
        });
    }
    group.finish();
}

fn searches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let stations = generate(size());
    eprintln!("{} stations generated", stations.len());

    // Embedded: the SQLite store, as `cargo run` keeps it.
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = rt.block_on(async {
        let store =
            jucr::persistence::sqlite::SqlStore::open(&dir.path().join("s.sqlite"), false, 4)
                .await
                .expect("SQLite");
        jucr::persistence::sqlite::MIGRATOR
            .run(store.pool())
            .await
            .expect("migrations");
        load(&store, &stations).await;
        store
    });
    bench_store(c, &rt, "embedded_sqlite", &sqlite, 100);

    // Cloud: MongoDB behind the Redis cache.
    let Some(url) = std::env::var("JUCR_BENCH_MONGODB_URL")
        .or_else(|_| std::env::var("JUCR_TEST_MONGODB_URL"))
        .ok()
    else {
        eprintln!("no JUCR_BENCH_MONGODB_URL: the cloud store (MongoDB + Redis) is not measured");
        return;
    };
    let redis =
        std::env::var("JUCR_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let database = format!("jucr_bench_{}", uuid::Uuid::new_v4().simple());
    let metrics = Arc::new(jucr::metrics::Metrics::new());
    let (mongo, cached) = rt.block_on(async {
        let mongo = Arc::new(
            jucr::persistence::mongo::MongoStationStore::connect(
                &SecretString::from(url),
                &database,
            )
            .await
            .expect("MongoDB"),
        );
        mongo.ensure_indexes().await.expect("MongoDB answers");
        load(&*mongo, &stations).await;
        let cached = jucr::persistence::redis::CachedStations::new(
            mongo.clone(),
            jucr::persistence::redis::pool(&SecretString::from(redis)).expect("Redis"),
            &format!("{database}:"),
            Duration::from_secs(600),
            Duration::from_secs(600),
            metrics,
        );
        (mongo, cached)
    });
    // The cached store measured warm: every search of the bench asked once before.
    rt.block_on(async {
        for (lat, lng) in CENTRES {
            for (radius, min_power_kw) in [(5.0, None), (25.0, None), (25.0, Some(50.0))] {
                let filter = StationFilter {
                    min_power_kw,
                    ..Default::default()
                };
                cached
                    .stations_near(lat, lng, radius, &filter, 0, 20)
                    .await
                    .expect("search");
            }
        }
    });
    // Few samples uncached: a test server (SecantusDB's Python one) can take tens of
    // milliseconds a search.
    bench_store(c, &rt, "cloud_mongodb_uncached", &*mongo, 10);
    bench_store(c, &rt, "cloud_mongodb_redis_cached", &cached, 100);
    rt.block_on(mongo.drop_database()).ok();
}

criterion_group!(benches, searches);
criterion_main!(benches);
