//! Where a socket is in its life, and how it ended.

use std::pin::Pin;
use std::sync::Arc;

use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use super::io::CLOSE_HANDSHAKE_TIMEOUT;
use crate::event::{IsolateEvent, Target};

/// How a socket ended, as reported to `onClose`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// The close code (1006 when there was no close frame).
    pub code: u16,
    /// The close reason.
    pub reason: String,
    /// Whether a close frame was exchanged.
    pub was_clean: bool,
}

impl Ending {
    /// The socket ended without a close frame.
    pub fn abnormal() -> Self {
        Ending {
            code: 1006,
            reason: String::new(),
            was_clean: false,
        }
    }

    /// What the peer's close frame said (1005 when it gave no code).
    pub(super) fn from_close_frame(frame: Option<CloseFrame>) -> Self {
        match frame {
            Some(frame) => Ending {
                code: frame.code.into(),
                reason: frame.reason.to_string(),
                was_clean: true,
            },
            None => Ending {
                code: 1005,
                reason: String::new(),
                was_clean: true,
            },
        }
    }

    /// The `onClose` event of `target`; `endpoint` for an inbound connection.
    pub fn into_event(self, target: Target, endpoint: Option<Arc<str>>) -> IsolateEvent {
        IsolateEvent::Close {
            target,
            code: self.code,
            reason: self.reason,
            was_clean: self.was_clean,
            endpoint,
        }
    }
}

/// Where a socket is in its life. What the pump still does follows from it: read while not
/// [`Phase::ReadFailed`], take the outbound queue and ping until [`Phase::CloseSent`], and let
/// the handler's thread write directly only while [`Phase::Open`] with nothing of ours half
/// written.
#[derive(Debug)]
pub(super) enum Phase {
    /// Reading and writing.
    Open {
        /// Nothing of ours is half written and no pong is owed: direct writes may go out.
        flushed: bool,
    },
    /// The close is under way (the peer's close frame arrived, or the peer stopped answering
    /// pings): reading goes on until the peer ends, and what is queued still goes out.
    Closing {
        /// How the socket ends.
        ending: Ending,
    },
    /// Reading failed: a close frame with the error's code is queued, and is the last thing
    /// written.
    ReadFailed {
        /// How the socket ends.
        ending: Ending,
    },
    /// Our close frame is out (or writing failed): only the peer's answer is awaited.
    CloseSent {
        /// How the socket ends, once known (the peer's answer says).
        ending: Option<Ending>,
    },
}

impl Phase {
    /// Whether frames are still read.
    pub(super) fn reading(&self) -> bool {
        !matches!(self, Phase::ReadFailed { .. })
    }

    /// Whether our close frame is out.
    pub(super) fn close_sent(&self) -> bool {
        matches!(self, Phase::CloseSent { .. })
    }

    /// Whether pings go out and a silent peer is caught.
    pub(super) fn keeps_alive(&self) -> bool {
        matches!(self, Phase::Open { .. } | Phase::Closing { .. })
    }

    /// Whether the handler's thread may write to the socket directly now.
    pub(super) fn takes_direct_writes(&self) -> bool {
        matches!(self, Phase::Open { flushed: true })
    }

    /// Something of ours is being written (or a pong is owed): no direct writes meanwhile.
    pub(super) fn writing(&mut self) {
        if let Phase::Open { flushed } = self {
            *flushed = false;
        }
    }

    /// Everything of ours went out whole.
    pub(super) fn flushed(&mut self) {
        if let Phase::Open { flushed } = self {
            *flushed = true;
        }
    }

    /// The close is under way with `ending`, unless it already was.
    pub(super) fn closing(&mut self, ending: Ending) {
        if let Phase::Open { .. } = self {
            *self = Phase::Closing { ending };
        }
    }

    /// The peer's close frame arrived.
    pub(super) fn peer_closed(&mut self, ending: Ending) {
        match self {
            Phase::CloseSent { ending: known } => *known = Some(ending),
            _ => *self = Phase::Closing { ending },
        }
    }

    /// Our close frame is out: the peer has until `deadline` to answer.
    pub(super) fn send_close(&mut self, deadline: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
        *deadline = Some(Box::pin(tokio::time::sleep(CLOSE_HANDSHAKE_TIMEOUT)));
        let ending = match std::mem::replace(self, Phase::CloseSent { ending: None }) {
            Phase::Open { .. } => None,
            Phase::Closing { ending } | Phase::ReadFailed { ending } => Some(ending),
            Phase::CloseSent { ending } => ending,
        };
        *self = Phase::CloseSent { ending };
    }

    /// How the socket ended (1006 if nothing said otherwise).
    pub(super) fn ending(self) -> Ending {
        match self {
            Phase::Open { .. } | Phase::CloseSent { ending: None } => Ending::abnormal(),
            Phase::Closing { ending }
            | Phase::ReadFailed { ending }
            | Phase::CloseSent {
                ending: Some(ending),
            } => ending,
        }
    }
}
