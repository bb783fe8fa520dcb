//! What travels between nodes, byte for byte. A message is encoded once per publish, broadcast or
//! send (never per receiver) into one buffer: a one-byte kind (with the format's version in its
//! high nibble), the origin node, the kind's fields, then the payload as the handler gave it. The
//! channel says which topic or endpoint it is for, so names are not repeated inside. Control
//! traffic (membership, presence) is JSON: it is rare and easier to read with `redis-cli`.
//!
//! ```text
//! kind  origin   fields                               payload
//! 0x11  u16 BE   -                                    publish, text
//! 0x12  u16 BE   -                                    publish, binary
//! 0x13  u16 BE   u16 count, count x u64 except ids     broadcast, text
//! 0x14  u16 BE   (as 0x13)                             broadcast, binary
//! 0x15  u16 BE   u64 connection id                     send, text
//! 0x16  u16 BE   u64 connection id                     send, binary
//! 0x17  u16 BE   u64 connection id, u16 code           close; the payload is the reason
//! 0x18  u16 BE   -                                     control, JSON
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;
use tokio_tungstenite::tungstenite::Message;

use crate::event::ConnectionId;
use crate::net::remote::NodeId;

/// The format's version, in the high nibble of the first byte: a node drops what a node of
/// another format version sent (and says so once) rather than misread it.
const VERSION: u8 = 1;

/// The kinds, in the low nibble.
const PUBLISH_TEXT: u8 = 1;
const PUBLISH_BINARY: u8 = 2;
const BROADCAST_TEXT: u8 = 3;
const BROADCAST_BINARY: u8 = 4;
const SEND_TEXT: u8 = 5;
const SEND_BINARY: u8 = 6;
const CLOSE: u8 = 7;
const CONTROL: u8 = 8;

/// What one envelope carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A publish to the channel's topic.
    Publish(Message),
    /// A broadcast to the channel's endpoint, but to these connections.
    Broadcast {
        /// Connections that must not get it.
        except: Vec<ConnectionId>,
        /// The message.
        message: Message,
    },
    /// A message for one connection of the receiving node.
    Send {
        /// The connection.
        id: ConnectionId,
        /// The message.
        message: Message,
    },
    /// A close of one connection of the receiving node.
    Close {
        /// The connection.
        id: ConnectionId,
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// Membership or presence, as JSON.
    Control(Bytes),
}

/// An envelope as read: who sent it and what it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The node that sent it.
    pub origin: NodeId,
    /// What it carries.
    pub body: Body,
}

/// Why bytes from the bus are not an envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than its fields.
    #[error("truncated ({0} bytes)")]
    Truncated(usize),
    /// Written by a node of another format version.
    #[error("format version {0}, this node reads version {VERSION}")]
    Version(u8),
    /// A kind this version does not have.
    #[error("unknown kind {0}")]
    Kind(u8),
    /// Text that is not UTF-8.
    #[error("text payload is not UTF-8")]
    NotUtf8,
}

/// The message's kind (text or binary) and bytes; control frames never cross nodes.
fn parts(message: &Message) -> Option<(bool, &[u8])> {
    match message {
        Message::Text(text) => Some((true, text.as_bytes())),
        Message::Binary(data) => Some((false, data)),
        _ => None,
    }
}

fn header(kind: u8, origin: NodeId, capacity: usize) -> BytesMut {
    let mut buffer = BytesMut::with_capacity(3 + capacity);
    buffer.put_u8(VERSION << 4 | kind);
    buffer.put_u16(origin);
    buffer
}

/// A publish of `message` (None for a control frame, which is not published).
pub fn publish(origin: NodeId, message: &Message) -> Option<Bytes> {
    let (text, payload) = parts(message)?;
    let mut buffer = header(
        if text { PUBLISH_TEXT } else { PUBLISH_BINARY },
        origin,
        payload.len(),
    );
    buffer.put_slice(payload);
    Some(buffer.freeze())
}

/// A broadcast of `message` to all but `except` (at most 65,535 of them are carried).
pub fn broadcast(origin: NodeId, message: &Message, except: &[ConnectionId]) -> Option<Bytes> {
    let (text, payload) = parts(message)?;
    let except = &except[..except.len().min(u16::MAX as usize)];
    let mut buffer = header(
        if text {
            BROADCAST_TEXT
        } else {
            BROADCAST_BINARY
        },
        origin,
        2 + 8 * except.len() + payload.len(),
    );
    buffer.put_u16(except.len() as u16);
    for id in except {
        buffer.put_u64(*id);
    }
    buffer.put_slice(payload);
    Some(buffer.freeze())
}

/// `message` for connection `id`.
pub fn send(origin: NodeId, id: ConnectionId, message: &Message) -> Option<Bytes> {
    let (text, payload) = parts(message)?;
    let mut buffer = header(
        if text { SEND_TEXT } else { SEND_BINARY },
        origin,
        8 + payload.len(),
    );
    buffer.put_u64(id);
    buffer.put_slice(payload);
    Some(buffer.freeze())
}

/// A close of connection `id`.
pub fn close(origin: NodeId, id: ConnectionId, code: u16, reason: &str) -> Bytes {
    let mut buffer = header(CLOSE, origin, 10 + reason.len());
    buffer.put_u64(id);
    buffer.put_u16(code);
    buffer.put_slice(reason.as_bytes());
    buffer.freeze()
}

