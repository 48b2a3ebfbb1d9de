//! A charger's WebSocket, read and written by its `ChargerActor` itself (ADR 0021).
//!
//! [`accept`] answers the upgrade and returns the connection's two ends: [`Frames`], the
//! messages the charger sends (the actor reads them as a stream), and [`Socket`], the
//! actor's side of the response body (it encodes each frame straight into the bytes the
//! relay in `server.rs` writes next). Nothing sits between the relay and the actor: one
//! wake-up each way per frame, no channel, no timer. GraphQL subscriptions keep actix-ws.
//!
//! A charger that sends but stops reading cannot make us buffer without bound: its
//! connection is dropped when bytes have waited unsent from one ping to the next (a
//! ping interval, as the send timeout of the socket task before ADR 0021), or at once
//! past [`MAX_UNSENT`] bytes.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use actix_codec::Decoder;
use actix_http::body::{BodySize, MessageBody};
use actix_http::error::PayloadError;
use actix_http::ws::{self, CloseCode, CloseReason, Codec, Frame, Item, OpCode, Parser};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;

use crate::actors::charger::{Incoming, Link};

/// Bytes written for a charger and not yet taken by its socket, past which the charger
/// is taken not to read and its connection is dropped. Ample for a connection that
/// reads: the relay takes everything at once whenever the socket has room.
pub const MAX_UNSENT: usize = 4 << 20;

/// Completes the WebSocket handshake (without choosing a subprotocol: the caller adds
/// `Sec-WebSocket-Protocol`). `max_message` caps a message, continuations included.
pub fn accept(
    req: &HttpRequest,
    payload: web::Payload,
    max_message: usize,
) -> Result<(HttpResponse, Socket, Frames), ws::HandshakeError> {
    let outbox = Rc::new(RefCell::new(Outbox::default()));
    let response = ws::handshake(req.head())?
        .message_body(Outgoing(outbox.clone()).boxed())
        .expect("a body that is a stream of its own is accepted by any response; qed");
    let frames = Frames {
        payload: payload.into_inner(),
        buf: BytesMut::new(),
        codec: Codec::new().max_size(max_message),
        max_message,
        partial: None,
        ended: false,
    };
    Ok((HttpResponse::from(response), Socket { outbox }, frames))
}

#[derive(Default)]
struct Outbox {
    /// Encoded frames the relay has not taken yet.
    buf: BytesMut,
    state: State,
    /// The relay, waiting for bytes.
    relay: Option<Waker>,
    /// Bytes the relay has taken so far.
    taken: u64,
    /// `taken` at the last ping, if bytes were waiting then.
    waiting_at_ping: Option<u64>,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Open,
    /// The close frame is in `buf` (or was sent): nothing more is written.
    Closed,
    /// The charger stopped reading: the connection is dropped, unsent bytes with it.
    Abandoned,
}

impl Outbox {
    /// Drops the connection of a charger that does not read, with what it holds: no
    /// close frame would get through. `why` says which rule it broke.
    fn abandon(&mut self, why: &'static str) {
        tracing::warn!(
            unsent = self.buf.len(),
            why,
            "charger is not reading; dropping the connection"
        );
        self.state = State::Abandoned;
        self.buf = BytesMut::new();
        if let Some(relay) = self.relay.take() {
            relay.wake();
        }
    }
}

/// The actor's end: writes frames for the relay to send.
pub struct Socket {
    outbox: Rc<RefCell<Outbox>>,
}

impl Socket {
    /// Appends a frame unless the socket is closed; wakes the relay.
    fn write(&self, encode: impl FnOnce(&mut BytesMut)) {
        let mut outbox = self.outbox.borrow_mut();
        if outbox.state != State::Open {
            return;
        }
        encode(&mut outbox.buf);
        if outbox.buf.len() > MAX_UNSENT {
            outbox.abandon("past the unsent cap");
        } else if let Some(relay) = outbox.relay.take() {
            relay.wake();
        }
    }

    fn write_close(&self, reason: Option<CloseReason>) {
        self.write(|buf| Parser::write_close(buf, reason, false));
        let mut outbox = self.outbox.borrow_mut();
        if outbox.state == State::Open {
            outbox.state = State::Closed;
        }
    }
}

impl Link for Socket {
    fn text(&self, text: &str) {
        self.write(|buf| Parser::write_message(buf, text, OpCode::Text, true, false));
    }

