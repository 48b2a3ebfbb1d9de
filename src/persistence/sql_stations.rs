// The OpenChargeMap mirror on the SQL backends (embedded SQLite, PostgreSQL), shared
// text like `sql_store.rs`. Radius search: a bounding-box prefilter on an index, then
// the exact great-circle distance, sorted here (never by the server's order).

use crate::domain::ports::{StationStore, UpsertCounts};
use crate::domain::station::{Station, StationFilter, bounding_box, haversine_km};

fn station_from_row(row: &DbRow) -> StoreResult<Station> {
    let data: Json<Station> = row.try_get("data").map_err(backend)?;
    Ok(data.0)
}

#[async_trait]
impl StationStore for SqlStore {
    async fn upsert_stations(&self, stations: &[Station]) -> StoreResult<UpsertCounts> {
        let mut counts = UpsertCounts::default();
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await.map_err(backend)?;
        let now = Utc::now();
        for s in stations {
            let stored = sqlx::query("SELECT data FROM station WHERE ocm_id = $1")
                .bind(s.ocm_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?
                .as_ref()
                .map(station_from_row)
                .transpose()?;
            match &stored {
                Some(old) if old == s => {
                    counts.unchanged += 1;
                    continue;
                }
                Some(old)
                    if matches!((old.date_last_status_update, s.date_last_status_update), (Some(o), Some(n)) if n < o) =>
                {
                    counts.unchanged += 1;
                    continue;
                }
                Some(_) => counts.updated += 1,
                None => counts.inserted += 1,
            }
            sqlx::query(
                "INSERT INTO station (ocm_id, latitude, longitude, active, date_last_status_update, data, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (ocm_id) DO UPDATE SET latitude = excluded.latitude, longitude = excluded.longitude, \
                   active = excluded.active, date_last_status_update = excluded.date_last_status_update, \
                   data = excluded.data, updated_at = excluded.updated_at",
            )
            .bind(s.ocm_id)
            .bind(s.latitude)
            .bind(s.longitude)
            .bind(s.active)
            .bind(s.date_last_status_update)
            .bind(Json(s))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
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
        let (min_lat, max_lat, min_lng, max_lng) = bounding_box(lat, lng, radius_km);
        let rows = sqlx::query(
            "SELECT data FROM station WHERE active AND latitude BETWEEN $1 AND $2 AND longitude BETWEEN $3 AND $4",
        )
        .bind(min_lat)
        .bind(max_lat)
        .bind(min_lng)
        .bind(max_lng)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let mut found = Vec::new();
        for row in &rows {
            let station = station_from_row(row)?;
            let distance = haversine_km(lat, lng, station.latitude, station.longitude);
            if distance <= radius_km && filter.matches(&station) {
                found.push((station, distance));
            }
        }
        found.sort_by(|(a, da), (b, db)| da.total_cmp(db).then(a.ocm_id.cmp(&b.ocm_id)));
        Ok(found.into_iter().skip(offset as usize).take(limit as usize).collect())
    }

    async fn station(&self, ocm_id: i64) -> StoreResult<Option<Station>> {
        sqlx::query("SELECT data FROM station WHERE ocm_id = $1")
            .bind(ocm_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(station_from_row)
            .transpose()
    }
}