/// A control frame carrying `json`.
pub fn control(origin: NodeId, json: &[u8]) -> Bytes {
    let mut buffer = header(CONTROL, origin, json.len());
    buffer.put_slice(json);
    buffer.freeze()
}

/// The origin of an envelope, read before anything else (a node drops its own at once).
pub fn origin(bytes: &[u8]) -> Option<NodeId> {
    (bytes.len() >= 3).then(|| u16::from_be_bytes([bytes[1], bytes[2]]))
}

/// Reads an envelope; the payload is shared with `bytes`, not copied.
pub fn decode(mut bytes: Bytes) -> Result<Envelope, DecodeError> {
    let length = bytes.len();
    let truncated = DecodeError::Truncated(length);
    if length < 3 {
        return Err(truncated);
    }
    let first = bytes.get_u8();
    if first >> 4 != VERSION {
        return Err(DecodeError::Version(first >> 4));
    }
    let origin = bytes.get_u16();
    let message = |text: bool, payload: Bytes| -> Result<Message, DecodeError> {
        Ok(match text {
            true => Message::Text(Utf8Bytes::try_from(payload).map_err(|_| DecodeError::NotUtf8)?),
            false => Message::Binary(payload),
        })
    };
    let body = match first & 0x0f {
        kind @ (PUBLISH_TEXT | PUBLISH_BINARY) => {
            Body::Publish(message(kind == PUBLISH_TEXT, bytes)?)
        }
        kind @ (BROADCAST_TEXT | BROADCAST_BINARY) => {
            if bytes.remaining() < 2 {
                return Err(truncated);
            }
            let count = bytes.get_u16() as usize;
            if bytes.remaining() < 8 * count {
                return Err(truncated);
            }
            let except = (0..count).map(|_| bytes.get_u64()).collect();
            Body::Broadcast {
                except,
                message: message(kind == BROADCAST_TEXT, bytes)?,
            }
        }
        kind @ (SEND_TEXT | SEND_BINARY) => {
            if bytes.remaining() < 8 {
                return Err(truncated);
            }
            let id = bytes.get_u64();
            Body::Send {
                id,
                message: message(kind == SEND_TEXT, bytes)?,
            }
        }
        CLOSE => {
            if bytes.remaining() < 10 {
                return Err(truncated);
            }
            let id = bytes.get_u64();
            let code = bytes.get_u16();
            let reason = String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::NotUtf8)?;
            Body::Close { id, code, reason }
        }
        CONTROL => Body::Control(bytes),
        kind => return Err(DecodeError::Kind(kind)),
    };
    Ok(Envelope { origin, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_as_it_was_written() {
        let text = Message::text("héllo");
        let binary = Message::binary(vec![0u8, 255, 1]);
        let cases = [
            (publish(7, &text).unwrap(), Body::Publish(text.clone())),
            (publish(7, &binary).unwrap(), Body::Publish(binary.clone())),
            (
                broadcast(7, &text, &[1, u64::MAX]).unwrap(),
                Body::Broadcast {
                    except: vec![1, u64::MAX],
                    message: text.clone(),
                },
            ),
            (
                broadcast(7, &binary, &[]).unwrap(),
                Body::Broadcast {
                    except: vec![],
                    message: binary.clone(),
                },
            ),
            (
                send(7, 42, &text).unwrap(),
                Body::Send {
                    id: 42,
                    message: text.clone(),
                },
            ),
            (
                send(7, 42, &binary).unwrap(),
                Body::Send {
                    id: 42,
                    message: binary.clone(),
                },
            ),
            (
                close(7, 42, 4000, "bye"),
                Body::Close {
                    id: 42,
                    code: 4000,
                    reason: "bye".into(),
                },
            ),
            (control(7, b"{}"), Body::Control(Bytes::from_static(b"{}"))),
        ];
        for (bytes, body) in cases {
            assert_eq!(origin(&bytes), Some(7));
            assert_eq!(decode(bytes).unwrap(), Envelope { origin: 7, body });
        }
        assert!(publish(7, &Message::Ping(Default::default())).is_none());
    }

    #[test]
    fn bytes_that_are_not_an_envelope_are_refused_with_the_reason() {
        assert_eq!(
            decode(Bytes::from_static(b"hi")),
            Err(DecodeError::Truncated(2))
        );
        assert_eq!(
            decode(Bytes::from_static(&[0x21, 0, 1])),
            Err(DecodeError::Version(2))
        );
        assert_eq!(
            decode(Bytes::from_static(&[0x1f, 0, 1])),
            Err(DecodeError::Kind(15))
        );
        assert_eq!(
            decode(Bytes::from_static(&[0x11, 0, 1, 0xff])),
            Err(DecodeError::NotUtf8)
        );
        // A broadcast claiming more except ids than it carries.
        assert_eq!(
            decode(Bytes::from_static(&[0x13, 0, 1, 0, 9, 1])),
            Err(DecodeError::Truncated(6))
        );
        assert_eq!(
            decode(Bytes::from_static(&[0x15, 0, 1, 0])),
            Err(DecodeError::Truncated(4))
        );
    }
}
