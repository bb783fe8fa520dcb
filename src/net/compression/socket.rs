//! What one socket compresses and inflates with, once permessage-deflate is agreed.
//!
//! A direction without context takeover keeps nothing between messages, so it is served by the
//! thread's own compressor and inflater ([`SHARED`]): an idle connection holds no compression
//! state, and a broadcast is compressed once on each thread however many receivers it has (the
//! last message compressed is remembered, keyed by its bytes' identity). A direction with context
//! takeover (dedicated mode, or an outbound client whose server allows it) has a window of its
//! own, made on its first message and kept until the socket closes; the memory these take is
//! reserved from a budget (`stats::WindowBudget`) when the extension is agreed, so their total is
//! bounded.
//!
//! Messages travel as tungstenite messages: a compressed one is a [`Message::Frame`] with RSV1
//! set (the vendored tungstenite's `compressed_messages`, see `vendor/README.md`).

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::codec::{Deflater, InflateError, Inflater};
use super::{Agreed, MAX_WINDOW_BITS};
use crate::stats::{CompressionCounters, WindowBudget, WindowReservation};

/// Which end of the handshake a socket is: the server compresses with the `server_*` parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// An inbound connection.
    Server,
    /// An outbound client.
    Client,
}

/// What zlib allocates to compress with a window of `bits` (its documented formula, with the
/// default memory level of 8).
fn deflate_memory(bits: u8) -> usize {
    (1 << (usize::from(bits) + 2)) + (1 << 17)
}

/// What zlib allocates to inflate with a window of `bits` (the window and the state).
fn inflate_memory(bits: u8) -> usize {
    (1 << bits) + 7 * 1024
}

/// One direction's parameters, as agreed.
#[derive(Debug, Clone, Copy)]
struct Direction {
    /// The window, in bits.
    window_bits: u8,
    /// Whether the window carries over between messages.
    takeover: bool,
}

/// The windows a socket keeps for itself (directions with context takeover), made on first use.
#[derive(Debug, Default)]
struct Contexts {
    /// What this side sends.
    deflater: Option<Deflater>,
    /// What the peer sends.
    inflater: Option<Inflater>,
}

/// permessage-deflate on one socket.
#[derive(Debug)]
pub struct SocketCompression {
    /// How this side compresses.
    sending: Direction,
    /// How the peer compresses.
    receiving: Direction,
    /// Messages shorter than this are sent as they are.
    min_bytes: usize,
    /// zlib's level (1-9).
    level: u8,
    /// The largest message accepted, inflated.
    max_message_size: usize,
    /// Windows kept between messages (directions with context takeover only).
    contexts: Mutex<Contexts>,
    /// Where bytes before and after are counted.
    counters: Arc<CompressionCounters>,
    /// The memory the kept windows may take, reserved while the socket lives.
    _reservation: Option<WindowReservation>,
}

/// What a socket's compression is made with, besides the agreement.
#[derive(Debug, Clone)]
pub struct CompressionSetup {
    /// Messages shorter than this are sent as they are.
    pub min_bytes: usize,
    /// zlib's level when compressing (1 fastest, 9 smallest).
    pub level: u8,
    /// The largest message accepted, inflated.
    pub max_message_size: usize,
    /// Where bytes before and after are counted.
    pub counters: Arc<CompressionCounters>,
    /// The memory all per-socket windows may take.
    pub budget: Arc<WindowBudget>,
}

/// Why a socket cannot keep windows of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the memory for dedicated compression windows ({limit} bytes) is used up")]
pub struct BudgetExhausted {
    /// The budget, in bytes.
    pub limit: usize,
}

