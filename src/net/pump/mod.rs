//! The pump of one WebSocket, for inbound connections and outbound clients alike: one task that
//! hands the socket's frames to its handler as events and drains its bounded outbound queue,
//! batching whatever is waiting into one flush. Reading and writing happen in this one task, so a
//! message and its reply cost no hand-over between tasks.
//!
//! A socket's life is a `Phase` (`phase.rs`): open; closing (the peer's close frame arrived, or
//! it stopped answering pings); read failed (a protocol error: our close frame with its code is
//! the last thing written); close sent (only the peer's answer is awaited, for a bounded time).
//! `io.rs` holds the socket side: reads, batched writes, close frames.

mod io;
mod phase;

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use self::io::{finish_then_close, peer_went_away, send_close, write_batch, ReadWake};
use self::phase::Phase;
use super::close::close_code_for;
use super::compression::socket::SocketCompression;
use super::outbox::{Outbound, OutboxReader, Taken};
use crate::event::{EventSink, IsolateEvent, IsolateGone, Target};
use crate::stats::Traffic;

pub use self::io::{PumpedSocket, TcpUnder, CLOSE_HANDSHAKE_TIMEOUT};
pub use self::phase::Ending;

/// How a socket is looked after while it is open.
#[derive(Debug, Clone)]
pub struct PumpOptions {
    /// Ping every `.0`; close with 1001 when nothing arrives for `.0 + .1`.
    pub keepalive: Option<(Duration, Duration)>,
    /// Counters the socket's messages are added to.
    pub traffic: Arc<Traffic>,
    /// permessage-deflate, when it was agreed for this socket.
    pub compression: Option<Arc<SocketCompression>>,
}

/// Who the socket is, for its events and log lines.
#[derive(Clone, Copy)]
pub struct Peer<'a> {
    /// The connection or client: its events carry this target.
    pub target: Target,
    /// The endpoint (connection) or handler (client), for log lines.
    pub name: &'a str,
    /// The peer's address (connection) or URI (client), for log lines.
    pub address: &'a str,
}

impl Peer<'_> {
    /// "connection 3" or "client 2".
    fn label(&self) -> String {
        match self.target {
            Target::Connection(id) => format!("connection {id}"),
            Target::Client(id) => format!("client {id}"),
        }
    }
}

