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

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Cursor, IoSlice};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::Message;

use crate::stats::Traffic;

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

#[derive(Debug)]
struct Writer {
    fd: RawFd,
    /// Set by the pump while it has nothing half written and no close under way.
    idle: AtomicBool,
    traffic: Arc<Traffic>,
}

thread_local! {
    /// The sockets driven by this thread that take direct writes, by outbox key.
    static WRITERS: RefCell<HashMap<usize, Arc<Writer>>> = RefCell::new(HashMap::new());
}

/// A socket's registration for direct writes; held by its pump, which must drop it before the
/// socket is closed.
#[derive(Debug)]
pub struct DirectWriter {
    key: usize,
    writer: Arc<Writer>,
}

impl DirectWriter {
    /// Registers the socket `fd` on this thread, for the outbox known by `key`.
    pub fn register(key: usize, fd: RawFd, traffic: Arc<Traffic>) -> Self {
        let writer = Arc::new(Writer {
            fd,
            idle: AtomicBool::new(false),
            traffic,
        });
        WRITERS.with(|writers| writers.borrow_mut().insert(key, writer.clone()));
        Self { key, writer }
    }

    /// Whether direct writes may happen now; the pump says no before it writes anything itself.
    pub fn set_idle(&self, idle: bool) {
        self.writer.idle.store(idle, Ordering::Release);
    }
}

impl Drop for DirectWriter {
    fn drop(&mut self) {
        // The thread's map may already be gone when the thread itself is ending.
        let _ = WRITERS.try_with(|writers| {
            let mut writers = writers.borrow_mut();
            if writers
                .get(&self.key)
                .is_some_and(|w| Arc::ptr_eq(w, &self.writer))
            {
                writers.remove(&self.key);
            }
        });
    }
}

/// Writes `message` to the socket of the outbox known by `key`, if that socket is driven by this
/// thread and its pump is idle. The caller holds the outbox's lock and has checked that nothing
/// is queued.
pub fn try_write(key: usize, message: &Message) -> Attempt {
    let (opcode, payload): (Data, &[u8]) = match message {
        Message::Text(text) => (Data::Text, text.as_bytes()),
        Message::Binary(data) => (Data::Binary, data),
        _ => return Attempt::NotNow,
    };
    let Ok(Some(writer)) = WRITERS.try_with(|writers| writers.borrow().get(&key).cloned()) else {
        return Attempt::NotNow;
    };
    if !writer.idle.load(Ordering::Acquire) {
        return Attempt::NotNow;
    }
    let mut header = Cursor::new([0u8; 10]);
    let frame = FrameHeader {
        opcode: OpCode::Data(opcode),
        ..FrameHeader::default()
    };
    if frame.format(payload.len() as u64, &mut header).is_err() {
        return Attempt::NotNow;
    }
    let header_len = header.position() as usize;
    let header = &header.get_ref()[..header_len];
    // SAFETY: the pump drops its registration (and with it this entry) before the socket is
    // closed, and both run on this thread, so the descriptor is the open socket.
    let fd = unsafe { BorrowedFd::borrow_raw(writer.fd) };
    let sent = socket2::SockRef::from(&fd).send_vectored_with_flags(
        &[IoSlice::new(header), IoSlice::new(payload)],
        libc::MSG_NOSIGNAL,
    );
    match sent {
        Ok(n) if n == header_len + payload.len() => {
            writer.traffic.sent(payload.len());
            Attempt::Written
        }
        Ok(n) => {
            writer.idle.store(false, Ordering::Release);
            writer.traffic.sent(payload.len());
            Attempt::Partly(remainder(message, header, n))
        }
        // A full socket waits for the pump; a failed one fails again there, which reports it.
        Err(_) => Attempt::NotNow,
    }
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
