//! The bounded outbound queue of one socket (inbound connection or outbound client).
//!
//! Pushing never waits, so a handler's `send` never blocks its isolate. The queue is bounded in
//! messages and in bytes: a peer that stops reading fills it, and is then closed with 1008
//! "send queue full" instead of letting memory grow without bound.
//!
//! The socket's pump takes everything queued at once, and only the first message into an empty
//! queue wakes it. When nothing is queued and the pump has registered for direct writes on the
//! sending thread, a message is written to the socket at once instead (see `direct`): a
//! broadcast then costs each receiver a lock and a system call (or a share of one, batched through
//! io_uring: see `batch`), and no pump wake-up.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::{Mutex, MutexGuard};
use tokio_tungstenite::tungstenite::Message;

use super::compression::socket::SocketCompression;
use super::direct::{Attempt, DirectSocket};
use crate::limits::QueueBounds;
use crate::stats::Traffic;

/// What the pump of a socket is asked to do.
#[derive(Debug)]
pub enum Outbound {
    /// A message to send.
    Message(Message),
    /// Send a close frame with this code and reason, after everything queued before it.
    Close {
        /// The close code.
        code: u16,
        /// The close reason (at most 123 bytes).
        reason: String,
    },
    /// The rest of a frame that was partly written directly (see `direct`): it goes out first,
    /// as raw bytes.
    Raw(Bytes),
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The socket's pump is gone.
    Closed,
    /// A close is queued: nothing sent after it would be delivered, so nothing is accepted.
    Closing,
    /// The bound was reached: the socket is being closed with 1008.
    Full,
}

/// What waits for the pump, under the queue's lock.
#[derive(Debug, Default)]
struct Queue {
    /// Messages, close requests and the rest of a direct write, in order.
    items: VecDeque<Outbound>,
    /// Bytes of the messages in `items`, for the byte bound.
    bytes: usize,
    /// A close that overtakes the queue (the first one requested).
    close_now: Option<(u16, String)>,
    /// The pump is gone: nothing can be sent any more.
    reader_gone: bool,
    /// The sending side is gone: the pump closes the socket.
    sender_gone: bool,
    /// The socket, while its pump takes direct writes on its own thread.
    direct: Option<Arc<DirectSocket>>,
}

/// The state both sides of one queue hold.
#[derive(Debug, Default)]
struct Shared {
    /// What waits for the pump.
    queue: Mutex<Queue>,
    /// Set once a close is queued or requested: later messages are refused.
    closing: AtomicBool,
    /// Whether the pump has something to take (see [`Shared::note`]): lets the pump's every
    /// poll skip the lock while the queue is empty, which it mostly is.
    pending: AtomicBool,
    /// Wakes the pump's task when there is something to take.
    pump: AtomicWaker,
}

impl Shared {
    /// Records whether `queue` holds something for the pump; called under the lock after every
    /// change to what `take` would report.
    fn note(&self, queue: &Queue) {
        let pending = queue.close_now.is_some() || !queue.items.is_empty() || queue.sender_gone;
        self.pending.store(pending, Ordering::Release);
    }

    fn close_now(&self, code: u16, reason: String) {
        self.closing.store(true, Ordering::Release);
        let mut queue = self.queue.lock();
        if queue.close_now.is_none() {
            queue.close_now = Some((code, reason));
        }
        self.note(&queue);
        drop(queue);
        self.pump.wake();
    }
}

/// The sending side, kept in the connection or client registry; dropping it tells the pump that
/// nothing more will come. Sends go through the [`OutboxHandle`] it derefs to.
#[derive(Debug)]
pub struct Outbox(OutboxHandle);

/// A copy of the sending side that does not end the queue when dropped (for indexes that list the
/// same socket again, such as the registry's per-endpoint index).
#[derive(Debug, Clone)]
pub struct OutboxHandle {
    /// The queue.
    shared: Arc<Shared>,
    /// When a push closes the socket instead of queueing.
    bounds: QueueBounds,
}

impl std::ops::Deref for Outbox {
    type Target = OutboxHandle;

    fn deref(&self) -> &OutboxHandle {
        &self.0
    }
}