    fn ping(&self) -> bool {
        {
            let mut outbox = self.outbox.borrow_mut();
            if outbox.state == State::Open && outbox.waiting_at_ping == Some(outbox.taken) {
                outbox.abandon("bytes unsent from one ping to the next");
                return false;
            }
            outbox.waiting_at_ping = (!outbox.buf.is_empty()).then_some(outbox.taken);
        }
        self.write(|buf| Parser::write_message(buf, b"", OpCode::Ping, true, false));
        true
    }

    fn pong(&self, payload: &[u8]) {
        self.write(|buf| Parser::write_message(buf, payload, OpCode::Pong, true, false));
    }

    fn close(&self, reason: Option<(u16, &str)>) {
        self.write_close(reason.map(|(code, description)| CloseReason {
            code: CloseCode::from(code),
            description: Some(description.to_owned()),
        }));
    }
}

impl Drop for Socket {
    /// The actor is gone without closing (its `stopped` closes, with 1011 when it
    /// panicked): a last resort, so that the charger is told and reconnects.
    fn drop(&mut self) {
        self.write_close(Some(CloseReason {
            code: CloseCode::Error,
            description: Some("internal error".into()),
        }));
    }
}

/// The response body: what the actor wrote, handed to the relay as it asks.
struct Outgoing(Rc<RefCell<Outbox>>);