impl SocketCompression {
    /// The compression `agreed` for a socket on `side`. Directions with context takeover reserve
    /// their windows' memory from the setup's budget first; when it is used up, this fails (a
    /// server then agrees to no context takeover instead, see [`Agreed::without_takeover`]).
    pub fn new(
        agreed: Agreed,
        side: Side,
        setup: &CompressionSetup,
    ) -> Result<Self, BudgetExhausted> {
        let budget = &setup.budget;
        let server = Direction {
            window_bits: agreed.server_max_window_bits,
            takeover: !agreed.server_no_context_takeover,
        };
        let client = Direction {
            window_bits: agreed.client_max_window_bits,
            takeover: !agreed.client_no_context_takeover,
        };
        let (sending, receiving) = match side {
            Side::Server => (server, client),
            Side::Client => (client, server),
        };
        let mut memory = 0;
        if sending.takeover {
            memory += deflate_memory(sending.window_bits);
        }
        if receiving.takeover {
            memory += inflate_memory(receiving.window_bits);
        }
        let reservation = if memory > 0 {
            Some(budget.reserve(memory).ok_or(BudgetExhausted {
                limit: budget.limit(),
            })?)
        } else {
            None
        };
        Ok(Self {
            sending,
            receiving,
            min_bytes: setup.min_bytes,
            level: setup.level,
            max_message_size: setup.max_message_size,
            contexts: Mutex::new(Contexts::default()),
            counters: setup.counters.clone(),
            _reservation: reservation,
        })
    }

    /// Whether this socket's sent messages come from the thread's shared compressor with the
    /// largest window, as a broadcast's compressed frame does (see `batch`).
    pub fn sends_shared_default(&self) -> bool {
        !self.sending.takeover && self.sending.window_bits == MAX_WINDOW_BITS
    }

    /// The payload to send for `message`, compressed, if it is a data message this socket
    /// compresses (at least the minimum size); `None` sends it as it is. Not counted: the caller
    /// counts what it sends ([`Self::count_sent`]).
    pub fn compress(&self, message: &Message) -> Option<Bytes> {
        let (_, bytes) = data_of(message)?;
        if bytes.len() < self.min_bytes {
            return None;
        }
        if self.sending.takeover {
            let mut contexts = self.contexts.lock();
            let deflater = contexts.deflater.get_or_insert_with(|| {
                Deflater::with_level(self.sending.window_bits, true, self.level)
            });
            let mut out = Vec::new();
            deflater.compress(bytes, &mut out);
            Some(Bytes::from(out))
        } else {
            Some(shared_compress(
                message,
                bytes,
                self.sending.window_bits,
                self.level,
            ))
        }
    }

    /// Counts a message of `raw` bytes sent compressed to `wire` bytes (once per receiver).
    pub fn count_sent(&self, raw: usize, wire: usize) {
        self.counters
            .sent_raw
            .fetch_add(raw as u64, Ordering::Relaxed);
        self.counters
            .sent_wire
            .fetch_add(wire as u64, Ordering::Relaxed);
    }

    /// `message` as it goes to the socket: a compressed frame (RSV1 set), counted, or the message
    /// itself.
    pub fn outgoing(&self, message: Message) -> Message {
        match (self.compress(&message), data_of(&message)) {
            (Some(payload), Some((data, bytes))) => {
                self.count_sent(bytes.len(), payload.len());
                Message::Frame(compressed_frame(payload, data))
            }
            _ => message,
        }
    }

    /// The message a compressed frame carries, inflated up to the largest message accepted: past
    /// it, the error closes with 1009 (before the rest is inflated); data that does not inflate,
    /// or text that is not UTF-8 once inflated, closes with 1007.
    pub fn inflate(&self, frame: Frame) -> Result<Message, WsError> {
        let limit = self.max_message_size;
        let data = match frame.header().opcode {
            OpCode::Data(data @ (Data::Text | Data::Binary)) => data,
            _ => return Err(invalid("a compressed frame that is not a data message")),
        };
        let compressed = frame.into_payload();
        let mut out = Vec::new();
        let inflated = if self.receiving.takeover {
            let mut contexts = self.contexts.lock();
            contexts
                .inflater
                .get_or_insert_with(|| Inflater::new(self.receiving.window_bits, true))
                .inflate(&compressed, limit, &mut out)
        } else {
            SHARED.with(|shared| {
                shared
                    .borrow_mut()
                    .inflater
                    .get_or_insert_with(|| Inflater::new(MAX_WINDOW_BITS, false))
                    .inflate(&compressed, limit, &mut out)
            })
        };
        match inflated {
            Ok(()) => {}
            Err(InflateError::TooLarge(max_size)) => {
                return Err(WsError::Capacity(CapacityError::MessageTooLong {
                    size: max_size + 1,
                    max_size,
                }))
            }
            Err(InflateError::Corrupt(reason)) => {
                return Err(invalid(&format!("invalid compressed data: {reason}")))
            }
        }
        self.counters
            .received_wire
            .fetch_add(compressed.len() as u64, Ordering::Relaxed);
        self.counters
            .received_raw
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        match data {
            Data::Text => String::from_utf8(out)
                .map(|text| Message::Text(text.into()))
                .map_err(|error| WsError::Utf8(error.to_string())),
            _ => Ok(Message::Binary(out.into())),
        }
    }
}

