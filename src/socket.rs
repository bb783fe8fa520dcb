//! The pump of one WebSocket, shared by inbound connections and outbound clients: one task that
//! hands frames to a handler's isolate and drains the socket's bounded outbound queue, batching
//! whatever is waiting into one flush.

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
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use crate::isolate::{HandlerSlot, IsolateEvent};
use crate::outbox::{Outbound, OutboxReader, Taken};
use crate::stats::Traffic;

/// How long a peer has to answer our close frame before the socket is dropped.
pub const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the reader hands on, to be turned into an isolate event.
#[derive(Debug)]
pub enum Incoming {
    Text(Utf8Bytes),
    Binary(Bytes),
    /// A read error; the socket is closing (with the code given by [`close_code_for`]).
    Error(String),
}

/// How a socket ended, as reported to `onClose`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub code: u16,
    pub reason: String,
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

/// Who the socket is, for log lines.
pub struct Peer<'a> {
    pub kind: &'static str,
    pub id: u64,
    pub name: &'a str,
    pub address: &'a str,
}

/// Runs a socket until it closes: frames go to the handler as events made by `to_event`, and
/// what is queued in `outbox` is written. `on_closing` runs when a close frame arrives from the
/// peer. Reading and writing happen in this one task, so a message and its reply cost no hand-over
/// between tasks.
pub async fn pump<S>(
    socket: S,
    outbox: OutboxReader,
    handler: &HandlerSlot,
    peer: Peer<'_>,
    options: PumpOptions,
    to_event: impl Fn(Incoming) -> IsolateEvent,
    on_closing: impl Fn(),
) -> Ending
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + TcpUnder + Unpin,
{
    let Peer {
        kind,
        id,
        name,
        address,
    } = peer;
    tokio::pin!(socket);
    let traffic = options.traffic.clone();
    let keepalive = options.keepalive;
    // One tick both sends the ping and checks that the peer was heard from recently.
    let mut ticks = tokio::time::interval(keepalive.map_or(Duration::from_secs(3600), |k| k.0));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.reset();
    let mut last_heard = tokio::time::Instant::now();
    let mut handler_alive = true;
    // Set once our close frame is out (or writing failed): from then on, only the peer's answer
    // is awaited, until `close_deadline`.
    let mut close_sent = false;
    // Set when reading failed: the connection ends as soon as the close frame is out.
    let mut read_failed = false;
    let close_deadline = tokio::time::sleep(Duration::from_secs(86_400 * 365));
    tokio::pin!(close_deadline);
    let mut ending = None;
    let read_wake = ReadWake::new();
    // Direct writes may start only while nothing of ours is half written: after a flush that
    // completed, and not once a ping (whose pong tungstenite owes) or a close has been read.
    let mut writes_flushed = true;
    let direct = socket
        .tcp_under()
        .map(|tcp| outbox.direct_writes(std::os::fd::AsRawFd::as_raw_fd(tcp), traffic.clone()));
    loop {
        if let Some(direct) = &direct {
            direct.set_idle(writes_flushed && !close_sent && !read_failed && ending.is_none());
        }
        tokio::select! {
            biased;
            taken = poll_fn(|cx| outbox.poll_take(cx)), if !close_sent => {
                if let Some(direct) = &direct {
                    direct.set_idle(false);
                }
                writes_flushed = false;
                let written = match taken {
                    Taken::CloseNow(code, reason, unfinished) => {
                        let mut raw = unfinished.unwrap_or_default();
                        finish_then_close(&mut socket, &mut raw, code, reason).await;
                        close_sent = await_close_answer(close_deadline.as_mut());
                        if read_failed {
                            break;
                        }
                        continue;
                    }
                    Taken::SenderGone => {
                        // The sending side is gone (the connection was unregistered).
                        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, socket.close()).await;
                        close_sent = await_close_answer(close_deadline.as_mut());
                        continue;
                    }
                    // A write that cannot proceed (the peer stopped reading) is overtaken by a
                    // close request.
                    Taken::Batch(mut batch) => {
                        // The rest of a frame written directly, kept here so that a close that
                        // overtakes the batch can finish it first.
                        let mut raw = match batch.front() {
                            Some(Outbound::Raw(rest)) => {
                                let rest = rest.clone();
                                batch.pop_front();
                                rest
                            }
                            _ => Bytes::new(),
                        };
                        tokio::select! {
                            biased;
                            written = write_batch(&mut socket, &mut raw, batch, &traffic) => written,
                            (code, reason) = poll_fn(|cx| outbox.poll_close_now(cx)) => {
                                finish_then_close(&mut socket, &mut raw, code, reason).await;
                                Ok(true)
                            }
                        }
                    }
                };
                match written {
                    Ok(false) => writes_flushed = true,
                    Ok(true) => close_sent = await_close_answer(close_deadline.as_mut()),
                    Err(error) => {
                        tracing::debug!("{kind} {id} ({address}): write failed: {error}");
                        close_sent = await_close_answer(close_deadline.as_mut());
                    }
                }
            }
            frame = poll_fn(|cx| read_wake.poll_next(&mut socket, cx)), if !read_failed => {
                last_heard = tokio::time::Instant::now();
                let incoming = match frame {
                    None => break,
                    Some(Ok(Message::Text(text))) => {
                        traffic.received(text.len());
                        Incoming::Text(text)
                    }
                    Some(Ok(Message::Binary(data))) => {
                        traffic.received(data.len());
                        Incoming::Binary(data)
                    }
                    Some(Ok(Message::Close(frame))) => {
                        on_closing();
                        ending = Some(match frame {
                            Some(frame) => Ending { code: frame.code.into(), reason: frame.reason.to_string(), was_clean: true },
                            None => Ending { code: 1005, reason: String::new(), was_clean: true },
                        });
                        continue;
                    }
                    Some(Ok(Message::Ping(_))) => {
                        writes_flushed = false;
                        continue;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => break,
                    Some(Err(error)) if peer_went_away(&error) => {
                        // Not a protocol fault to answer with a close code: the peer left without
                        // a close frame. onError hears why; onClose gets 1006.
                        tracing::debug!("{kind} {id} ({name}, {address}): the peer went away: {error}");
                        if handler_alive {
                            let _ = handler.deliver(to_event(Incoming::Error(error.to_string()))).await;
                        }
                        break;
                    }
                    Some(Err(error)) => {
                        let (code, reason) = close_code_for(&error);
                        tracing::warn!("{kind} {id} ({name}, {address}): closing with {code}: {error}");
                        outbox.close_now(code, reason.clone());
                        if handler_alive {
                            let _ = handler.deliver(to_event(Incoming::Error(error.to_string()))).await;
                        }
                        ending = Some(Ending { code, reason, was_clean: false });
                        read_failed = true;
                        if close_sent {
                            break;
                        }
                        continue;
                    }
                };
                if handler_alive && handler.deliver(to_event(incoming)).await.is_err() {
                    handler_alive = false;
                    tracing::warn!("{kind} {id} ({name}): its handler has stopped; closing with 1011");
                    outbox.close_now(1011, "handler unavailable".into());
                }
            }
            _ = ticks.tick(), if keepalive.is_some() && !close_sent => {
                if let Some(direct) = &direct {
                    direct.set_idle(false);
                }
                writes_flushed = false;
                let limit = keepalive.map_or(Duration::MAX, |(every, timeout)| every + timeout);
                if last_heard.elapsed() >= limit {
                    tracing::warn!("{kind} {id} ({name}, {address}): no answer to pings for {} s, closing with 1001", limit.as_secs());
                    let reason = "no answer to ping".to_string();
                    outbox.close_now(1001, reason.clone());
                    ending = Some(Ending { code: 1001, reason, was_clean: false });
                } else {
                    match tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, socket.send(Message::Ping(Default::default()))).await {
                        Ok(Ok(())) => writes_flushed = true,
                        Ok(Err(_)) => {}
                        Err(_) => tracing::debug!("{kind} {id} ({address}): a ping could not be written in time"),
                    }
                }
            }
            () = &mut close_deadline, if close_sent => {
                tracing::debug!("{kind} {id} ({address}) did not answer the close frame in time");
                break;
            }
        }
    }
    // Unregistered before the socket closes, so no direct write can reach a reused descriptor.
    drop(direct);
    if !close_sent && !read_failed {
        // The peer ended the connection first; a close frame is owed if it did not send one.
        send_close(&mut socket, 1000, String::new()).await;
    }
    ending.unwrap_or_else(Ending::abnormal)
}

/// Whether the socket may have something to read. The socket's reads are given a waker that
/// records its wake-ups here before waking the task, so that a wake-up for writing does not also
/// try a read (which costs the WebSocket reader a buffer fill and a readiness check each time).
struct ReadWake {
    state: Arc<ReadWakeState>,
    waker: std::task::Waker,
}

struct ReadWakeState {
    woken: AtomicBool,
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

/// Our close frame is out: the peer has the close handshake's time to answer. Returns true.
fn await_close_answer(deadline: Pin<&mut tokio::time::Sleep>) -> bool {
    deadline.reset(tokio::time::Instant::now() + CLOSE_HANDSHAKE_TIMEOUT);
    true
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

/// The close code RFC 6455 asks for when reading failed with `error`.
pub fn close_code_for(error: &WsError) -> (u16, String) {
    match error {
        WsError::Utf8(_) => (1007, "invalid UTF-8 in a text message".into()),
        WsError::Capacity(_) => (1009, "message too big".into()),
        WsError::Protocol(problem) => (1002, truncate_reason(&problem.to_string())),
        _ => (1011, "read error".into()),
    }
}

/// Close reasons are limited to 123 bytes.
pub fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
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

fn close_message(code: u16, reason: String) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}
