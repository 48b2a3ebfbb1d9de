// The OpenChargeMap mirror on the SQL backends (embedded SQLite, PostgreSQL), shared
// text like `sql_store.rs`. Radius search: a bounding-box prefilter on an index, then
// the exact great-circle distance, sorted here (never by the server's order).

use crate::domain::ocm::{ScopeArea, SyncCounts, SyncCursor, SyncRun, SyncStatus, SyncTrigger};
use crate::domain::ports::{OcmStore, StationStore, UpsertCounts};
use crate::domain::station::{Station, StationFilter, bounding_box, haversine_km};

fn station_from_row(row: &DbRow) -> StoreResult<Station> {
    let data: Json<Station> = row.try_get("data").map_err(backend)?;
    Ok(data.0)
}

#[async_trait]
impl StationStore for SqlStore {
    async fn upsert_stations(&self, stations: &[Station]) -> StoreResult<UpsertCounts> {
        let mut counts = UpsertCounts::default();
        let mut tx = self.begin_write().await?;
        let now = Utc::now();
        // What is stored, read once per chunk rather than once per station.
        let mut stored: std::collections::HashMap<i64, std::borrow::Cow<'_, Station>> =
            std::collections::HashMap::new();
        for chunk in stations.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<Db>::new("SELECT data FROM station WHERE ocm_id");
            push_in(&mut q, chunk.iter().map(|s| s.ocm_id));
            for row in q.build().fetch_all(&mut *tx).await.map_err(backend)? {
                let station = station_from_row(&row)?;
                stored.insert(station.ocm_id, std::borrow::Cow::Owned(station));
            }
        }
        for s in stations {
            let old = stored.get(&s.ocm_id);
            if old.is_some_and(|old| !s.replaces(old)) {
                counts.unchanged += 1;
                continue;
            }
            let existed = old.is_some();
            // The write itself refuses an older record too: another writer may have
            // stored a newer one since the read (PostgreSQL's READ COMMITTED).
            let written = sqlx::query(
                "INSERT INTO station (ocm_id, latitude, longitude, active, date_last_status_update, data, updated_at, country_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (ocm_id) DO UPDATE SET latitude = excluded.latitude, longitude = excluded.longitude, \
                   active = excluded.active, date_last_status_update = excluded.date_last_status_update, \
                   data = excluded.data, updated_at = excluded.updated_at, country_id = excluded.country_id \
                 WHERE station.date_last_status_update IS NULL OR excluded.date_last_status_update IS NULL \
                   OR excluded.date_last_status_update >= station.date_last_status_update",
            )
            .bind(s.ocm_id)
            .bind(s.latitude)
            .bind(s.longitude)
            .bind(s.active)
            .bind(s.date_last_status_update)
            .bind(Json(s))
            .bind(now)
            .bind(s.country_id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            match (written.rows_affected(), existed) {
                (0, _) => counts.unchanged += 1,
                (_, true) => counts.updated += 1,
                (_, false) => counts.inserted += 1,
            }
            if written.rows_affected() > 0 {
                // A later record of the same POI in this batch compares with this one.
                stored.insert(s.ocm_id, std::borrow::Cow::Borrowed(s));
            }
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
        // First only positions (from the index's box), measured and sorted here; then
        // the stations themselves, nearest first, a chunk at a time, until the page is
        // full: a wide search reads thousands of positions but only a page of stations.
        let (min_lat, max_lat, min_lng, max_lng) = bounding_box(lat, lng, radius_km);
        let rows = sqlx::query(
            "SELECT ocm_id, latitude, longitude FROM station \
             WHERE active AND latitude BETWEEN $1 AND $2 AND longitude BETWEEN $3 AND $4",
        )
        .bind(min_lat)
        .bind(max_lat)
        .bind(min_lng)
        .bind(max_lng)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let only: Option<std::collections::HashSet<i64>> =
            filter.ocm_ids.as_ref().map(|ids| ids.iter().copied().collect());
        let mut near = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.try_get("ocm_id").map_err(backend)?;
            let distance = haversine_km(lat, lng, row.try_get("latitude").map_err(backend)?, row.try_get("longitude").map_err(backend)?);
            if distance <= radius_km && only.as_ref().is_none_or(|ids| ids.contains(&id)) {
                near.push((id, distance));
            }
        }
        near.sort_by(|(a, da), (b, db)| da.total_cmp(db).then(a.cmp(b)));
        let (offset, limit) = (offset as usize, limit as usize);
        let mut found = Vec::with_capacity(limit);
        if limit == 0 {
            return Ok(found);
        }
        let mut matched = 0;
        for chunk in near.chunks((offset + limit + 16).clamp(64, 512)) {
            let mut q = QueryBuilder::<Db>::new("SELECT data FROM station WHERE ocm_id");
            push_in(&mut q, chunk.iter().map(|(id, _)| *id));
            let mut stations: std::collections::HashMap<i64, Station> = q
                .build()
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?
                .iter()
                .map(|row| station_from_row(row).map(|s| (s.ocm_id, s)))
                .collect::<StoreResult<_>>()?;
            for (id, distance) in chunk {
                // Gone or deactivated since the first read: left out.
                let Some(station) = stations.remove(id).filter(|s| s.active && filter.matches(s)) else {
                    continue;
                };
                matched += 1;
                if matched > offset {
                    found.push((station, *distance));
                    if found.len() == limit {
                        return Ok(found);
                    }
                }
            }
        }
        Ok(found)
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

    async fn touch_stations(&self, ocm_ids: &[i64], at: DateTime<Utc>) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        for chunk in ocm_ids.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<Db>::new("UPDATE station SET seen_at = ");
            q.push_bind(at);
            q.push(" WHERE ocm_id");
            push_in(&mut q, chunk.iter().copied());
            q.build().execute(&self.writes).await.map_err(backend)?;
        }
        Ok(())
    }

    async fn deactivate_unseen(&self, area: &ScopeArea, before: DateTime<Utc>) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let mut q = QueryBuilder::<Db>::new("SELECT data FROM station WHERE active AND (seen_at IS NULL OR seen_at < ");
        q.push_bind(before);
        q.push(")");
        match *area {
            ScopeArea::Country(id) => {
                q.push(" AND country_id = ");
                q.push_bind(id);
            }
            ScopeArea::Box { south, west, north, east } => {
                q.push(" AND latitude BETWEEN ");
                q.push_bind(south);
                q.push(" AND ");
                q.push_bind(north);
                q.push(" AND longitude BETWEEN ");
                q.push_bind(west);
                q.push(" AND ");
                q.push_bind(east);
            }
        }
        let rows = q.build().fetch_all(&mut *tx).await.map_err(backend)?;
        let mut gone = 0;
        for row in &rows {
            let mut station = station_from_row(row)?;
            station.active = false;
            sqlx::query("UPDATE station SET active = $1, data = $2, updated_at = $3 WHERE ocm_id = $4")
                .bind(false)
                .bind(Json(&station))
                .bind(Utc::now())
                .bind(station.ocm_id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            gone += 1;
        }
        tx.commit().await.map_err(backend)?;
        Ok(gone)
    }

    async fn save_reference_data(&self, raw: &serde_json::Value) -> StoreResult<()> {
        self.execute_write(
            sqlx::query(
                "INSERT INTO ocm_reference_data (id, data, fetched_at) VALUES (1, $1, $2) \
                 ON CONFLICT (id) DO UPDATE SET data = excluded.data, fetched_at = excluded.fetched_at",
            )
            .bind(Json(raw))
            .bind(Utc::now()),
        )
        .await?;
        Ok(())
    }

    async fn reference_data(&self) -> StoreResult<Option<serde_json::Value>> {
        let row = sqlx::query("SELECT data FROM ocm_reference_data WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.map(|r| r.try_get::<Json<serde_json::Value>, _>("data").map(|j| j.0))
            .transpose()
            .map_err(backend)
    }

    fn station_backend(&self) -> &'static str {
        BACKEND
    }
}

