//! Keeping the OpenChargeMap mirror: what a sync run is, where each scope got to,
//! OCM's reference data (data providers and their licences), and the licence filter.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// What the sync pulls: one country (ISO 3166 alpha-2) or one bounding box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncScope {
    Country(String),
    /// South-west and north-east corners, as OCM's `boundingbox` takes them.
    BoundingBox {
        south: String,
        west: String,
        north: String,
        east: String,
    },
}

impl SyncScope {
    /// A country code (`GB`) or a box `south,west,north,east` in degrees.
    pub fn parse(raw: &str) -> Result<SyncScope, String> {
        let raw = raw.trim();
        if raw.len() == 2 && raw.chars().all(|c| c.is_ascii_alphabetic()) {
            return Ok(SyncScope::Country(raw.to_ascii_uppercase()));
        }
        let parts: Vec<&str> = raw.split(',').map(str::trim).collect();
        let numbers: Vec<f64> = parts.iter().filter_map(|p| p.parse().ok()).collect();
        match numbers[..] {
            [s, w, n, e]
                if parts.len() == 4
                    && (-90.0..=90.0).contains(&s)
                    && (-90.0..=90.0).contains(&n)
                    && (-180.0..=180.0).contains(&w)
                    && (-180.0..=180.0).contains(&e)
                    && s < n =>
            {
                Ok(SyncScope::BoundingBox {
                    south: parts[0].to_owned(),
                    west: parts[1].to_owned(),
                    north: parts[2].to_owned(),
                    east: parts[3].to_owned(),
                })
            }
            _ => Err(format!(
                "{raw:?} is neither a country code (GB) nor a box \"south,west,north,east\""
            )),
        }
    }

    /// The key its cursor is kept under.
    pub fn key(&self) -> String {
        match self {
            SyncScope::Country(code) => format!("country:{code}"),
            SyncScope::BoundingBox {
                south,
                west,
                north,
                east,
            } => format!("box:{south},{west},{north},{east}"),
        }
    }

    /// Its area, for the sweep (a country needs its OCM id from the reference data).
    pub fn area(&self, reference: &ReferenceData) -> Option<ScopeArea> {
        match self {
            SyncScope::Country(code) => reference
                .countries
                .get(code)
                .copied()
                .map(ScopeArea::Country),
            SyncScope::BoundingBox {
                south,
                west,
                north,
                east,
            } => Some(ScopeArea::Box {
                south: south.parse().ok()?,
                west: west.parse().ok()?,
                north: north.parse().ok()?,
                east: east.parse().ok()?,
            }),
        }
    }

    /// The `/v3/poi` parameters that select it.
    pub fn query(&self) -> (&'static str, String) {
        match self {
            SyncScope::Country(code) => ("countrycode", code.clone()),
            SyncScope::BoundingBox {
                south,
                west,
                north,
                east,
            } => ("boundingbox", format!("({south},{west}),({north},{east})")),
        }
    }
}

/// Where a scope's sync got to. The full import pages by id until OCM has no more;
/// then changes are pulled from a watermark, paging by id at that watermark (OCM's
/// timestamps are whole minutes: many POIs share one), and the watermark moves to the
/// newest change seen once a pass is through.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncCursor {
    pub scope: String,
    pub full_done: bool,
    /// The full import has everything up to this OCM id.
    pub last_id: i64,
    /// Changes from this time on are still to be pulled (set when the first full
    /// import starts, so that what changes during it is pulled afterwards).
    pub modified_since: Option<DateTime<Utc>>,
    /// The change pass in progress has everything at the watermark up to this id.
    pub change_last_id: i64,
    /// The newest change seen by the pass in progress: the next watermark.
    pub newest_seen: Option<DateTime<Utc>>,
    /// When the full import in progress (or the last one) started: stations of the
    /// scope it has not seen since are no longer listed by OCM.
    pub full_started_at: Option<DateTime<Utc>>,
    pub full_finished_at: Option<DateTime<Utc>>,
}

impl SyncCursor {
    pub fn new(scope: &SyncScope, started: DateTime<Utc>, watermark: DateTime<Utc>) -> SyncCursor {
        SyncCursor {
            scope: scope.key(),
            full_done: false,
            last_id: 0,
            modified_since: Some(watermark),
            change_last_id: 0,
            newest_seen: None,
            full_started_at: Some(started),
            full_finished_at: None,
        }
    }

    /// Starts a new full import (a sweep), keeping the change watermark.
    pub fn restart_full(&mut self, started: DateTime<Utc>) {
        self.full_done = false;
        self.last_id = 0;
        self.full_started_at = Some(started);
    }
}

