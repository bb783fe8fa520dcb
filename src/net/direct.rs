//! Writing a message straight to its socket, from the thread that drives the socket.
//!
//! A plain TCP connection lives on its handler's isolate thread (see `server/upgrade.rs`). When
//! that handler sends to it while its pump is idle (nothing queued, nothing half written, no close
//! under way), the frame is written from the isolate at once, instead of being queued for the pump
//! to be woken, polled and made to take the queue: that wake-up was most of what a broadcast cost
//! per receiver beyond the system call, and a good part of an echo's reply. Anything else (another
//! thread, a TLS socket, a pump that is busy, a socket that cannot take the whole frame now) goes
//! through the outbox as before; a frame the socket took only part of is finished by the pump
//! before anything else.

use std::io::{self, Cursor, IoSlice};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::Message;

use super::compression::socket::SocketCompression;
use crate::stats::Traffic;

/// Frames up to this size (header included) are written with one `send` from a stack copy.
const SMALL_FRAME: usize = 512;

/// What became of a direct write.
#[derive(Debug)]
pub enum Attempt {
    /// The whole frame is in the socket.
    Written,
    /// The socket took part of the frame (of a compressed frame, possibly none: it is never
    /// compressed twice); these bytes must follow before anything else.
    Partly(Bytes),
    /// Nothing was written: queue the message.
    NotNow,
}

/// A socket that takes direct writes on the thread that drives it. Kept in its outbox's locked
/// state, and taken out of it (under the same lock) before the socket is closed.
#[derive(Debug)]
pub struct DirectSocket {
    /// The socket's descriptor, open while this is registered in its outbox.
    fd: RawFd,
    /// The thread driving the socket (see [`thread_token`]).
    thread: usize,
    /// Set by the pump while it has nothing half written and no close under way.
    idle: AtomicBool,
    /// Where the socket's sent messages are counted.
    traffic: Arc<Traffic>,
    /// permessage-deflate, when it was agreed: data messages are compressed as they are written.
    compression: Option<Arc<SocketCompression>>,
}

/// Tells threads apart cheaply: the address of a thread-local, unique among live threads.
fn thread_token() -> usize {
    thread_local! {
        static TOKEN: u8 = const { 0 };
    }
    TOKEN.with(|token| token as *const u8 as usize)
}

impl DirectSocket {
    /// The socket `fd`, driven by the calling thread.
    pub fn new(
        fd: RawFd,
        traffic: Arc<Traffic>,
        compression: Option<Arc<SocketCompression>>,
    ) -> Self {
        Self {
            fd,
            thread: thread_token(),
            idle: AtomicBool::new(false),
            traffic,
            compression,
        }
    }

    /// The socket's permessage-deflate, if agreed.
    pub fn compression(&self) -> Option<&SocketCompression> {
        self.compression.as_deref()
    }

    /// Whether direct writes may happen now; the pump says no before it writes anything itself.
    pub fn set_idle(&self, idle: bool) {
        self.idle.store(idle, Ordering::Release);
    }

    /// Whether the calling thread drives the socket and its pump is idle: a direct write may
    /// happen now (under the outbox's lock, with nothing queued).
    pub fn writable_here(&self) -> bool {
        self.thread == thread_token() && self.idle.load(Ordering::Acquire)
    }

    /// The socket's descriptor, for a batched write (see `batch`); valid while the caller holds
    /// the outbox's lock, as for [`Self::try_write`].
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Counts a message of `message_len` bytes as sent as `frame`, before its bytes leave, so
    /// that a peer holding it sees it counted.
    pub(super) fn count_sent(&self, message_len: usize, frame: &WireFrame<'_>) {
        self.traffic.sent(message_len);
        if let (Payload::Compressed(compressed), Some(compression)) =
            (&frame.payload, self.compression())
        {
            compression.count_sent(message_len, compressed.len());
        }
    }

