//! The HTTP server: actix-web's `App` on actix-http's HTTP/1 service, with upgraded
//! (WebSocket) connections relayed here instead of by actix-http's dispatcher (ADR 0016).
//!
//! actix-web's `HttpServer` leaves an upgraded connection inside actix-http's HTTP/1
//! dispatcher, which keeps an 8 KiB read buffer and an 8 KiB write buffer for the
//! connection's whole life. A charger holds its socket for days and sends a few hundred
//! bytes a minute: 16 KiB each is 240 MB for 15,000 chargers. So the service is built here
//! with an upgrade service: actix-http hands it every request that asks for an upgrade,
//! together with the connection, and drops its dispatcher. [`relay`] passes the request to
//! the same `App` (routing, middleware and the handlers in `ocpp.rs` and `graphql/`,
//! unchanged), writes the response head with the connection's own HTTP/1 codec, then
//! moves bytes: from the socket through a buffer on the stack into the request's payload,
//! one chunk at a time as the handler takes them, and from the response body straight to
//! the socket. Between reads an upgraded connection holds no buffer of ours.

use std::cell::RefCell;
use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener};
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use actix_codec::{AsyncRead, AsyncWrite, Encoder, Framed, FramedParts, ReadBuf};
use actix_http::body::{BoxBody, MessageBody};
use actix_http::error::PayloadError;
use actix_http::h1::{Codec, Message};
use actix_http::{
    ConnectionType, HttpServiceBuilder, Method, Payload, Request, Response, StatusCode,
};
use actix_server::{GracefulShutdownSignal, Server};
use actix_service::{
    IntoServiceFactory, Service, ServiceFactory, fn_factory, fn_service, map_config,
};
use actix_web::dev::{AppConfig, ServiceRequest, ServiceResponse};
use actix_web::{App, Error};
use bytes::{Buf, Bytes};
use futures_util::Stream;
use rustls::ServerConfig;
use tokio::time::{Sleep, sleep};

use crate::config::HttpSettings;

/// What one read from a socket takes at most; it lives on the stack while reading.
const READ_CHUNK: usize = 4096;
/// Reads and writes one relay makes before it lets other connections of its worker run.
const ROUNDS_PER_POLL: usize = 16;
/// actix-web's defaults, kept as they were under `HttpServer`.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What `App::new()…` builds, as the services below take it.
pub trait AppFactory<B>:
    ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<B>,
        Error = Error,
        InitError = (),
    > + 'static
{
}

impl<A, B> AppFactory<B> for A where
    A: ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<B>,
            Error = Error,
            InitError = (),
        > + 'static
{
}

/// Serves `app` on the plain listener and, when given, on the TLS one (where
/// [`super::tls::on_connect`] sees each connection first: client certificates).
pub fn serve<F, A, B>(
    app: F,
    settings: &HttpSettings,
    plain: TcpListener,
    tls: Option<(TcpListener, ServerConfig)>,
) -> io::Result<Server>
where
    F: Fn() -> App<A> + Send + Clone + 'static,
    A: AppFactory<B>,
    B: MessageBody + 'static,
{
    let mut builder = Server::build()
        .disable_signals()
        .shutdown_timeout(settings.shutdown_grace_secs);
    if settings.workers > 0 {
        builder = builder.workers(settings.workers);
    }
    let shutdown = builder.graceful_shutdown_signal();

    let addr = plain.local_addr()?;
    let (factory, signal) = (app.clone(), shutdown.clone());
    builder = builder.listen(format!("jucr-http-{addr}"), plain, move || {
        service_builder(addr, &signal)
            .upgrade(upgrade(factory()))
            .finish(http(factory()))
            .tcp()
    })?;

    if let Some((listener, config)) = tls {
        let addr = listener.local_addr()?;
        builder = builder.listen(format!("jucr-https-{addr}"), listener, move || {
            service_builder(addr, &shutdown)
                .secure()
                .on_connect_ext(|io: &_, extensions: &mut _| super::tls::on_connect(io, extensions))
                .upgrade(upgrade(app()))
                .finish(http(app()))
                .rustls_0_23(config.clone())
        })?;
    }
    Ok(builder.run())
}