/// The run was marked interrupted (its lease ran out) while it still ran: it must stop.
fn lease_lost(run_id: uuid::Uuid) -> StoreError {
    StoreError::Conflict(format!("sync run {run_id} lost its lease (another replica took over)"))
}

fn run_count(row: &DbRow, column: &str) -> StoreResult<u64> {
    let n: i64 = row.try_get(column).map_err(backend)?;
    Ok(n.max(0) as u64)
}

fn sync_run_from_row(row: &DbRow) -> StoreResult<SyncRun> {
    let trigger: String = row.try_get("trigger").map_err(backend)?;
    let status: String = row.try_get("status").map_err(backend)?;
    Ok(SyncRun {
        run_id: row.try_get("run_id").map_err(backend)?,
        trigger: SyncTrigger::parse(&trigger).ok_or_else(|| corrupt("sync trigger", &trigger))?,
        status: SyncStatus::parse(&status).ok_or_else(|| corrupt("sync status", &status))?,
        started_at: row.try_get("started_at").map_err(backend)?,
        finished_at: row.try_get("finished_at").map_err(backend)?,
        counts: SyncCounts {
            fetched: run_count(row, "fetched")?,
            inserted: run_count(row, "inserted")?,
            updated: run_count(row, "updated")?,
            unchanged: run_count(row, "unchanged")?,
            excluded: run_count(row, "excluded")?,
            failed: run_count(row, "failed")?,
        },
        error: row.try_get("error").map_err(backend)?,
    })
}

