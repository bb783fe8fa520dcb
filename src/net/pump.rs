//! The pump of one WebSocket, for inbound connections and outbound clients alike: one task that
//! hands the socket's frames to its handler as events and drains its bounded outbound queue,
//! batching whatever is waiting into one flush. Reading and writing happen in this one task, so a
//! message and its reply cost no hand-over between tasks.
//!
//! A socket's life is a [`Phase`]: open; closing (the peer's close frame arrived, or it stopped
//! answering pings); read failed (a protocol error: our close frame with its code is the last
//! thing written); close sent (only the peer's answer is awaited, for a bounded time).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::{ArcWake, AtomicWaker};
use futures_util::{Sink, SinkExt, Stream};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::close::{close_code_for, close_message};
use super::outbox::{Outbound, OutboxReader, Taken};
use crate::event::{EventSink, IsolateEvent, Target};
use crate::stats::Traffic;

/// How long a peer has to answer our close frame before the socket is dropped.
pub const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a socket ended, as reported to `onClose`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// The close code (1006 when there was no close frame).
    pub code: u16,
    /// The close reason.
    pub reason: String,
    /// Whether a close frame was exchanged.
    pub was_clean: bool,
}

impl Ending {
    /// The socket ended without a close frame.
    pub fn abnormal() -> Self {
        Ending {
            code: 1006,
            reason: String::new(),
            was_clean: false,
        }
    }

    /// What the peer's close frame said (1005 when it gave no code).
    fn from_close_frame(frame: Option<CloseFrame>) -> Self {
        match frame {
            Some(frame) => Ending {
                code: frame.code.into(),
                reason: frame.reason.to_string(),
                was_clean: true,
            },
            None => Ending {
                code: 1005,
                reason: String::new(),
                was_clean: true,
            },
        }
    }

    /// The `onClose` event of `target`; `endpoint` for an inbound connection.
    pub fn into_event(self, target: Target, endpoint: Option<Arc<str>>) -> IsolateEvent {
        IsolateEvent::Close {
            target,
            code: self.code,
            reason: self.reason,
            was_clean: self.was_clean,
            endpoint,
        }
    }
}

/// How a socket is looked after while it is open.
#[derive(Debug, Clone)]
pub struct PumpOptions {
    /// Ping every `.0`; close with 1001 when nothing arrives for `.0 + .1`.
    pub keepalive: Option<(Duration, Duration)>,
    /// Counters the socket's messages are added to.
    pub traffic: Arc<Traffic>,
}

/// The plain TCP stream under a WebSocket, when there is one: its descriptor takes direct writes
/// (see `direct`), and the rest of a frame written that way goes to it as raw bytes.
pub trait TcpUnder {
    /// The TCP stream, if the WebSocket runs on plain TCP.
    fn tcp_under(&mut self) -> Option<&mut TcpStream>;
}

impl TcpUnder for tokio_tungstenite::WebSocketStream<TcpStream> {
    fn tcp_under(&mut self) -> Option<&mut TcpStream> {
        Some(self.get_mut())
    }
}

impl<S> TcpUnder for tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<S>> {
    fn tcp_under(&mut self) -> Option<&mut TcpStream> {
        None
    }
}

impl TcpUnder for tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    fn tcp_under(&mut self) -> Option<&mut TcpStream> {
        None
    }
}

impl<T: TcpUnder + Unpin> TcpUnder for Pin<&mut T> {
    fn tcp_under(&mut self) -> Option<&mut TcpStream> {
        self.as_mut().get_mut().tcp_under()
    }
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

/// Where a socket is in its life. What the pump still does follows from it: read while not
/// [`Phase::ReadFailed`], take the outbound queue and ping until [`Phase::CloseSent`], and let
/// the handler's thread write directly only while [`Phase::Open`] with nothing of ours half
/// written.
#[derive(Debug)]
enum Phase {
    /// Reading and writing.
    Open {
        /// Nothing of ours is half written and no pong is owed: direct writes may go out.
        flushed: bool,
    },
    /// The close is under way (the peer's close frame arrived, or the peer stopped answering
    /// pings): reading goes on until the peer ends, and what is queued still goes out.
    Closing {
        /// How the socket ends.
        ending: Ending,
    },
    /// Reading failed: a close frame with the error's code is queued, and is the last thing
    /// written.
    ReadFailed {
        /// How the socket ends.
        ending: Ending,
    },
    /// Our close frame is out (or writing failed): only the peer's answer is awaited.
    CloseSent {
        /// How the socket ends, once known (the peer's answer says).
        ending: Option<Ending>,
    },
}

impl Phase {
    fn reading(&self) -> bool {
        !matches!(self, Phase::ReadFailed { .. })
    }

