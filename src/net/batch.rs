//! One message written to many sockets with one system call: a broadcast's receivers on the
//! calling thread, through io_uring (Linux). Each socket is claimed in its outbox (see
//! `outbox::DirectClaim`) and settled exactly as a direct write (see `direct`) is.

use std::io;

use tokio_tungstenite::tungstenite::Message;

use super::direct::{wire_frame, WireFrame};
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
/// exactly as by [`DirectSocket::try_write`](super::direct::DirectSocket::try_write).
///
/// Sockets with permessage-deflate from the thread's shared compressor get one compressed frame
/// (compressed once for all of them); a socket with a window of its own is written at once by
/// itself, its message compressed in its own context.
pub struct Batch<'a> {
    /// The message every claimed socket gets.
    message: &'a Message,
    /// The frame as it is, for sockets without compression.
    plain: Group<'a>,
    /// The compressed frame, for sockets compressing with the thread's shared compressor; made
    /// for the first such socket.
    compressed: Option<Group<'a>>,
}

/// The sockets of a batch that get the same frame.
struct Group<'a> {
    /// The frame.
    frame: WireFrame<'a>,
    /// The whole frame, header and payload, in one buffer.
    bytes: Vec<u8>,
    /// The sockets claimed so far, each with its queue locked.
    claims: Vec<DirectClaim<'a>>,
}

impl<'a> Group<'a> {
    fn new(frame: WireFrame<'a>) -> Option<Self> {
        u32::try_from(frame.len()).ok()?;
        let mut bytes = Vec::with_capacity(frame.len());
        bytes.extend_from_slice(frame.head.bytes());
        bytes.extend_from_slice(frame.payload.bytes());
        Some(Self {
            frame,
            bytes,
            claims: Vec::with_capacity(BATCH),
        })
    }

    /// Writes the frame to every claimed socket; returns how many got the message.
    fn flush(&mut self, message: &Message) -> usize {
        if self.claims.is_empty() {
            return 0;
        }
        let payload_len = message.len();
        for claim in &self.claims {
            claim.socket().count_sent(payload_len, &self.frame);
        }
        let results =
            RING.with(|ring| write_all(&mut ring.borrow_mut(), &self.claims, &self.bytes));
        let mut delivered = 0;
        for (claim, result) in self.claims.drain(..).zip(results) {
            let sent = match result {
                Some(bytes) if bytes >= 0 => Ok(bytes as usize),
                Some(error) => Err(io::Error::from_raw_os_error(-error)),
                None => Err(io::Error::other("the batched write did not run")),
            };
            let direct = claim.socket().conclude(payload_len, &self.frame, sent);
            if claim.settle(message, direct).is_ok() {
                delivered += 1;
            }
        }
        delivered
    }
}

impl<'a> Batch<'a> {
    /// A batch for `message`, if it is a data message and this thread has a ring.
    pub fn new(message: &'a Message) -> Option<Self> {
        if !RING.with(|ring| ring.borrow().is_some()) {
            return None;
        }
        Some(Self {
            message,
            plain: Group::new(wire_frame(message, None)?)?,
            compressed: None,
        })
    }

    /// Adds a claimed socket, and writes its group once it is full; returns how many sockets
    /// got the message (written or queued) by that write.
    pub fn add(&mut self, claim: DirectClaim<'a>) -> usize {
        let group = match claim.socket().compression() {
            None => &mut self.plain,
            Some(compression) if compression.sends_shared_default() => {
                if self.compressed.is_none() {
                    match wire_frame(self.message, Some(compression)).and_then(Group::new) {
                        Some(group) => self.compressed = Some(group),
                        None => return self.write_alone(claim),
                    }
                }
                self.compressed.as_mut().expect("made above")
            }
            Some(_) => return self.write_alone(claim),
        };
        group.claims.push(claim);
        if group.claims.len() == BATCH {
            group.flush(self.message)
        } else {
            0
        }
    }

    /// Writes one claimed socket by itself (a socket with a compression window of its own).
    fn write_alone(&self, claim: DirectClaim<'a>) -> usize {
        let direct = claim.socket().try_write(self.message);
        usize::from(claim.settle(self.message, direct).is_ok())
    }

    /// Writes the frame to every claimed socket; returns how many got the message.
    pub fn flush(&mut self) -> usize {
        let mut delivered = self.plain.flush(self.message);
        if let Some(compressed) = &mut self.compressed {
            delivered += compressed.flush(self.message);
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
