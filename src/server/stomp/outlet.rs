//! Writing to one STOMP session's socket: frames encoded for the version agreed, in WebSocket
//! messages of their own or, for SockJS, inside its `a[...]` frames; `MESSAGE` frames numbered;
//! ERROR then close. Shared by the session, its endpoint links and the broker, which all write
//! to it from wherever they run (the socket's bounded queue takes them in order).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use tokio_tungstenite::tungstenite::Message;

use crate::net::outbox::{OutboxHandle, PushError};
use crate::net::stomp::{Frame, FrameWriter, Version};

/// How frames travel in WebSocket messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One frame per message: STOMP over a WebSocket (`/stomp`).
    Plain,
    /// SockJS's frames: `o` on open, `h` heart-beats, `a["frame", ...]`, `c[code,"reason"]`.
    SockJs,
}

/// A MESSAGE's body.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// Text (the frame goes out as a text message, with no UTF-8 check).
    Text(&'a str),
    /// Bytes (a text message if they are UTF-8, else binary).
    Bytes(&'a [u8]),
}

impl Body<'_> {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Body::Text(text) => text.len(),
            Body::Bytes(bytes) => bytes.len(),
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The writing side of one STOMP session.
#[derive(Debug)]
pub struct Outlet {
    /// The session's number, for message ids and logs.
    pub session: u64,
    /// The socket's outbound queue.
    outbox: OutboxHandle,
    /// Plain or SockJS.
    framing: Framing,
    /// The version agreed (header escapes depend on it), as `Version as u8`.
    version: AtomicU8,
    /// The last `message-id` given.
    messages: AtomicU64,
}

impl Outlet {
    /// The outlet of session `session`, writing to `outbox`.
    pub fn new(session: u64, outbox: OutboxHandle, framing: Framing) -> Self {
        Self {
            session,
            outbox,
            framing,
            version: AtomicU8::new(Version::V1_2 as u8),
            messages: AtomicU64::new(0),
        }
    }

    /// The version agreed with the peer.
    pub fn set_version(&self, version: Version) {
        self.version.store(version as u8, Ordering::Relaxed);
    }

    fn version(&self) -> Version {
        match self.version.load(Ordering::Relaxed) {
            0 => Version::V1_0,
            1 => Version::V1_1,
            _ => Version::V1_2,
        }
    }

    /// Queues one frame.
    pub fn send(&self, frame: &Frame) -> Result<(), PushError> {
        self.send_bytes(frame.encode(self.version()))
    }

    /// Queues one frame's bytes: a text message if they are UTF-8, else binary.
    fn send_bytes(&self, bytes: Vec<u8>) -> Result<(), PushError> {
        match String::from_utf8(bytes) {
            Ok(text) => self.send_text(text),
            Err(error) => match self.framing {
                Framing::Plain => self.outbox.push(Message::binary(error.into_bytes())),
                // SockJS carries text only; a body that is not UTF-8 is sent as best it can be.
                Framing::SockJs => {
                    self.send_text(String::from_utf8_lossy(error.as_bytes()).into_owned())
                }
            },
        }
    }

    /// Queues one frame that is text.
    fn send_text(&self, text: String) -> Result<(), PushError> {
        let message = match self.framing {
            Framing::Plain => Message::text(text),
            Framing::SockJs => {
                let quoted = serde_json::to_string(&text).unwrap_or_default();
                Message::text(format!("a[{quoted}]"))
            }
        };
        self.outbox.push(message)
    }

    /// Queues SockJS's own message (`o`, `h`); nothing for a plain session.
    pub fn sockjs(&self, text: &'static str) -> Result<(), PushError> {
        match self.framing {
            Framing::SockJs => self.outbox.push(Message::text(text)),
            Framing::Plain => Ok(()),
        }
    }

    /// Queues a MESSAGE to subscription `subscription` of `destination`.
    pub fn message(
        &self,
        destination: &str,
        subscription: &str,
        content_type: &str,
        body: Body<'_>,
    ) -> Result<(), PushError> {
        let id = self.messages.fetch_add(1, Ordering::Relaxed) + 1;
        let mut writer = FrameWriter::new("MESSAGE", self.version(), body.len());
        writer
            .header("destination", destination)
            .header("content-type", content_type)
            .header("subscription", subscription)
            .header_with("message-id", format_args!("{}-{id}", self.session));
        match body {
            Body::Text(text) => self.send_text(writer.text_body(text)),
            Body::Bytes(bytes) => self.send_bytes(writer.body(bytes)),
        }
    }

    /// Sends an ERROR frame saying `message`, then closes the socket with `code` (the peer
    /// cannot go on: STOMP closes after an ERROR).
    pub fn fail(&self, message: &str, code: u16) {
        let frame = Frame::new("ERROR")
            .header("message", first_line(message))
            .header("content-type", "text/plain")
            .body(message.to_string());
        let _ = self.send(&frame);
        self.close(code, first_line(message));
    }

    /// Closes the socket with `code` and `reason` after what is queued.
    pub fn close(&self, code: u16, reason: &str) {
        let reason = truncate(reason, 123);
        if self.framing == Framing::SockJs {
            let close = serde_json::json!([code, reason]).to_string();
            let _ = self.outbox.push(Message::text(format!("c{close}")));
        }
        let _ = self.outbox.close(code, reason.to_string());
    }
}

/// The first line of a message, for a header or a close reason.
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// At most `limit` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