/// Where a scope's stations are, to find those OCM no longer lists.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScopeArea {
    /// An OCM country id.
    Country(i64),
    Box {
        south: f64,
        west: f64,
        north: f64,
        east: f64,
    },
}

/// How a run was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncTrigger {
    Schedule,
    Api,
    Cli,
}

impl SyncTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncTrigger::Schedule => "schedule",
            SyncTrigger::Api => "api",
            SyncTrigger::Cli => "cli",
        }
    }

    pub fn parse(raw: &str) -> Option<SyncTrigger> {
        [SyncTrigger::Schedule, SyncTrigger::Api, SyncTrigger::Cli]
            .into_iter()
            .find(|t| t.as_str() == raw)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    Running,
    Succeeded,
    Failed,
    /// Its replica went away mid-run; the next run resumes where it stopped.
    Interrupted,
}

impl SyncStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Running => "running",
            SyncStatus::Succeeded => "succeeded",
            SyncStatus::Failed => "failed",
            SyncStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(raw: &str) -> Option<SyncStatus> {
        [
            SyncStatus::Running,
            SyncStatus::Succeeded,
            SyncStatus::Failed,
            SyncStatus::Interrupted,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

/// What a run did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncCounts {
    /// POIs received from OCM.
    pub fetched: u64,
    pub inserted: u64,
    pub updated: u64,
    /// The same as stored, or older than stored.
    pub unchanged: u64,
    /// From a data provider the licence filter leaves out (kept hidden).
    pub excluded: u64,
    /// Not readable (no id, no position).
    pub failed: u64,
}

impl std::ops::AddAssign for SyncCounts {
    fn add_assign(&mut self, o: SyncCounts) {
        self.fetched += o.fetched;
        self.inserted += o.inserted;
        self.updated += o.updated;
        self.unchanged += o.unchanged;
        self.excluded += o.excluded;
        self.failed += o.failed;
    }
}

/// One sync run, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncRun {
    pub run_id: Uuid,
    pub trigger: SyncTrigger,
    pub status: SyncStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub counts: SyncCounts,
    pub error: Option<String>,
}

/// A data provider from the reference data: whose data a POI is, under which licence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataProvider {
    pub id: i64,
    pub title: String,
    pub license: Option<String>,
    pub website_url: Option<String>,
    pub open_data: Option<bool>,
}

impl DataProvider {
    /// Whether the licence text forbids commercial use (CC BY-NC and the like).
    pub fn non_commercial(&self) -> bool {
        self.license.as_deref().is_some_and(|l| {
            let l: String = l
                .to_ascii_lowercase()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect();
            l.contains("noncommercial") || l.contains("bync")
        })
    }
}

/// The parts of OCM's `/v3/referencedata` the mirror uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReferenceData {
    pub data_providers: HashMap<i64, DataProvider>,
    pub operators: HashMap<i64, String>,
    pub connection_types: HashMap<i64, String>,
    /// ISO 3166 alpha-2 code → OCM country id.
    pub countries: HashMap<String, i64>,
}

fn titles(raw: &Value, key: &str) -> HashMap<i64, String> {
    raw.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            Some((
                v.get("ID")?.as_i64()?,
                v.get("Title")?.as_str()?.trim().to_owned(),
            ))
        })
        .collect()
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl ReferenceData {
    /// Reads OCM's reference data; an answer without data providers is not one.
    pub fn from_ocm(raw: &Value) -> Result<ReferenceData, String> {
        let providers = raw
            .get("DataProviders")
            .and_then(Value::as_array)
            .ok_or("reference data without DataProviders")?;
        let data_providers = providers
            .iter()
            .filter_map(|p| {
                let id = p.get("ID")?.as_i64()?;
                Some((
                    id,
                    DataProvider {
                        id,
                        title: text(p, "Title").unwrap_or_else(|| format!("Data provider {id}")),
                        license: text(p, "License"),
                        website_url: text(p, "WebsiteURL"),
                        open_data: p.get("IsOpenDataLicensed").and_then(Value::as_bool),
                    },
                ))
            })
            .collect();
        let countries = raw
            .get("Countries")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| {
                Some((
                    c.get("ISOCode")?.as_str()?.to_ascii_uppercase(),
                    c.get("ID")?.as_i64()?,
                ))
            })
            .collect();
        Ok(ReferenceData {
            data_providers,
            operators: titles(raw, "Operators"),
            connection_types: titles(raw, "ConnectionTypes"),
            countries,
        })
    }

    /// The line to show with a POI of `provider`.
    pub fn attribution(&self, provider: Option<i64>) -> String {
        const OCM: &str = "© Open Charge Map contributors";
        match provider.and_then(|id| self.data_providers.get(&id)) {
            // Contributed to OCM directly: OCM's own licence.
            Some(p) if p.id == 1 => match &p.license {
                Some(l) => format!("{OCM} ({l})"),
                None => OCM.to_owned(),
            },
            Some(p) => match &p.license {
                Some(l) => format!("{OCM}; data: {} ({l})", p.title),
                None => format!("{OCM}; data: {}", p.title),
            },
            None => OCM.to_owned(),
        }
    }
}

