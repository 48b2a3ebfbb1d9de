//! The embedded profile's twins of the Redis and RabbitMQ adapters, in this process:
//! the event bus ([`LocalBus`], RabbitMQ's twin in `amqp.rs`), the live status board
//! ([`LocalBoard`], `redis::RedisBoard`'s) and the attempt counter (the domain's
//! `AttemptLimiter`, `redis::RedisFailureCounter`'s).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::attempts::AttemptLimiter;
use crate::domain::ports::{
    BusError, ConnectorView, EventBus, EventConsumer, FailureCounter, StatusBoard, StoreResult,
};
use crate::domain::{ChargerId, ConnectorState, DomainEvent};

/// The in-process event bus, with the same at-least-once contract as the broker-backed
/// one. An event is "published" once every registered consumer that wants it has handled
/// it; a consumer's failure fails the publish, and the outbox relay tries again later.
pub struct LocalBus {
    consumers: Vec<Arc<dyn EventConsumer>>,
}

impl LocalBus {
    pub fn new(consumers: Vec<Arc<dyn EventConsumer>>) -> Self {
        LocalBus { consumers }
    }
}

#[async_trait]
impl EventBus for LocalBus {
    async fn publish(&self, event: &DomainEvent) -> Result<(), BusError> {
        for consumer in self
            .consumers
            .iter()
            .filter(|c| c.wants().contains(&event.event_type))
        {
            consumer.handle(event).await.map_err(|e| {
                BusError(format!(
                    "consumer {} failed on {}: {e}",
                    consumer.name(),
                    event.id
                ))
            })?;
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "in-process"
    }
}

/// The status board of a single process (embedded).
#[derive(Default)]
pub struct LocalBoard {
    chargers: Mutex<HashMap<ChargerId, (Uuid, ConnectorView)>>,
}

#[async_trait]
impl StatusBoard for LocalBoard {
    fn publish(&self, charger: &ChargerId, conn_id: Uuid, connectors: &[ConnectorState]) {
        let view = connectors
            .iter()
            .map(|c| (c.connector_id, c.status))
            .collect();
        self.chargers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(charger.clone(), (conn_id, view));
    }

    fn remove(&self, charger: &ChargerId, conn_id: Uuid) {
        let mut chargers = self.chargers.lock().unwrap_or_else(|p| p.into_inner());
        if chargers.get(charger).is_some_and(|(id, _)| *id == conn_id) {
            chargers.remove(charger);
        }
    }

    async fn statuses(
        &self,
        chargers: &[ChargerId],
    ) -> StoreResult<HashMap<ChargerId, ConnectorView>> {
        let known = self.chargers.lock().unwrap_or_else(|p| p.into_inner());
        Ok(chargers
            .iter()
            .filter_map(|c| known.get(c).map(|(_, v)| (c.clone(), v.clone())))
            .collect())
    }
}

#[async_trait]
impl FailureCounter for AttemptLimiter<String> {
    async fn hit(&self, key: &str) -> Result<u32, String> {
        Ok(AttemptLimiter::hit(self, &key.to_owned()))
    }

    async fn forgive(&self, key: &str) -> Result<(), String> {
        AttemptLimiter::forgive(self, &key.to_owned());
        Ok(())
    }

    async fn reset(&self, key: &str) -> Result<(), String> {
        AttemptLimiter::reset(self, &key.to_owned());
        Ok(())
    }

    fn name(&self) -> &'static str {
        "in-process"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Availability, ConnectorId, ConnectorStatus};

    fn state(id: u32, status: ConnectorStatus) -> ConnectorState {
        ConnectorState {
            connector_id: ConnectorId(id),
            status,
            error_code: None,
            info: None,
            availability: Availability::Operative,
            updated_at: chrono::Utc::now(),
        }
    }

    #[tokio::test]
    async fn the_local_board_keeps_the_newest_connection() {
        let board = LocalBoard::default();
        let cp = ChargerId::parse("CP1".to_owned()).unwrap();
        let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
        board.publish(&cp, old, &[state(1, ConnectorStatus::Charging)]);
        board.publish(&cp, new, &[state(1, ConnectorStatus::Available)]);
        // The older connection's leaving does not take the newer one's status along.
        board.remove(&cp, old);
        let seen = board.statuses(std::slice::from_ref(&cp)).await.unwrap();
        let expected: ConnectorView = [(ConnectorId(1), ConnectorStatus::Available)]
            .into_iter()
            .collect();
        assert_eq!(seen.get(&cp), Some(&expected));
        board.remove(&cp, new);
        assert!(board.statuses(&[cp]).await.unwrap().is_empty());
    }
}
