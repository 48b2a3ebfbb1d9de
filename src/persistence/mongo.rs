//! The OpenChargeMap mirror in MongoDB (cloud): a `stations` collection with a
//! 2dsphere index on a GeoJSON point and indexes for the filters, and OCM's reference
//! data in `reference_data`. Targets MongoDB 6.0 and later (only classic commands:
//! `update` with many statements, `$geoNear`); the contract tests also run against
//! SecantusDB, a wire-compatible server.
//!
//! Radius searches use `$geoNear` and then sort explicitly (distance, then id), never
//! trusting a server's order; distances are measured again here with the same formula
//! as the SQL store, so that every backend answers alike.

use std::collections::HashMap;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use secrecy::{ExposeSecret, SecretString};

use chrono::{DateTime, Utc};

use crate::domain::ocm::ScopeArea;
use crate::domain::ports::{StationStore, StoreError, StoreResult, UpsertCounts};
use crate::domain::station::{Station, StationFilter, haversine_km};

/// MongoDB measures GeoJSON distances on a sphere of this radius (metres).
const MONGO_EARTH_RADIUS_M: f64 = 6_378_100.0;
/// Ours (mean Earth radius, km), as in [`haversine_km`].
const EARTH_RADIUS_KM: f64 = 6371.0088;
/// A duplicate key: a conditional upsert lost to a newer record.
const DUPLICATE_KEY: i32 = 11000;

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

fn corrupt(reason: String) -> StoreError {
    StoreError::Backend(reason.into())
}

pub struct MongoStationStore {
    db: Database,
    stations: Collection<Document>,
    reference: Collection<Document>,
}

impl MongoStationStore {
    /// Connects (lazily: the driver finds the servers on first use) to `database`.
    pub async fn connect(url: &SecretString, database: &str) -> anyhow::Result<Self> {
        let client = mongodb::Client::with_uri_str(url.expose_secret()).await?;
        let db = client.database(database);
        Ok(MongoStationStore {
            stations: db.collection("stations"),
            reference: db.collection("reference_data"),
            db,
        })
    }

    /// Creates the indexes (idempotent).
    pub async fn ensure_indexes(&self) -> StoreResult<()> {
        let models = [
            doc! {"location": "2dsphere"},
            doc! {"active": 1, "connection_type_ids": 1},
            doc! {"active": 1, "operator_id": 1},
            doc! {"active": 1, "max_power_kw": 1},
            doc! {"date_last_status_update_ms": 1},
            doc! {"active": 1, "country_id": 1, "seen_at_ms": 1},
        ]
        .into_iter()
        .map(|keys| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::default())
                .build()
        });
        self.stations
            .create_indexes(models)
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// Drops the whole database (tests).
    pub async fn drop_database(&self) -> StoreResult<()> {
        self.db.drop().await.map_err(backend)
    }
}

fn millis(t: Option<chrono::DateTime<chrono::Utc>>) -> Bson {
    t.map_or(Bson::Null, |t| Bson::Int64(t.timestamp_millis()))
}

/// The stored document: the station, plus the fields queries use.
fn document(s: &Station) -> StoreResult<Document> {
    let station = bson::serialize_to_document(s).map_err(backend)?;
    let types: Vec<i64> = s
        .connections
        .iter()
        .filter_map(|c| c.connection_type_id)
        .collect();
    Ok(doc! {
        "_id": s.ocm_id,
        "location": {"type": "Point", "coordinates": [s.longitude, s.latitude]},
        "active": s.active,
        "operator_id": s.operator_id.map_or(Bson::Null, Bson::Int64),
        "connection_type_ids": types,
        "max_power_kw": s.max_power_kw().map_or(Bson::Null, Bson::Double),
        "data_provider_id": s.data_provider_id.map_or(Bson::Null, Bson::Int64),
        "country_id": s.country_id.map_or(Bson::Null, Bson::Int64),
        "date_last_status_update_ms": millis(s.date_last_status_update),
        "station": station,
    })
}

/// Takes the document under `key` out of `d`, without copying it.
fn take_document(d: &mut Document, key: &str) -> Option<Document> {
    match d.remove(key) {
        Some(Bson::Document(inner)) => Some(inner),
        _ => None,
    }
}

