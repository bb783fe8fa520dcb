//! The pump of one WebSocket connection: a reader that turns frames into handler events, and a
//! writer task that drains the connection's bounded outbound queue onto the socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::connections::{CloseSignal, ConnectionRegistry, Outbound, DEFAULT_SEND_QUEUE};
use crate::isolate::{HandlerIsolate, IsolateEvent};

/// How long a peer has to answer our close frame before the socket is dropped.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How the connection ended, as reported to `onClose`.
struct Ending {
    code: u16,
    reason: String,
    was_clean: bool,
}

/// Serves one upgraded connection until it closes.
pub async fn serve_connection<S>(
    socket: S,
    endpoint: Arc<str>,
    peer: SocketAddr,
    isolate: Arc<HandlerIsolate>,
    connections: Arc<ConnectionRegistry>,
) where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Send + 'static,
{
    let (sink, mut stream) = socket.split();
    let (outbound, queue) = mpsc::channel(DEFAULT_SEND_QUEUE);
    let close_signal = Arc::new(CloseSignal::default());
    let id = connections.register(endpoint.clone(), peer, outbound, close_signal.clone());
    tracing::debug!(connection = id, %endpoint, %peer, "connection opened");
    let mut writer = tokio::spawn(write_loop(sink, queue, close_signal));
    let mut isolate_alive = isolate
        .deliver(IsolateEvent::Open {
            connection: id,
            endpoint: endpoint.clone(),
        })
        .await
        .is_ok();

    let mut writer_done = false;
    let close_deadline = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(close_deadline);
    let mut ending = None;
    loop {
        tokio::select! {
            frame = stream.next() => {
                let event = match frame {
                    None => break,
                    Some(Ok(Message::Text(text))) => IsolateEvent::Text { connection: id, text },
                    Some(Ok(Message::Binary(data))) => IsolateEvent::Binary { connection: id, data },
                    Some(Ok(Message::Close(frame))) => {
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
                        tracing::warn!(connection = id, %endpoint, %peer, code, "closing: {error}");
                        let _ = connections.close_now(id, code, reason.clone());
                        if isolate_alive {
                            isolate_alive = isolate.deliver(IsolateEvent::Error { connection: id, message: error.to_string() }).await.is_ok();
                        }
                        ending = Some(Ending { code, reason, was_clean: false });
                        // Wait for the writer to send the close frame, then stop.
                        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, &mut writer).await;
                        break;
                    }
                };
                if isolate_alive && isolate.deliver(event).await.is_err() {
                    isolate_alive = false;
                    tracing::warn!(connection = id, %endpoint, "the handler's isolate has stopped: closing with 1011");
                    let _ = connections.close(id, 1011, "handler unavailable".into());
                }
            }
            _ = &mut writer, if !writer_done => {
                writer_done = true;
                close_deadline.as_mut().reset(tokio::time::Instant::now() + CLOSE_HANDSHAKE_TIMEOUT);
            }
            _ = &mut close_deadline, if writer_done => {
                tracing::debug!(connection = id, %peer, "peer did not answer the close frame in time");
                break;
            }
        }
    }
    connections.remove(id);
    if !writer_done {
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, writer).await;
    }
    let ending = ending.unwrap_or(Ending {
        code: 1006,
        reason: String::new(),
        was_clean: false,
    });
    tracing::debug!(connection = id, %endpoint, %peer, code = ending.code, "connection closed");
    if isolate_alive {
        let _ = isolate
            .deliver(IsolateEvent::Close {
                connection: id,
                code: ending.code,
                reason: ending.reason,
                was_clean: ending.was_clean,
            })
            .await;
    }
}

/// The close code RFC 6455 asks for when reading failed with `error`.
fn close_code_for(error: &WsError) -> (u16, String) {
    match error {
        WsError::Utf8(_) => (1007, "invalid UTF-8 in a text message".into()),
        WsError::Capacity(_) => (1009, "message too big".into()),
        WsError::Protocol(problem) => (1002, truncate_reason(&problem.to_string())),
        _ => (1011, "read error".into()),
    }
}

/// Close reasons are limited to 123 bytes.
fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

/// Writes queued messages, batching whatever is waiting into one flush. Ends after a close frame,
/// when the queue is dropped, or when the socket fails.
async fn write_loop<S>(
    mut sink: S,
    mut queue: mpsc::Receiver<Outbound>,
    close_signal: Arc<CloseSignal>,
) where
    S: Sink<Message, Error = WsError> + Unpin,
{
    loop {
        let item = tokio::select! {
            biased;
            (code, reason) = close_signal.requested() => {
                let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, sink.send(close_message(code, reason))).await;
                return;
            }
            item = queue.recv() => item,
        };
        let Some(item) = item else {
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, sink.close()).await;
            return;
        };
        let written = tokio::select! {
            biased;
            (code, reason) = close_signal.requested() => {
                let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, sink.send(close_message(code, reason))).await;
                return;
            }
            written = write_batch(&mut sink, item, &mut queue) => written,
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
    queue: &mut mpsc::Receiver<Outbound>,
) -> Result<bool, WsError>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    let mut next = Some(first);
    while let Some(item) = next {
        match item {
            Outbound::Message(message) => sink.feed(message).await?,
            Outbound::Close { code, reason } => {
                sink.send(close_message(code, reason)).await?;
                return Ok(true);
            }
        }
        next = queue.try_recv().ok();
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