/// Which data providers' POIs the mirror shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LicenceFilter {
    /// Leave out providers whose licence forbids commercial use.
    pub exclude_non_commercial: bool,
    /// Leave out these providers whatever their licence says.
    pub excluded_providers: Vec<i64>,
}

impl LicenceFilter {
    /// The data providers (known from the reference data, or listed) it leaves out.
    pub fn excluded(&self, reference: &ReferenceData) -> Vec<i64> {
        let mut ids: Vec<i64> = reference
            .data_providers
            .values()
            .filter(|p| !self.allows(reference, Some(p.id)))
            .map(|p| p.id)
            .chain(self.excluded_providers.iter().copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    pub fn allows(&self, reference: &ReferenceData, provider: Option<i64>) -> bool {
        let Some(id) = provider else {
            return true;
        };
        let non_commercial = reference
            .data_providers
            .get(&id)
            .is_some_and(DataProvider::non_commercial);
        let excluded = self.excluded_providers.contains(&id);
        !(excluded || self.exclude_non_commercial && non_commercial)
    }
}

/// How long a `Retry-After` asks to wait: seconds, or an HTTP date.
pub fn retry_after(raw: &str, now: DateTime<Utc>) -> Option<std::time::Duration> {
    let raw = raw.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(std::time::Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(raw).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scopes_parse_and_say_how_to_ask() {
        assert_eq!(
            SyncScope::parse("gb").unwrap().query(),
            ("countrycode", "GB".to_owned())
        );
        let b = SyncScope::parse("51.2, -0.6, 51.8, 0.4").unwrap();
        assert_eq!(
            b.query(),
            ("boundingbox", "(51.2,-0.6),(51.8,0.4)".to_owned())
        );
        assert_eq!(b.key(), "box:51.2,-0.6,51.8,0.4");
        for bad in ["GBR", "51,0,50,1", "1,2,3", "a,b,c,d", "91,0,92,1"] {
            assert!(SyncScope::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn licences_are_read_and_filtered() {
        let raw = json!({"DataProviders": [
            {"ID": 1, "Title": "Open Charge Map Contributors", "License": "Licensed under CC BY 4.0", "IsOpenDataLicensed": true},
            {"ID": 26, "Title": "Oplaadpalen.nl", "License": "Licensed under Attribution-NonCommercial-ShareAlike 3.0"},
            {"ID": 40, "Title": "X", "License": "CC BY-NC 4.0"},
            {"ID": 18, "Title": "UK NCR", "License": "Open Government Licence v2.0"}],
            "Operators": [{"ID": 3, "Title": " Pod Point "}]});
        let r = ReferenceData::from_ocm(&raw).unwrap();
        assert_eq!(r.operators[&3], "Pod Point");
        let filter = LicenceFilter {
            exclude_non_commercial: true,
            excluded_providers: vec![18],
        };
        assert!(filter.allows(&r, Some(1)) && filter.allows(&r, None));
        assert!(!filter.allows(&r, Some(26)) && !filter.allows(&r, Some(40)));
        assert!(!filter.allows(&r, Some(18)), "listed");
        assert!(LicenceFilter::default().allows(&r, Some(26)));
        assert_eq!(filter.excluded(&r), [18, 26, 40]);
        assert_eq!(
            r.attribution(Some(18)),
            "© Open Charge Map contributors; data: UK NCR (Open Government Licence v2.0)"
        );
        assert!(ReferenceData::from_ocm(&json!({})).is_err());
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = DateTime::parse_from_rfc3339("2026-11-24T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            retry_after("7", now),
            Some(std::time::Duration::from_secs(7))
        );
        assert_eq!(
            retry_after("Tue, 24 Nov 2026 10:00:30 GMT", now),
            Some(std::time::Duration::from_secs(30))
        );
        assert_eq!(retry_after("soon", now), None);
    }
}