/// The pump's side.
#[derive(Debug)]
pub struct OutboxReader {
    /// The queue.
    shared: Arc<Shared>,
}

/// A socket's registration for direct writes, held by its pump, which drops it before the socket
/// is closed.
#[derive(Debug)]
pub struct DirectWrites {
    /// The queue the socket is registered in.
    shared: Arc<Shared>,
    /// The socket, as registered.
    socket: Arc<DirectSocket>,
}

impl DirectWrites {
    /// Whether direct writes may happen now; the pump says no before it writes anything itself.
    pub fn set_idle(&self, idle: bool) {
        self.socket.set_idle(idle);
    }
}

impl Drop for DirectWrites {
    fn drop(&mut self) {
        self.shared.queue.lock().direct = None;
    }
}

/// What the pump takes from the queue.
#[derive(Debug)]
pub enum Taken {
    /// Close at once with this code and reason; whatever is queued is dropped, except the rest
    /// of a frame already partly written (it must be finished before the close frame).
    CloseNow(u16, String, Option<Bytes>),
    /// These, in order (the queue's whole content).
    Batch(VecDeque<Outbound>),
    /// The sending side is gone.
    SenderGone,
}

/// A new queue with these bounds.
pub fn outbox(bounds: QueueBounds) -> (Outbox, OutboxReader) {
    let shared = Arc::new(Shared::default());
    (
        Outbox(OutboxHandle {
            shared: shared.clone(),
            bounds,
        }),
        OutboxReader { shared },
    )
}

impl Outbox {
    /// Another handle on the same queue.
    pub fn handle(&self) -> OutboxHandle {
        self.0.clone()
    }
}

impl OutboxHandle {
    /// Asks the CPU to fetch the queue's state ahead of a push (a broadcast walking many
    /// sockets issues this for the next one while the current one's system call runs).
    #[inline]
    pub fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            let start = Arc::as_ptr(&self.shared).cast::<i8>();
            for line in (0..std::mem::size_of::<Shared>()).step_by(64) {
                // SAFETY: a prefetch only hints the CPU and never faults; the address is inside
                // `Shared` (`line` < its size), which `self.shared` keeps allocated.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        start.add(line),
                    )
                };
            }
        }
    }

    /// Queues a message without waiting.
    pub fn push(&self, message: Message) -> Result<(), PushError> {
        self.offer(Cow::Owned(message))
    }

    /// Like `push`, for a message many sockets share (a broadcast): it is copied (a reference
    /// count) only if it has to wait in the queue.
    pub fn push_copy(&self, message: &Message) -> Result<(), PushError> {
        self.offer(Cow::Borrowed(message))
    }

    fn offer(&self, message: Cow<'_, Message>) -> Result<(), PushError> {
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(PushError::Closing);
        }
        let size = message.len();
        let queue = self.shared.queue.lock();
        if queue.reader_gone {
            return Err(PushError::Closed);
        }
        // One message larger than the byte bound still goes through an empty queue.
        let over_bytes = queue.bytes + size > self.bounds.bytes && queue.bytes > 0;
        if over_bytes || queue.items.len() >= self.bounds.messages.max(1) {
            drop(queue);
            self.shared.close_now(1008, "send queue full".into());
            return Err(PushError::Full);
        }
        let direct = match &queue.direct {
            Some(socket) if queue.items.is_empty() => socket.try_write(&message),
            _ => Attempt::NotNow,
        };
        self.settle(queue, direct, message)
    }

    /// Finishes a push under the queue's lock, after the direct write attempt: whatever the
    /// socket did not take goes into the queue, and the pump is woken for it.
    fn settle(
        &self,
        mut queue: MutexGuard<'_, Queue>,
        direct: Attempt,
        message: Cow<'_, Message>,
    ) -> Result<(), PushError> {
        match direct {
            Attempt::Written => return Ok(()),
            Attempt::Partly(rest) => {
                queue.items.push_back(Outbound::Raw(rest));
                self.shared.note(&queue);
                drop(queue);
                self.shared.pump.wake();
                return Ok(());
            }
            Attempt::NotNow => {}
        }
        let size = message.len();
        queue
            .items
            .push_back(Outbound::Message(message.into_owned()));
        queue.bytes += size;
        let first = queue.items.len() == 1;
        self.shared.note(&queue);
        drop(queue);
        if first {
            self.shared.pump.wake();
        }
        Ok(())
    }

    /// Locks the queue for a batched direct write (see `batch::Batch`), if the socket could be
    /// written directly now: open, nothing queued, its pump idle on the calling thread. Nothing
    /// else reaches the socket until the claim is settled.
    pub fn claim_direct(&self) -> Option<DirectClaim<'_>> {
        if self.shared.closing.load(Ordering::Acquire) {
            return None;
        }
        let queue = self.shared.queue.lock();
        if queue.reader_gone || !queue.items.is_empty() {
            return None;
        }
        if !queue.direct.as_ref()?.writable_here() {
            return None;
        }
        Some(DirectClaim {
            outbox: self,
            queue,
        })
    }
}

