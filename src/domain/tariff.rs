//! Tariffs and what a session or a month costs under them. Pure arithmetic on integers.
//!
//! Units and rounding, stated once:
//! - amounts are minor units (cents); per-kWh prices are thousandths of a minor unit
//!   per kWh (`39_500` = 0.395 EUR/kWh), so sub-cent prices are exact;
//! - each invoice line is computed exactly and rounded half away from zero to a minor
//!   unit ([`div_round`]); the net total is the sum of the rounded lines;
//! - VAT is computed once, on the net total, and rounded the same way; gross = net + VAT.

use serde::{Deserialize, Serialize};

use super::money::{Currency, Money, div_round};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TariffKind {
    /// The subscription: a monthly fee covers energy up to a fair-use cap per month;
    /// beyond it each kWh costs `price_per_kwh_milli`.
    FlatRate {
        monthly_fee: i64,
        included_energy_wh: i64,
        price_per_kwh_milli: i64,
    },
    /// Pay as you go: per kWh, a fee per session, and an idle fee per minute a car stays
    /// plugged in without charging, after a grace period.
    PayAsYouGo {
        price_per_kwh_milli: i64,
        session_fee: i64,
        idle_fee_per_minute: i64,
        idle_grace_minutes: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tariff {
    pub name: String,
    pub currency: Currency,
    /// VAT in basis points (1900 = 19 %).
    pub vat_basis_points: u32,
    #[serde(flatten)]
    pub kind: TariffKind,
}

/// Bounds that keep every amount far inside `i64` (checked when a tariff is created):
/// prices and fees up to 10^8 minor units (a million euros), per-kWh prices up to 10^8
/// thousandths (1000 per kWh), included energy up to 10^12 Wh. Session energy is capped at
/// [`MAX_SESSION_WH`] (a gigawatt-hour: a meter reading beyond it is a fault, not a car).
pub const MAX_AMOUNT: i64 = 100_000_000;
pub const MAX_INCLUDED_WH: i64 = 1_000_000_000_000;
pub const MAX_SESSION_WH: i64 = 1_000_000_000;

impl Tariff {
    /// Why the tariff's figures are out of bounds, if they are.
    pub fn out_of_bounds(&self) -> Option<String> {
        if self.vat_basis_points > 10_000 {
            return Some("vat_basis_points is at most 10000 (100 %)".into());
        }
        let (amounts, included) = match &self.kind {
            TariffKind::FlatRate {
                monthly_fee,
                included_energy_wh,
                price_per_kwh_milli,
            } => (
                vec![*monthly_fee, *price_per_kwh_milli],
                *included_energy_wh,
            ),
            TariffKind::PayAsYouGo {
                price_per_kwh_milli,
                session_fee,
                idle_fee_per_minute,
                ..
            } => (
                vec![*price_per_kwh_milli, *session_fee, *idle_fee_per_minute],
                0,
            ),
        };
        if amounts.iter().any(|a| !(0..=MAX_AMOUNT).contains(a)) {
            return Some(format!(
                "prices and fees must be between 0 and {MAX_AMOUNT}"
            ));
        }
        if !(0..=MAX_INCLUDED_WH).contains(&included) {
            return Some(format!(
                "included_energy_wh must be between 0 and {MAX_INCLUDED_WH}"
            ));
        }
        None
    }
}

/// What a session used, as billing needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionUsage {
    pub energy_wh: i64,
    /// Minutes plugged in without charging.
    pub idle_minutes: u32,
    /// Energy the driver already charged this month under the same plan (fair use).
    pub month_energy_before_wh: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    pub description: String,
    /// Net amount in minor units.
    pub amount: i64,
}

/// Lines and totals of one charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    pub lines: Vec<InvoiceLine>,
    pub net: Money,
    pub vat: Money,
    pub gross: Money,
    pub vat_basis_points: u32,
}

fn kwh(wh: i64) -> String {
    format!("{}.{:03} kWh", wh / 1000, (wh % 1000).abs())
}

/// `wh` at `price_per_kwh_milli`, rounded to a minor unit.
fn energy_amount(wh: i64, price_per_kwh_milli: i64) -> i64 {
    div_round(i128::from(wh) * i128::from(price_per_kwh_milli), 1_000_000) as i64
}

