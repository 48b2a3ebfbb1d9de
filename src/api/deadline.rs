//! A deadline for request bodies. actix-http cuts off a client that is slow to send its
//! request head, but not one that sends the head and then trickles its body a byte at a
//! time: thousands of those would hold as many connections for as long as they like.
//! Every request body (not an upgraded connection's stream) must have arrived within
//! `http.body_timeout_secs` of the head: after that its reader gets a `TimedOut` error,
//! the request is answered 408, and actix-http closes the connection (its body unread).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::Payload;
use actix_http::error::PayloadError;
use actix_web::dev::ServiceRequest;
use actix_web::web::Bytes;
use futures_util::Stream;
use tokio::time::Sleep;

/// `request` with its body (if it has one) under a deadline of `timeout` from now.
pub fn body_deadline(mut request: ServiceRequest, timeout: Duration) -> ServiceRequest {
    if websocket_handshake(&request) {
        // An upgraded connection's payload is the connection itself.
        return request;
    }
    let (_, body) = request.parts_mut();
    match std::mem::replace(body, Payload::None) {
        Payload::None => {}
        payload => request.set_payload(Payload::Stream {
            payload: Box::pin(Deadline {
                body: payload,
                timer: Box::pin(tokio::time::sleep(timeout)),
                expired: false,
            }),
        }),
    }
    request
}

/// A WebSocket handshake (a GET asking for `Upgrade: websocket`), the only request whose
/// "body" may last: anything else that merely says `Connection: upgrade` keeps the
/// deadline.
fn websocket_handshake(request: &ServiceRequest) -> bool {
    request.method() == actix_web::http::Method::GET
        && request
            .headers()
            .get(actix_web::http::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// Whether a body read failed for want of time (answered 408, not 400).
pub fn timed_out(error: &PayloadError) -> bool {
    matches!(error, PayloadError::Io(e) if e.kind() == io::ErrorKind::TimedOut)
}

struct Deadline {
    body: Payload,
    timer: Pin<Box<Sleep>>,
    expired: bool,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut self.body).poll_next(cx) {
            return Poll::Ready(item);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            self.expired = true;
            let late = io::Error::new(io::ErrorKind::TimedOut, "the request body came too slowly");
            return Poll::Ready(Some(Err(PayloadError::Io(late))));
        }
        Poll::Pending
    }
}