    fn close_sent(&self) -> bool {
        matches!(self, Phase::CloseSent { .. })
    }

    /// Whether pings go out and a silent peer is caught.
    fn keeps_alive(&self) -> bool {
        matches!(self, Phase::Open { .. } | Phase::Closing { .. })
    }

    fn takes_direct_writes(&self) -> bool {
        matches!(self, Phase::Open { flushed: true })
    }

    /// Something of ours is being written (or a pong is owed): no direct writes meanwhile.
    fn writing(&mut self) {
        if let Phase::Open { flushed } = self {
            *flushed = false;
        }
    }

    /// Everything of ours went out whole.
    fn flushed(&mut self) {
        if let Phase::Open { flushed } = self {
            *flushed = true;
        }
    }

    /// The close is under way with `ending`, unless it already was.
    fn closing(&mut self, ending: Ending) {
        if let Phase::Open { .. } = self {
            *self = Phase::Closing { ending };
        }
    }

    /// The peer's close frame arrived.
    fn peer_closed(&mut self, ending: Ending) {
        match self {
            Phase::CloseSent { ending: known } => *known = Some(ending),
            _ => *self = Phase::Closing { ending },
        }
    }

    /// Our close frame is out: the peer has until `deadline` to answer.
    fn send_close(&mut self, deadline: Pin<&mut tokio::time::Sleep>) {
        deadline.reset(tokio::time::Instant::now() + CLOSE_HANDSHAKE_TIMEOUT);
        let ending = match std::mem::replace(self, Phase::CloseSent { ending: None }) {
            Phase::Open { .. } => None,
            Phase::Closing { ending } | Phase::ReadFailed { ending } => Some(ending),
            Phase::CloseSent { ending } => ending,
        };
        *self = Phase::CloseSent { ending };
    }

