//! Billing records and their rules: tariffs as stored, payment methods (gateway tokens
//! only: card numbers never enter the system), invoices with their gapless numbers,
//! payments and when a failed one is tried again.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ids::{ChargerId, SessionId};
use super::money::Money;
use super::tariff::{Charge, Tariff};

/// A tariff as operators manage it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TariffRecord {
    pub tariff_id: Uuid,
    #[serde(flatten)]
    pub tariff: Tariff,
    /// Applies to drivers without a plan.
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
}

/// Where a tariff override applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TariffScope {
    Charger(ChargerId),
    Operator(String),
}

impl TariffScope {
    pub fn kind(&self) -> &'static str {
        match self {
            TariffScope::Charger(_) => "charger",
            TariffScope::Operator(_) => "operator",
        }
    }

    pub fn key(&self) -> &str {
        match self {
            TariffScope::Charger(id) => id.as_str(),
            TariffScope::Operator(op) => op,
        }
    }
}

/// The tariffs that could apply to a session, as the store finds them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TariffCandidates {
    pub charger: Option<TariffRecord>,
    pub operator: Option<TariffRecord>,
    pub plan: Option<TariffRecord>,
    pub default: Option<TariffRecord>,
}

impl TariffCandidates {
    /// A charger's own tariff, else its operator's, else the driver's plan, else the default.
    pub fn applicable(self) -> Option<TariffRecord> {
        self.charger
            .or(self.operator)
            .or(self.plan)
            .or(self.default)
    }
}

/// What a gateway tells about a token: enough to show the card, nothing to charge it
/// without the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardDetails {
    pub brand: String,
    pub last4: String,
    pub exp_month: u32,
    pub exp_year: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PaymentMethod {
    pub payment_method_id: Uuid,
    pub user_id: Uuid,
    pub gateway: String,
    /// The gateway's token; never shown by the APIs.
    #[serde(skip)]
    pub gateway_token: String,
    #[serde(flatten)]
    pub card: CardDetails,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceKind {
    /// One charging session.
    Session,
    /// A month of a flat-rate subscription.
    Subscription,
}

impl InvoiceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceKind::Session => "session",
            InvoiceKind::Subscription => "subscription",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [InvoiceKind::Session, InvoiceKind::Subscription]
            .into_iter()
            .find(|k| k.as_str() == raw)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    /// Issued, payment pending.
    Open,
    Paid,
    /// The payment failed for good.
    PaymentFailed,
}

impl InvoiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Open => "open",
            InvoiceStatus::Paid => "paid",
            InvoiceStatus::PaymentFailed => "payment_failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            InvoiceStatus::Open,
            InvoiceStatus::Paid,
            InvoiceStatus::PaymentFailed,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

/// An invoice about to be stored; the store gives it its number.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInvoice {
    pub invoice_id: Uuid,
    pub user_id: Uuid,
    pub kind: InvoiceKind,
    pub session_id: Option<SessionId>,
    /// The month a subscription invoice covers (`2026-11`).
    pub period: Option<String>,
    pub tariff_id: Uuid,
    pub tariff_name: String,
    pub energy_wh: i64,
    pub charge: Charge,
    pub issued_at: DateTime<Utc>,
}