/// Runs a socket until it closes: its frames go to `handler` as events, and what is queued in
/// `outbox` is written. `on_closing` runs when the peer's close frame arrives. Returns how the
/// socket ended (for `onClose`, which the caller delivers once the socket has left its registry).
///
/// Every idle connection holds this future at its largest state, so it holds little while it
/// waits (bench: idle memory): it is an `async` block, not an `async fn`, which would keep its
/// arguments twice; the socket is borrowed by the caller's task, not moved in; a timer exists
/// only while it is wanted; what a wake-up brings (a frame, a batch) is turned into the next
/// step before anything is awaited, and every step but the handing of a message to the
/// handler is boxed.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub fn pump<'a, S, H>(
    mut socket: S,
    outbox: OutboxReader,
    handler: &'a H,
    peer: Peer<'a>,
    options: PumpOptions,
    on_closing: impl Fn() + Send + 'a,
) -> impl Future<Output = Ending> + Send + 'a
where
    S: Stream<Item = Result<Message, WsError>>
        + Sink<Message, Error = WsError>
        + TcpUnder
        + Unpin
        + Send
        + 'a,
    H: EventSink,
{
    async move {
        let mut socket = Pin::new(&mut socket);
        let keepalive = options.keepalive;
        // One tick both sends the ping and checks that the peer was heard from recently.
        let mut ticks = keepalive.map(|(every, _)| {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.reset();
            ticks
        });
        // Set once our close frame is out: the peer's answer is awaited until then.
        let mut close_deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
        // Only for sockets that do not tell read wake-ups from write ones themselves.
        let read_wake = (!socket.reads_woken_apart()).then(ReadWake::new);
        let direct = socket.tcp_under().map(|tcp| {
            outbox.direct_writes(
                std::os::fd::AsRawFd::as_raw_fd(tcp),
                options.traffic.clone(),
                options.compression.clone(),
            )
        });
        let mut state = PumpState {
            peer: &peer,
            handler,
            outbox: &outbox,
            traffic: &options.traffic,
            compression: options.compression.as_deref(),
            keepalive,
            phase: Phase::Open { flushed: true },
            last_heard: tokio::time::Instant::now(),
            heard: false,
            handler_alive: true,
        };
        loop {
            if let Some(direct) = &direct {
                direct.set_idle(state.phase.takes_direct_writes());
            }
            // A message the handler's isolate did not take (IsolateGone) is handled once the
            // step, which may borrow the state, is done with.
            let outcome = {
                let next = tokio::select! {
                    biased;
                    taken = poll_fn(|cx| outbox.poll_take(cx)), if !state.phase.close_sent() => {
                        if let Some(direct) = &direct {
                            direct.set_idle(false);
                        }
                        Next::Boxed(Box::pin(state.write(&mut socket, taken, &mut close_deadline)))
                    }
                    frame = poll_fn(|cx| match &read_wake {
                        Some(read_wake) => read_wake.poll_next(&mut socket, cx),
                        None => socket.as_mut().poll_next(cx),
                    }), if state.phase.reading() => {
                        match state.read(frame, &on_closing) {
                            Read::Event(event) if state.handler_alive => {
                                let handler = state.handler;
                                Next::Deliver(handler.deliver(event))
                            }
                            Read::Event(_) => Next::Now(Flow::Continue),
                            Read::Failed(error) => Next::Boxed(Box::pin(state.read_failed(error))),
                            Read::Done(flow) => Next::Now(flow),
                        }
                    }
                    () = poll_fn(|cx| poll_timer(ticks.as_mut(), cx)), if state.phase.keeps_alive() => {
                        if let Some(direct) = &direct {
                            direct.set_idle(false);
                        }
                        Next::Boxed(Box::pin(state.keep_alive(&mut socket)))
                    }
                    () = poll_fn(|cx| poll_timer(close_deadline.as_mut(), cx)), if state.phase.close_sent() => {
                        tracing::debug!("{} ({}) did not answer the close frame in time", state.peer.label(), state.peer.address);
                        Next::Now(Flow::Stop)
                    }
                };
                match next {
                    Next::Now(flow) => Ok(flow),
                    Next::Deliver(delivery) => delivery.await.map(|()| Flow::Continue),
                    Next::Boxed(step) => Ok(step.await),
                }
            };
            let flow = outcome.unwrap_or_else(|IsolateGone| {
                state.handler_gone();
                Flow::Continue
            });
            if let Flow::Stop = flow {
                break;
            }
        }
        // Unregistered before the socket closes, so no direct write can reach a reused
        // descriptor.
        drop(direct);
        if matches!(state.phase, Phase::Open { .. } | Phase::Closing { .. }) {
            // The peer ended the connection first; a close frame is owed if it did not send one.
            Box::pin(send_close(&mut socket, 1000, String::new())).await;
        }
        state.phase.ending()
    }
}

/// What a read gave, with a compressed message inflated: such a message (RSV1) arrives as one
/// frame, still compressed. Also for the frames a socket's owner reads before its pump runs
/// (a STOMP session's first frames).
pub fn inflated(
    frame: Result<Message, WsError>,
    compression: Option<&SocketCompression>,
) -> Result<Message, WsError> {
    match (frame, compression) {
        (Ok(Message::Frame(compressed)), Some(compression)) => compression.inflate(compressed),
        // RSV1 where no compression was agreed (the library only lets it through when
        // compression was offered).
        (Ok(Message::Frame(_)), None) => Err(WsError::Protocol(
            tokio_tungstenite::tungstenite::error::ProtocolError::NonZeroReservedBits,
        )),
        (frame, _) => frame,
    }
}

/// What the pump does next, decided before it awaits anything.
enum Next<'a, D> {
    /// Nothing to wait for: go on, or stop.
    Now(Flow),
    /// Wait until the handler's queue has taken a message (at once, unless it is full).
    Deliver(D),
    /// A rarer step (a write, a ping, a read error), boxed so that the pump's own future need not
    /// hold room for it.
    Boxed(futures_util::future::BoxFuture<'a, Flow>),
}

/// A timer of the pump: a keepalive interval's next tick or the close deadline; never fires
/// while there is none.
fn poll_timer(timer: Option<&mut impl Timer>, cx: &mut std::task::Context<'_>) -> Poll<()> {
    match timer {
        Some(timer) => timer.poll_fire(cx),
        None => Poll::Pending,
    }
}

