//! The bounded outbound queue of one socket (inbound connection or outbound client).
//!
//! Pushing never waits, so a handler's `send` never blocks its isolate. The queue is bounded in
//! messages and in bytes: a peer that stops reading fills it, and is then closed with 1008
//! "send queue full" instead of letting memory grow without bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// What the writer task of a socket is asked to do.
#[derive(Debug)]
pub enum Outbound {
    Message(Message),
    /// Send a close frame with this code and reason, after everything queued before it.
    Close {
        code: u16,
        reason: String,
    },
}

/// A close request that overtakes the queue. One task (the socket's pump) waits for it.
#[derive(Debug, Default)]
pub struct CloseSignal {
    requested: parking_lot::Mutex<Option<(u16, String)>>,
    /// Set once a request is recorded: checked on every poll without taking the lock.
    set: std::sync::atomic::AtomicBool,
    waker: futures_util::task::AtomicWaker,
}

impl CloseSignal {
    /// Records the first request; later ones keep the first code and reason.
    pub fn request(&self, code: u16, reason: String) {
        let mut requested = self.requested.lock();
        if requested.is_none() {
            *requested = Some((code, reason));
        }
        drop(requested);
        self.set.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready with the code and reason once a close was requested.
    pub fn poll_requested(&self, cx: &mut std::task::Context<'_>) -> Poll<(u16, String)> {
        if !self.set.load(Ordering::Acquire) {
            self.waker.register(cx.waker());
            if !self.set.load(Ordering::Acquire) {
                return Poll::Pending;
            }
        }
        match self.requested.lock().clone() {
            Some(request) => Poll::Ready(request),
            None => Poll::Pending,
        }
    }
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The socket's writer is gone.
    Closed,
    /// A close is queued: nothing sent after it would be delivered, so nothing is accepted.
    Closing,
    /// The bound was reached: the socket is being closed with 1008.
    Full,
}

/// Bounds of one queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueBounds {
    pub messages: usize,
    pub bytes: usize,
}

impl Default for QueueBounds {
    fn default() -> Self {
        Self {
            messages: 1_000,
            bytes: 16 << 20,
        }
    }
}

/// The sending side, kept in the connection or client registry.
#[derive(Debug)]
pub struct Outbox {
    queue: mpsc::Sender<Outbound>,
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    close_signal: Arc<CloseSignal>,
    closing: std::sync::atomic::AtomicBool,
}

/// The writer's side.
#[derive(Debug)]
pub struct OutboxReader {
    pub(crate) queue: mpsc::Receiver<Outbound>,
    pub(crate) bytes: Arc<AtomicUsize>,
    pub(crate) close_signal: Arc<CloseSignal>,
}

impl OutboxReader {
    /// Accounts for a message taken off the queue.
    pub(crate) fn taken(&self, message: &Message) {
        self.bytes.fetch_sub(message.len(), Ordering::Relaxed);
    }
}

/// A new queue with these bounds.
pub fn outbox(bounds: QueueBounds) -> (Outbox, OutboxReader) {
    let (queue, receiver) = mpsc::channel(bounds.messages.max(1));
    let bytes = Arc::new(AtomicUsize::new(0));
    let close_signal = Arc::new(CloseSignal::default());
    (
        Outbox {
            queue,
            bytes: bytes.clone(),
            max_bytes: bounds.bytes,
            close_signal: close_signal.clone(),
            closing: Default::default(),
        },
        OutboxReader {
            queue: receiver,
            bytes,
            close_signal,
        },
    )
}

impl Outbox {
    /// Queues a message without waiting.
    pub fn push(&self, message: Message) -> Result<(), PushError> {
        if self.closing.load(Ordering::Acquire) {
            return Err(PushError::Closing);
        }
        let size = message.len();
        let queued = self.bytes.fetch_add(size, Ordering::Relaxed) + size;
        if queued > self.max_bytes && queued != size {
            self.bytes.fetch_sub(size, Ordering::Relaxed);
            self.close_now(1008, "send queue full".into());
            return Err(PushError::Full);
        }
        match self.queue.try_send(Outbound::Message(message)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.bytes.fetch_sub(size, Ordering::Relaxed);
                Err(PushError::Closed)
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.bytes.fetch_sub(size, Ordering::Relaxed);
                self.close_now(1008, "send queue full".into());
                Err(PushError::Full)
            }
        }
    }

    /// Closes after the messages already queued.
    pub fn close(&self, code: u16, reason: String) -> Result<(), PushError> {
        if self.closing.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        match self.queue.try_send(Outbound::Close {
            code,
            reason: reason.clone(),
        }) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(PushError::Closed),
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The close must not be lost behind a full queue.
                self.close_now(code, reason);
                Ok(())
            }
        }
    }

    /// Closes at once, ahead of anything still queued.
    pub fn close_now(&self, code: u16, reason: String) {
        self.closing.store(true, Ordering::Release);
        self.close_signal.request(code, reason);
    }
}
