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

#[cfg(target_os = "linux")]
use crate::outbox::DirectClaim;
use crate::stats::Traffic;

/// Frames up to this size (header included) are written with one `send` from a stack copy.
const SMALL_FRAME: usize = 512;

/// What became of a direct write.
#[derive(Debug)]
pub enum Attempt {
    /// The whole frame is in the socket.
    Written,
    /// The socket took part of the frame; these bytes must follow before anything else.
    Partly(Bytes),
    /// Nothing was written: queue the message.
    NotNow,
}

/// A socket that takes direct writes on the thread that drives it. Kept in its outbox's locked
/// state, and taken out of it (under the same lock) before the socket is closed.
#[derive(Debug)]
pub struct DirectSocket {
    fd: RawFd,
    /// The thread driving the socket (see [`thread_token`]).
    thread: usize,
    /// Set by the pump while it has nothing half written and no close under way.
    idle: AtomicBool,
    traffic: Arc<Traffic>,
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
    pub fn new(fd: RawFd, traffic: Arc<Traffic>) -> Self {
        Self {
            fd,
            thread: thread_token(),
            idle: AtomicBool::new(false),
            traffic,
        }
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

    /// The socket's descriptor, for a batched write (see [`Batch`]); valid while the caller holds
    /// the outbox's lock, as for [`Self::try_write`].
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Counts a message as sent before its bytes leave, so that a peer holding it sees it counted.
    fn count_sent(&self, bytes: usize) {
        self.traffic.sent(bytes);
    }

    /// Writes `message` if the calling thread drives the socket and its pump is idle. The caller
    /// holds the outbox's lock and has checked that nothing is queued.
    pub fn try_write(&self, message: &Message) -> Attempt {
        if !self.writable_here() {
            return Attempt::NotNow;
        }
        let Some((head, payload)) = frame_parts(message) else {
            return Attempt::NotNow;
        };
        let header = head.bytes();
        // SAFETY: the outbox drops this registration, under the lock its caller holds, before
        // the pump closes the socket, so the descriptor is the open socket.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let socket = socket2::SockRef::from(&fd);
        self.count_sent(payload.len());
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
        self.conclude(message, header, sent)
    }

    /// What a write of `message`'s frame (header `header`) that returned `sent` means; the
    /// message was counted as sent before the write.
    fn conclude(&self, message: &Message, header: &[u8], sent: io::Result<usize>) -> Attempt {
        let payload_len = message.len();
        match sent {
            Ok(n) if n == header.len() + payload_len => Attempt::Written,
            Ok(n) => {
                self.idle.store(false, Ordering::Release);
                Attempt::Partly(remainder(message, header, n))
            }
            // A full socket waits for the pump (which counts the message when it writes it); a
            // failed one fails again there, which reports it.
            Err(_) => {
                self.traffic.not_sent(payload_len);
                Attempt::NotNow
            }
        }
    }
}

/// A data frame's header, formatted.
struct FrameHead {
    bytes: [u8; 10],
    len: usize,
}

impl FrameHead {
    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The header and payload of `message`'s frame, if it is a data message.
fn frame_parts(message: &Message) -> Option<(FrameHead, &[u8])> {
    let (opcode, payload): (Data, &[u8]) = match message {
        Message::Text(text) => (Data::Text, text.as_bytes()),
        Message::Binary(data) => (Data::Binary, data),
        _ => return None,
    };
    let mut header = Cursor::new([0u8; 10]);
    let frame = FrameHeader {
        opcode: OpCode::Data(opcode),
        ..FrameHeader::default()
    };
    frame.format(payload.len() as u64, &mut header).ok()?;
    let len = header.position() as usize;
    Some((
        FrameHead {
            bytes: header.into_inner(),
            len,
        },
        payload,
    ))
}

/// The bytes of the frame after the first `written`.
fn remainder(message: &Message, header: &[u8], written: usize) -> Bytes {
    let payload = match message {
        Message::Text(text) => Bytes::from(text.clone()),
        Message::Binary(data) => data.clone(),
        _ => Bytes::new(),
    };
    if written >= header.len() {
        payload.slice(written - header.len()..)
    } else {
        let mut rest = header[written..].to_vec();
        rest.extend_from_slice(&payload);
        rest.into()
    }
}

/// Most sockets one [`Batch`] writes with one system call.
#[cfg(target_os = "linux")]
const BATCH: usize = 256;

#[cfg(target_os = "linux")]
thread_local! {
    /// This thread's io_uring for batched writes; `None` where the kernel or a container's
    /// policy refuses one (or `SWITCHBOARD_NO_IO_URING` is set): broadcasts then write each
    /// socket with its own system call.
    static RING: std::cell::RefCell<Option<io_uring::IoUring>> = std::cell::RefCell::new(new_ring());
}

#[cfg(target_os = "linux")]
fn new_ring() -> Option<io_uring::IoUring> {
    if std::env::var_os("SWITCHBOARD_NO_IO_URING").is_some() {
        return None;
    }
    match io_uring::IoUring::new(BATCH as u32) {
        Ok(ring) => Some(ring),
        Err(error) => {
            tracing::debug!(
                "no io_uring ({error}): broadcasts write each socket with its own system call"
            );
            None
        }
    }
}

/// One message written to many sockets at once (a broadcast's receivers on this thread): the
/// frame is built once, and the kernel is entered once per [`BATCH`] sockets instead of once per
/// socket. Each socket's queue stays locked (claimed) from `add` until its write is settled, so
/// nothing else reaches the socket in between; every write is non-blocking, so all of them are
/// done when the submission returns, and a socket that took part or none of the frame is handled
/// exactly as by [`DirectSocket::try_write`].
#[cfg(target_os = "linux")]
pub struct Batch<'a> {
    message: &'a Message,
    head: FrameHead,
    frame: Vec<u8>,
    claims: Vec<DirectClaim<'a>>,
}

#[cfg(target_os = "linux")]
impl<'a> Batch<'a> {
    /// A batch for `message`, if it is a data message and this thread has a ring.
    pub fn new(message: &'a Message) -> Option<Self> {
        if !RING.with(|ring| ring.borrow().is_some()) {
            return None;
        }
        let (head, payload) = frame_parts(message)?;
        u32::try_from(head.len + payload.len()).ok()?;
        let mut frame = Vec::with_capacity(head.len + payload.len());
        frame.extend_from_slice(head.bytes());
        frame.extend_from_slice(payload);
        Some(Self {
            message,
            head,
            frame,
            claims: Vec::with_capacity(BATCH),
        })
    }

