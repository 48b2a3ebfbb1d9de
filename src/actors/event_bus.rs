//! The embedded profile's event bus: in-process, with the same at-least-once contract as
//! the broker-backed one. An event is "published" once every registered consumer has
//! handled it; live listeners (the notifier's subscribers) get a copy on a broadcast
//! channel and may lag.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::domain::DomainEvent;
use crate::domain::ports::{BusError, EventBus, EventConsumer};

pub struct LocalBus {
    consumers: Vec<Arc<dyn EventConsumer>>,
    live: broadcast::Sender<DomainEvent>,
}

impl LocalBus {
    pub fn new(consumers: Vec<Arc<dyn EventConsumer>>) -> Self {
        LocalBus {
            consumers,
            live: broadcast::channel(1024).0,
        }
    }

    /// A live feed of published events (best effort; a slow listener skips ahead).
    pub fn listen(&self) -> broadcast::Receiver<DomainEvent> {
        self.live.subscribe()
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
        let _ = self.live.send(event.clone());
        Ok(())
    }

    fn name(&self) -> &'static str {
        "in-process"
    }
}
