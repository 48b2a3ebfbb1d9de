//! Device-model reports (2.0.1 NotifyReport) as a charger sends them: in parts, by
//! request id, stored whole once the last part came. What one charger may have in
//! flight is bounded, so that parts that never finish cannot grow it until it
//! disconnects: a part beyond a bound is refused (and its report dropped), nothing else.

use std::collections::HashMap;

use super::requests::ReportedVariable;

/// Reports one charger may have in flight (parts sent, the last not yet).
pub const MAX_REPORTS_IN_FLIGHT: usize = 4;
/// Variables, and bytes, the reports in flight may hold together.
pub const MAX_REPORT_VARIABLES: usize = 20_000;
pub const MAX_REPORT_BYTES: usize = 8 << 20;

/// Why a part was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportRefused {
    #[error("{MAX_REPORTS_IN_FLIGHT} reports are in flight already: finish one (tbc false) first")]
    TooManyInFlight,
    #[error(
        "reports in flight may hold {MAX_REPORT_VARIABLES} variables and {MAX_REPORT_BYTES} bytes in all: this report is dropped"
    )]
    TooLarge,
}

/// One charger's reports in flight, with running totals of what they hold (so that a
/// part costs as much as itself, not as everything held).
#[derive(Debug, Default)]
pub struct ReportAssembly {
    /// Each report's variables so far, and their bytes.
    parts: HashMap<i64, (Vec<ReportedVariable>, usize)>,
    variables: usize,
    bytes: usize,
}

impl ReportAssembly {
    /// Takes a part of report `request_id`: the whole report when it was the last
    /// (`more_to_come` false), `None` while more are to come.
    pub fn add(
        &mut self,
        request_id: i64,
        more_to_come: bool,
        variables: Vec<ReportedVariable>,
    ) -> Result<Option<Vec<ReportedVariable>>, ReportRefused> {
        if !self.parts.contains_key(&request_id) && self.parts.len() >= MAX_REPORTS_IN_FLIGHT {
            return Err(ReportRefused::TooManyInFlight);
        }
        let bytes: usize = variables.iter().map(ReportedVariable::held_bytes).sum();
        if self.variables + variables.len() > MAX_REPORT_VARIABLES
            || self.bytes + bytes > MAX_REPORT_BYTES
        {
            self.take(request_id);
            return Err(ReportRefused::TooLarge);
        }
        self.variables += variables.len();
        self.bytes += bytes;
        let (report, held) = self.parts.entry(request_id).or_default();
        report.extend(variables);
        *held += bytes;
        if more_to_come {
            return Ok(None);
        }
        Ok(self.take(request_id))
    }

    /// Takes report `request_id` out, with what it held.
    fn take(&mut self, request_id: i64) -> Option<Vec<ReportedVariable>> {
        let (report, bytes) = self.parts.remove(&request_id)?;
        self.variables -= report.len();
        self.bytes -= bytes;
        Some(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variable(value_bytes: usize) -> ReportedVariable {
        ReportedVariable {
            component: "Connector".into(),
            component_instance: None,
            evse_id: None,
            connector_id: None,
            variable: "V".into(),
            variable_instance: None,
            attributes: vec![crate::domain::requests::VariableAttribute {
                attribute_type: "Actual".into(),
                value: Some("v".repeat(value_bytes)),
                mutability: None,
            }],
            data_type: None,
            unit: None,
        }
    }

    #[test]
    fn parts_are_assembled_and_handed_over_whole() {
        let mut reports = ReportAssembly::default();
        assert_eq!(reports.add(7, true, vec![variable(1)]), Ok(None));
        let whole = reports.add(7, false, vec![variable(2)]).unwrap().unwrap();
        assert_eq!(whole.len(), 2);
        assert!(reports.parts.is_empty());
        assert_eq!(
            (reports.variables, reports.bytes),
            (0, 0),
            "the totals follow"
        );
    }

    #[test]
    fn reports_in_flight_and_what_they_hold_are_bounded() {
        let mut reports = ReportAssembly::default();
        for id in 0..MAX_REPORTS_IN_FLIGHT as i64 {
            assert_eq!(reports.add(id, true, vec![variable(1)]), Ok(None));
        }
        assert_eq!(
            reports.add(99, true, vec![variable(1)]),
            Err(ReportRefused::TooManyInFlight)
        );
        // A report in flight still takes parts, until it holds too much: then it goes.
        let big: Vec<_> = (0..400).map(|_| variable(2500)).collect();
        let mut refused = None;
        for _ in 0..20 {
            if let Err(e) = reports.add(0, true, big.clone()) {
                refused = Some(e);
                break;
            }
        }
        assert_eq!(refused, Some(ReportRefused::TooLarge));
        assert!(!reports.parts.contains_key(&0), "the report was dropped");
        assert_eq!(
            reports
                .add(99, false, vec![variable(1)])
                .unwrap()
                .map(|r| r.len()),
            Some(1)
        );
    }
}