/// What both listeners' services share, set as `HttpServer` set it.
fn service_builder<T, S>(
    addr: SocketAddr,
    shutdown: &GracefulShutdownSignal,
) -> HttpServiceBuilder<T, S>
where
    S: ServiceFactory<Request, Config = ()>,
    S::Error: Into<Response<BoxBody>> + 'static,
    S::InitError: fmt::Debug,
    <S::Service as Service<Request>>::Future: 'static,
{
    let shutdown = shutdown.clone();
    HttpServiceBuilder::default()
        .keep_alive(KEEP_ALIVE)
        .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
        .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
        .local_addr(addr)
        .graceful_shutdown_signal(move || {
            let shutdown = shutdown.clone();
            async move { shutdown.notified().await }
        })
}

/// One worker's `App` as an actix-http service.
fn http<A, B>(
    app: App<A>,
) -> impl ServiceFactory<
    Request,
    Config = (),
    Response = ServiceResponse<B>,
    Error = Error,
    InitError = (),
    Service: Service<Request, Future: 'static>,
> + 'static
where
    A: AppFactory<B>,
    B: MessageBody + 'static,
{
    map_config(app.into_factory(), |_| AppConfig::default())
}

/// One worker's upgrade service: its own instance of the `App`, and [`relay`].
fn upgrade<T, A, B>(
    app: App<A>,
) -> impl ServiceFactory<
    (Request, Framed<T, Codec>),
    Config = (),
    Response = (),
    Error = Error,
    InitError = (),
    Future: 'static,
> + 'static
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    A: AppFactory<B>,
    B: MessageBody + 'static,
{
    let app = http(app);
    fn_factory(move || {
        let service = app.new_service(());
        async move {
            let app = Rc::new(service.await?);
            Ok(fn_service(move |(request, framed)| {
                relay(app.clone(), request, framed)
            }))
        }
    })
}

/// Answers an upgrade request with `app` and, if it switched protocols, relays the
/// connection until the handler's body ends or the connection fails.
async fn relay<T, S, B>(app: Rc<S>, request: Request, framed: Framed<T, Codec>) -> Result<(), Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
    S: Service<Request, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody + 'static,
{
    // actix-http keeps this future for the connection's life, sized for its largest
    // state. Answering runs the App's middleware futures, several KiB: boxed, they are
    // freed once the request is answered, and what stays is the small `Relay`.
    let relay = Box::pin(answer(app, request, framed)).await?;
    relay
        .await
        .or_else(|e| if peer_left(&e) { Ok(()) } else { Err(e.into()) })
}

/// Errors that say the peer went away: they end a connection, they are not the server's.
fn peer_left(error: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        error.kind(),
        BrokenPipe
            | ConnectionReset
            | ConnectionAborted
            | NotConnected
            | TimedOut
            | UnexpectedEof
            | WriteZero
    )
}

