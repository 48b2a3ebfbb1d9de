// Account storage (names, refresh tokens, vehicles, a driver's own tokens and sessions),
// shared text for both SQL backends like `sql_store.rs`.

use crate::domain::account::{RefreshToken, Rotation, Vehicle};
use crate::domain::TokenState;
use crate::domain::ports::AccountStore;

fn vehicle_from_row(row: &DbRow) -> StoreResult<Vehicle> {
    Ok(Vehicle {
        vehicle_id: row.try_get("vehicle_id").map_err(backend)?,
        user_id: row.try_get("user_id").map_err(backend)?,
        make: row.try_get("make").map_err(backend)?,
        model: row.try_get("model").map_err(backend)?,
        license_plate: row.try_get("license_plate").map_err(backend)?,
        battery_capacity_kwh: row.try_get("battery_capacity_kwh").map_err(backend)?,
        created_at: row.try_get("created_at").map_err(backend)?,
    })
}

async fn insert_refresh_token(conn: &mut Conn, t: &RefreshToken) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO refresh_token (refresh_token_id, user_id, family_id, token_hash, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(t.refresh_token_id)
    .bind(t.user_id)
    .bind(t.family_id)
    .bind(t.token_hash.as_str())
    .bind(t.created_at)
    .bind(t.expires_at)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
}

/// Revokes every live refresh token of a family (reuse detected, or logout).
async fn revoke_family(conn: &mut Conn, family: Uuid, now: DateTime<Utc>) -> StoreResult<()> {
    sqlx::query("UPDATE refresh_token SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL")
        .bind(family)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    Ok(())
}

#[async_trait]
impl AccountStore for SqlStore {
    async fn set_user_name(&self, user: Uuid, name: Option<&str>) -> StoreResult<()> {
        self.execute_write(
            sqlx::query("UPDATE app_user SET name = $2 WHERE user_id = $1")
                .bind(user)
                .bind(name),
        )
        .await?;
        Ok(())
    }

