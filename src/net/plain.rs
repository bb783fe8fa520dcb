//! A WebSocket on a plain TCP stream, driven without tokio-tungstenite's waker proxies: every
//! inbound connection on plain TCP runs on this (TLS and hyper's upgraded streams keep
//! `tokio_tungstenite::WebSocketStream`).
//!
//! tokio-tungstenite wraps any `AsyncRead + AsyncWrite` in a blocking-style adapter whose reads
//! and writes carry a proxy waker (two slots each, registered again at every poll, both woken at
//! every readiness), and the pump added a third proxy to tell read wake-ups from write ones:
//! about 600 instructions a message, a twentieth of a small echo's user-space work (bench/README.md).
//! A tokio `TcpStream` already keeps its read and write readiness apart, so here the library's
//! protocol state machine (`tungstenite::WebSocket`) reads with `try_read`, writes with
//! `try_write`, and a poll that finds nothing registers the task's own waker for the direction
//! that blocked.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Sink, Stream};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, WebSocket};

use super::pump::TcpUnder;

/// A server-side WebSocket on plain TCP: a `Stream` of messages and a `Sink` for them, as
/// `tokio_tungstenite::WebSocketStream` is, with the same errors and end of stream.
#[derive(Debug)]
pub struct PlainWebSocket {
    /// The library's protocol state over the non-blocking stream.
    socket: WebSocket<NonBlockingTcp>,
    /// The stream ended (closed, or an error was returned): every later poll says so.
    ended: bool,
    /// A message could be queued without flushing first (false after a write would block).
    ready: bool,
    /// Our close frame is queued: closing now only flushes it.
    closing: bool,
}

/// The TCP stream as `Read + Write` that never blocks: a read or write that cannot go on returns
/// `WouldBlock` (tokio then forgets the readiness that direction had).
#[derive(Debug)]
struct NonBlockingTcp {
    /// The stream, registered with this thread's reactor.
    stream: TcpStream,
    /// The last write would have blocked: a poll that finds nothing to read also waits for the
    /// stream to take writes again (the library flushes its queued pong or close at the next
    /// read).
    write_blocked: bool,
}

impl Read for NonBlockingTcp {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.stream.try_read(buffer)?;
        if read > 0 && read < buffer.len() {
            // A short read drained the socket: forget its read readiness, as tokio's own
            // `poll_read` does, so that the next poll waits for the reactor instead of making
            // a system call that finds nothing (one per message otherwise).
            let _ = self.stream.try_io(Interest::READABLE, || {
                Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock))
            });
        }
        Ok(read)
    }
}

impl Write for NonBlockingTcp {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.stream.try_write(bytes);
        self.write_blocked =
            matches!(&written, Err(error) if error.kind() == io::ErrorKind::WouldBlock);
        written
    }

    fn flush(&mut self) -> io::Result<()> {
        // TCP has no buffer of its own to flush.
        Ok(())
    }
}

/// Whether a library error is a read or write that would have blocked.
fn would_block(error: &WsError) -> bool {
    matches!(error, WsError::Io(io) if io.kind() == io::ErrorKind::WouldBlock)
}

impl PlainWebSocket {
    /// The server's side of a connection whose handshake is done; `already_read` is what was
    /// read past the handshake (the first frames, if the client sent them at once).
    pub fn from_partially_read(
        stream: TcpStream,
        already_read: Vec<u8>,
        config: Option<WebSocketConfig>,
    ) -> Self {
        let stream = NonBlockingTcp {
            stream,
            write_blocked: false,
        };
        Self {
            socket: WebSocket::from_partially_read(stream, already_read, Role::Server, config),
            ended: false,
            ready: true,
            closing: false,
        }
    }

    /// Drives a flush until it is done, or until the stream stops taking writes (then the task
    /// is woken when it takes them again).
    fn poll_flushed(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        loop {
            match self.socket.flush() {
                Err(error) if would_block(&error) => {
                    match self.socket.get_ref().stream.poll_write_ready(cx) {
                        // Writable again since the write that blocked: try at once.
                        Poll::Ready(Ok(())) => continue,
                        Poll::Ready(Err(error)) => return Poll::Ready(Err(WsError::Io(error))),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                other => return Poll::Ready(other),
            }
        }
    }
}

impl TcpUnder for PlainWebSocket {
    fn tcp_under(&mut self) -> Option<&mut TcpStream> {
        Some(&mut self.socket.get_mut().stream)
    }

    fn reads_woken_apart(&self) -> bool {
        true
    }
}

impl Stream for PlainWebSocket {
    type Item = Result<Message, WsError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        loop {
            let error = match this.socket.read() {
                Ok(message) => return Poll::Ready(Some(Ok(message))),
                Err(error) => error,
            };
            if !would_block(&error) {
                this.ended = true;
                return match error {
                    WsError::AlreadyClosed | WsError::ConnectionClosed => Poll::Ready(None),
                    error => Poll::Ready(Some(Err(error))),
                };
            }
            let tcp = this.socket.get_ref();
            // Nothing to read: wait for data, and also for room to write if the library has a
            // pong or close frame it could not write (it flushes them at the next read).
            let mut ready = tcp.stream.poll_read_ready(cx);
            if ready.is_pending() && tcp.write_blocked {
                ready = tcp.stream.poll_write_ready(cx);
            }
            match ready {
                // Ready again since the read or write that blocked: try at once.
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(error)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(WsError::Io(error))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Sink<Message> for PlainWebSocket {
    type Error = WsError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let this = self.get_mut();
        if this.ready {
            return Poll::Ready(Ok(()));
        }
        // Blocked: flush what is queued before taking more.
        let flushed = std::task::ready!(this.poll_flushed(cx));
        this.ready = true;
        Poll::Ready(flushed)
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), WsError> {
        let this = self.get_mut();
        match this.socket.write(message) {
            Ok(()) => {
                this.ready = true;
                Ok(())
            }
            // Queued, not written: the next poll_ready flushes first.
            Err(error) if would_block(&error) => {
                this.ready = false;
                Ok(())
            }
            Err(error) => {
                this.ready = true;
                Err(error)
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let this = self.get_mut();
        let flushed = std::task::ready!(this.poll_flushed(cx));
        this.ready = true;
        Poll::Ready(match flushed {
            // The close handshake has just completed: the flush did all it had to.
            Err(WsError::ConnectionClosed) => Ok(()),
            other => other,
        })
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let this = self.get_mut();
        this.ready = true;
        if !this.closing {
            this.closing = true;
            match this.socket.close(None) {
                // Queued: flushed below, now and at the next polls.
                Err(error) if would_block(&error) => {}
                Ok(()) | Err(WsError::ConnectionClosed) => return Poll::Ready(Ok(())),
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
        let flushed = std::task::ready!(this.poll_flushed(cx));
        Poll::Ready(match flushed {
            Err(WsError::ConnectionClosed) => Ok(()),
            other => other,
        })
    }
}