    /// Writes `message` if the calling thread drives the socket and its pump is idle. The caller
    /// holds the outbox's lock and has checked that nothing is queued.
    pub fn try_write(&self, message: &Message) -> Attempt {
        if !self.writable_here() {
            return Attempt::NotNow;
        }
        let Some(frame) = wire_frame(message, self.compression()) else {
            return Attempt::NotNow;
        };
        let header = frame.head.bytes();
        let payload = frame.payload.bytes();
        // SAFETY: `self.fd` is the open socket. This registration lives in the outbox's locked
        // state, and the caller holds that lock (`OutboxHandle::offer`); the pump removes the
        // registration under the same lock (`outbox::DirectWrites::drop`) before it closes the
        // socket (`pump::pump` drops its `DirectWrites` first), so the descriptor cannot be
        // closed, or reused, during this call.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let socket = socket2::SockRef::from(&fd);
        self.count_sent(message.len(), &frame);
        let frame_len = header.len() + payload.len();
        let sent = if frame_len <= SMALL_FRAME {
            // A small frame is copied into one buffer: a plain send costs the kernel less than
            // gathering two pieces (sendmsg copies in and walks an iovec array per call).
            let mut frame = [0u8; SMALL_FRAME];
            frame[..header.len()].copy_from_slice(header);
            frame[header.len()..frame_len].copy_from_slice(payload);
            socket.send_with_flags(&frame[..frame_len], libc::MSG_NOSIGNAL)
        } else {
            socket.send_vectored_with_flags(
                &[IoSlice::new(header), IoSlice::new(payload)],
                libc::MSG_NOSIGNAL,
            )
        };
        self.conclude(message.len(), &frame, sent)
    }

    /// What a write of a message of `message_len` bytes as `frame` that returned `sent` means;
    /// the message was counted as sent before the write.
    pub(super) fn conclude(
        &self,
        message_len: usize,
        frame: &WireFrame<'_>,
        sent: io::Result<usize>,
    ) -> Attempt {
        match sent {
            Ok(n) if n == frame.len() => Attempt::Written,
            // A compressed frame goes to the pump as it is, written or not: compressing the
            // message again there would compress it twice in a socket's own window (the peer's
            // inflater never sees the first), and count it twice.
            Ok(n) => {
                self.idle.store(false, Ordering::Release);
                Attempt::Partly(frame.after(n))
            }
            Err(_) if matches!(frame.payload, Payload::Compressed(_)) => {
                self.idle.store(false, Ordering::Release);
                Attempt::Partly(frame.after(0))
            }
            // A full socket waits for the pump (which counts the message when it writes it); a
            // failed one fails again there, which reports it.
            Err(_) => {
                self.traffic.not_sent(message_len);
                Attempt::NotNow
            }
        }
    }
}

/// A data frame's header, formatted.
pub(super) struct FrameHead {
    /// Room for the longest header a server sends (no mask).
    bytes: [u8; 10],
    /// How much of `bytes` the header takes.
    len: usize,
}

impl FrameHead {
    /// The header's bytes.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// What a data message's frame carries: the message's own bytes, or their compressed form.
pub(super) enum Payload<'a> {
    /// The message as it is.
    Plain(&'a Message),
    /// Compressed (the frame has RSV1 set).
    Compressed(Bytes),
}

impl Payload<'_> {
    /// The bytes after the header.
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Payload::Plain(Message::Text(text)) => text.as_bytes(),
            Payload::Plain(Message::Binary(data)) => data,
            Payload::Plain(_) => &[],
            Payload::Compressed(bytes) => bytes,
        }
    }

    /// The payload as shared bytes (a reference count, no copy).
    fn shared(&self) -> Bytes {
        match self {
            Payload::Plain(Message::Text(text)) => Bytes::from(text.clone()),
            Payload::Plain(Message::Binary(data)) => data.clone(),
            Payload::Plain(_) => Bytes::new(),
            Payload::Compressed(bytes) => bytes.clone(),
        }
    }
}

/// A data message's frame, ready for the socket: header and payload.
pub(super) struct WireFrame<'a> {
    /// The header.
    pub(super) head: FrameHead,
    /// The payload.
    pub(super) payload: Payload<'a>,
}

