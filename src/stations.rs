//! Station search as the app and operators see it: the mirror (through its cache),
//! the attribution its licence asks for, and the live status of our own chargers
//! overlaid on the OCM stations they stand at.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::domain::ocm::{DataProvider, LicenceFilter, ReferenceData};
use crate::domain::ports::{ConnectorView, StationStore, StatusBoard, Store, StoreResult};
use crate::domain::station::{Station, StationFilter};
use crate::domain::{ChargerId, ConnectorStatus};

/// One connector of ours at a station, live.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveConnector {
    pub charger_id: ChargerId,
    pub connector_id: u32,
    /// `None`: the charger is not connected.
    pub status: Option<ConnectorStatus>,
}

/// What our chargers at a station are doing now.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LiveAvailability {
    /// Our chargers at this station, and how many of them are connected.
    pub chargers: u32,
    pub connected: u32,
    pub available: u32,
    pub occupied: u32,
    pub out_of_order: u32,
    pub connectors: Vec<LiveConnector>,
}

impl LiveAvailability {
    fn count(&mut self, charger: &ChargerId, live: Option<&ConnectorView>) {
        self.chargers += 1;
        let Some(connectors) = live else {
            return;
        };
        self.connected += 1;
        // Connector 0 (OCPP 1.6) is the charger as a whole, not a plug.
        for (id, status) in connectors.iter().filter(|(id, _)| id.0 > 0) {
            match status {
                ConnectorStatus::Available => self.available += 1,
                ConnectorStatus::Unavailable | ConnectorStatus::Faulted => self.out_of_order += 1,
                _ => self.occupied += 1,
            }
            self.connectors.push(LiveConnector {
                charger_id: charger.clone(),
                connector_id: id.0,
                status: Some(*status),
            });
        }
    }
}

/// A station as a search answers it.
#[derive(Debug, Clone, Serialize)]
pub struct StationHit {
    pub station: Station,
    /// From the searched point (searches only).
    pub distance_km: Option<f64>,
    /// To be shown with the data (OCM's licence and the data provider's).
    pub attribution: String,
    pub data_provider: Option<DataProvider>,
    pub operator: Option<String>,
    /// Our chargers there, live; `None` when none of ours stands there.
    pub live: Option<LiveAvailability>,
}

/// A radius search.
#[derive(Debug, Clone)]
pub struct NearQuery {
    pub lat: f64,
    pub lng: f64,
    pub radius_km: f64,
    pub filter: StationFilter,
    /// Only stations where one of our connectors is available now.
    pub available_now: bool,
    pub offset: u32,
    pub limit: u32,
}

pub struct StationSearch {
    stations: Arc<dyn StationStore>,
    store: Arc<dyn Store>,
    board: Arc<dyn StatusBoard>,
    reference: Arc<RwLock<ReferenceData>>,
    licences: LicenceFilter,
    /// Stations with an available connector of ours, as last computed: `availableNow`
    /// searches within this long share one look at every linked charger.
    available: Mutex<Option<(Instant, Arc<BTreeSet<i64>>)>>,
}

/// How long the set of stations available now is reused.
const AVAILABLE_FOR: Duration = Duration::from_secs(1);

/// Coordinates are searched at this precision (about a metre), so that searches a
/// hair apart share an answer (and a cache entry).
fn quantize(degrees: f64) -> f64 {
    (degrees * 1e5).round() / 1e5
}

impl StationSearch {
    pub fn new(
        stations: Arc<dyn StationStore>,
        store: Arc<dyn Store>,
        board: Arc<dyn StatusBoard>,
        reference: Arc<RwLock<ReferenceData>>,
        licences: LicenceFilter,
    ) -> Self {
        StationSearch {
            stations,
            store,
            board,
            reference,
            licences,
            available: Mutex::new(None),
        }
    }

    /// Providers whose data may not be shown (licence), by the current reference data.
    fn excluded_providers(&self) -> Vec<i64> {
        let reference = self.reference.read().unwrap_or_else(|p| p.into_inner());
        self.licences.excluded(&reference)
    }

