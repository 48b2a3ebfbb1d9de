//! Payment gateway adapters (the [`PaymentGateway`] port).
//!
//! The built-in `sandbox` gateway runs offline and behaves like a card processor's test
//! mode: the app would tokenize a card with the gateway itself; here, these documented
//! test tokens stand for test cards (the README lists them):
//!
//! | token                 | card               | a charge                                         |
//! |-----------------------|--------------------|--------------------------------------------------|
//! | `tok_visa`            | Visa ···4242       | succeeds                                         |
//! | `tok_mastercard`      | Mastercard ···4444 | succeeds                                         |
//! | `tok_chargeDeclined`  | Visa ···0002       | is declined                                      |
//! | `tok_timeout`         | Visa ···0341       | never answers (the caller's timeout fires)       |
//! | `tok_timeoutOnce`     | Visa ···3220       | never answers the first time per payment, then succeeds |
//!
//! Any other token is unknown to the gateway. As with a real processor, the first
//! outcome of an idempotency key (a charge, or a decline) is replayed for every later
//! request with that key: a retried payment is charged once, and a retry with a new
//! card needs a new key. The ledger lives in memory (a sandbox, not a bank).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::billing::{CardDetails, GatewayError, PaymentMethod};
use crate::domain::ports::{BillingStore, ChargeRequest, PaymentGateway, StoreError};

/// Why a card could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AddCardError {
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Asks the gateway what card `gateway_token` stands for and stores it as `user`'s newest
/// payment method (the one charged). Shared by the operator API and the app's.
pub async fn add_card(
    gateway: &dyn PaymentGateway,
    store: &dyn BillingStore,
    user: Uuid,
    gateway_token: String,
) -> Result<PaymentMethod, AddCardError> {
    let card = gateway.card(&gateway_token).await?;
    let method = PaymentMethod {
        payment_method_id: Uuid::new_v4(),
        user_id: user,
        gateway: gateway.name().to_owned(),
        gateway_token,
        card,
        created_at: chrono::Utc::now(),
    };
    store.add_payment_method(&method).await?;
    Ok(method)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Succeed,
    Decline,
    Hang,
    HangOnce,
}

const TEST_CARDS: [(&str, &str, &str, Behaviour); 5] = [
    ("tok_visa", "visa", "4242", Behaviour::Succeed),
    ("tok_mastercard", "mastercard", "4444", Behaviour::Succeed),
    ("tok_chargeDeclined", "visa", "0002", Behaviour::Decline),
    ("tok_timeout", "visa", "0341", Behaviour::Hang),
    ("tok_timeoutOnce", "visa", "3220", Behaviour::HangOnce),
];

fn test_card(token: &str) -> Option<(CardDetails, Behaviour)> {
    TEST_CARDS
        .iter()
        .find(|(t, ..)| *t == token)
        .map(|(_, brand, last4, behaviour)| {
            (
                CardDetails {
                    brand: (*brand).to_owned(),
                    last4: (*last4).to_owned(),
                    exp_month: 12,
                    exp_year: 2034,
                },
                *behaviour,
            )
        })
}

#[derive(Default)]
struct Ledger {
    /// The outcome of each idempotency key, replayed for every later request with that
    /// key (as card processors do): a charge id, or a decline.
    outcomes: HashMap<Uuid, Result<String, GatewayError>>,
    /// Attempts seen, by idempotency key.
    attempts: HashMap<Uuid, u32>,
}

#[derive(Default)]
pub struct SandboxGateway {
    ledger: Mutex<Ledger>,
}

impl SandboxGateway {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl PaymentGateway for SandboxGateway {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    async fn card(&self, gateway_token: &str) -> Result<CardDetails, GatewayError> {
        test_card(gateway_token)
            .map(|(card, _)| card)
            .ok_or_else(|| GatewayError::InvalidToken("unknown to the sandbox gateway".into()))
    }

    async fn charge(&self, request: &ChargeRequest) -> Result<String, GatewayError> {
        let (_, behaviour) = test_card(&request.gateway_token)
            .ok_or_else(|| GatewayError::InvalidToken("unknown to the sandbox gateway".into()))?;
        let attempt = {
            let mut ledger = self
                .ledger
                .lock()
                .expect("ledger lock is never poisoned: no panics while held; qed");
            if let Some(outcome) = ledger.outcomes.get(&request.idempotency_key) {
                return outcome.clone();
            }
            let attempt = ledger.attempts.entry(request.idempotency_key).or_default();
            *attempt += 1;
            *attempt
        };
        let outcome = match behaviour {
            Behaviour::Hang => std::future::pending().await,
            Behaviour::HangOnce if attempt == 1 => std::future::pending().await,
            Behaviour::Decline => Err(GatewayError::Declined("card declined".into())),
            Behaviour::Succeed | Behaviour::HangOnce => {
                Ok(format!("ch_sandbox_{}", Uuid::new_v4().simple()))
            }
        };
        self.ledger
            .lock()
            .expect("ledger lock is never poisoned: no panics while held; qed")
            .outcomes
            .insert(request.idempotency_key, outcome.clone());
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::{Currency, Money};

    fn request(token: &str, key: Uuid) -> ChargeRequest {
        ChargeRequest {
            idempotency_key: key,
            gateway_token: token.into(),
            amount: Money::new(1113, Currency::EUR),
            description: "test".into(),
        }
    }

    #[tokio::test]
    async fn test_tokens_behave_as_documented_and_charges_are_idempotent() {
        let gateway = SandboxGateway::new();
        assert_eq!(gateway.card("tok_visa").await.unwrap().last4, "4242");
        assert!(matches!(
            gateway.card("4242424242424242").await,
            Err(GatewayError::InvalidToken(_))
        ));
        let key = Uuid::new_v4();
        let first = gateway.charge(&request("tok_visa", key)).await.unwrap();
        assert_eq!(
            gateway.charge(&request("tok_visa", key)).await.unwrap(),
            first
        );
        let declined = Uuid::new_v4();
        assert!(matches!(
            gateway
                .charge(&request("tok_chargeDeclined", declined))
                .await,
            Err(GatewayError::Declined(_))
        ));
        assert!(
            matches!(
                gateway.charge(&request("tok_visa", declined)).await,
                Err(GatewayError::Declined(_))
            ),
            "a key's decline is replayed, even with another card"
        );
        let once = Uuid::new_v4();
        let wait = std::time::Duration::from_millis(50);
        let first =
            tokio::time::timeout(wait, gateway.charge(&request("tok_timeoutOnce", once))).await;
        assert!(first.is_err(), "the first attempt never answers");
        let second =
            tokio::time::timeout(wait, gateway.charge(&request("tok_timeoutOnce", once))).await;
        assert!(second.unwrap().is_ok(), "the second goes through");
    }
}