fn bind_counts<'q>(query: DbQuery<'q>, c: &SyncCounts) -> DbQuery<'q> {
    [c.fetched, c.inserted, c.updated, c.unchanged, c.excluded, c.failed]
        .into_iter()
        .fold(query, |q, n| q.bind(i64::try_from(n).unwrap_or(i64::MAX)))
}

#[async_trait]
impl OcmStore for SqlStore {
    async fn start_sync_run(
        &self,
        trigger: SyncTrigger,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Option<SyncRun>> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE ocm_sync_run SET status = 'interrupted', finished_at = $1, \
               error = 'the replica running it stopped' \
             WHERE status = 'running' AND lease_until < $1",
        )
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let run = SyncRun {
            run_id: uuid::Uuid::new_v4(),
            trigger,
            status: SyncStatus::Running,
            started_at: now,
            finished_at: None,
            counts: SyncCounts::default(),
            error: None,
        };
        let inserted = sqlx::query(
            "INSERT INTO ocm_sync_run (run_id, trigger, status, started_at, lease_until) \
             VALUES ($1, $2, 'running', $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(run.run_id)
        .bind(trigger.as_str())
        .bind(now)
        .bind(lease_until)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok((inserted.rows_affected() == 1).then_some(run))
    }

    async fn record_sync_progress(
        &self,
        run_id: uuid::Uuid,
        counts: &SyncCounts,
        lease_until: DateTime<Utc>,
        cursor: Option<&SyncCursor>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let held = bind_counts(
            sqlx::query(
                "UPDATE ocm_sync_run SET lease_until = $1, fetched = $2, inserted = $3, updated = $4, \
                   unchanged = $5, excluded = $6, failed = $7 WHERE run_id = $8 AND status = 'running'",
            )
            .bind(lease_until),
            counts,
        )
        .bind(run_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if held.rows_affected() == 0 {
            return Err(lease_lost(run_id));
        }
        if let Some(c) = cursor {
            sqlx::query(
                "INSERT INTO ocm_sync_cursor (scope, full_done, last_id, modified_since, change_last_id, newest_seen, \
                   full_started_at, full_finished_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (scope) DO UPDATE SET \
                   full_done = excluded.full_done, last_id = excluded.last_id, modified_since = excluded.modified_since, \
                   change_last_id = excluded.change_last_id, newest_seen = excluded.newest_seen, \
                   full_started_at = excluded.full_started_at, full_finished_at = excluded.full_finished_at, \
                   updated_at = excluded.updated_at",
            )
            .bind(&c.scope)
            .bind(c.full_done)
            .bind(c.last_id)
            .bind(c.modified_since)
            .bind(c.change_last_id)
            .bind(c.newest_seen)
            .bind(c.full_started_at)
            .bind(c.full_finished_at)
            .bind(Utc::now())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn renew_sync_lease(&self, run_id: uuid::Uuid, lease_until: DateTime<Utc>) -> StoreResult<()> {
        let held = self.execute_write(
            sqlx::query("UPDATE ocm_sync_run SET lease_until = $1 WHERE run_id = $2 AND status = 'running'")
                .bind(lease_until)
                .bind(run_id),
        )
        .await?;
        if held.rows_affected() == 0 {
            return Err(lease_lost(run_id));
        }
        Ok(())
    }

    async fn finish_sync_run(
        &self,
        run_id: uuid::Uuid,
        status: SyncStatus,
        counts: &SyncCounts,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        bind_counts(
            sqlx::query(
                "UPDATE ocm_sync_run SET status = $1, finished_at = $2, error = $3, fetched = $4, inserted = $5, \
                   updated = $6, unchanged = $7, excluded = $8, failed = $9 WHERE run_id = $10 AND status = 'running'",
            )
            .bind(status.as_str())
            .bind(now)
            .bind(error),
            counts,
        )
        .bind(run_id)
        .execute(&self.writes)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn sync_runs(&self, limit: u32) -> StoreResult<Vec<SyncRun>> {
        sqlx::query("SELECT * FROM ocm_sync_run ORDER BY started_at DESC, run_id LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(sync_run_from_row)
            .collect()
    }

    async fn sync_run(&self, run_id: uuid::Uuid) -> StoreResult<Option<SyncRun>> {
        sqlx::query("SELECT * FROM ocm_sync_run WHERE run_id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(sync_run_from_row)
            .transpose()
    }

    async fn sync_cursor(&self, scope: &str) -> StoreResult<Option<SyncCursor>> {
        let Some(row) = sqlx::query("SELECT * FROM ocm_sync_cursor WHERE scope = $1")
            .bind(scope)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        Ok(Some(SyncCursor {
            scope: row.try_get("scope").map_err(backend)?,
            full_done: row.try_get("full_done").map_err(backend)?,
            last_id: row.try_get("last_id").map_err(backend)?,
            modified_since: row.try_get("modified_since").map_err(backend)?,
            change_last_id: row.try_get("change_last_id").map_err(backend)?,
            newest_seen: row.try_get("newest_seen").map_err(backend)?,
            full_started_at: row.try_get("full_started_at").map_err(backend)?,
            full_finished_at: row.try_get("full_finished_at").map_err(backend)?,
        }))
    }

    async fn link_station(&self, charger: &ChargerId, ocm_id: Option<i64>) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let known = sqlx::query("SELECT 1 FROM charger WHERE charger_id = $1")
            .bind(charger.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .is_some();
        if !known {
            return Ok(false);
        }
        match ocm_id {
            Some(ocm_id) => sqlx::query(
                "INSERT INTO station_link (charger_id, ocm_id) VALUES ($1, $2) \
                 ON CONFLICT (charger_id) DO UPDATE SET ocm_id = excluded.ocm_id",
            )
            .bind(charger.as_str())
            .bind(ocm_id),
            None => sqlx::query("DELETE FROM station_link WHERE charger_id = $1").bind(charger.as_str()),
        }
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn station_links(&self, ocm_ids: Option<&[i64]>) -> StoreResult<Vec<(i64, ChargerId)>> {
        let mut q = QueryBuilder::<Db>::new("SELECT ocm_id, charger_id FROM station_link");
        if let Some(ids) = ocm_ids {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            q.push(" WHERE ocm_id");
            push_in(&mut q, ids.iter().copied());
        }
        q.push(" ORDER BY ocm_id, charger_id");
        q.build()
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(|row| {
                let id: String = row.try_get("charger_id").map_err(backend)?;
                let charger = ChargerId::parse(id.clone()).map_err(|_| corrupt("charger id", &id))?;
                Ok((row.try_get("ocm_id").map_err(backend)?, charger))
            })
            .collect()
    }
}
