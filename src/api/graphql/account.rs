//! Accounts: register, log in, refresh and log out; the driver's own profile, vehicles,
//! tokens and cards.

use async_graphql::{Context, ID, Object};
use chrono::{Duration, Utc};
use uuid::Uuid;

use super::types::{
    AuthPayload, IdTokenView, PaymentMethodView, UserView, VehicleInput, VehicleView,
};
use super::{Code, GraphqlState, Viewer, error, internal, state, store_error, viewer_id};
use crate::domain::account::{RefreshToken, Rotation, Vehicle};
use crate::domain::billing::GatewayError;
use crate::domain::ports::StoreError;
use crate::domain::{AuthorizationStatus, Email, IdToken, IdTokenRecord, Role, TokenType, User};
use crate::payment::{AddCardError, add_card};
use crate::security;

/// How long a refresh token lives.
const REFRESH_TTL_DAYS: i64 = 30;

#[derive(Default)]
pub struct AccountQuery;

#[Object]
impl AccountQuery {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<UserView> {
        let id = viewer_id(ctx)?;
        let store = &state(ctx).services.store;
        let user = store
            .user(id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| error(Code::Unauthenticated, "this account no longer exists"))?;
        let name = store.user_name(id).await.map_err(store_error)?;
        Ok(UserView::new(&user, name))
    }

