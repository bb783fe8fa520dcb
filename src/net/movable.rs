//! A TCP stream that can move to another thread's reactor while a WebSocket runs on it: a STOMP
//! session's socket starts on the network threads (its endpoint is not known at the upgrade)
//! and moves to the home of the endpoint it talks to, once its first frames say which.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::pump::TcpUnder;

/// A TCP stream registered with one thread's reactor at a time.
#[derive(Debug)]
pub struct MovableTcp {
    /// The stream, while attached to a reactor.
    attached: Option<TcpStream>,
    /// The stream between [`MovableTcp::detach`] and [`MovableTcp::attach`].
    detached: Option<std::net::TcpStream>,
}

impl MovableTcp {
    /// A stream attached to the current thread's reactor.
    pub fn new(stream: TcpStream) -> Self {
        Self {
            attached: Some(stream),
            detached: None,
        }
    }

    /// Leaves the reactor it is registered with (call it on that reactor's thread, with no read
    /// or write in progress).
    pub fn detach(&mut self) -> io::Result<()> {
        if let Some(stream) = self.attached.take() {
            self.detached = Some(stream.into_std()?);
        }
        Ok(())
    }

    /// Joins the reactor of the thread it is called on.
    pub fn attach(&mut self) -> io::Result<()> {
        if let Some(stream) = self.detached.take() {
            self.attached = Some(TcpStream::from_std(stream)?);
        }
        Ok(())
    }

    /// Polls the attached stream; while it moves, every read and write fails.
    fn poll_attached<T>(
        self: Pin<&mut Self>,
        poll: impl FnOnce(Pin<&mut TcpStream>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match self.get_mut().attached.as_mut() {
            Some(stream) => poll(Pin::new(stream)),
            None => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the socket is moving",
            ))),
        }
    }
}

impl AsyncRead for MovableTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.poll_attached(|stream| stream.poll_read(cx, buf))
    }
}

impl AsyncWrite for MovableTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_attached(|stream| stream.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_attached(|stream| stream.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_attached(|stream| stream.poll_shutdown(cx))
    }
}

/// A STOMP session's socket: its first messages are looked at before they are taken.
impl TcpUnder for futures_util::stream::Peekable<tokio_tungstenite::WebSocketStream<MovableTcp>> {
    fn tcp_under(&mut self) -> Option<&mut TcpStream> {
        self.get_mut().get_mut().attached.as_mut()
    }
}
