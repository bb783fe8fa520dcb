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

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use self::io::{finish_then_close, peer_went_away, send_close, write_batch, ReadWake};
use self::phase::Phase;
use super::close::close_code_for;
use super::compression::socket::SocketCompression;
use super::outbox::{Outbound, OutboxReader, Taken};
use crate::event::{EventSink, IsolateEvent, Target};
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
            options.compression.clone(),
        )
    });
    let mut state = PumpState {
        label: peer.label(),
        peer,
        handler,
        outbox: &outbox,
        traffic: &options.traffic,
        compression: options.compression.as_deref(),
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
    /// permessage-deflate, if agreed: what it reads is inflated, what it writes compressed.
    compression: Option<&'a SocketCompression>,
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
        // A compressed message (RSV1) arrives as one frame, still compressed.
        let frame = match (frame, self.compression) {
            (Some(Ok(Message::Frame(compressed))), Some(compression)) => {
                Some(compression.inflate(compressed))
            }
            // RSV1 where no compression was agreed (the library only lets it through when
            // compression was offered).
            (Some(Ok(Message::Frame(_))), None) => Some(Err(WsError::Protocol(
                tokio_tungstenite::tungstenite::error::ProtocolError::NonZeroReservedBits,
            ))),
            (frame, _) => frame,
        };
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