impl Tariff {
    fn charge(&self, lines: Vec<InvoiceLine>) -> Charge {
        let net = lines
            .iter()
            .fold(0i64, |sum, l| sum.saturating_add(l.amount));
        let vat = div_round(i128::from(net) * i128::from(self.vat_basis_points), 10_000) as i64;
        Charge {
            lines,
            net: Money::new(net, self.currency),
            vat: Money::new(vat, self.currency),
            gross: Money::new(net.saturating_add(vat), self.currency),
            vat_basis_points: self.vat_basis_points,
        }
    }

    /// What one session costs.
    pub fn session_charge(&self, usage: &SessionUsage) -> Charge {
        let energy = usage.energy_wh.clamp(0, MAX_SESSION_WH);
        let lines = match &self.kind {
            TariffKind::FlatRate {
                included_energy_wh,
                price_per_kwh_milli,
                ..
            } => {
                let left = (included_energy_wh - usage.month_energy_before_wh.max(0)).max(0);
                let within = energy.min(left);
                let beyond = energy - within;
                let mut lines = vec![InvoiceLine {
                    description: format!("Energy within the plan: {}", kwh(within)),
                    amount: 0,
                }];
                if beyond > 0 {
                    lines.push(InvoiceLine {
                        description: format!("Energy beyond the fair-use cap: {}", kwh(beyond)),
                        amount: energy_amount(beyond, *price_per_kwh_milli),
                    });
                }
                lines
            }
            TariffKind::PayAsYouGo {
                price_per_kwh_milli,
                session_fee,
                idle_fee_per_minute,
                idle_grace_minutes,
            } => {
                let mut lines = vec![InvoiceLine {
                    description: format!("Energy: {}", kwh(energy)),
                    amount: energy_amount(energy, *price_per_kwh_milli),
                }];
                if *session_fee != 0 {
                    lines.push(InvoiceLine {
                        description: "Session fee".into(),
                        amount: *session_fee,
                    });
                }
                let idle = usage.idle_minutes.saturating_sub(*idle_grace_minutes);
                if idle > 0 && *idle_fee_per_minute != 0 {
                    lines.push(InvoiceLine {
                        description: format!(
                            "Idle fee: {idle} min after {idle_grace_minutes} min grace"
                        ),
                        amount: i64::from(idle).saturating_mul(*idle_fee_per_minute),
                    });
                }
                lines
            }
        };
        self.charge(lines)
    }