/// A queue locked for one direct write (see [`OutboxHandle::claim_direct`]); its socket is
/// registered for direct writes.
pub struct DirectClaim<'a> {
    /// The queue claimed.
    outbox: &'a OutboxHandle,
    /// Its lock, held until the claim is settled.
    queue: MutexGuard<'a, Queue>,
}

impl DirectClaim<'_> {
    pub fn socket(&self) -> &DirectSocket {
        self.queue
            .direct
            .as_deref()
            .expect("a claim is only made for a socket registered for direct writes")
    }

    /// Finishes the push of `message`, given what the direct write did.
    pub fn settle(self, message: &Message, direct: Attempt) -> Result<(), PushError> {
        self.outbox
            .settle(self.queue, direct, Cow::Borrowed(message))
    }
}

impl OutboxHandle {
    /// Closes after the messages already queued.
    pub fn close(&self, code: u16, reason: String) -> Result<(), PushError> {
        if self.shared.closing.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let mut queue = self.shared.queue.lock();
        if queue.reader_gone {
            return Err(PushError::Closed);
        }
        queue.items.push_back(Outbound::Close { code, reason });
        self.shared.note(&queue);
        drop(queue);
        self.shared.pump.wake();
        Ok(())
    }

    /// Closes at once, ahead of anything still queued.
    pub fn close_now(&self, code: u16, reason: String) {
        self.shared.close_now(code, reason);
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut queue = self.0.shared.queue.lock();
        queue.sender_gone = true;
        self.0.shared.note(&queue);
        drop(queue);
        self.0.shared.pump.wake();
    }
}

impl OutboxReader {
    /// Lets senders on the calling (the pump's) thread write to the socket `fd` directly, until
    /// the registration this returns is dropped (see `direct`).
    pub fn direct_writes(
        &self,
        fd: std::os::fd::RawFd,
        traffic: Arc<Traffic>,
        compression: Option<Arc<SocketCompression>>,
    ) -> DirectWrites {
        let socket = Arc::new(DirectSocket::new(fd, traffic, compression));
        self.shared.queue.lock().direct = Some(socket.clone());
        DirectWrites {
            shared: self.shared.clone(),
            socket,
        }
    }

    /// Closes at once, ahead of anything still queued (the first request's code wins).
    pub fn close_now(&self, code: u16, reason: String) {
        self.shared.close_now(code, reason);
    }

    /// Ready with a close request, everything queued, or the news that the sender is gone.
    pub fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Taken> {
        if let Some(taken) = self.take() {
            return Poll::Ready(taken);
        }
        self.shared.pump.register(cx.waker());
        // Senders record `pending` before they wake the pump, so this check, made after
        // registering, cannot miss a message.
        match self.take() {
            Some(taken) => Poll::Ready(taken),
            None => Poll::Pending,
        }
    }

    /// Ready once a close that overtakes the queue is requested.
    pub fn poll_close_now(&self, cx: &mut Context<'_>) -> Poll<(u16, String)> {
        self.shared.pump.register(cx.waker());
        match &self.shared.queue.lock().close_now {
            Some((code, reason)) => Poll::Ready((*code, reason.clone())),
            None => Poll::Pending,
        }
    }

