//! One message written to many sockets with one system call: a broadcast's receivers on the
//! calling thread, through io_uring (Linux). Each socket is claimed in its outbox (see
//! `outbox::DirectClaim`) and settled exactly as a direct write (see `direct`) is.

use std::io;

use tokio_tungstenite::tungstenite::Message;

use super::direct::{frame_parts, FrameHead};
use super::outbox::DirectClaim;

/// Most sockets one [`Batch`] writes with one system call.
const BATCH: usize = 256;

thread_local! {
    /// This thread's io_uring for batched writes; `None` where the kernel or a container's
    /// policy refuses one (or `SWITCHBOARD_NO_IO_URING` is set): broadcasts then write each
    /// socket with its own system call.
    static RING: std::cell::RefCell<Option<io_uring::IoUring>> = std::cell::RefCell::new(new_ring());
}

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
pub struct Batch<'a> {
    /// The message every claimed socket gets.
    message: &'a Message,
    /// Its frame's header (a socket that took part of the frame is finished from it).
    head: FrameHead,
    /// The whole frame, built once.
    frame: Vec<u8>,
    /// The sockets claimed so far, each with its queue locked.
    claims: Vec<DirectClaim<'a>>,
}

impl<'a> Batch<'a> {
    /// A batch for `message`, if it is a data message and this thread has a ring.
    pub fn new(message: &'a Message) -> Option<Self> {
        if !RING.with(|ring| ring.borrow().is_some()) {
            return None;
        }
        let (head, payload) = frame_parts(message)?;
        u32::try_from(head.bytes().len() + payload.len()).ok()?;
        let mut frame = Vec::with_capacity(head.bytes().len() + payload.len());
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
            // SAFETY: the kernel reads `frame` and uses each descriptor until the write
            // completes. `frame` is borrowed for this whole function, and the loop below waits
            // for every queued completion before returning (or drops the ring, cancelling what
            // is left, if io_uring fails). Each descriptor is open: its claim holds the socket's
            // outbox locked (`outbox::DirectClaim`), and the pump cannot close the socket before
            // taking that lock to drop its registration (`outbox::DirectWrites::drop`).
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