    async fn my_vehicles(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<VehicleView>> {
        let id = viewer_id(ctx)?;
        let vehicles = state(ctx)
            .services
            .store
            .vehicles(id)
            .await
            .map_err(store_error)?;
        Ok(vehicles.into_iter().map(Into::into).collect())
    }

    async fn my_id_tokens(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<IdTokenView>> {
        let id = viewer_id(ctx)?;
        let tokens = state(ctx)
            .services
            .store
            .user_id_tokens(id)
            .await
            .map_err(store_error)?;
        Ok(tokens.into_iter().map(Into::into).collect())
    }

    async fn my_payment_methods(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<PaymentMethodView>> {
        let id = viewer_id(ctx)?;
        let methods = state(ctx)
            .services
            .store
            .payment_methods(id)
            .await
            .map_err(store_error)?;
        Ok(methods.into_iter().map(Into::into).collect())
    }
}

#[derive(Default)]
pub struct AccountMutation;

/// A new refresh token: the opaque value handed out, and the record (its hash) kept.
fn new_refresh_token(user_id: Uuid, family_id: Uuid) -> (String, RefreshToken) {
    let value = security::random_secret(48);
    let now = Utc::now();
    let record = RefreshToken {
        refresh_token_id: Uuid::new_v4(),
        user_id,
        family_id,
        token_hash: security::token_hash(&value),
        created_at: now,
        expires_at: now + Duration::days(REFRESH_TTL_DAYS),
    };
    (value, record)
}

/// An access token for `user` at their current token version.
async fn access_token(st: &GraphqlState, user: &User) -> async_graphql::Result<String> {
    let current = st
        .services
        .store
        .token_state(user.user_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| error(Code::Unauthenticated, "this account no longer exists"))?;
    st.keys.issue(user, current).map_err(internal)
}

/// Staff (operators, admins) use the operator API and its short-lived tokens only: the
/// app's 30-day refresh tokens would keep minting tokens for the operator API.
fn driver_only(user: &User) -> async_graphql::Result<()> {
    if user.role.may_operate() {
        return Err(error(
            Code::Forbidden,
            "operator and admin accounts sign in to the operator API (POST /api/v1/auth/login), not the app",
        ));
    }
    Ok(())
}

fn hashing_error(e: security::HashingError) -> async_graphql::Error {
    match e {
        security::HashingError::Busy => error(Code::RateLimited, e.to_string()),
        other => internal(other),
    }
}

async fn sign_in(ctx: &Context<'_>, user: &User) -> async_graphql::Result<AuthPayload> {
    let st = state(ctx);
    driver_only(user)?;
    let (refresh_token, record) = new_refresh_token(user.user_id, Uuid::new_v4());
    st.services
        .store
        .add_refresh_token(&record)
        .await
        .map_err(store_error)?;
    let access_token = access_token(st, user).await?;
    let name = st
        .services
        .store
        .user_name(user.user_id)
        .await
        .map_err(store_error)?;
    Ok(AuthPayload {
        access_token,
        refresh_token,
        user: UserView::new(user, name),
    })
}

fn bad_input(message: impl Into<String>) -> async_graphql::Error {
    error(Code::BadUserInput, message)
}

#[Object]
impl AccountMutation {
    /// Creates a driver account and signs it in. Sign-ups are limited per client
    /// address (each alias in a request counts).
    async fn register(
        &self,
        ctx: &Context<'_>,
        email: String,
        password: String,
        name: Option<String>,
    ) -> async_graphql::Result<AuthPayload> {
        let st = state(ctx);
        let address = ctx.data_opt::<Viewer>().and_then(|v| v.address);
        st.signups.attempt(address).await.map_err(|_| {
            error(
                Code::RateLimited,
                "too many sign-ups from this address; try again later",
            )
        })?;
        let email = Email::parse(&email).map_err(bad_input)?;
        let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
        if name.as_ref().is_some_and(|n| n.chars().count() > 100) {
            return Err(bad_input("name is at most 100 characters"));
        }
        let user = security::new_user(&st.services.hashing, email, password, Role::Driver)
            .await
            .map_err(|e| match e {
                security::NewUserError::Hashing(e) => hashing_error(e),
                other => bad_input(other.to_string()),
            })?;
        let store = &st.services.store;
        store.create_user(&user).await.map_err(|e| match e {
            StoreError::Conflict(_) => error(Code::Conflict, "that e-mail address is registered"),
            other => store_error(other),
        })?;
        store
            .set_user_name(user.user_id, name.as_deref())
            .await
            .map_err(store_error)?;
        sign_in(ctx, &user).await
    }

    /// Signs in a driver. Attempts are limited per account and per address, counted
    /// before the password is checked.
    async fn login(
        &self,
        ctx: &Context<'_>,
        email: String,
        password: String,
    ) -> async_graphql::Result<AuthPayload> {
        let st = state(ctx);
        // Only an address that parses names an account (and is counted as one).
        let email = Email::parse(&email).ok();
        let address = ctx.data_opt::<Viewer>().and_then(|v| v.address);
        let attempt = st
            .logins
            .attempt(email.as_ref(), address)
            .await
            .map_err(|_| error(Code::RateLimited, "too many failed logins; try again later"))?;
        let user = match &email {
            Some(email) => st
                .services
                .store
                .user_by_email(email)
                .await
                .map_err(store_error)?,
            None => None,
        };
        // An unknown account takes as long as a wrong password.
        let hash = user
            .as_ref()
            .map_or_else(crate::api::auth::dummy_hash, |u| u.password_hash.clone());
        let verified = st
            .services
            .hashing
            .verify(password, hash)
            .await
            .map_err(hashing_error)?;
        let Some(user) = user.filter(|_| verified) else {
            return Err(error(Code::Unauthenticated, "invalid e-mail or password"));
        };
        attempt.succeeded().await;
        sign_in(ctx, &user).await
    }

    /// Trades a refresh token for new tokens. Each refresh token works once: presenting a
    /// used one again revokes every token of that login.
    async fn refresh_token(
        &self,
        ctx: &Context<'_>,
        token: String,
    ) -> async_graphql::Result<AuthPayload> {
        let st = state(ctx);
        let (value, next) = new_refresh_token(Uuid::nil(), Uuid::nil());
        let rotation = st
            .services
            .store
            .rotate_refresh_token(&security::token_hash(&token), &next, Utc::now())
            .await
            .map_err(store_error)?;
        let user_id = match rotation {
            Rotation::Rotated { user_id } => user_id,
            Rotation::Reused => {
                tracing::warn!("a used refresh token was presented again; its login is revoked");
                return Err(error(
                    Code::Unauthenticated,
                    "this refresh token was already used; sign in again",
                ));
            }
            Rotation::Invalid => {
                return Err(error(
                    Code::Unauthenticated,
                    "invalid or expired refresh token",
                ));
            }
        };
        let user = st
            .services
            .store
            .user(user_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| error(Code::Unauthenticated, "this account no longer exists"))?;
        if user.role.may_operate() {
            // Promoted since: this login ends here.
            st.services
                .store
                .revoke_refresh_family(&security::token_hash(&value), Utc::now())
                .await
                .map_err(store_error)?;
            driver_only(&user)?;
        }
        let access_token = access_token(st, &user).await?;
        let name = st
            .services
            .store
            .user_name(user_id)
            .await
            .map_err(store_error)?;
        Ok(AuthPayload {
            access_token,
            refresh_token: value,
            user: UserView::new(&user, name),
        })
    }

    /// Revokes the login the refresh token belongs to, and ends the access tokens its
    /// user holds (on other devices too: they get new ones with their own refresh
    /// tokens). False when the token is unknown.
    async fn logout(
        &self,
        ctx: &Context<'_>,
        refresh_token: String,
    ) -> async_graphql::Result<bool> {
        let store = &state(ctx).services.store;
        let Some(user) = store
            .revoke_refresh_family(&security::token_hash(&refresh_token), Utc::now())
            .await
            .map_err(store_error)?
        else {
            return Ok(false);
        };
        store.end_access_tokens(user).await.map_err(store_error)?;
        Ok(true)
    }

    async fn add_vehicle(
        &self,
        ctx: &Context<'_>,
        input: VehicleInput,
    ) -> async_graphql::Result<VehicleView> {
        let user = viewer_id(ctx)?;
        let text = |field: &str, value: &str| {
            let value = value.trim();
            if value.is_empty() || value.chars().count() > 100 {
                Err(bad_input(format!("{field} must be 1 to 100 characters")))
            } else {
                Ok(value.to_owned())
            }
        };
        let vehicle = Vehicle {
            vehicle_id: Uuid::new_v4(),
            user_id: user,
            make: text("make", &input.make)?,
            model: text("model", &input.model)?,
            license_plate: input
                .license_plate
                .map(|p| text("licensePlate", &p))
                .transpose()?,
            battery_capacity_kwh: match input.battery_capacity_kwh {
                Some(kwh) if !(kwh > 0.0 && kwh <= 1000.0) => {
                    return Err(bad_input(
                        "batteryCapacityKwh must be above 0 and at most 1000",
                    ));
                }
                other => other,
            },
            created_at: Utc::now(),
        };
        state(ctx)
            .services
            .store
            .add_vehicle(&vehicle)
            .await
            .map_err(store_error)?;
        Ok(vehicle.into())
    }

    async fn remove_vehicle(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let user = viewer_id(ctx)?;
        let Ok(vehicle) = id.parse::<Uuid>() else {
            return Ok(false);
        };
        state(ctx)
            .services
            .store
            .delete_vehicle(user, vehicle)
            .await
            .map_err(store_error)
    }

    /// Adds an RFID card or app token to the account; chargers accept it at once.
    async fn add_id_token(
        &self,
        ctx: &Context<'_>,
        token: String,
    ) -> async_graphql::Result<IdTokenView> {
        let user = viewer_id(ctx)?;
        let token = IdToken::parse(token.trim()).map_err(|e| bad_input(e.to_string()))?;
        let store = &state(ctx).services.store;
        if let Some(existing) = store.id_token(&token).await.map_err(store_error)? {
            // Someone else's card (or one the operator issued) cannot be claimed by typing it.
            return if existing.user_id == Some(user) {
                Ok(existing.into())
            } else {
                Err(error(Code::Conflict, "this token is registered already"))
            };
        }
        let record = IdTokenRecord {
            id_token: token,
            status: AuthorizationStatus::Accepted,
            token_type: TokenType::Iso14443,
            expiry_date: None,
            group_id: None,
            user_id: Some(user),
            updated_at: Utc::now(),
        };
        if !store.insert_id_token(&record).await.map_err(store_error)? {
            return Err(error(Code::Conflict, "this token is registered already"));
        }
        Ok(record.into())
    }

    async fn remove_id_token(
        &self,
        ctx: &Context<'_>,
        token: String,
    ) -> async_graphql::Result<bool> {
        let user = viewer_id(ctx)?;
        let Ok(token) = IdToken::parse(token.trim()) else {
            return Ok(false);
        };
        state(ctx)
            .services
            .store
            .delete_user_id_token(user, &token)
            .await
            .map_err(store_error)
    }

    /// Adds a card the app tokenized with the payment gateway; the newest is charged.
    async fn add_payment_method(
        &self,
        ctx: &Context<'_>,
        gateway_token: String,
    ) -> async_graphql::Result<PaymentMethodView> {
        let user = viewer_id(ctx)?;
        let services = &state(ctx).services;
        let method = add_card(&*services.gateway, &*services.store, user, gateway_token)
            .await
            .map_err(|e| match e {
                AddCardError::Gateway(GatewayError::Unavailable(_)) => error(
                    Code::Internal,
                    "the payment gateway is unavailable; try again",
                ),
                AddCardError::Gateway(other) => bad_input(format!("gatewayToken: {other}")),
                AddCardError::Store(e) => store_error(e),
            })?;
        Ok(method.into())
    }
}