/// Runs the upgrade request through `app`, reading the socket into the request's
/// payload meanwhile, and returns the relay that writes the answer and what follows.
async fn answer<T, S, B>(
    app: Rc<S>,
    mut request: Request,
    framed: Framed<T, Codec>,
) -> Result<Relay<T>, Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
    S: Service<Request, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody + 'static,
{
    let FramedParts {
        io,
        mut codec,
        read_buf,
        write_buf,
        ..
    } = framed.into_parts();
    let inbound = Rc::new(RefCell::new(Inbound::default()));
    if !read_buf.is_empty() {
        // Bytes the client sent right behind its request head; copied, because the
        // dispatcher's buffer is 8 KiB.
        inbound.borrow_mut().chunk = Some(Bytes::copy_from_slice(&read_buf));
    }
    drop(read_buf);
    let head_request = request.method() == Method::HEAD;
    *request.payload() = Payload::Stream {
        payload: Box::pin(InboundStream(inbound.clone())),
    };
    let mut relay = Relay::new(io, inbound);

    // A request that asks for an upgrade may still carry a body (a POST with `Upgrade:
    // h2c`, say): the socket is read while the App runs, so a handler that reads its
    // body gets it, and a peer that leaves is noticed.
    let mut call = pin!(app.call(request));
    let response = poll_fn(|cx| {
        if let Poll::Ready(result) = call.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        while relay.poll_inbound(cx) {}
        Poll::Pending
    })
    .await;
    let response = match response {
        Ok(response) => Response::from(response).map_into_boxed_body(),
        Err(error) => Response::from(error),
    };
    let (mut head, body) = response.into_parts();
    if head.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Refused (401, 404, 400...): answered, then closed. The connection was asked
        // to become something else; it is not kept for another request.
        head.head_mut().set_connection_type(ConnectionType::Close);
        relay.stop_feeding(Ended::Eof);
    }
    // What the dispatcher had not yet written (an answer to a request pipelined before
    // this one) goes first. The codec, which decoded an upgrade request, frames any
    // body by the connection's end (or by its length), so body bytes go out as they come.
    let mut out = write_buf;
    codec.encode(Message::Item((head, body.size())), &mut out)?;
    relay.pending = out.freeze();
    relay.outbound = (!head_request).then_some(body);
    Ok(relay)
}

/// What the relay has read for the handler: one chunk at a time.
#[derive(Default)]
struct Inbound {
    /// Read from the socket, not yet taken by the handler.
    chunk: Option<Bytes>,
    ended: Ended,
    /// The handler, waiting for a chunk.
    reader: Option<Waker>,
    /// The relay, waiting for the handler to take the chunk (or to drop the payload).
    relay: Option<Waker>,
}

#[derive(Default)]
enum Ended {
    #[default]
    No,
    Eof,
    /// The error is handed out once, then the stream ends.
    Failed(Option<PayloadError>),
}

impl Inbound {
    fn end(&mut self, ended: Ended) {
        if matches!(self.ended, Ended::No) {
            self.ended = ended;
        }
        if let Some(reader) = self.reader.take() {
            reader.wake();
        }
    }
}

/// Registers `cx`'s waker in `slot` unless it is there already.
fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}

/// The request's payload: the handler's end of [`Inbound`].
struct InboundStream(Rc<RefCell<Inbound>>);