fn station_of(mut d: Document) -> StoreResult<Station> {
    let inner = take_document(&mut d, "station")
        .ok_or_else(|| corrupt("stored station without its data".into()))?;
    bson::deserialize_from_document(inner).map_err(backend)
}

fn query(filter: &StationFilter) -> Document {
    let mut q = doc! {"active": true};
    if !filter.connection_type_ids.is_empty() {
        q.insert(
            "connection_type_ids",
            doc! {"$in": filter.connection_type_ids.clone()},
        );
    }
    if let Some(min) = filter.min_power_kw {
        q.insert("max_power_kw", doc! {"$gte": min});
    }
    if !filter.operator_ids.is_empty() {
        q.insert("operator_id", doc! {"$in": filter.operator_ids.clone()});
    }
    if let Some(ids) = &filter.ocm_ids {
        q.insert("_id", doc! {"$in": ids.clone()});
    }
    if !filter.excluded_provider_ids.is_empty() {
        q.insert(
            "data_provider_id",
            doc! {"$nin": filter.excluded_provider_ids.clone()},
        );
    }
    q
}

#[async_trait]
impl StationStore for MongoStationStore {
    async fn upsert_stations(&self, stations: &[Station]) -> StoreResult<UpsertCounts> {
        let mut counts = UpsertCounts::default();
        if stations.is_empty() {
            return Ok(counts);
        }
        let ids: Vec<i64> = stations.iter().map(|s| s.ocm_id).collect();
        let stored: HashMap<i64, Station> = self
            .stations
            .find(doc! {"_id": {"$in": ids}})
            .projection(doc! {"station": 1})
            .await
            .map_err(backend)?
            .try_collect::<Vec<Document>>()
            .await
            .map_err(backend)?
            .into_iter()
            .map(|d| station_of(d).map(|s| (s.ocm_id, s)))
            .collect::<StoreResult<_>>()?;
        // The last of several records of one POI in a batch is the one that counts.
        let mut latest: HashMap<i64, &Station> = HashMap::new();
        for s in stations {
            if latest.insert(s.ocm_id, s).is_some() {
                counts.unchanged += 1;
            }
        }
        let mut updates = Vec::new();
        let mut written: Vec<(i64, bool)> = Vec::new();
        let mut ordered: Vec<&Station> = latest.into_values().collect();
        ordered.sort_by_key(|s| s.ocm_id);
        for s in ordered {
            let old = stored.get(&s.ocm_id);
            if old.is_some_and(|old| !s.replaces(old)) {
                counts.unchanged += 1;
                continue;
            }
            written.push((s.ocm_id, old.is_none()));
            // Written only if what is stored then is not newer (another writer may have
            // been quicker): otherwise the upsert collides on _id and is counted unchanged.
            // (`$not: {$gt}` also matches a missing date, and keeps to the _id index:
            // an `$or` here makes some servers scan the collection per statement.)
            let mut q = doc! {"_id": s.ocm_id};
            if let Some(t) = s.date_last_status_update {
                q.insert(
                    "date_last_status_update_ms",
                    doc! {"$not": {"$gt": t.timestamp_millis()}},
                );
            }
            updates.push(doc! {"q": q, "u": document(s)?, "upsert": true});
        }
        if updates.is_empty() {
            return Ok(counts);
        }
        let answer = self
            .db
            .run_command(doc! {
                "update": self.stations.name(),
                "updates": updates,
                "ordered": false,
            })
            .await
            .map_err(backend)?;
        let mut lost = std::collections::HashSet::new();
        if let Ok(errors) = answer.get_array("writeErrors") {
            for e in errors {
                let e = e.as_document().cloned().unwrap_or_default();
                let code = e.get_i32("code").unwrap_or_default();
                let index = e.get_i32("index").unwrap_or(-1);
                if code != DUPLICATE_KEY {
                    return Err(corrupt(format!(
                        "MongoDB refused a station: {}",
                        e.get_str("errmsg").unwrap_or("no message")
                    )));
                }
                lost.insert(index as usize);
            }
        }
        for (i, (_, new)) in written.iter().enumerate() {
            match (lost.contains(&i), new) {
                (true, _) => counts.unchanged += 1,
                (false, true) => counts.inserted += 1,
                (false, false) => counts.updated += 1,
            }
        }
        Ok(counts)
    }