    /// What a month of the subscription costs (`None` for pay as you go).
    pub fn monthly_charge(&self) -> Option<Charge> {
        match &self.kind {
            TariffKind::FlatRate { monthly_fee, .. } => Some(self.charge(vec![InvoiceLine {
                description: format!("Subscription: {}", self.name),
                amount: *monthly_fee,
            }])),
            TariffKind::PayAsYouGo { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat() -> Tariff {
        Tariff {
            name: "Flat 49".into(),
            currency: Currency::EUR,
            vat_basis_points: 1900,
            kind: TariffKind::FlatRate {
                monthly_fee: 4900,
                included_energy_wh: 300_000,
                price_per_kwh_milli: 45_000,
            },
        }
    }

    fn payg() -> Tariff {
        Tariff {
            name: "PAYG".into(),
            currency: Currency::EUR,
            vat_basis_points: 1900,
            kind: TariffKind::PayAsYouGo {
                price_per_kwh_milli: 59_500,
                session_fee: 50,
                idle_fee_per_minute: 10,
                idle_grace_minutes: 30,
            },
        }
    }

    fn usage(energy_wh: i64, idle_minutes: u32, before: i64) -> SessionUsage {
        SessionUsage {
            energy_wh,
            idle_minutes,
            month_energy_before_wh: before,
        }
    }

    #[test]
    fn flat_rate_within_the_cap_costs_nothing() {
        let c = flat().session_charge(&usage(40_000, 120, 100_000));
        assert_eq!((c.net.amount, c.vat.amount, c.gross.amount), (0, 0, 0));
        assert_eq!(c.lines.len(), 1);
    }

    #[test]
    fn flat_rate_beyond_the_cap_charges_only_the_excess() {
        // 290 kWh used, 25 kWh charged: 10 within, 15 beyond at 0.45 = 6.75; VAT 19 % = 1.2825 → 1.28.
        let c = flat().session_charge(&usage(25_000, 0, 290_000));
        assert_eq!(c.lines[0].description, "Energy within the plan: 10.000 kWh");
        assert_eq!(c.lines[1].amount, 675);
        assert_eq!(
            (c.net.amount, c.vat.amount, c.gross.amount),
            (675, 128, 803)
        );
        // Already past the cap: everything is beyond.
        let c = flat().session_charge(&usage(1_000, 0, 400_000));
        assert_eq!(c.net.amount, 45);
    }

    #[test]
    fn pay_as_you_go_adds_a_session_fee_and_idle_minutes_after_the_grace() {
        // 12.345 kWh at 0.595 = 7.345275 → 7.35; fee 0.50; idle 45 - 30 = 15 min at 0.10 = 1.50.
        let c = payg().session_charge(&usage(12_345, 45, 0));
        let amounts: Vec<i64> = c.lines.iter().map(|l| l.amount).collect();
        assert_eq!(amounts, [735, 50, 150]);
        // net 9.35, VAT 1.7765 → 1.78, gross 11.13
        assert_eq!(
            (c.net.amount, c.vat.amount, c.gross.amount),
            (935, 178, 1113)
        );
        let within_grace = payg().session_charge(&usage(12_345, 30, 0));
        assert_eq!(
            within_grace.lines.len(),
            2,
            "no idle fee within the grace period"
        );
    }

    #[test]
    fn lines_and_vat_round_half_away_from_zero() {
        // 1 Wh at 0.5 cent/kWh... exact halves: 10 Wh at 50.000 cents/kWh = 0.5 cent → 1 cent.
        let mut t = payg();
        t.kind = TariffKind::PayAsYouGo {
            price_per_kwh_milli: 50_000,
            session_fee: 0,
            idle_fee_per_minute: 0,
            idle_grace_minutes: 0,
        };
        assert_eq!(t.session_charge(&usage(10, 0, 0)).lines[0].amount, 1);
        assert_eq!(t.session_charge(&usage(9, 0, 0)).lines[0].amount, 0);
        // VAT on 50 cents at 19 % = 9.5 → 10.
        t.kind = TariffKind::PayAsYouGo {
            price_per_kwh_milli: 0,
            session_fee: 50,
            idle_fee_per_minute: 0,
            idle_grace_minutes: 0,
        };
        assert_eq!(t.session_charge(&usage(0, 0, 0)).vat.amount, 10);
    }

    #[test]
    fn the_subscription_is_billed_monthly() {
        let month = flat().monthly_charge().unwrap();
        assert_eq!(
            (month.net.amount, month.vat.amount, month.gross.amount),
            (4900, 931, 5831)
        );
        assert!(payg().monthly_charge().is_none());
    }

    #[test]
    fn figures_are_bounded_so_that_no_amount_can_overflow() {
        let mut t = payg();
        assert_eq!(t.out_of_bounds(), None);
        t.vat_basis_points = 10_001;
        assert!(t.out_of_bounds().is_some());
        let mut t = payg();
        t.kind = TariffKind::PayAsYouGo {
            price_per_kwh_milli: MAX_AMOUNT + 1,
            session_fee: 0,
            idle_fee_per_minute: 0,
            idle_grace_minutes: 0,
        };
        assert!(t.out_of_bounds().is_some());
        // The largest figures and an absurd meter reading still give a finite amount.
        t.kind = TariffKind::PayAsYouGo {
            price_per_kwh_milli: MAX_AMOUNT,
            session_fee: MAX_AMOUNT,
            idle_fee_per_minute: MAX_AMOUNT,
            idle_grace_minutes: 0,
        };
        t.vat_basis_points = 10_000;
        let c = t.session_charge(&usage(i64::MAX, u32::MAX, 0));
        assert!(c.gross.amount > 0 && c.gross.amount < i64::MAX);
        assert_eq!(c.lines[0].amount, MAX_SESSION_WH / 1000 * MAX_AMOUNT / 1000);
    }
}