/// Both kinds of timer the pump waits on.
trait Timer {
    /// Ready when the timer fires.
    fn poll_fire(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()>;
}

impl Timer for tokio::time::Interval {
    fn poll_fire(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        self.poll_tick(cx).map(|_| ())
    }
}

impl Timer for Pin<Box<tokio::time::Sleep>> {
    fn poll_fire(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        self.as_mut().poll(cx)
    }
}

/// What a frame read from the socket asks of the pump.
enum Read {
    /// An event for the handler.
    Event(IsolateEvent),
    /// Reading failed.
    Failed(WsError),
    /// Nothing for the handler: go on, or stop.
    Done(Flow),
}

/// Whether the pump goes on.
enum Flow {
    /// Keep pumping.
    Continue,
    /// The socket is done.
    Stop,
}

/// What the pump keeps between events, besides the socket.
struct PumpState<'a, H> {
    /// Whose socket.
    peer: &'a Peer<'a>,
    /// Where its events go.
    handler: &'a H,
    /// Its outbound queue.
    outbox: &'a OutboxReader,
    /// Where its messages are counted.
    traffic: &'a Traffic,
    /// permessage-deflate, if agreed: what it reads is inflated, what it writes compressed.
    compression: Option<&'a SocketCompression>,
    /// Ping interval and answer timeout, if pings are on.
    keepalive: Option<(Duration, Duration)>,
    /// Where the socket is in its life.
    phase: Phase,
    /// When the peer was last known to have sent something: the socket's start, or the
    /// keepalive tick after the interval in which it last did (never earlier than it did, so a
    /// peer is never closed sooner than its silence warrants, at most one interval later).
    last_heard: tokio::time::Instant,
    /// Whether anything arrived since the last keepalive tick. A flag, not a clock reading per
    /// frame: reading the clock was about 1 % of the server's time on small echoes (bench).
    heard: bool,
    /// Whether events still go to the handler (it may have been unloaded meanwhile).
    handler_alive: bool,
}