    /// The messages at the front of the queue, taken while no close is requested; whatever
    /// follows them (a close, raw bytes) stays for the pump. For a socket written before its
    /// pump runs (a STOMP session answering its first frames before it moves to its home).
    pub fn take_leading_messages(&self) -> Vec<Message> {
        let mut taken = Vec::new();
        if !self.shared.pending.load(Ordering::Acquire) {
            return taken;
        }
        let mut queue = self.shared.queue.lock();
        if queue.close_now.is_some() {
            return taken;
        }
        while let Some(Outbound::Message(_)) = queue.items.front() {
            if let Some(Outbound::Message(message)) = queue.items.pop_front() {
                queue.bytes = queue.bytes.saturating_sub(message.len());
                taken.push(message);
            }
        }
        self.shared.note(&queue);
        taken
    }

    fn take(&self) -> Option<Taken> {
        if !self.shared.pending.load(Ordering::Acquire) {
            return None;
        }
        let mut queue = self.shared.queue.lock();
        if let Some((code, reason)) = &queue.close_now {
            let unfinished = match queue.items.front() {
                Some(Outbound::Raw(rest)) => Some(rest.clone()),
                _ => None,
            };
            return Some(Taken::CloseNow(*code, reason.clone(), unfinished));
        }
        if !queue.items.is_empty() {
            queue.bytes = 0;
            let batch = std::mem::take(&mut queue.items);
            self.shared.note(&queue);
            return Some(Taken::Batch(batch));
        }
        queue.sender_gone.then_some(Taken::SenderGone)
    }
}

impl Drop for OutboxReader {
    fn drop(&mut self) {
        let mut queue = self.shared.queue.lock();
        queue.reader_gone = true;
        queue.items.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::noop_waker;

    fn take(reader: &OutboxReader) -> Option<Taken> {
        match reader.poll_take(&mut Context::from_waker(&noop_waker())) {
            Poll::Ready(taken) => Some(taken),
            Poll::Pending => None,
        }
    }

    #[test]
    fn bounded_in_messages_then_closed_with_1008() {
        let (sender, reader) = outbox(QueueBounds {
            messages: 2,
            bytes: 1 << 20,
        });
        assert_eq!(sender.push(Message::text("a")), Ok(()));
        assert_eq!(sender.push(Message::text("b")), Ok(()));
        assert_eq!(sender.push(Message::text("c")), Err(PushError::Full));
        assert_eq!(sender.push(Message::text("d")), Err(PushError::Closing));
        assert!(matches!(
            take(&reader),
            Some(Taken::CloseNow(1008, _, None))
        ));
    }

    #[test]
    fn bounded_in_bytes_but_one_large_message_passes_an_empty_queue() {
        let (sender, reader) = outbox(QueueBounds {
            messages: 100,
            bytes: 10,
        });
        assert_eq!(sender.push(Message::text("x".repeat(50))), Ok(()));
        match take(&reader) {
            Some(Taken::Batch(batch)) => assert_eq!(batch.len(), 1),
            other => panic!("expected the message, got {other:?}"),
        }
        assert_eq!(sender.push(Message::text("0123456789")), Ok(()));
        assert_eq!(sender.push(Message::text("!")), Err(PushError::Full));
    }

    #[test]
    fn a_queued_close_comes_after_the_messages_and_refuses_later_ones() {
        let (sender, reader) = outbox(QueueBounds::default());
        sender.push(Message::text("last")).unwrap();
        sender.close(1000, "bye".into()).unwrap();
        assert_eq!(sender.push(Message::text("late")), Err(PushError::Closing));
        let Some(Taken::Batch(batch)) = take(&reader) else {
            panic!("expected a batch");
        };
        assert!(matches!(&batch[0], Outbound::Message(m) if m.to_text().unwrap() == "last"));
        assert!(matches!(&batch[1], Outbound::Close { code: 1000, .. }));
        drop(sender);
        assert!(matches!(take(&reader), Some(Taken::SenderGone)));
    }

    #[test]
    fn a_gone_pump_refuses_messages() {
        let (sender, reader) = outbox(QueueBounds::default());
        drop(reader);
        assert_eq!(sender.push(Message::text("a")), Err(PushError::Closed));
    }
}
