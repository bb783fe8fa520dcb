//! Close codes and reasons: the one check for a close a handler asks for (of a connection or of a
//! client, by any API), and the code RFC 6455 asks for when reading failed.

use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Close reasons are limited to 123 bytes (a control frame's payload is at most 125, two of which
/// are the code).
pub const MAX_REASON_BYTES: usize = 123;

/// Why a close a handler asked for was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseRequestError {
    /// Applications may close with 1000 (normal) or 3000-4999 (registered and private codes); the
    /// others are the protocol's own.
    #[error("close: code must be 1000 or 3000-4999, got {0}")]
    Code(u32),
    /// The reason does not fit in a close frame.
    #[error("close: reason must be at most 123 bytes of UTF-8, got {0}")]
    Reason(usize),
}

/// Checks a close a handler asked for (`conn.close`, `disconnect`, `client.close`): the same
/// rule for every socket, also applied by the JavaScript layer before it calls an op.
pub fn checked_close(code: u32, reason: &str) -> Result<u16, CloseRequestError> {
    if !(code == 1000 || (3000..=4999).contains(&code)) {
        return Err(CloseRequestError::Code(code));
    }
    if reason.len() > MAX_REASON_BYTES {
        return Err(CloseRequestError::Reason(reason.len()));
    }
    Ok(code as u16)
}

/// The close code and reason RFC 6455 asks for when reading failed with `error`.
pub fn close_code_for(error: &WsError) -> (u16, String) {
    match error {
        WsError::Utf8(_) => (1007, "invalid UTF-8 in a text message".into()),
        WsError::Capacity(_) => (1009, "message too big".into()),
        WsError::Protocol(problem) => (1002, truncate_reason(&problem.to_string())),
        // A compressed message that does not inflate (see `compression::socket`).
        WsError::Io(error) if error.kind() == std::io::ErrorKind::InvalidData => {
            (1007, truncate_reason(&error.to_string()))
        }
        _ => (1011, "read error".into()),
    }
}

/// `reason` cut to fit a close frame, on a character boundary.
pub fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

/// A close frame.
pub fn close_message(code: u16, reason: String) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handlers_may_close_with_1000_or_3000_to_4999_and_a_short_reason() {
        assert_eq!(checked_close(1000, "bye"), Ok(1000));
        assert_eq!(checked_close(4999, &"x".repeat(123)), Ok(4999));
        for code in [0, 999, 1001, 1006, 2999, 5000, u32::MAX] {
            assert_eq!(checked_close(code, ""), Err(CloseRequestError::Code(code)));
        }
        assert_eq!(
            checked_close(1000, &"é".repeat(62)),
            Err(CloseRequestError::Reason(124))
        );
    }

    #[test]
    fn reasons_are_cut_on_a_character_boundary() {
        let cut = truncate_reason(&"é".repeat(100));
        assert_eq!(cut.len(), 122);
        assert_eq!(truncate_reason("short"), "short");
    }
}