impl WireFrame<'_> {
    /// The frame's length on the wire.
    pub(super) fn len(&self) -> usize {
        self.head.len + self.payload.bytes().len()
    }

    /// The bytes of the frame after the first `written`.
    fn after(&self, written: usize) -> Bytes {
        let header = self.head.bytes();
        let payload = self.payload.shared();
        if written >= header.len() {
            payload.slice(written - header.len()..)
        } else {
            let mut rest = header[written..].to_vec();
            rest.extend_from_slice(&payload);
            rest.into()
        }
    }
}

/// The frame of `message`, if it is a data message: compressed when `compression` compresses it.
pub(super) fn wire_frame<'a>(
    message: &'a Message,
    compression: Option<&SocketCompression>,
) -> Option<WireFrame<'a>> {
    let opcode = match message {
        Message::Text(_) => Data::Text,
        Message::Binary(_) => Data::Binary,
        _ => return None,
    };
    let payload = match compression.and_then(|compression| compression.compress(message)) {
        Some(compressed) => Payload::Compressed(compressed),
        None => Payload::Plain(message),
    };
    let mut header = Cursor::new([0u8; 10]);
    let frame = FrameHeader {
        opcode: OpCode::Data(opcode),
        rsv1: matches!(payload, Payload::Compressed(_)),
        ..FrameHeader::default()
    };
    frame
        .format(payload.bytes().len() as u64, &mut header)
        .ok()?;
    let len = header.position() as usize;
    Some(WireFrame {
        head: FrameHead {
            bytes: header.into_inner(),
            len,
        },
        payload,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    use super::*;
    use crate::net::compression::socket::{CompressionSetup, Side};
    use crate::net::compression::Agreed;

    /// A socket whose peer reads nothing, filled until a write would block.
    fn full_socket() -> (
        std::os::unix::net::UnixStream,
        std::os::unix::net::UnixStream,
    ) {
        let (ours, peer) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let chunk = [0u8; 65536];
        loop {
            match (&ours).write(&chunk) {
                Ok(_) => continue,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => panic!("{error}"),
            }
        }
        (ours, peer)
    }

    #[test]
    fn a_compressed_frame_that_could_not_be_written_goes_to_the_pump_as_it_is() {
        let (ours, _peer) = full_socket();
        let setup = CompressionSetup {
            min_bytes: 0,
            level: 1,
            max_message_size: 1 << 20,
            counters: Arc::default(),
            budget: Arc::default(),
        };
        // A window of its own: the message may be compressed only once.
        let agreed = Agreed {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        };
        let compression = SocketCompression::new(agreed, Side::Server, &setup).unwrap();
        let traffic = Arc::new(Traffic::default());
        let socket = DirectSocket::new(
            ours.as_raw_fd(),
            traffic.clone(),
            Some(Arc::new(compression)),
        );
        socket.set_idle(true);
        let message = Message::text("hello, hello, hello, hello");
        match socket.try_write(&message) {
            Attempt::Partly(frame) => {
                // FIN, RSV1 and text; the compressed payload follows the 2-byte header.
                assert_eq!(frame[0], 0xc1);
                assert_eq!(usize::from(frame[1]), frame.len() - 2);
            }
            Attempt::Written => panic!("the socket was full"),
            Attempt::NotNow => panic!("the compressed frame was dropped, to be compressed again"),
        }
        assert!(!socket.writable_here(), "the pump writes the rest first");
        assert_eq!(
            setup.counters.sent_raw.load(Ordering::Relaxed),
            26,
            "counted once"
        );
        assert_eq!(traffic.bytes_out.load(Ordering::Relaxed), 26);
    }

    #[test]
    fn a_plain_message_that_could_not_be_written_waits_for_the_pump_uncounted() {
        let (ours, _peer) = full_socket();
        let traffic = Arc::new(Traffic::default());
        let socket = DirectSocket::new(ours.as_raw_fd(), traffic.clone(), None);
        socket.set_idle(true);
        assert!(matches!(
            socket.try_write(&Message::text("hello")),
            Attempt::NotNow
        ));
        assert_eq!(traffic.bytes_out.load(Ordering::Relaxed), 0);
    }
}