/// A read error that closes with 1007 (see `close::close_code_for`).
fn invalid(reason: &str) -> WsError {
    WsError::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        reason.to_string(),
    ))
}

/// A data message's opcode and bytes.
fn data_of(message: &Message) -> Option<(Data, &[u8])> {
    match message {
        Message::Text(text) => Some((Data::Text, text.as_bytes())),
        Message::Binary(data) => Some((Data::Binary, data)),
        _ => None,
    }
}

/// A frame carrying a compressed message: RSV1 set, final.
pub fn compressed_frame(payload: Bytes, data: Data) -> Frame {
    let mut frame = Frame::message(payload, OpCode::Data(data), true);
    frame.header_mut().rsv1 = true;
    frame
}

/// The thread's compressors and inflater for directions without context takeover.
struct Shared {
    /// One compressor per window size and level in use on this thread (almost always one).
    deflaters: Vec<((u8, u8), Deflater)>,
    /// The inflater (a 15-bit window inflates what any smaller one made).
    inflater: Option<Inflater>,
    /// The last message compressed, its window size and level, and the result: a broadcast hands every
    /// receiver the same message, which is then compressed once. The message is kept (a
    /// reference count), so its bytes cannot be freed and reused by another while remembered.
    last: Option<(Message, (u8, u8), Bytes)>,
}

thread_local! {
    /// This thread's shared compression state.
    static SHARED: RefCell<Shared> = const {
        RefCell::new(Shared {
            deflaters: Vec::new(),
            inflater: None,
            last: None,
        })
    };
}

/// Whether `a` and `b` are the same bytes in memory (not just equal ones).
fn same_bytes(a: &Message, b: &Message) -> bool {
    match (data_of(a), data_of(b)) {
        (Some((kind_a, a)), Some((kind_b, b))) => {
            kind_a == kind_b && a.as_ptr() == b.as_ptr() && a.len() == b.len()
        }
        _ => false,
    }
}

