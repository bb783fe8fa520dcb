//! The socket's side of the pump: reading with a waker that tells reads from writes, writing a
//! batch from the outbox (after the rest of a frame written directly), and close frames, each
//! with a time limit.

use std::collections::VecDeque;
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
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::net::close::close_message;
use crate::net::compression::socket::SocketCompression;
use crate::net::outbox::Outbound;
use crate::stats::Traffic;

/// How long a peer has to answer our close frame before the socket is dropped.
pub const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The plain TCP stream under a WebSocket, when there is one: its descriptor takes direct writes
/// (see `direct`), and the rest of a frame written that way goes to it as raw bytes.
pub trait TcpUnder {
    /// The TCP stream, if the WebSocket runs on plain TCP.
    fn tcp_under(&mut self) -> Option<&mut TcpStream>;

    /// Whether the socket itself wakes its task for reads apart from writes, so that a read is
    /// tried only after its read side was woken ([`crate::net::plain::PlainWebSocket`]); the
    /// pump makes a [`ReadWake`] only for the others.
    fn reads_woken_apart(&self) -> bool {
        false
    }
}

/// A WebSocket a pump can drive and a task can own: what a connection's or a STOMP session's
/// socket is, plain or TLS.
pub trait PumpedSocket:
    Stream<Item = Result<Message, WsError>>
    + Sink<Message, Error = WsError>
    + TcpUnder
    + Unpin
    + Send
    + 'static
{
}

impl<S> PumpedSocket for S where
    S: Stream<Item = Result<Message, WsError>>
        + Sink<Message, Error = WsError>
        + TcpUnder
        + Unpin
        + Send
        + 'static
{
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

impl<T: TcpUnder + ?Sized> TcpUnder for &mut T {
    fn tcp_under(&mut self) -> Option<&mut TcpStream> {
        (**self).tcp_under()
    }

    fn reads_woken_apart(&self) -> bool {
        (**self).reads_woken_apart()
    }
}

impl<T: TcpUnder + Unpin> TcpUnder for Pin<&mut T> {
    fn tcp_under(&mut self) -> Option<&mut TcpStream> {
        self.as_mut().get_mut().tcp_under()
    }

    fn reads_woken_apart(&self) -> bool {
        self.as_ref().get_ref().reads_woken_apart()
    }
}

/// Whether the socket may have something to read. The socket's reads are given a waker that
/// records its wake-ups here before waking the task, so that a wake-up for writing does not also
/// try a read (which costs the WebSocket reader a buffer fill and a readiness check each time).
pub(super) struct ReadWake {
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
    pub(super) fn new() -> Self {
        let state = Arc::new(ReadWakeState {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = futures_util::task::waker(state.clone());
        Self { state, waker }
    }

    /// Polls the socket for a frame, unless nothing happened on its read side since it last
    /// said it had none (its waker is then still registered).
    pub(super) fn poll_next<S>(
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
pub(super) async fn send_close<S>(socket: &mut Pin<&mut S>, code: u16, reason: String)
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
pub(super) async fn finish_then_close<S>(
    socket: &mut Pin<&mut S>,
    raw: &mut Bytes,
    code: u16,
    reason: String,
) where
    S: Sink<Message, Error = WsError> + TcpUnder + Unpin,
{
    let finished = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, write_raw(socket, raw)).await;
    if matches!(finished, Ok(Ok(()))) {
        send_close(socket, code, reason).await;
    }
}

/// Whether a read error means the peer dropped the connection (reset, or closed it mid-frame).
pub(super) fn peer_went_away(error: &WsError) -> bool {
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
pub(super) async fn write_batch<S>(
    sink: &mut S,
    raw: &mut Bytes,
    batch: VecDeque<Outbound>,
    traffic: &Traffic,
    compression: Option<&SocketCompression>,
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
                let message = match compression {
                    Some(compression) => compression.outgoing(message),
                    None => message,
                };
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
