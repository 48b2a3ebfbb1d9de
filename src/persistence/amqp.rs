//! The cloud event bus: RabbitMQ through lapin.
//!
//! - One durable topic exchange (`events.amqp_exchange`, default `jucr.events`); events are
//!   published persistent, as JSON, with the event type's routing key (`session.ended`),
//!   the event id as message id, and publisher confirms: `publish` returns once the
//!   broker has taken responsibility.
//! - One durable quorum queue per consumer, `jucr.<consumer>`, bound to the routing keys
//!   the consumer wants; manual acks; a failed handling is redelivered, and after
//!   `events.delivery_limit` deliveries the broker moves it to `jucr.<consumer>.dead`
//!   through the dead-letter exchange `<exchange>.dlx`.
//! - A lost connection is re-established on the next publish (the outbox relay retries
//!   with backoff); consumers reconnect with backoff.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

use crate::domain::DomainEvent;
use crate::domain::live::LiveUpdate;
use crate::domain::ports::{BusError, EventBus, EventConsumer};

fn bus_error(what: &str, e: impl std::fmt::Display) -> BusError {
    BusError(format!("{what}: {e}"))
}

struct Link {
    // Kept so the connection lives as long as its channel.
    _connection: Connection,
    channel: Channel,
}

async fn open(url: &SecretString, exchange: &str) -> Result<Link, BusError> {
    let connection = Connection::connect(url.expose_secret(), ConnectionProperties::default())
        .await
        .map_err(|e| bus_error("connecting to RabbitMQ", e))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| bus_error("opening a channel", e))?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .map_err(|e| bus_error("declaring the exchange", e))?;
    Ok(Link {
        _connection: connection,
        channel,
    })
}

/// Publishes domain events to the topic exchange.
pub struct AmqpBus {
    url: SecretString,
    exchange: String,
    link: Mutex<Option<Link>>,
    /// Consumer queues declared on every (re)connection, so that no event is published
    /// before its queues exist (an unroutable message would be dropped).
    topology: Vec<Arc<dyn EventConsumer>>,
    delivery_limit: u32,
}

impl AmqpBus {
    /// Connects lazily: a broker that is down at start-up does not stop charging.
    pub fn new(url: SecretString, exchange: String) -> Self {
        AmqpBus {
            url,
            exchange,
            link: Mutex::new(None),
            topology: Vec::new(),
            delivery_limit: 5,
        }
    }

    /// Declares these consumers' queues whenever it connects.
    pub fn with_topology(
        mut self,
        consumers: Vec<Arc<dyn EventConsumer>>,
        delivery_limit: u32,
    ) -> Self {
        self.topology = consumers;
        self.delivery_limit = delivery_limit;
        self
    }
}

#[async_trait]
impl EventBus for AmqpBus {
    async fn publish(&self, event: &DomainEvent) -> Result<(), BusError> {
        let mut link = self.link.lock().await;
        if link
            .as_ref()
            .is_none_or(|l| !l.channel.status().connected())
        {
            let fresh = open(&self.url, &self.exchange).await?;
            for consumer in &self.topology {
                declare_consumer(
                    &fresh.channel,
                    &self.exchange,
                    &**consumer,
                    self.delivery_limit,
                )
                .await?;
            }
            fresh
                .channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| bus_error("enabling publisher confirms", e))?;
            *link = Some(fresh);
        }
        let channel = &link.as_ref().expect("set just above; qed").channel;
        let payload = serde_json::to_vec(event).map_err(|e| bus_error("serializing", e))?;
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(event.id.to_string().into())
            .with_type(event.event_type.as_str().into())
            .with_timestamp(event.occurred_at.timestamp().max(0) as u64);
        let sent = channel
            .basic_publish(
                self.exchange.as_str().into(),
                event.event_type.routing_key().into(),
                BasicPublishOptions::default(),
                &payload,
                properties,
            )
            .await;
        let confirmed = match sent {
            Ok(confirm) => confirm.await,
            Err(e) => Err(e),
        };
        match confirmed {
            Ok(Confirmation::Ack(_)) => Ok(()),
            Ok(other) => {
                *link = None;
                Err(BusError(format!(
                    "broker did not confirm event {}: {other:?}",
                    event.id
                )))
            }
            Err(e) => {
                *link = None;
                Err(bus_error("publishing", e))
            }
        }
    }

    fn name(&self) -> &'static str {
        "rabbitmq"
    }
}

