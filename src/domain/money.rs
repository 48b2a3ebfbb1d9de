//! Money in integer minor units with a currency, and the one rounding rule we use.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An ISO 4217 code (three upper-case letters). Every amount we handle has two minor
/// digits (EUR, GBP, USD, CHF...); a currency with another exponent is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    pub const EUR: Currency = Currency(*b"EUR");

    pub fn parse(raw: &str) -> Result<Self, String> {
        let bytes = raw.as_bytes();
        match bytes {
            [a, b, c] if bytes.iter().all(u8::is_ascii_uppercase) => {
                if matches!(
                    raw,
                    "JPY" | "KRW" | "BHD" | "KWD" | "OMR" | "TND" | "JOD" | "IQD" | "LYD"
                ) {
                    return Err(format!("{raw} does not have two minor digits"));
                }
                Ok(Currency([*a, *b, *c]))
            }
            _ => Err(format!(
                "{:?} is not an ISO 4217 currency code",
                super::echo::echo(raw)
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("built from ASCII upper-case letters only; qed")
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Currency::parse(&value)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> Self {
        c.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount in minor units (cents) of a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub amount: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount: i64, currency: Currency) -> Self {
        Money { amount, currency }
    }

    pub fn zero(currency: Currency) -> Self {
        Money {
            amount: 0,
            currency,
        }
    }

    /// The amount in major units, for wire formats that want a decimal number (OCPP
    /// `totalCost`). Exact for every amount below 2^53 cents; only ever shown, never
    /// computed with.
    pub fn as_decimal(&self) -> f64 {
        self.amount as f64 / 100.0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.amount < 0 { "-" } else { "" };
        let abs = self.amount.unsigned_abs();
        write!(f, "{sign}{}.{:02} {}", abs / 100, abs % 100, self.currency)
    }
}

/// `numerator / denominator` rounded half away from zero: the rounding rule for every
/// amount we compute (0.5 cent rounds to 1 cent, -0.5 to -1).
pub fn div_round(numerator: i128, denominator: i128) -> i128 {
    assert!(
        denominator > 0,
        "rounding divides by a positive denominator"
    );
    let quotient = numerator / denominator;
    let remainder = numerator % denominator;
    if remainder.abs() * 2 >= denominator {
        quotient + numerator.signum()
    } else {
        quotient
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_half_away_from_zero() {
        assert_eq!(div_round(5, 10), 1);
        assert_eq!(div_round(4, 10), 0);
        assert_eq!(div_round(15, 10), 2);
        assert_eq!(div_round(-5, 10), -1);
        assert_eq!(div_round(-4, 10), 0);
        assert_eq!(div_round(25, 10), 3);
    }

    #[test]
    fn currencies_are_checked_and_amounts_shown() {
        assert_eq!(Currency::parse("EUR").unwrap(), Currency::EUR);
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("EURO").is_err());
        assert!(Currency::parse("JPY").is_err());
        assert_eq!(Money::new(-1234, Currency::EUR).to_string(), "-12.34 EUR");
        assert_eq!(Money::new(5, Currency::EUR).to_string(), "0.05 EUR");
    }
}
