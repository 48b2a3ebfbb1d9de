//! Public charging stations as OpenChargeMap (OCM) publishes them (POIs), mirrored
//! locally, and the geometry of "near me".

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One connection (plug) of a station.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StationConnection {
    pub connection_type_id: Option<i64>,
    pub power_kw: Option<f64>,
    pub current_type_id: Option<i64>,
    pub quantity: Option<i64>,
    pub status_type_id: Option<i64>,
}

/// A station as the mirror keeps it: what the app shows, plus the POI as OCM sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Station {
    pub ocm_id: i64,
    pub title: String,
    pub operator_id: Option<i64>,
    pub address_line1: Option<String>,
    pub town: Option<String>,
    pub postcode: Option<String>,
    pub country_id: Option<i64>,
    pub latitude: f64,
    pub longitude: f64,
    pub connections: Vec<StationConnection>,
    pub usage_cost: Option<String>,
    pub usage_type_id: Option<i64>,
    pub status_type_id: Option<i64>,
    pub data_provider_id: Option<i64>,
    pub date_last_verified: Option<DateTime<Utc>>,
    pub date_last_status_update: Option<DateTime<Utc>>,
    /// False once OCM removed or delisted it: kept, but hidden from search.
    pub active: bool,
}

/// Why a POI could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("POI {id}: {reason}")]
pub struct InvalidPoi {
    pub id: String,
    pub reason: String,
}