    async fn user_name(&self, user: Uuid) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT name FROM app_user WHERE user_id = $1")
            .bind(user)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Ok(match row {
            Some(row) => row.try_get("name").map_err(backend)?,
            None => None,
        })
    }

    async fn add_refresh_token(&self, token: &RefreshToken) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        let mut conn = self.writes.acquire().await.map_err(backend)?;
        insert_refresh_token(&mut conn, token).await
    }

    async fn token_state(&self, user: Uuid) -> StoreResult<Option<TokenState>> {
        let row = sqlx::query("SELECT token_version, role FROM app_user WHERE user_id = $1")
            .bind(user)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let role: String = row.try_get("role").map_err(backend)?;
        Ok(Some(TokenState {
            version: row.try_get("token_version").map_err(backend)?,
            role: Role::parse(&role).ok_or_else(|| corrupt("role", &role))?,
        }))
    }

    async fn end_access_tokens(&self, user: Uuid) -> StoreResult<()> {
        self.execute_write(
            sqlx::query("UPDATE app_user SET token_version = token_version + 1 WHERE user_id = $1")
                .bind(user),
        )
        .await?;
        Ok(())
    }

    async fn set_role(&self, user: Uuid, role: Role) -> StoreResult<Option<User>> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "UPDATE app_user SET role = $2, token_version = token_version + 1 WHERE user_id = $1 RETURNING *",
        )
        .bind(user)
        .bind(role.as_str())
        .fetch_optional(&self.writes)
        .await
        .map_err(backend)?
        .as_ref()
        .map(user_from_row)
        .transpose()
    }

    async fn rotate_refresh_token(&self, presented: &str, next: &RefreshToken, now: DateTime<Utc>) -> StoreResult<Rotation> {
        let mut tx = self.begin_write().await?;
        // Taking the token is one conditional update: of two concurrent uses, one wins.
        let taken = sqlx::query(
            "UPDATE refresh_token SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL \
             AND revoked_at IS NULL AND expires_at > $2 RETURNING user_id, family_id",
        )
        .bind(presented)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        if let Some(row) = taken {
            let successor = RefreshToken {
                user_id: row.try_get("user_id").map_err(backend)?,
                family_id: row.try_get("family_id").map_err(backend)?,
                ..next.clone()
            };
            insert_refresh_token(&mut tx, &successor).await?;
            tx.commit().await.map_err(backend)?;
            return Ok(Rotation::Rotated { user_id: successor.user_id });
        }
        let used = sqlx::query("SELECT family_id FROM refresh_token WHERE token_hash = $1 AND used_at IS NOT NULL")
            .bind(presented)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        let Some(used) = used else {
            return Ok(Rotation::Invalid);
        };
        let family: Uuid = used.try_get("family_id").map_err(backend)?;
        revoke_family(&mut tx, family, now).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Rotation::Reused)
    }

    async fn revoke_refresh_family(&self, token_hash: &str, now: DateTime<Utc>) -> StoreResult<Option<Uuid>> {
        let mut tx = self.begin_write().await?;
        let Some(row) = sqlx::query("SELECT family_id, user_id FROM refresh_token WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let family: Uuid = row.try_get("family_id").map_err(backend)?;
        let user: Uuid = row.try_get("user_id").map_err(backend)?;
        revoke_family(&mut tx, family, now).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(user))
    }

    async fn add_vehicle(&self, v: &Vehicle) -> StoreResult<()> {
        self.execute_write(
            sqlx::query(
                "INSERT INTO vehicle (vehicle_id, user_id, make, model, license_plate, battery_capacity_kwh, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(v.vehicle_id)
            .bind(v.user_id)
            .bind(v.make.as_str())
            .bind(v.model.as_str())
            .bind(v.license_plate.as_deref())
            .bind(v.battery_capacity_kwh)
            .bind(v.created_at),
        )
        .await?;
        Ok(())
    }

    async fn vehicles(&self, user: Uuid) -> StoreResult<Vec<Vehicle>> {
        sqlx::query("SELECT * FROM vehicle WHERE user_id = $1 ORDER BY created_at, vehicle_id")
            .bind(user)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(vehicle_from_row)
            .collect()
    }

    async fn delete_vehicle(&self, user: Uuid, vehicle: Uuid) -> StoreResult<bool> {
        let done = self.execute_write(
            sqlx::query("DELETE FROM vehicle WHERE vehicle_id = $1 AND user_id = $2")
                .bind(vehicle)
                .bind(user),
        )
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn user_id_tokens(&self, user: Uuid) -> StoreResult<Vec<IdTokenRecord>> {
        sqlx::query("SELECT * FROM id_token WHERE user_id = $1 ORDER BY updated_at, id_token_key")
            .bind(user)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(token_from_row)
            .collect()
    }

    async fn insert_id_token(&self, r: &IdTokenRecord) -> StoreResult<bool> {
        let done = self
            .execute_write(bind_id_token(
                sqlx::query(
                    "INSERT INTO id_token (id_token_key, id_token, status, token_type, expiry_date, group_id, updated_at, user_id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id_token_key) DO NOTHING",
                ),
                r,
            ))
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_user_id_token(&self, user: Uuid, token: &IdToken) -> StoreResult<bool> {
        let _turn = self.write_turn().await;
        // A token the operator blocked stays (deleting and adding it again would unblock it).
        let done = sqlx::query("DELETE FROM id_token WHERE id_token_key = $1 AND user_id = $2 AND status <> 'Blocked'")
            .bind(token.key())
            .bind(user)
            .execute(&self.writes)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn session_owner(&self, session: SessionId) -> StoreResult<Option<Uuid>> {
        let row = sqlx::query("SELECT user_id FROM session WHERE session_id = $1")
            .bind(session.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Ok(match row {
            Some(row) => row.try_get("user_id").map_err(backend)?,
            None => None,
        })
    }

    async fn user_sessions(&self, user: Uuid, offset: u32, limit: u32) -> StoreResult<Vec<Session>> {
        sqlx::query(select_sessions!("WHERE user_id = $1 ORDER BY session_id DESC LIMIT $2 OFFSET $3"))
        .bind(user)
        .bind(i64::from(limit.max(1)))
        .bind(i64::from(offset))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(session_from_row)
        .collect()
    }

    async fn count_user_sessions(&self, user: Uuid) -> StoreResult<u64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM session WHERE user_id = $1",
        )
        .bind(user)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        let n: i64 = row.try_get("n").map_err(backend)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
