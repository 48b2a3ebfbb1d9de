//! The embedded profile's event bus: in-process, with the same at-least-once contract as
//! the broker-backed one. An event is "published" once every registered consumer that
//! wants it has handled it; a consumer's failure fails the publish, and the outbox relay
//! tries again later.

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::DomainEvent;
use crate::domain::ports::{BusError, EventBus, EventConsumer};

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