fn int(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn time(v: &Value, key: &str) -> Option<DateTime<Utc>> {
    v.get(key)
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// OCM status types that mean the POI is gone (Removed: 200, 210).
const REMOVED_STATUS: [i64; 2] = [200, 210];
/// Submission statuses from this one up are delisted.
const DELISTED_FROM: i64 = 1000;

impl Station {
    /// Reads a POI in OCM's JSON (compact or verbose).
    pub fn from_ocm(poi: &Value) -> Result<Station, InvalidPoi> {
        let invalid = |reason: &str| InvalidPoi {
            id: poi.get("ID").map_or("?".into(), |v| v.to_string()),
            reason: reason.to_owned(),
        };
        let ocm_id = int(poi, "ID").ok_or_else(|| invalid("no ID"))?;
        let address = poi
            .get("AddressInfo")
            .ok_or_else(|| invalid("no AddressInfo"))?;
        let latitude = address
            .get("Latitude")
            .and_then(Value::as_f64)
            .filter(|l| (-90.0..=90.0).contains(l))
            .ok_or_else(|| invalid("no valid latitude"))?;
        let longitude = address
            .get("Longitude")
            .and_then(Value::as_f64)
            .filter(|l| (-180.0..=180.0).contains(l))
            .ok_or_else(|| invalid("no valid longitude"))?;
        let connections = poi
            .get("Connections")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .map(|c| StationConnection {
                        connection_type_id: int(c, "ConnectionTypeID"),
                        power_kw: c.get("PowerKW").and_then(Value::as_f64),
                        current_type_id: int(c, "CurrentTypeID"),
                        quantity: int(c, "Quantity"),
                        status_type_id: int(c, "StatusTypeID"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let status_type_id = int(poi, "StatusTypeID");
        let removed = status_type_id.is_some_and(|s| REMOVED_STATUS.contains(&s))
            || int(poi, "SubmissionStatusTypeID").is_some_and(|s| s >= DELISTED_FROM);
        Ok(Station {
            ocm_id,
            title: text(address, "Title").unwrap_or_else(|| format!("Station {ocm_id}")),
            operator_id: int(poi, "OperatorID"),
            address_line1: text(address, "AddressLine1"),
            town: text(address, "Town"),
            postcode: text(address, "Postcode"),
            country_id: int(address, "CountryID"),
            latitude,
            longitude,
            connections,
            usage_cost: text(poi, "UsageCost"),
            usage_type_id: int(poi, "UsageTypeID"),
            status_type_id,
            data_provider_id: int(poi, "DataProviderID"),
            date_last_verified: time(poi, "DateLastVerified"),
            date_last_status_update: time(poi, "DateLastStatusUpdate"),
            active: !removed,
        })
    }

    /// Whether this record should replace the `stored` one: it differs, and is not
    /// older (`date_last_status_update`, when both have one). Every store decides so.
    pub fn replaces(&self, stored: &Station) -> bool {
        self != stored
            && !matches!(
                (stored.date_last_status_update, self.date_last_status_update),
                (Some(old), Some(new)) if new < old
            )
    }

    pub fn max_power_kw(&self) -> Option<f64> {
        self.connections
            .iter()
            .filter_map(|c| c.power_kw)
            .fold(None, |max, p| Some(max.map_or(p, |m: f64| m.max(p))))
    }
}

/// The most ids a search filter may list (connection types, operators): each is checked
/// against every station found.
pub const MAX_FILTER_IDS: usize = 50;

/// What a search may ask for besides place and radius.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StationFilter {
    pub connection_type_ids: Vec<i64>,
    pub min_power_kw: Option<f64>,
    pub operator_ids: Vec<i64>,
    /// Only these stations (e.g. those where one of our connectors is available now).
    pub ocm_ids: Option<Vec<i64>>,
    /// Not the data of these providers (their licence forbids our use).
    pub excluded_provider_ids: Vec<i64>,
}

impl StationFilter {
    pub fn matches(&self, s: &Station) -> bool {
        self.ocm_ids
            .as_ref()
            .is_none_or(|ids| ids.contains(&s.ocm_id))
            && (self.connection_type_ids.is_empty()
                || s.connections.iter().any(|c| {
                    c.connection_type_id
                        .is_some_and(|t| self.connection_type_ids.contains(&t))
                }))
            && self
                .min_power_kw
                .is_none_or(|min| s.max_power_kw().is_some_and(|p| p >= min))
            && s.data_provider_id
                .is_none_or(|p| !self.excluded_provider_ids.contains(&p))
            && (self.operator_ids.is_empty()
                || s.operator_id
                    .is_some_and(|o| self.operator_ids.contains(&o)))
    }
}

const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Great-circle distance in km.
pub fn haversine_km(lat1: f64, lng1: f64, lat2: f64, lng2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lng2 - lng1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().asin()
}

/// A latitude/longitude box that holds every point within `radius_km` of the centre
/// (a prefilter: the exact test is [`haversine_km`]). Near the poles or across the
/// antimeridian it widens to all longitudes.
pub fn bounding_box(lat: f64, lng: f64, radius_km: f64) -> (f64, f64, f64, f64) {
    let dlat = (radius_km / EARTH_RADIUS_KM).to_degrees();
    let (min_lat, max_lat) = ((lat - dlat).max(-90.0), (lat + dlat).min(90.0));
    // The widest longitude reach of a spherical cap: asin(sin(r/R) / cos(lat)); when the
    // cap reaches over a pole every longitude is in.
    let sin_r = (radius_km / EARTH_RADIUS_KM).sin();
    let cos = lat.to_radians().cos();
    if max_lat >= 89.0 || min_lat <= -89.0 || sin_r >= cos {
        return (min_lat, max_lat, -180.0, 180.0);
    }
    let dlng = (sin_r / cos).asin().to_degrees();
    if lng - dlng < -180.0 || lng + dlng > 180.0 || dlng >= 180.0 {
        return (min_lat, max_lat, -180.0, 180.0);
    }
    (min_lat, max_lat, lng - dlng, lng + dlng)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn distances_and_boxes_agree() {
        // London to Paris, about 344 km.
        let d = haversine_km(51.5074, -0.1278, 48.8566, 2.3522);
        assert!((d - 343.5).abs() < 2.0, "{d}");
        let (min_lat, max_lat, min_lng, max_lng) = bounding_box(51.5, -0.1, 10.0);
        for (lat, lng) in [(51.58, -0.1), (51.5, 0.04), (51.45, -0.15)] {
            assert!(haversine_km(51.5, -0.1, lat, lng) <= 10.0);
            assert!((min_lat..=max_lat).contains(&lat) && (min_lng..=max_lng).contains(&lng));
        }
        assert_eq!(
            bounding_box(0.0, 179.99, 50.0).2,
            -180.0,
            "across the antimeridian"
        );
        // Far north the box still holds the cap's widest point.
        let (lat, r) = (80.0_f64, 100.0);
        let (_, _, min_lng, _) = bounding_box(lat, 10.0, r);
        let widest = (0..=400)
            .map(|i| 79.0 + f64::from(i) * 0.005)
            .flat_map(|la| (0..=800).map(move |j| (la, 10.0 - f64::from(j) * 0.01)))
            .filter(|(la, lo)| haversine_km(lat, 10.0, *la, *lo) <= r)
            .map(|(_, lo)| lo)
            .fold(f64::INFINITY, f64::min);
        assert!(min_lng <= widest, "{min_lng} > {widest}");
    }

    #[test]
    fn pois_are_read_and_removed_ones_are_inactive() {
        let poi = json!({"ID": 7, "OperatorID": 8, "StatusTypeID": 50, "SubmissionStatusTypeID": 100,
            "DateLastStatusUpdate": "2020-12-30T21:26:00Z",
            "AddressInfo": {"Title": " Burdett Road ", "Latitude": 51.5, "Longitude": -0.03},
            "Connections": [{"ConnectionTypeID": 33, "PowerKW": 50.0}, {"ConnectionTypeID": 2, "PowerKW": 43}]});
        let s = Station::from_ocm(&poi).unwrap();
        assert_eq!(
            (s.title.as_str(), s.active, s.max_power_kw()),
            ("Burdett Road", true, Some(50.0))
        );
        let mut removed = poi.clone();
        removed["StatusTypeID"] = json!(200);
        assert!(!Station::from_ocm(&removed).unwrap().active);
        let mut delisted = poi.clone();
        delisted["SubmissionStatusTypeID"] = json!(1001);
        assert!(!Station::from_ocm(&delisted).unwrap().active);
        assert!(
            Station::from_ocm(&json!({"ID": 1, "AddressInfo": {"Latitude": 91, "Longitude": 0}}))
                .is_err()
        );
        let filter = StationFilter {
            min_power_kw: Some(45.0),
            connection_type_ids: vec![33],
            operator_ids: vec![],
            ocm_ids: None,
            excluded_provider_ids: vec![],
        };
        assert!(filter.matches(&s));
        assert!(
            !StationFilter {
                min_power_kw: Some(100.0),
                ..filter
            }
            .matches(&s)
        );
    }
}