impl NewInvoice {
    /// Nothing to pay: the invoice is settled when issued.
    pub fn initial_status(&self) -> InvoiceStatus {
        if self.charge.gross.amount == 0 {
            InvoiceStatus::Paid
        } else {
            InvoiceStatus::Open
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Invoice {
    pub invoice_id: Uuid,
    /// `YYYY-NNNNNN`, gapless within a year.
    pub invoice_number: String,
    pub user_id: Uuid,
    pub kind: InvoiceKind,
    pub session_id: Option<SessionId>,
    pub period: Option<String>,
    pub tariff_id: Option<Uuid>,
    pub tariff_name: String,
    pub energy_wh: i64,
    #[serde(flatten)]
    pub charge: Charge,
    pub status: InvoiceStatus,
    pub issued_at: DateTime<Utc>,
}

/// The number of the `seq`th invoice of `year`.
pub fn invoice_number(year: i32, seq: i64) -> String {
    format!("{year}-{seq:06}")
}

/// The month (`2026-11`) an instant falls in, in UTC.
pub fn billing_period(at: DateTime<Utc>) -> String {
    format!("{:04}-{:02}", at.year(), at.month())
}

/// The first instant of the month `at` falls in, in UTC.
pub fn month_start(at: DateTime<Utc>) -> DateTime<Utc> {
    at.date_naive()
        .with_day(1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .expect("the first of a month at midnight exists; qed")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Pending,
    Completed,
    Failed,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Completed => "completed",
            PaymentStatus::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            PaymentStatus::Pending,
            PaymentStatus::Completed,
            PaymentStatus::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Payment {
    pub payment_id: Uuid,
    pub invoice_id: Uuid,
    pub user_id: Uuid,
    pub amount: Money,
    pub status: PaymentStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// How many of them the gateway declined (or could not make: no usable card).
    pub declines: u32,
    /// Transient failures (timeouts, gateway errors) since the last reported failure.
    pub transient_streak: u32,
    /// Failures reported as PAYMENT_FAILED so far (the dunning rounds used).
    pub reported_failures: u32,
    /// The idempotency key of the current round of attempts: the same for quiet retries
    /// of a transient failure, new after a reported failure (a processor replays the
    /// first outcome of a key, so a new card needs a new key).
    #[serde(skip)]
    pub charge_key: Uuid,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub gateway_charge_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Why an attempt to charge failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The card was refused; trying again at once would be refused again.
    #[error("declined: {0}")]
    Declined(String),
    /// The token is unknown to the gateway (or there is no payment method at all).
    #[error("no usable payment method: {0}")]
    InvalidToken(String),
    /// The gateway did not answer, or answered with a transient error.
    #[error("gateway unavailable: {0}")]
    Unavailable(String),
}

impl GatewayError {
    /// Whether the driver has to act (new card, funds) before a retry can succeed.
    pub fn needs_driver(&self) -> bool {
        !matches!(self, GatewayError::Unavailable(_))
    }
}

/// When failed payments are tried again.
///
/// - A transient failure (gateway down, timeout) is retried quietly after
///   `transient_base`, doubling, until `transient_attempts` failed in a row.
/// - A decline (or no usable card), or transient failures that outlasted the quiet
///   retries, are reported as PAYMENT_FAILED and tried again after each of
///   `decline_retries` in turn (dunning); after the last the payment has failed for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub transient_base: Duration,
    pub transient_attempts: u32,
    pub decline_retries: Vec<Duration>,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Retry quietly after this long, with the same idempotency key.
    RetryQuietly(Duration),
    /// Report PAYMENT_FAILED, and retry after this long (a new round, a new key).
    ReportAndRetry(Duration),
    /// Report PAYMENT_FAILED; the payment has failed for good.
    GiveUp,
}

impl RetryPolicy {
    /// `transient_streak` counts this failure when it is transient; `reported` is how
    /// many failures were reported before this one.
    pub fn after(
        &self,
        error: &GatewayError,
        transient_streak: u32,
        reported: u32,
    ) -> AfterFailure {
        if !error.needs_driver() && transient_streak < self.transient_attempts {
            let factor = 2u32.saturating_pow(transient_streak.saturating_sub(1).min(16));
            return AfterFailure::RetryQuietly(self.transient_base.saturating_mul(factor));
        }
        match self.decline_retries.get(reported as usize) {
            Some(wait) => AfterFailure::ReportAndRetry(*wait),
            None => AfterFailure::GiveUp,
        }
    }
}

impl fmt::Display for InvoiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a tariff is billed monthly (a subscription).
pub fn is_subscription(tariff: &Tariff) -> bool {
    tariff.monthly_charge().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(min: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap() + chrono::Duration::minutes(min)
    }

    #[test]
    fn numbers_and_periods_are_stable_text() {
        assert_eq!(invoice_number(2026, 42), "2026-000042");
        assert_eq!(billing_period(at(0)), "2026-11");
        assert_eq!(
            month_start(at(0)),
            Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn transient_failures_back_off_quietly_and_then_join_the_dunning_schedule() {
        let day = Duration::from_secs(86_400);
        let policy = RetryPolicy {
            transient_base: Duration::from_secs(1),
            transient_attempts: 3,
            decline_retries: vec![day, 3 * day],
        };
        let down = GatewayError::Unavailable("timeout".into());
        let quiet = |s| AfterFailure::RetryQuietly(Duration::from_secs(s));
        assert_eq!(policy.after(&down, 1, 0), quiet(1));
        assert_eq!(policy.after(&down, 2, 0), quiet(2));
        // An outage that outlasts the quiet retries is reported, and tried again later.
        assert_eq!(policy.after(&down, 3, 0), AfterFailure::ReportAndRetry(day));
        let declined = GatewayError::Declined("insufficient funds".into());
        assert_eq!(
            policy.after(&declined, 0, 0),
            AfterFailure::ReportAndRetry(day)
        );
        assert_eq!(
            policy.after(&declined, 0, 1),
            AfterFailure::ReportAndRetry(3 * day)
        );
        assert_eq!(policy.after(&declined, 0, 2), AfterFailure::GiveUp);
        // A transient failure during dunning is retried quietly first.
        assert_eq!(policy.after(&down, 1, 1), quiet(1));
        assert_eq!(policy.after(&down, 3, 2), AfterFailure::GiveUp);
    }

    #[test]
    fn the_charger_override_wins_then_operator_then_plan_then_default() {
        let record = |name: &str| TariffRecord {
            tariff_id: Uuid::new_v4(),
            tariff: Tariff {
                name: name.into(),
                currency: super::super::money::Currency::EUR,
                vat_basis_points: 1900,
                kind: super::super::tariff::TariffKind::PayAsYouGo {
                    price_per_kwh_milli: 1,
                    session_fee: 0,
                    idle_fee_per_minute: 0,
                    idle_grace_minutes: 0,
                },
            },
            is_default: false,
            created_at: at(0),
        };
        let all = TariffCandidates {
            charger: Some(record("site")),
            operator: Some(record("cpo")),
            plan: Some(record("plan")),
            default: Some(record("default")),
        };
        assert_eq!(all.clone().applicable().unwrap().tariff.name, "site");
        let no_site = TariffCandidates {
            charger: None,
            ..all.clone()
        };
        assert_eq!(no_site.applicable().unwrap().tariff.name, "cpo");
        let only_default = TariffCandidates {
            default: Some(record("default")),
            ..Default::default()
        };
        assert_eq!(only_default.applicable().unwrap().tariff.name, "default");
        assert!(TariffCandidates::default().applicable().is_none());
    }
}