/// Names of a consumer's queues.
pub fn queue_name(consumer: &str) -> String {
    format!("jucr.{consumer}")
}

pub fn dead_letter_queue_name(consumer: &str) -> String {
    format!("jucr.{consumer}.dead")
}

/// Declares a consumer's queue (bound to the event types it wants) and its dead-letter
/// queue. Idempotent; safe from every replica.
pub async fn declare_consumer(
    channel: &Channel,
    exchange: &str,
    consumer: &dyn EventConsumer,
    delivery_limit: u32,
) -> Result<(), BusError> {
    let dlx = format!("{exchange}.dlx");
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            dlx.as_str().into(),
            ExchangeKind::Direct,
            durable_exchange,
            FieldTable::default(),
        )
        .await
        .map_err(|e| bus_error("declaring the dead-letter exchange", e))?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let dead = dead_letter_queue_name(consumer.name());
    channel
        .queue_declare(dead.as_str().into(), durable, FieldTable::default())
        .await
        .map_err(|e| bus_error("declaring the dead-letter queue", e))?;
    channel
        .queue_bind(
            dead.as_str().into(),
            dlx.as_str().into(),
            consumer.name().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| bus_error("binding the dead-letter queue", e))?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString("quorum".into()),
    );
    arguments.insert(
        ShortString::from("x-delivery-limit"),
        AMQPValue::LongInt(delivery_limit as i32),
    );
    arguments.insert(
        ShortString::from("x-dead-letter-exchange"),
        AMQPValue::LongString(dlx.as_str().into()),
    );
    arguments.insert(
        ShortString::from("x-dead-letter-routing-key"),
        AMQPValue::LongString(consumer.name().into()),
    );
    let queue = queue_name(consumer.name());
    channel
        .queue_declare(queue.as_str().into(), durable, arguments)
        .await
        .map_err(|e| bus_error("declaring the consumer queue", e))?;
    for event_type in consumer.wants() {
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.into(),
                event_type.routing_key().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| bus_error("binding the consumer queue", e))?;
    }
    Ok(())
}