    async fn stations_near(
        &self,
        lat: f64,
        lng: f64,
        radius_km: f64,
        filter: &StationFilter,
        offset: u32,
        limit: u32,
    ) -> StoreResult<Vec<(Station, f64)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // The same central angle on MongoDB's sphere, a hair wider; the exact cut-off
        // is ours, below. Both distances grow with the angle, so the order is the same.
        let max_m = radius_km / EARTH_RADIUS_KM * MONGO_EARTH_RADIUS_M * (1.0 + 1e-9) + 0.01;
        let pipeline = vec![
            doc! {"$geoNear": {
                "near": {"type": "Point", "coordinates": [lng, lat]},
                "key": "location",
                "distanceField": "distance_m",
                "maxDistance": max_m,
                "spherical": true,
                "query": query(filter),
            }},
            doc! {"$sort": {"distance_m": 1, "_id": 1}},
            doc! {"$skip": i64::from(offset)},
            doc! {"$limit": i64::from(limit)},
            doc! {"$project": {"station": 1}},
        ];
        let docs: Vec<Document> = self
            .stations
            .aggregate(pipeline)
            .await
            .map_err(backend)?
            .try_collect()
            .await
            .map_err(backend)?;
        let mut found = Vec::with_capacity(docs.len());
        for d in docs {
            let station = station_of(d)?;
            let distance = haversine_km(lat, lng, station.latitude, station.longitude);
            if distance <= radius_km {
                found.push((station, distance));
            }
        }
        found.sort_by(|(a, da), (b, db)| da.total_cmp(db).then(a.ocm_id.cmp(&b.ocm_id)));
        Ok(found)
    }

    async fn station(&self, ocm_id: i64) -> StoreResult<Option<Station>> {
        self.stations
            .find_one(doc! {"_id": ocm_id})
            .projection(doc! {"station": 1})
            .await
            .map_err(backend)?
            .map(station_of)
            .transpose()
    }

    async fn touch_stations(&self, ocm_ids: &[i64], at: DateTime<Utc>) -> StoreResult<()> {
        for chunk in ocm_ids.chunks(1000) {
            self.stations
                .update_many(
                    doc! {"_id": {"$in": chunk.to_vec()}},
                    doc! {"$set": {"seen_at_ms": at.timestamp_millis()}},
                )
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    async fn deactivate_unseen(&self, area: &ScopeArea, before: DateTime<Utc>) -> StoreResult<u64> {
        let mut q = doc! {
            "active": true,
            "seen_at_ms": {"$not": {"$gte": before.timestamp_millis()}},
        };
        match *area {
            ScopeArea::Country(id) => {
                q.insert("country_id", id);
            }
            ScopeArea::Box {
                south,
                west,
                north,
                east,
            } => {
                q.insert("station.latitude", doc! {"$gte": south, "$lte": north});
                q.insert("station.longitude", doc! {"$gte": west, "$lte": east});
            }
        }
        let done = self
            .stations
            .update_many(q, doc! {"$set": {"active": false, "station.active": false}})
            .await
            .map_err(backend)?;
        Ok(done.modified_count)
    }

    async fn save_reference_data(&self, raw: &serde_json::Value) -> StoreResult<()> {
        let data = bson::serialize_to_document(raw).map_err(backend)?;
        self.reference
            .replace_one(
                doc! {"_id": "ocm"},
                doc! {"_id": "ocm", "data": data, "fetched_at_ms": chrono::Utc::now().timestamp_millis()},
            )
            .upsert(true)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn reference_data(&self) -> StoreResult<Option<serde_json::Value>> {
        let Some(mut d) = self
            .reference
            .find_one(doc! {"_id": "ocm"})
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let data = take_document(&mut d, "data")
            .ok_or_else(|| corrupt("stored reference data: no document under \"data\"".into()))?;
        // Stored from JSON, so it holds only JSON's types: serde reads it back as such.
        let value = bson::deserialize_from_document(data)
            .map_err(|e| corrupt(format!("stored reference data: {e}")))?;
        Ok(Some(value))
    }

    fn station_backend(&self) -> &'static str {
        "mongodb"
    }
}