impl<H: EventSink> PumpState<'_, H> {
    /// Writes what the outbox gave: a close that overtakes the queue, the news that the sending
    /// side is gone, or a batch of messages (which a close request may overtake in turn).
    async fn write<S>(
        &mut self,
        socket: &mut Pin<&mut S>,
        taken: Taken,
        close_deadline: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    ) -> Flow
    where
        S: Sink<Message, Error = WsError> + TcpUnder + Unpin,
    {
        self.phase.writing();
        match taken {
            Taken::CloseNow(code, reason, unfinished) => {
                let mut raw = unfinished.unwrap_or_default();
                finish_then_close(socket, &mut raw, code, reason).await;
                let read_failed = !self.phase.reading();
                self.phase.send_close(close_deadline);
                if read_failed {
                    return Flow::Stop;
                }
            }
            Taken::SenderGone => {
                // The sending side is gone (the socket left its registry).
                let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, socket.close()).await;
                self.phase.send_close(close_deadline);
            }
            Taken::Batch(mut batch) => {
                // The rest of a frame written directly, kept here so that a close that overtakes
                // the batch can finish it first.
                let mut raw = match batch.front() {
                    Some(Outbound::Raw(rest)) => {
                        let rest = rest.clone();
                        batch.pop_front();
                        rest
                    }
                    _ => Bytes::new(),
                };
                // A write that cannot proceed (the peer stopped reading) is overtaken by a close
                // request.
                let outbox = self.outbox;
                let written = tokio::select! {
                    biased;
                    written = write_batch(socket, &mut raw, batch, self.traffic, self.compression) => written,
                    (code, reason) = poll_fn(|cx| outbox.poll_close_now(cx)) => {
                        finish_then_close(socket, &mut raw, code, reason).await;
                        Ok(true)
                    }
                };
                match written {
                    Ok(false) => self.phase.flushed(),
                    Ok(true) => self.phase.send_close(close_deadline),
                    Err(error) => {
                        tracing::debug!(
                            "{} ({}): write failed: {error}",
                            self.peer.label(),
                            self.peer.address
                        );
                        self.phase.send_close(close_deadline);
                    }
                }
            }
        }
        Flow::Continue
    }

    /// Handles what the socket read: a message is an event for the handler; a close frame, a
    /// ping or an error changes the phase. Not async: the frame is not kept in the task while the
    /// event is delivered.
    fn read(&mut self, frame: Option<Result<Message, WsError>>, on_closing: &impl Fn()) -> Read {
        self.heard = true;
        let target = self.peer.target;
        let frame = frame.map(|frame| inflated(frame, self.compression));
        let event = match frame {
            None => return Read::Done(Flow::Stop),
            Some(Ok(Message::Text(text))) => {
                self.traffic.received(text.len());
                IsolateEvent::Text { target, text }
            }
            Some(Ok(Message::Binary(data))) => {
                self.traffic.received(data.len());
                IsolateEvent::Binary { target, data }
            }
            Some(Ok(Message::Close(frame))) => {
                on_closing();
                self.phase.peer_closed(Ending::from_close_frame(frame));
                return Read::Done(Flow::Continue);
            }
            Some(Ok(Message::Ping(_))) => {
                // tungstenite owes the pong: it goes out with our next write.
                self.phase.writing();
                return Read::Done(Flow::Continue);
            }
            Some(Ok(_)) => return Read::Done(Flow::Continue),
            Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                return Read::Done(Flow::Stop)
            }
            Some(Err(error)) => return Read::Failed(error),
        };
        Read::Event(event)
    }

    /// The handler did not take a message: it is gone, and the socket closes with 1011.
    fn handler_gone(&mut self) {
        {
            self.handler_alive = false;
            tracing::warn!(
                "{} ({}): its handler has stopped; closing with 1011",
                self.peer.label(),
                self.peer.name
            );
            self.outbox.close_now(1011, "handler unavailable".into());
        }
    }

    /// Reading failed. A peer that went away (reset, or closed mid-frame) ends the socket at
    /// once: onError hears why, onClose gets 1006. A protocol fault is answered with the close
    /// code RFC 6455 asks for, which is then the last thing written.
    async fn read_failed(&mut self, error: WsError) -> Flow {
        let Peer {
            target,
            name,
            address,
        } = *self.peer;
        let went_away = peer_went_away(&error);
        if went_away {
            tracing::debug!(
                "{} ({name}, {address}): the peer went away: {error}",
                self.peer.label()
            );
        }
        let (code, reason) = close_code_for(&error);
        if !went_away {
            tracing::warn!(
                "{} ({name}, {address}): closing with {code}: {error}",
                self.peer.label()
            );
            self.outbox.close_now(code, reason.clone());
        }
        if self.handler_alive {
            let message = error.to_string();
            let _ = self
                .handler
                .deliver(IsolateEvent::Error { target, message })
                .await;
        }
        if went_away {
            return Flow::Stop;
        }
        let ending = Ending {
            code,
            reason,
            was_clean: false,
        };
        if self.phase.close_sent() {
            self.phase = Phase::CloseSent {
                ending: Some(ending),
            };
            return Flow::Stop;
        }
        self.phase = Phase::ReadFailed { ending };
        Flow::Continue
    }

    /// A keepalive tick: closes a peer silent for longer than the ping interval and its answer
    /// time, else pings it.
    async fn keep_alive<S>(&mut self, socket: &mut Pin<&mut S>) -> Flow
    where
        S: Sink<Message, Error = WsError> + Unpin,
    {
        self.phase.writing();
        let limit = self
            .keepalive
            .map_or(Duration::MAX, |(every, timeout)| every + timeout);
        let Peer { name, address, .. } = *self.peer;
        let now = tokio::time::Instant::now();
        if std::mem::take(&mut self.heard) {
            self.last_heard = now;
        }
        if now.duration_since(self.last_heard) >= limit {
            tracing::warn!(
                "{} ({name}, {address}): no answer to pings for {} s, closing with 1001",
                self.peer.label(),
                limit.as_secs()
            );
            let reason = "no answer to ping".to_string();
            self.outbox.close_now(1001, reason.clone());
            self.phase.closing(Ending {
                code: 1001,
                reason,
                was_clean: false,
            });
            return Flow::Continue;
        }
        let ping = socket.send(Message::Ping(Default::default()));
        match tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, ping).await {
            Ok(Ok(())) => self.phase.flushed(),
            Ok(Err(_)) => {}
            Err(_) => tracing::debug!(
                "{} ({address}): a ping could not be written in time",
                self.peer.label()
            ),
        }
        Flow::Continue
    }
}
