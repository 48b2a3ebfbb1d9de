//! The charger's connection as its actor sees it: what arrives ([`Incoming`]), what it
//! writes to ([`Link`]), the messages held while storage is behind ([`Admitted`]), and
//! the farewell to the registry when the actor goes ([`Departure`]).

use super::*;

/// What a charger's connection delivers to its actor, in order.
#[derive(Debug)]
pub enum Incoming {
    /// A message (one sent as binary is read as text, leniently).
    Text(String),
    Ping(Bytes),
    Pong,
    /// The charger closed the connection, with this close code if it gave one.
    Close(Option<u16>),
    /// The charger broke the WebSocket protocol or a limit: the connection closes with
    /// this code. Nothing follows.
    Failed {
        code: u16,
        reason: &'static str,
    },
    /// The connection broke. Nothing follows.
    Lost(std::io::Error),
}

/// A charger's connection as its actor writes to it. Frames are sent in the order
/// written; after `close`, nothing more is.
pub trait Link {
    fn text(&self, text: &str);
    /// Sends a ping; `false` if what was written before the last ping still waits
    /// unsent (the charger is not reading): the connection is then dropped.
    fn ping(&self) -> bool;
    fn pong(&self, payload: &[u8]);
    /// Closes with this close code and reason, or with none.
    fn close(&self, reason: Option<(u16, &str)>);
}

/// Tells the registry and the batch writer that the connection has ended when the
/// actor is dropped: after it stops, and also when it panics.
pub(super) struct Departure {
    pub(super) id: ChargerId,
    pub(super) conn_id: Uuid,
    pub(super) services: Arc<Services>,
    pub(super) span: tracing::Span,
}

impl Drop for Departure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.span
                .in_scope(|| tracing::error!("charger actor died; its socket is closed with 1011"));
        }
        self.services.registry.do_send(Disconnected {
            charger_id: self.id.clone(),
            conn_id: self.conn_id,
        });
        self.services.writer.seen(self.id.clone(), Utc::now());
    }
}

impl ChargerActor {
    /// Starts the actor on the current arbiter, reading `incoming` once the registry
    /// has answered [`Connected`]. While storage is behind, the charger's next message
    /// waits in its socket (ADR 0015) and nothing is lost; the actor meanwhile goes on
    /// with its mailbox (a newer connection, a shutdown, the operator's calls).
    pub fn start_reading(
        self,
        incoming: impl Stream<Item = Incoming> + Unpin + 'static,
    ) -> Addr<Self> {
        let admitted = Admitted {
            incoming,
            writer: self.services.writer.clone(),
            held: None,
        };
        ChargerActor::create(|ctx| {
            ctx.add_stream(admitted);
            self
        })
    }

    pub(super) fn on_message(&mut self, text: &str, ctx: &mut Context<Self>) {
        // Last-seen is kept to the second: one update per second, not one per frame.
        if self
            .seen_recorded
            .is_none_or(|at| at.elapsed() >= SEEN_RESOLUTION)
        {
            self.seen_recorded = Some(Instant::now());
            self.services.writer.seen(self.id.clone(), Utc::now());
        }
        self.on_text(text, ctx);
    }
}

/// [`BatchWriter::admit`], for one held message.
type Admission = Pin<Box<dyn Future<Output = ()>>>;

/// A charger's messages as its actor reads them: a message that arrives while the batch
/// writer is behind is handed on once [`BatchWriter::admit`] lets it through.
pub(super) struct Admitted<S> {
    pub(super) incoming: S,
    pub(super) writer: BatchWriter,
    /// The message read while storage was behind, and the wait for room.
    pub(super) held: Option<(Incoming, Admission)>,
}

impl<S: Stream<Item = Incoming> + Unpin> Stream for Admitted<S> {
    type Item = Incoming;

    fn poll_next(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<Incoming>> {
        let this = self.get_mut();
        if let Some((_, admit)) = &mut this.held {
            ready!(admit.as_mut().poll(cx));
            return Poll::Ready(this.held.take().map(|(message, _)| message));
        }
        match ready!(Pin::new(&mut this.incoming).poll_next(cx)) {
            Some(message @ Incoming::Text(_)) if this.writer.behind() => {
                let writer = this.writer.clone();
                let mut admit: Admission = Box::pin(async move { writer.admit().await });
                if admit.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(message));
                }
                this.held = Some((message, admit));
                Poll::Pending
            }
            other => Poll::Ready(other),
        }
    }
}

/// What the charger sends, from its connection (`crate::api::socket::Frames`). The
/// stream ends when the charger closes its side; the actor stops then.
impl StreamHandler<Incoming> for ChargerActor {
    fn handle(&mut self, incoming: Incoming, ctx: &mut Self::Context) {
        self.awaiting_pong = false;
        match incoming {
            Incoming::Text(text) => self.on_message(&text, ctx),
            Incoming::Ping(payload) => self.link.pong(&payload),
            Incoming::Pong => {}
            Incoming::Close(code) => {
                self.span
                    .in_scope(|| tracing::info!(?code, "charger closed the connection"));
                ctx.stop();
            }
            Incoming::Failed { code, reason } => {
                self.span
                    .in_scope(|| tracing::warn!(code, reason, "closing the connection"));
                self.link.close(Some((code, reason)));
                ctx.stop();
            }
            Incoming::Lost(error) => {
                self.span
                    .in_scope(|| tracing::info!(error = %error, "connection lost"));
                ctx.stop();
            }
        }
    }
}
