//! The pump of one WebSocket, shared by inbound connections and outbound clients: a reader that
//! hands frames to a handler's isolate, and a writer task that drains the socket's bounded
//! outbound queue, batching whatever is waiting into one flush.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use crate::isolate::{HandlerSlot, IsolateEvent};
use crate::outbox::{CloseSignal, Outbound, OutboxReader};
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

/// Who the socket is, for log lines.
pub struct Peer<'a> {
    pub kind: &'static str,
    pub id: u64,
    pub name: &'a str,
    pub address: &'a str,
}

/// Runs a socket until it closes: frames go to the handler as events made by `to_event`; the
/// writer drains `outbox`. `on_closing` runs when a close frame arrives from the peer.
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
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Send + 'static,
{
    let Peer {
        kind,
        id,
        name,
        address,
    } = peer;
    let close_signal = outbox.close_signal.clone();
    let (sink, mut stream) = socket.split();
    let ping_every = options.keepalive.map(|(every, _)| every);
    let mut writer = tokio::spawn(write_loop(
        sink,
        outbox,
        ping_every,
        options.traffic.clone(),
    ));
    let silence_limit = options.keepalive.map(|(every, timeout)| every + timeout);
    let mut keepalive = tokio::time::interval(ping_every.unwrap_or(Duration::from_secs(3600)));
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = tokio::time::Instant::now();
    let mut handler_alive = true;
    let mut writer_done = false;
    let close_deadline = tokio::time::sleep(Duration::from_secs(86_400 * 365));
    tokio::pin!(close_deadline);
    let mut ending = None;
    loop {
        tokio::select! {
            frame = stream.next() => {
                last_heard = tokio::time::Instant::now();
                let incoming = match frame {
                    None => break,
                    Some(Ok(Message::Text(text))) => {
                        options.traffic.received(text.len());
                        Incoming::Text(text)
                    }
                    Some(Ok(Message::Binary(data))) => {
                        options.traffic.received(data.len());
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
                    Some(Ok(_)) => continue,
                    Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => break,
                    Some(Err(error)) => {
                        let (code, reason) = close_code_for(&error);
                        tracing::warn!("{kind} {id} ({name}, {address}): closing with {code}: {error}");
                        close_signal.request(code, reason.clone());
                        if handler_alive {
                            let _ = handler.deliver(to_event(Incoming::Error(error.to_string()))).await;
                        }
                        ending = Some(Ending { code, reason, was_clean: false });
                        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, &mut writer).await;
                        writer_done = true;
                        break;
                    }
                };
                if handler_alive && handler.deliver(to_event(incoming)).await.is_err() {
                    handler_alive = false;
                    tracing::warn!("{kind} {id} ({name}): its handler has stopped; closing with 1011");
                    close_signal.request(1011, "handler unavailable".into());
                }
            }
            _ = keepalive.tick(), if silence_limit.is_some() && ending.is_none() => {
                if let Some(limit) = silence_limit {
                    if last_heard.elapsed() >= limit {
                        tracing::warn!("{kind} {id} ({name}, {address}): no answer to pings for {} s, closing with 1001", limit.as_secs());
                        let reason = "no answer to ping".to_string();
                        close_signal.request(1001, reason.clone());
                        ending = Some(Ending { code: 1001, reason, was_clean: false });
                    }
                }
            }
            _ = &mut writer, if !writer_done => {
                writer_done = true;
                close_deadline.as_mut().reset(tokio::time::Instant::now() + CLOSE_HANDSHAKE_TIMEOUT);
            }
            _ = &mut close_deadline, if writer_done => {
                tracing::debug!("{kind} {id} ({address}) did not answer the close frame in time");
                break;
            }
        }
    }
    if !writer_done {
        // The reader is done: let the writer finish its queue (bounded), then stop it.
        close_signal.request(1000, String::new());
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, &mut writer).await;
        writer.abort();
    }
    ending.unwrap_or_else(Ending::abnormal)
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

async fn write_loop<S>(
    mut sink: S,
    mut outbox: OutboxReader,
    ping_every: Option<Duration>,
    traffic: Arc<Traffic>,
) where
    S: Sink<Message, Error = WsError> + Unpin,
{
    let close_signal: Arc<CloseSignal> = outbox.close_signal.clone();
    // One wait for a close request for the whole life of the writer, rather than a new one
    // registered per message.
    let close_requested = close_signal.requested();
    tokio::pin!(close_requested);
    let mut pings = tokio::time::interval(ping_every.unwrap_or(Duration::from_secs(3600)));
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    pings.reset();
    loop {
        let item = tokio::select! {
            biased;
            (code, reason) = &mut close_requested => {
                let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, sink.send(close_message(code, reason))).await;
                return;
            }
            item = outbox.queue.recv() => item,
            _ = pings.tick(), if ping_every.is_some() => Some(Outbound::Message(Message::Ping(Default::default()))),
        };
        let Some(item) = item else {
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, sink.close()).await;
            return;
        };
        let written = tokio::select! {
            biased;
            (code, reason) = &mut close_requested => {
                let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, sink.send(close_message(code, reason))).await;
                return;
            }
            written = write_batch(&mut sink, item, &mut outbox, &traffic) => written,
        };
        match written {
            Ok(true) => return,
            Ok(false) => {}
            Err(error) => {
                tracing::debug!("write failed: {error}");
                return;
            }
        }
    }
}

/// Feeds `first` and everything already queued, then flushes. Returns true after a close frame.
async fn write_batch<S>(
    sink: &mut S,
    first: Outbound,
    outbox: &mut OutboxReader,
    traffic: &Traffic,
) -> Result<bool, WsError>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    let mut next = Some(first);
    while let Some(item) = next {
        match item {
            Outbound::Message(message) => {
                outbox.taken(&message);
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
        next = outbox.queue.try_recv().ok();
    }
    sink.flush().await?;
    Ok(false)
}

fn close_message(code: u16, reason: String) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}