/// Runs `consumer` on its queue until the task is dropped: acks what it handled, sends
/// back what failed (dead-lettered after the delivery limit), rejects what is not an
/// event at all, and reconnects with backoff when the broker goes away.
pub async fn run_consumer(
    url: SecretString,
    exchange: String,
    consumer: Arc<dyn EventConsumer>,
    delivery_limit: u32,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match consume(&url, &exchange, &*consumer, delivery_limit).await {
            Ok(()) => tracing::warn!(
                consumer = consumer.name(),
                "consumer stream ended; reconnecting"
            ),
            Err(e) => {
                tracing::warn!(consumer = consumer.name(), error = %e, "consumer failed; reconnecting")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn consume(
    url: &SecretString,
    exchange: &str,
    consumer: &dyn EventConsumer,
    delivery_limit: u32,
) -> Result<(), BusError> {
    let link = open(url, exchange).await?;
    let channel = &link.channel;
    declare_consumer(channel, exchange, consumer, delivery_limit).await?;
    channel
        .basic_qos(32, BasicQosOptions::default())
        .await
        .map_err(|e| bus_error("setting prefetch", e))?;
    let mut deliveries = channel
        .basic_consume(
            queue_name(consumer.name()).as_str().into(),
            format!("{}-{}", consumer.name(), uuid::Uuid::new_v4().simple())
                .as_str()
                .into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| bus_error("starting to consume", e))?;
    tracing::info!(consumer = consumer.name(), "consuming");
    // Failures in a row: each waits longer before the event goes back, so that a short
    // outage (the database restarting) does not use up the delivery limit in moments.
    let mut failures = 0u32;
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery.map_err(|e| bus_error("receiving", e))?;
        let Ok(event) = serde_json::from_slice::<DomainEvent>(&delivery.data) else {
            tracing::error!(
                consumer = consumer.name(),
                "not a domain event; dead-lettered"
            );
            delivery
                .reject(BasicRejectOptions { requeue: false })
                .await
                .map_err(|e| bus_error("rejecting", e))?;
            continue;
        };
        match consumer.handle(&event).await {
            Ok(()) => {
                failures = 0;
                delivery
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(|e| bus_error("acking", e))?;
            }
            Err(e) => {
                failures += 1;
                let wait = (Duration::from_millis(250) * 2u32.saturating_pow(failures.min(8) - 1))
                    .min(Duration::from_secs(30));
                tracing::warn!(consumer = consumer.name(), event_id = %event.id, error = %e, ?wait, "handling failed; redelivered after a pause");
                tokio::time::sleep(wait).await;
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| bus_error("nacking", e))?;
            }
        }
    }
    Ok(())
}

/// Declares `consumer`'s queues on the broker at `url` (so that events published before
/// it first runs wait for it).
pub async fn declare(
    url: &SecretString,
    exchange: &str,
    consumer: &dyn EventConsumer,
    delivery_limit: u32,
) -> Result<(), BusError> {
    let link = open(url, exchange).await?;
    declare_consumer(&link.channel, exchange, consumer, delivery_limit).await
}

/// The fanout exchange live updates travel on between replicas.
pub fn live_exchange_name(exchange: &str) -> String {
    format!("{exchange}.live")
}

/// Carries live updates between replicas until the task is dropped: sends this
/// replica's (batched: whatever is waiting goes in one message) to the fanout exchange
/// `<exchange>.live`, and hands everything that arrives on its own exclusive queue
/// (bound to that exchange and to every domain event) to `deliver`, skipping its own.
/// Best effort, no acks: live updates are not stored, the durable record is elsewhere.
pub async fn run_live_link(
    url: SecretString,
    exchange: String,
    replica: String,
    mut outbound: tokio::sync::mpsc::Receiver<LiveUpdate>,
    deliver: Arc<dyn Fn(LiveUpdate) + Send + Sync>,
    up: prometheus::IntGauge,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let result = live_link(&url, &exchange, &replica, &mut outbound, &*deliver, &up).await;
        up.set(0);
        match result {
            Ok(()) => tracing::warn!("live link closed; reconnecting"),
            Err(e) => tracing::warn!(error = %e, "live link failed; reconnecting"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Live updates per message, at most.
const LIVE_BATCH: usize = 512;

async fn live_link(
    url: &SecretString,
    exchange: &str,
    replica: &str,
    outbound: &mut tokio::sync::mpsc::Receiver<LiveUpdate>,
    deliver: &(dyn Fn(LiveUpdate) + Send + Sync),
    up: &prometheus::IntGauge,
) -> Result<(), BusError> {
    let link = open(url, exchange).await?;
    let channel = &link.channel;
    let live = live_exchange_name(exchange);
    channel
        .exchange_declare(
            live.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| bus_error("declaring the live exchange", e))?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| bus_error("declaring this replica's live queue", e))?;
    let name = queue.name().clone();
    for (source, key) in [(live.as_str(), ""), (exchange, "#")] {
        channel
            .queue_bind(
                name.clone(),
                source.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| bus_error("binding this replica's live queue", e))?;
    }
    let mut deliveries = channel
        .basic_consume(
            name.clone(),
            format!("live-{replica}").as_str().into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| bus_error("consuming live updates", e))?;
    tracing::info!(replica, "live link up");
    up.set(1);
    loop {
        tokio::select! {
            first = outbound.recv() => {
                let Some(first) = first else { return Ok(()) };
                let mut batch = vec![first];
                while batch.len() < LIVE_BATCH {
                    match outbound.try_recv() {
                        Ok(update) => batch.push(update),
                        Err(_) => break,
                    }
                }
                let payload = serde_json::to_vec(&batch).map_err(|e| bus_error("serializing", e))?;
                channel
                    .basic_publish(
                        live.as_str().into(),
                        "".into(),
                        BasicPublishOptions::default(),
                        &payload,
                        BasicProperties::default()
                            .with_content_type("application/json".into())
                            .with_app_id(replica.into()),
                    )
                    .await
                    .map_err(|e| bus_error("publishing live updates", e))?;
            }
            delivery = deliveries.next() => {
                let Some(delivery) = delivery else { return Ok(()) };
                let delivery = delivery.map_err(|e| bus_error("receiving", e))?;
                if delivery.exchange.as_str() == exchange {
                    if let Ok(event) = serde_json::from_slice::<DomainEvent>(&delivery.data) {
                        deliver(LiveUpdate::Event { event });
                    }
                    continue;
                }
                let own = delivery.properties.app_id().as_ref().is_some_and(|a| a.as_str() == replica);
                if own {
                    continue;
                }
                match serde_json::from_slice::<Vec<LiveUpdate>>(&delivery.data) {
                    Ok(updates) => updates.into_iter().for_each(deliver),
                    Err(e) => tracing::warn!(error = %e, "unreadable live updates dropped"),
                }
            }
        }
    }
}