impl Stream for InboundStream {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut inbound = self.0.borrow_mut();
        if let Some(chunk) = inbound.chunk.take() {
            if let Some(relay) = inbound.relay.take() {
                relay.wake();
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
        match &mut inbound.ended {
            Ended::No => {
                register(&mut inbound.reader, cx);
                Poll::Pending
            }
            Ended::Eof => Poll::Ready(None),
            Ended::Failed(error) => Poll::Ready(error.take().map(Err)),
        }
    }
}

impl Drop for InboundStream {
    fn drop(&mut self) {
        // The relay may be waiting for this reader: from now on it reads to discard.
        if let Some(relay) = self.0.borrow_mut().relay.take() {
            relay.wake();
        }
    }
}

/// Moves bytes both ways on an upgraded connection.
struct Relay<T> {
    io: T,
    /// The request's payload, read by the handler; `None` once it has ended or the
    /// handler has dropped it. Without it the socket is still read, to discard, so that
    /// the peer's leaving is noticed.
    inbound: Option<Rc<RefCell<Inbound>>>,
    /// Whether the socket may still hold bytes to read.
    reading: bool,
    /// The response body, written by the handler; `None` once it has ended.
    outbound: Option<BoxBody>,
    /// Bytes taken from `outbound` (or the response head) not yet accepted by the socket.
    pending: Bytes,
    /// Whether everything accepted by the socket has been flushed (TLS buffers).
    flushed: bool,
    /// Once our side is shut down: until when the peer's last bytes are read and
    /// dropped, so that closing does not reset the connection under them (our close
    /// frame, an error answer).
    linger: Option<Pin<Box<Sleep>>>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Relay<T> {
    fn new(io: T, inbound: Rc<RefCell<Inbound>>) -> Self {
        Relay {
            io,
            inbound: Some(inbound),
            reading: true,
            outbound: None,
            pending: Bytes::new(),
            flushed: true,
            linger: None,
        }
    }

    /// Ends the handler's payload; the socket is still read, to discard.
    fn stop_feeding(&mut self, ended: Ended) {
        if let Some(inbound) = self.inbound.take() {
            inbound.borrow_mut().end(ended);
        }
    }

    /// Writes what the handler sends; true if anything moved.
    fn poll_outbound(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        let mut moved = false;
        loop {
            while !self.pending.is_empty() {
                match Pin::new(&mut self.io).poll_write(cx, &self.pending)? {
                    Poll::Ready(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Poll::Ready(n) => {
                        self.pending.advance(n);
                        self.flushed = false;
                        moved = true;
                    }
                    Poll::Pending => return Ok(moved),
                }
            }
            if !self.flushed && Pin::new(&mut self.io).poll_flush(cx)?.is_ready() {
                self.flushed = true;
            }
            let Some(body) = self.outbound.as_mut() else {
                return Ok(moved);
            };
            match Pin::new(body).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => self.pending = chunk,
                Poll::Ready(Some(Err(error))) => return Err(io::Error::other(error.to_string())),
                Poll::Ready(None) => self.outbound = None,
                Poll::Pending => return Ok(moved),
            }
            moved = true;
        }
    }

    /// Reads what the peer sends: into the payload once the handler has taken the last
    /// chunk, or nowhere when nobody reads any more; true if anything moved.
    fn poll_inbound(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.reading {
            return false;
        }
        if self
            .inbound
            .as_ref()
            .is_some_and(|i| Rc::strong_count(i) == 1)
        {
            // The handler has dropped its payload.
            self.inbound = None;
        }
        if let Some(inbound) = &self.inbound {
            let mut inbound = inbound.borrow_mut();
            if inbound.chunk.is_some() {
                // The handler is behind; it wakes us when it takes the chunk.
                register(&mut inbound.relay, cx);
                return false;
            }
        }
        let mut buf = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut read = ReadBuf::uninit(&mut buf);
        let ended = match Pin::new(&mut self.io).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) if read.filled().is_empty() => Ended::Eof,
            Poll::Ready(Ok(())) => {
                if let Some(inbound) = &self.inbound {
                    let mut inbound = inbound.borrow_mut();
                    inbound.chunk = Some(Bytes::copy_from_slice(read.filled()));
                    if let Some(reader) = inbound.reader.take() {
                        reader.wake();
                    }
                }
                return true;
            }
            Poll::Ready(Err(error)) => Ended::Failed(Some(PayloadError::Io(error))),
            Poll::Pending => return false,
        };
        self.reading = false;
        self.stop_feeding(ended);
        true
    }

    /// Shuts our side down, then reads and drops what the peer still sends until it
    /// closes too, or `CLIENT_DISCONNECT_TIMEOUT` has passed.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.linger.is_none() {
            if let Err(_closed) = ready!(Pin::new(&mut self.io).poll_shutdown(cx)) {
                return Poll::Ready(());
            }
            self.stop_feeding(Ended::Eof);
            self.linger = Some(Box::pin(sleep(CLIENT_DISCONNECT_TIMEOUT)));
        }
        if self
            .linger
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_ready())
        {
            return Poll::Ready(());
        }
        while self.reading {
            if !self.poll_inbound(cx) {
                return Poll::Pending;
            }
        }
        Poll::Ready(())
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Future for Relay<T> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        for _ in 0..ROUNDS_PER_POLL {
            let wrote = this.poll_outbound(cx)?;
            if this.outbound.is_none() && this.pending.is_empty() {
                // The handler is done.
                return this.poll_close(cx).map(Ok);
            }
            let read = this.poll_inbound(cx);
            if !wrote && !read {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<T> Drop for Relay<T> {
    fn drop(&mut self) {
        // The handler may still be reading: tell it the connection is gone, or it waits
        // forever.
        if let Some(inbound) = self.inbound.take() {
            inbound
                .borrow_mut()
                .end(Ended::Failed(Some(PayloadError::Incomplete(None))));
        }
    }
}