/// Compresses with the thread's compressor for `window_bits` and `level`, or returns the result
/// of the previous call if it was for the same message.
fn shared_compress(message: &Message, bytes: &[u8], window_bits: u8, level: u8) -> Bytes {
    let key = (window_bits, level);
    SHARED.with(|shared| {
        let mut shared = shared.borrow_mut();
        if let Some((last, last_key, compressed)) = &shared.last {
            if *last_key == key && same_bytes(last, message) {
                return compressed.clone();
            }
        }
        let index = match shared.deflaters.iter().position(|(k, _)| *k == key) {
            Some(index) => index,
            None => {
                shared
                    .deflaters
                    .push((key, Deflater::with_level(window_bits, false, level)));
                shared.deflaters.len() - 1
            }
        };
        let mut out = Vec::with_capacity(bytes.len() / 2 + 16);
        shared.deflaters[index].1.compress(bytes, &mut out);
        let compressed = Bytes::from(out);
        shared.last = Some((message.clone(), key, compressed.clone()));
        compressed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget_of(limit: usize) -> WindowBudget {
        let budget = WindowBudget::default();
        budget.set_limit(limit);
        budget
    }

    fn agreed(takeover: bool) -> Agreed {
        Agreed {
            server_no_context_takeover: !takeover,
            client_no_context_takeover: !takeover,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }

    fn setup(budget: &Arc<WindowBudget>) -> CompressionSetup {
        CompressionSetup {
            min_bytes: 16,
            level: 1,
            max_message_size: 50_000,
            counters: Arc::default(),
            budget: budget.clone(),
        }
    }

    fn socket(side: Side, takeover: bool, budget: &Arc<WindowBudget>) -> SocketCompression {
        SocketCompression::new(agreed(takeover), side, &setup(budget)).unwrap()
    }

    fn frame_of(message: Message) -> Frame {
        match message {
            Message::Frame(frame) => frame,
            other => panic!("not compressed: {other:?}"),
        }
    }

    #[test]
    fn messages_round_trip_between_a_server_and_a_client_in_both_modes() {
        let budget = Arc::new(budget_of(1 << 20));
        for takeover in [false, true] {
            let server = socket(Side::Server, takeover, &budget);
            let client = socket(Side::Client, takeover, &budget);
            for round in 0..3 {
                let text = format!(
                    "{{\"round\": {round}, \"payload\": \"{}\"}}",
                    "ab".repeat(200)
                );
                let frame = frame_of(server.outgoing(Message::text(text.clone())));
                assert!(frame.header().rsv1);
                assert!(frame.payload().len() < text.len() / 4);
                assert_eq!(client.inflate(frame).unwrap(), Message::text(text));
                let binary = Bytes::from(vec![7u8; 500]);
                let frame = frame_of(client.outgoing(Message::Binary(binary.clone())));
                assert_eq!(server.inflate(frame).unwrap(), Message::Binary(binary));
            }
        }
        assert_eq!(budget.used(), 0, "every reservation is given back");
    }

    #[test]
    fn small_messages_and_control_frames_go_as_they_are() {
        let budget = Arc::new(budget_of(0));
        let server = socket(Side::Server, false, &budget);
        assert_eq!(
            server.outgoing(Message::text("short")),
            Message::text("short")
        );
        assert!(matches!(
            server.outgoing(Message::Ping(Bytes::new())),
            Message::Ping(_)
        ));
    }

    #[test]
    fn a_broadcast_is_compressed_once_per_thread() {
        let budget = Arc::new(budget_of(0));
        let a = socket(Side::Server, false, &budget);
        let b = socket(Side::Server, false, &budget);
        let message = Message::text("x".repeat(1000));
        let first = a.compress(&message).unwrap();
        let second = b.compress(&message).unwrap();
        assert_eq!(first.as_ptr(), second.as_ptr(), "the same compressed bytes");
        let equal_but_other = Message::text("x".repeat(1000));
        let third = b.compress(&equal_but_other).unwrap();
        assert_ne!(first.as_ptr(), third.as_ptr());
        assert_eq!(first, third);
    }

    #[test]
    fn dedicated_windows_are_bounded_by_the_budget() {
        let one = deflate_memory(15) + inflate_memory(15);
        let budget = Arc::new(budget_of(one + one / 2));
        let first = socket(Side::Server, true, &budget);
        let refused = SocketCompression::new(agreed(true), Side::Server, &setup(&budget));
        assert_eq!(
            refused.unwrap_err(),
            BudgetExhausted {
                limit: one + one / 2
            }
        );
        assert!(SocketCompression::new(agreed(false), Side::Server, &setup(&budget)).is_ok());
        drop(first);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn inflating_past_the_limit_or_bad_data_fails_with_the_close_code_s_error() {
        let budget = Arc::new(budget_of(0));
        let server = socket(Side::Server, false, &budget);
        let client = socket(Side::Client, false, &budget);
        let frame = frame_of(server.outgoing(Message::text("y".repeat(100_000))));
        assert!(matches!(client.inflate(frame), Err(WsError::Capacity(_))));
        let garbage = compressed_frame(Bytes::from_static(&[0xff, 0xff, 0xff]), Data::Binary);
        match client.inflate(garbage) {
            Err(WsError::Io(error)) => assert_eq!(error.kind(), std::io::ErrorKind::InvalidData),
            other => panic!("{other:?}"),
        }
        let mut deflater = Deflater::new(15, false);
        let mut bytes = Vec::new();
        deflater.compress(&[0xc3, 0x28, 0xff, 0xfe], &mut bytes);
        let not_utf8 = compressed_frame(bytes.into(), Data::Text);
        assert!(matches!(client.inflate(not_utf8), Err(WsError::Utf8(_))));
    }
}