    /// Adds a claimed socket, and writes the batch once it is full; returns how many sockets
    /// got the message (written or queued) by that write.
    pub fn add(&mut self, claim: DirectClaim<'a>) -> usize {
        self.claims.push(claim);
        if self.claims.len() == BATCH {
            self.flush()
        } else {
            0
        }
    }

    /// Writes the frame to every claimed socket; returns how many got the message.
    pub fn flush(&mut self) -> usize {
        if self.claims.is_empty() {
            return 0;
        }
        let payload_len = self.message.len();
        for claim in &self.claims {
            claim.socket().count_sent(payload_len);
        }
        let results =
            RING.with(|ring| write_all(&mut ring.borrow_mut(), &self.claims, &self.frame));
        let header = self.head.bytes();
        let mut delivered = 0;
        for (claim, result) in self.claims.drain(..).zip(results) {
            let sent = match result {
                Some(bytes) if bytes >= 0 => Ok(bytes as usize),
                Some(error) => Err(io::Error::from_raw_os_error(-error)),
                None => Err(io::Error::other("the batched write did not run")),
            };
            let direct = claim.socket().conclude(self.message, header, sent);
            if claim.settle(self.message, direct).is_ok() {
                delivered += 1;
            }
        }
        delivered
    }
}

/// Writes `frame` to every claimed socket through the ring, non-blocking; returns each write's
/// result (bytes written, or a negative errno), or `None` where it did not run.
#[cfg(target_os = "linux")]
fn write_all(
    ring: &mut Option<io_uring::IoUring>,
    claims: &[DirectClaim<'_>],
    frame: &[u8],
) -> Vec<Option<i32>> {
    let mut results = vec![None; claims.len()];
    let Some(uring) = ring.as_mut() else {
        return results;
    };
    let mut queued = 0;
    {
        let mut submission = uring.submission();
        for (index, claim) in claims.iter().enumerate() {
            let fd = io_uring::types::Fd(claim.socket().fd());
            let send = io_uring::opcode::Send::new(fd, frame.as_ptr(), frame.len() as u32)
                .flags(libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
                .build()
                .user_data(index as u64);
            // SAFETY: `frame` and the descriptors outlive the writes: every write is
            // non-blocking and completes before this function returns.
            if unsafe { submission.push(&send) }.is_err() {
                break;
            }
            queued += 1;
        }
    }
    let mut completed = 0;
    while completed < queued {
        match uring.submit_and_wait(queued - completed) {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                tracing::warn!("io_uring failed ({error}): broadcasts write each socket with its own system call from now on");
                *ring = None;
                break;
            }
        }
        for completion in uring.completion() {
            results[completion.user_data() as usize] = Some(completion.result());
            completed += 1;
        }
    }
    results
}