    fn ending(self) -> Ending {
        match self {
            Phase::Open { .. } | Phase::CloseSent { ending: None } => Ending::abnormal(),
            Phase::Closing { ending }
            | Phase::ReadFailed { ending }
            | Phase::CloseSent {
                ending: Some(ending),
            } => ending,
        }
    }
}

/// Runs a socket until it closes: its frames go to `handler` as events, and what is queued in
/// `outbox` is written. `on_closing` runs when the peer's close frame arrives. Returns how the
/// socket ended (for `onClose`, which the caller delivers once the socket has left its registry).
pub async fn pump<S, H>(
    socket: S,
    outbox: OutboxReader,
    handler: &H,
    peer: Peer<'_>,
    options: PumpOptions,
    on_closing: impl Fn(),
) -> Ending
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + TcpUnder + Unpin,
    H: EventSink,
{
    tokio::pin!(socket);
    let keepalive = options.keepalive;
    // One tick both sends the ping and checks that the peer was heard from recently.
    let mut ticks = tokio::time::interval(keepalive.map_or(Duration::from_secs(3600), |k| k.0));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.reset();
    let close_deadline = tokio::time::sleep(Duration::from_secs(86_400 * 365));
    tokio::pin!(close_deadline);
    let read_wake = ReadWake::new();
    let direct = socket.tcp_under().map(|tcp| {
        outbox.direct_writes(
            std::os::fd::AsRawFd::as_raw_fd(tcp),
            options.traffic.clone(),
        )
    });
    let mut state = PumpState {
        label: peer.label(),
        peer,
        handler,
        outbox: &outbox,
        traffic: &options.traffic,
        keepalive,
        phase: Phase::Open { flushed: true },
        last_heard: tokio::time::Instant::now(),
        handler_alive: true,
    };
    loop {
        if let Some(direct) = &direct {
            direct.set_idle(state.phase.takes_direct_writes());
        }
        let flow = tokio::select! {
            biased;
            taken = poll_fn(|cx| outbox.poll_take(cx)), if !state.phase.close_sent() => {
                if let Some(direct) = &direct {
                    direct.set_idle(false);
                }
                state.write(&mut socket, taken, close_deadline.as_mut()).await
            }
            frame = poll_fn(|cx| read_wake.poll_next(&mut socket, cx)), if state.phase.reading() => {
                state.read(frame, &on_closing).await
            }
            _ = ticks.tick(), if keepalive.is_some() && state.phase.keeps_alive() => {
                if let Some(direct) = &direct {
                    direct.set_idle(false);
                }
                state.keep_alive(&mut socket).await;
                Flow::Continue
            }
            () = &mut close_deadline, if state.phase.close_sent() => {
                tracing::debug!("{} ({}) did not answer the close frame in time", state.label, state.peer.address);
                Flow::Stop
            }
        };
        if let Flow::Stop = flow {
            break;
        }
    }
    // Unregistered before the socket closes, so no direct write can reach a reused descriptor.
    drop(direct);
    if matches!(state.phase, Phase::Open { .. } | Phase::Closing { .. }) {
        // The peer ended the connection first; a close frame is owed if it did not send one.
        send_close(&mut socket, 1000, String::new()).await;
    }
    state.phase.ending()
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
    /// "connection 3" or "client 2", for log lines.
    label: String,
    /// Whose socket.
    peer: Peer<'a>,
    /// Where its events go.
    handler: &'a H,
    /// Its outbound queue.
    outbox: &'a OutboxReader,
    /// Where its messages are counted.
    traffic: &'a Traffic,
    /// Ping interval and answer timeout, if pings are on.
    keepalive: Option<(Duration, Duration)>,
    /// Where the socket is in its life.
    phase: Phase,
    /// When the peer last sent anything.
    last_heard: tokio::time::Instant,
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
        close_deadline: Pin<&mut tokio::time::Sleep>,
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
                    written = write_batch(socket, &mut raw, batch, self.traffic) => written,
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
                            self.label,
                            self.peer.address
                        );
                        self.phase.send_close(close_deadline);
                    }
                }
            }
        }
        Flow::Continue
    }

    /// Handles what the socket read: a message goes to the handler; a close frame, a ping or an
    /// error changes the phase.
    async fn read(
        &mut self,
        frame: Option<Result<Message, WsError>>,
        on_closing: &impl Fn(),
    ) -> Flow {
        self.last_heard = tokio::time::Instant::now();
        let target = self.peer.target;
        let event = match frame {
            None => return Flow::Stop,
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
                return Flow::Continue;
            }
            Some(Ok(Message::Ping(_))) => {
                // tungstenite owes the pong: it goes out with our next write.
                self.phase.writing();
                return Flow::Continue;
            }
            Some(Ok(_)) => return Flow::Continue,
            Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => return Flow::Stop,
            Some(Err(error)) => return self.read_failed(error).await,
        };
        if self.handler_alive && self.handler.deliver(event).await.is_err() {
            self.handler_alive = false;
            tracing::warn!(
                "{} ({}): its handler has stopped; closing with 1011",
                self.label,
                self.peer.name
            );
            self.outbox.close_now(1011, "handler unavailable".into());
        }
        Flow::Continue
    }

    /// Reading failed. A peer that went away (reset, or closed mid-frame) ends the socket at
    /// once: onError hears why, onClose gets 1006. A protocol fault is answered with the close
    /// code RFC 6455 asks for, which is then the last thing written.
    async fn read_failed(&mut self, error: WsError) -> Flow {
        let Peer {
            target,
            name,
            address,
        } = self.peer;
        let went_away = peer_went_away(&error);
        if went_away {
            tracing::debug!(
                "{} ({name}, {address}): the peer went away: {error}",
                self.label
            );
        }
        let (code, reason) = close_code_for(&error);
        if !went_away {
            tracing::warn!(
                "{} ({name}, {address}): closing with {code}: {error}",
                self.label
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
    async fn keep_alive<S>(&mut self, socket: &mut Pin<&mut S>)
    where
        S: Sink<Message, Error = WsError> + Unpin,
    {
        self.phase.writing();
        let limit = self
            .keepalive
            .map_or(Duration::MAX, |(every, timeout)| every + timeout);
        let Peer { name, address, .. } = self.peer;
        if self.last_heard.elapsed() >= limit {
            tracing::warn!(
                "{} ({name}, {address}): no answer to pings for {} s, closing with 1001",
                self.label,
                limit.as_secs()
            );
            let reason = "no answer to ping".to_string();
            self.outbox.close_now(1001, reason.clone());
            self.phase.closing(Ending {
                code: 1001,
                reason,
                was_clean: false,
            });
            return;
        }
        let ping = socket.send(Message::Ping(Default::default()));
        match tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, ping).await {
            Ok(Ok(())) => self.phase.flushed(),
            Ok(Err(_)) => {}
            Err(_) => tracing::debug!(
                "{} ({address}): a ping could not be written in time",
                self.label
            ),
        }
    }
}

/// Whether the socket may have something to read. The socket's reads are given a waker that
/// records its wake-ups here before waking the task, so that a wake-up for writing does not also
/// try a read (which costs the WebSocket reader a buffer fill and a readiness check each time).
struct ReadWake {
    /// Shared with the waker.
    state: Arc<ReadWakeState>,
    /// The waker the socket's reads register.
    waker: std::task::Waker,
}

/// What the read waker records.
struct ReadWakeState {
    /// The read side was woken since the last read that found nothing.
    woken: AtomicBool,
    /// The pump's task, woken with it.
    task: AtomicWaker,
}

impl ArcWake for ReadWakeState {
    fn wake_by_ref(state: &Arc<Self>) {
        state.woken.store(true, Ordering::Release);
        state.task.wake();
    }
}

impl ReadWake {
    fn new() -> Self {
        let state = Arc::new(ReadWakeState {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = futures_util::task::waker(state.clone());
        Self { state, waker }
    }

    /// Polls the socket for a frame, unless nothing happened on its read side since it last
    /// said it had none (its waker is then still registered).
    fn poll_next<S>(
        &self,
        socket: &mut Pin<&mut S>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, WsError>>>
    where
        S: Stream<Item = Result<Message, WsError>>,
    {
        if !self.state.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        self.state.task.register(cx.waker());
        let polled = socket
            .as_mut()
            .poll_next(&mut Context::from_waker(&self.waker));
        if polled.is_ready() {
            // More frames may be buffered already: they wake nothing, so look again next time.
            self.state.woken.store(true, Ordering::Release);
        }
        polled
    }
}

/// Sends a close frame, giving up after the close handshake's time (a peer that stopped reading).
async fn send_close<S>(socket: &mut Pin<&mut S>, code: u16, reason: String)
where
    S: Sink<Message, Error = WsError>,
{
    let _ = tokio::time::timeout(
        CLOSE_HANDSHAKE_TIMEOUT,
        socket.send(close_message(code, reason)),
    )
    .await;
}

/// Finishes a frame that was partly written directly, then sends a close frame; a close frame
/// after a frame cut short would garble both, so none is sent if the frame cannot be finished.
async fn finish_then_close<S>(socket: &mut Pin<&mut S>, raw: &mut Bytes, code: u16, reason: String)
where
    S: Sink<Message, Error = WsError> + TcpUnder + Unpin,
{
    let finished = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, write_raw(socket, raw)).await;
    if matches!(finished, Ok(Ok(()))) {
        send_close(socket, code, reason).await;
    }
}

/// Whether a read error means the peer dropped the connection (reset, or closed it mid-frame).
fn peer_went_away(error: &WsError) -> bool {
    use std::io::ErrorKind;
    match error {
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => true,
        WsError::Io(io) => matches!(
            io.kind(),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// Feeds the batch, then flushes. Returns true after a close frame (the rest is not sent).
async fn write_batch<S>(
    sink: &mut S,
    raw: &mut Bytes,
    batch: VecDeque<Outbound>,
    traffic: &Traffic,
) -> Result<bool, WsError>
where
    S: Sink<Message, Error = WsError> + TcpUnder + Unpin,
{
    write_raw(sink, raw).await?;
    for item in batch {
        match item {
            // Only ever first in a batch (taken out by the caller): direct writes happen while
            // nothing is queued, and not again until the batch is flushed.
            Outbound::Raw(_) => {
                return Err(WsError::Io(std::io::Error::other(
                    "the rest of a directly written frame behind other messages",
                )))
            }
            Outbound::Message(message) => {
                if message.is_text() || message.is_binary() {
                    traffic.sent(message.len());
                }
                sink.feed(message).await?
            }
            Outbound::Close { code, reason } => {
                sink.send(close_message(code, reason)).await?;
                return Ok(true);
            }
        }
    }
    sink.flush().await?;
    Ok(false)
}

/// Writes the rest of a directly written frame; `raw` keeps what is left if this is cancelled.
async fn write_raw<S: TcpUnder>(socket: &mut S, raw: &mut Bytes) -> Result<(), WsError> {
    if raw.is_empty() {
        return Ok(());
    }
    let tcp = socket.tcp_under().ok_or_else(|| {
        WsError::Io(std::io::Error::other(
            "the rest of a directly written frame for a socket without direct writes",
        ))
    })?;
    tcp.write_all_buf(raw).await?;
    Ok(())
}