    /// Stations where one of our connectors is available now (shared for a second).
    async fn available_now(&self) -> StoreResult<Arc<BTreeSet<i64>>> {
        if let Some((at, set)) = &*self.available.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < AVAILABLE_FOR
        {
            return Ok(set.clone());
        }
        let links = self.store.station_links(None).await?;
        let set: Arc<BTreeSet<i64>> = Arc::new(
            self.live(&links)
                .await
                .into_iter()
                .filter(|(_, l)| l.available > 0)
                .map(|(id, _)| id)
                .collect(),
        );
        *self.available.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), set.clone()));
        Ok(set)
    }

    pub fn stations(&self) -> &Arc<dyn StationStore> {
        &self.stations
    }

    /// Active stations near a point, nearest first, overlaid with our live status.
    pub async fn near(&self, q: &NearQuery) -> StoreResult<Vec<StationHit>> {
        let mut filter = q.filter.clone();
        filter.excluded_provider_ids = self.excluded_providers();
        if q.available_now {
            let open = self.available_now().await?;
            filter.ocm_ids = Some(match filter.ocm_ids {
                Some(ids) => ids.into_iter().filter(|i| open.contains(i)).collect(),
                None => open.iter().copied().collect(),
            });
        }
        let found = self
            .stations
            .stations_near(
                quantize(q.lat),
                quantize(q.lng),
                q.radius_km,
                &filter,
                q.offset,
                q.limit,
            )
            .await?;
        self.overlay(found.into_iter().map(|(s, d)| (s, Some(d))).collect())
            .await
    }

    /// One station (also an inactive one), overlaid with our live status; none when its
    /// data provider's licence forbids showing it.
    pub async fn get(&self, ocm_id: i64) -> StoreResult<Option<StationHit>> {
        let Some(station) = self.stations.station(ocm_id).await? else {
            return Ok(None);
        };
        let allowed = {
            let reference = self.reference.read().unwrap_or_else(|p| p.into_inner());
            self.licences.allows(&reference, station.data_provider_id)
        };
        if !allowed {
            return Ok(None);
        }
        Ok(self.overlay(vec![(station, None)]).await?.pop())
    }

    async fn overlay(&self, found: Vec<(Station, Option<f64>)>) -> StoreResult<Vec<StationHit>> {
        let ids: Vec<i64> = found.iter().map(|(s, _)| s.ocm_id).collect();
        let links = self.store.station_links(Some(&ids)).await?;
        let mut live = self.live(&links).await;
        let reference = self.reference.read().unwrap_or_else(|p| p.into_inner());
        Ok(found
            .into_iter()
            .map(|(station, distance_km)| StationHit {
                attribution: reference.attribution(station.data_provider_id),
                data_provider: station
                    .data_provider_id
                    .and_then(|id| reference.data_providers.get(&id).cloned()),
                operator: station
                    .operator_id
                    .and_then(|id| reference.operators.get(&id).cloned()),
                live: live.remove(&station.ocm_id),
                distance_km,
                station,
            })
            .collect())
    }

    /// Live availability by station, for the linked chargers. Without the status board
    /// (Redis down) there is none: the stations are still answered.
    async fn live(&self, links: &[(i64, ChargerId)]) -> HashMap<i64, LiveAvailability> {
        if links.is_empty() {
            return HashMap::new();
        }
        let chargers: Vec<ChargerId> = links.iter().map(|(_, c)| c.clone()).collect();
        let statuses = match self.board.statuses(&chargers).await {
            Ok(statuses) => statuses,
            Err(e) => {
                tracing::warn!(error = %e, "live connector status unavailable; stations shown without it");
                return HashMap::new();
            }
        };
        let mut by_station: HashMap<i64, LiveAvailability> = HashMap::new();
        for (ocm_id, charger) in links {
            by_station
                .entry(*ocm_id)
                .or_default()
                .count(charger, statuses.get(charger));
        }
        by_station
    }
}