impl MessageBody for Outgoing {
    type Error = io::Error;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, io::Error>>> {
        let mut outbox = self.0.borrow_mut();
        if !outbox.buf.is_empty() {
            outbox.taken += outbox.buf.len() as u64;
            // `split` leaves nothing allocated behind: an idle connection holds no buffer.
            return Poll::Ready(Some(Ok(outbox.buf.split().freeze())));
        }
        match outbox.state {
            State::Open => {
                if !outbox
                    .relay
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    outbox.relay = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            State::Closed => Poll::Ready(None),
            State::Abandoned => Poll::Ready(Some(Err(io::Error::other(
                "charger is not reading its socket",
            )))),
        }
    }
}

/// The charger's end: its messages, continuations joined, for its actor to read. Ends
/// when the charger closes its side of the connection.
pub struct Frames {
    payload: actix_web::dev::Payload,
    buf: BytesMut,
    codec: Codec,
    max_message: usize,
    /// A message arriving in continuation frames: whether it is text, and so far.
    partial: Option<(bool, BytesMut)>,
    ended: bool,
}

impl Frames {
    /// A whole message, or `None` while a continuation is still open.
    fn message(&mut self, frame: Frame) -> Option<Incoming> {
        let (is_text, bytes) = match frame {
            Frame::Text(bytes) => (true, bytes),
            // OCPP-J uses text frames; a charger sending JSON as binary is read leniently.
            Frame::Binary(bytes) => (false, bytes),
            Frame::Ping(bytes) => return Some(Incoming::Ping(bytes)),
            Frame::Pong(_) => return Some(Incoming::Pong),
            Frame::Close(reason) => return Some(Incoming::Close(reason.map(|r| r.code.into()))),
            Frame::Continuation(item) => {
                let (first, last, bytes) = match item {
                    Item::FirstText(b) => (Some(true), false, b),
                    Item::FirstBinary(b) => (Some(false), false, b),
                    Item::Continue(b) => (None, false, b),
                    Item::Last(b) => (None, true, b),
                };
                match (first, &mut self.partial) {
                    (Some(_), Some(_)) => return Some(protocol("continuation already started")),
                    (None, None) => return Some(protocol("continuation not started")),
                    (Some(is_text), None) => self.partial = Some((is_text, BytesMut::new())),
                    (None, Some(_)) => {}
                }
                let (_, joined) = self
                    .partial
                    .as_mut()
                    .expect("set or checked to be set just above; qed");
                if joined.len() + bytes.len() > self.max_message {
                    return Some(Incoming::Failed {
                        code: CloseCode::Size.into(),
                        reason: "message too big",
                    });
                }
                joined.extend_from_slice(&bytes);
                if !last {
                    return None;
                }
                let (is_text, joined) = self
                    .partial
                    .take()
                    .expect("checked to be set just above; qed");
                (is_text, joined.freeze())
            }
        };
        if is_text {
            match String::from_utf8(bytes.to_vec()) {
                Ok(text) => Some(Incoming::Text(text)),
                Err(_) => Some(Incoming::Failed {
                    code: CloseCode::Invalid.into(),
                    reason: "text frame is not UTF-8",
                }),
            }
        } else {
            Some(Incoming::Text(String::from_utf8_lossy(&bytes).into_owned()))
        }
    }
}

fn protocol(reason: &'static str) -> Incoming {
    Incoming::Failed {
        code: CloseCode::Protocol.into(),
        reason,
    }
}

impl Stream for Frames {
    type Item = Incoming;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match this.codec.decode(&mut this.buf) {
                Ok(Some(frame)) => {
                    if let Some(message) = this.message(frame) {
                        this.ended = matches!(message, Incoming::Failed { .. });
                        return Poll::Ready(Some(message));
                    }
                    continue;
                }
                Ok(None) => {}
                Err(error) => {
                    this.ended = true;
                    return Poll::Ready(Some(match error {
                        ws::ProtocolError::Overflow => Incoming::Failed {
                            code: CloseCode::Size.into(),
                            reason: "message too big",
                        },
                        error => {
                            tracing::warn!(%error, "WebSocket protocol error");
                            protocol("protocol error")
                        }
                    }));
                }
            }
            match Pin::new(&mut this.payload).poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => {
                    if this.buf.is_empty() {
                        this.buf = BytesMut::from(bytes);
                    } else {
                        this.buf.extend_from_slice(&bytes);
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    this.ended = true;
                    let error = match error {
                        PayloadError::Io(error) => error,
                        error => io::Error::other(error.to_string()),
                    };
                    return Poll::Ready(Some(Incoming::Lost(error)));
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket and the body its relay would read, without a connection.
    fn socket() -> (Socket, Pin<Box<Outgoing>>) {
        let outbox = Rc::new(RefCell::new(Outbox::default()));
        let body = Box::pin(Outgoing(outbox.clone()));
        (Socket { outbox }, body)
    }

    /// What the relay would take now.
    fn take(body: &mut Pin<Box<Outgoing>>) -> Poll<Option<Result<Bytes, io::Error>>> {
        body.as_mut()
            .poll_next(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn a_charger_that_reads_is_pinged_on() {
        let (socket, mut body) = socket();
        for _ in 0..3 {
            socket.text("[3,\"1\",{}]");
            assert!(socket.ping(), "the bytes before this ping were taken");
            assert!(matches!(take(&mut body), Poll::Ready(Some(Ok(_)))));
        }
        assert!(matches!(take(&mut body), Poll::Pending), "nothing waits");
    }

    #[test]
    fn bytes_unsent_from_one_ping_to_the_next_drop_the_connection() {
        let (socket, mut body) = socket();
        socket.text("[3,\"1\",{}]");
        assert!(socket.ping(), "the answer has only just been written");
        socket.text("[3,\"2\",{}]");
        assert!(!socket.ping(), "nothing was taken for a whole interval");
        assert!(matches!(take(&mut body), Poll::Ready(Some(Err(_)))));
        socket.text("[3,\"3\",{}]");
        assert!(
            matches!(take(&mut body), Poll::Ready(Some(Err(_)))),
            "nothing more is written"
        );
    }

    #[test]
    fn past_the_unsent_cap_the_connection_is_dropped() {
        let (socket, mut body) = socket();
        let text = "x".repeat(64 * 1024);
        for _ in 0..(MAX_UNSENT / text.len() - 1) {
            socket.text(&text);
        }
        assert!(
            matches!(take(&mut body), Poll::Ready(Some(Ok(_)))),
            "under the cap"
        );
        for _ in 0..=(MAX_UNSENT / text.len()) {
            socket.text(&text);
        }
        assert!(matches!(take(&mut body), Poll::Ready(Some(Err(_)))));
    }

    #[test]
    fn after_the_close_frame_nothing_is_written_and_the_body_ends() {
        let (socket, mut body) = socket();
        socket.close(Some((1008, "replaced by a newer connection")));
        socket.text("[3,\"1\",{}]");
        let Poll::Ready(Some(Ok(frame))) = take(&mut body) else {
            panic!("the close frame is sent");
        };
        assert_eq!(frame[0], 0x88, "a final close frame");
        assert_eq!(&frame[2..4], &1008u16.to_be_bytes());
        assert!(matches!(take(&mut body), Poll::Ready(None)));
        drop(socket);
        assert!(
            matches!(take(&mut body), Poll::Ready(None)),
            "no second close from the drop"
        );
    }
}
