//! One integration binary (faster to link than one per file).

mod abuse;
mod amqp;
mod backpressure;
mod billing;
mod capacity;
mod charge_point;
mod contract;
mod events;
mod graphql;
mod helpers;
mod keepalive;
mod live;
mod malformed;
mod migrations;
mod ocm_sync;
mod ocpp201;
mod ocpp_core;
mod operator_calls;
mod rest_api;
mod restart;
mod stations;
mod subscriptions;
mod supervision;
mod tls;
mod webhooks;
