//! The vocabulary the layers share: who an event is for, the events a handler's isolate receives,
//! the answers the network side waits for, why a handler could not load, and the trait a socket's
//! pump delivers events through.
//!
//! `net` (sockets) and `isolate` (JavaScript) meet here without importing each other: the pump
//! hands [`IsolateEvent`]s to any [`EventSink`], and the isolate layer is one.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Identifies one inbound connection for the life of the process; never reused. With a broker
/// (several nodes), the id's high bits are its node's number, so ids are unique across nodes.
pub type ConnectionId = u64;

/// A node's number among the nodes sharing a broker (0 when there is no broker).
pub type NodeId = u16;

/// Connection ids carry their node in the bits above this one: 16 bits of node and 37 of counter
/// (137 billion connections per node run) keep every id a safe JavaScript integer (< 2^53).
pub const NODE_SHIFT: u32 = 37;

/// The node a connection id belongs to.
pub fn node_of(id: ConnectionId) -> NodeId {
    (id >> NODE_SHIFT) as NodeId
}

/// The first connection id a node gives.
pub fn first_id(node: NodeId) -> ConnectionId {
    (u64::from(node) << NODE_SHIFT) | 1
}

/// `time` in milliseconds since the Unix epoch, as handlers, the console and presence show times
/// (0 for a time before it).
pub fn epoch_millis(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Identifies one outbound client for the life of the process; never reused (a separate id space
/// from connections).
pub type ClientId = u64;

/// Whose event it is: an inbound connection or an outbound client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An inbound connection, upgraded on one of the workspace's endpoints.
    Connection(ConnectionId),
    /// An outbound client, created by a handler with `createWebsocket`.
    Client(ClientId),
}

impl Target {
    /// The id, whichever id space it is from.
    pub fn id(self) -> u64 {
        match self {
            Target::Connection(id) | Target::Client(id) => id,
        }
    }
}

/// One event for a handler, in arrival order per connection or client.
#[derive(Debug)]
pub enum IsolateEvent {
    /// The socket opened: `onOpen`.
    Open {
        /// Whose socket.
        target: Target,
        /// The endpoint of an inbound connection.
        endpoint: Option<Arc<str>>,
        /// The subprotocol agreed with the server, for a client.
        protocol: Option<String>,
        /// What `onUpgrade` attached to an inbound connection, as JSON.
        data: Option<String>,
    },
    /// A text message: `onMessage(string)`.
    Text {
        /// Whose message.
        target: Target,
        /// The message, already checked to be UTF-8.
        text: Utf8Bytes,
    },
    /// A binary message: `onMessage(Uint8Array)`.
    Binary {
        /// Whose message.
        target: Target,
        /// The message's bytes.
        data: Bytes,
    },
    /// A network error: `onError`.
    Error {
        /// Whose socket failed.
        target: Target,
        /// What went wrong, in words.
        message: String,
    },
    /// The socket closed: `onClose`.
    Close {
        /// Whose socket.
        target: Target,
        /// The close code (1006 when the socket ended without a close frame).
        code: u16,
        /// The close reason.
        reason: String,
        /// Whether a close frame was exchanged.
        was_clean: bool,
        /// The endpoint of an inbound connection: the isolate may not know the connection yet
        /// (its handler was reloaded since it opened).
        endpoint: Option<Arc<str>>,
    },
    /// Ask the handler's `onUpgrade` whether a connection may open.
    Upgrade {
        /// The request, as JSON for `onUpgrade(request)`.
        request: String,
        /// Where the answer goes.
        decision: oneshot::Sender<UpgradeDecision>,
    },
    /// Run `onStart`, `onTick` or `onStop` for an endpoint; `done` answers when it has finished
    /// (an async one included).
    Service {
        /// Which export to run.
        call: ServiceCall,
        /// The endpoint it runs for (its argument).
        endpoint: Arc<str>,
        /// Answered once the call has finished.
        done: oneshot::Sender<()>,
    },
    /// A message sent to an endpoint from a STOMP session (Dirigible's `SEND
    /// /ws/stomp/{endpoint}`): `onMessage(text, from)`, whose outcome is answered, not sent.
    Request {
        /// The endpoint it was sent to.
        endpoint: Arc<str>,
        /// The message's text.
        text: String,
        /// Who sent it, as the sender wrote it (Dirigible's `from`, a nickname).
        from: String,
        /// The message could not be read (its body was not Dirigible's JSON): `onError(text)`
        /// runs instead, `text` being the reason.
        unreadable: bool,
        /// Answered with the return value (as text), or the error's text.
        answer: oneshot::Sender<RequestAnswer>,
    },
    /// Replace the handler's code by the module's current version. It travels in the same
    /// queue as the events, so every event before it runs the old code, every event after it
    /// the new code.
    Reload {
        /// Answered with the outcome once the new code has loaded (or failed to).
        done: oneshot::Sender<Result<(), HandlerLoadError>>,
    },
}

/// What a handler made of a [`IsolateEvent::Request`]: its return value as text (`None` when it
/// returned nothing), or the text of the error it threw.
pub type RequestAnswer = Result<Option<String>, String>;

/// The lifecycle and periodic exports of a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceCall {
    /// `onStart(endpoint)`, when an endpoint is bound.
    Start,
    /// `onTick(endpoint)`, at the descriptor's `service.interval`.
    Tick,
    /// `onStop(endpoint)`, when an endpoint is unbound.
    Stop,
}

impl ServiceCall {
    /// The name of the export it runs.
    pub fn export(self) -> &'static str {
        match self {
            ServiceCall::Start => "onStart",
            ServiceCall::Tick => "onTick",
            ServiceCall::Stop => "onStop",
        }
    }
}

/// What a handler's `onUpgrade` decided.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(tag = "decision", rename_all = "camelCase")]
pub enum UpgradeDecision {
    /// Open the connection.
    Accept {
        /// What becomes `conn.data`, as JSON.
        data: Option<String>,
    },
    /// Answer the upgrade request with an HTTP error.
    Refuse {
        /// The HTTP status.
        status: u16,
        /// The plain-text reason in the response body.
        reason: String,
    },
}

/// The handler's isolate has stopped (its handler was unloaded): the event was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the handler's isolate has stopped")]
pub struct IsolateGone;

/// Where a socket's events go. The isolate layer's handler slot is one; the socket pump (`net`)
/// knows only this trait.
pub trait EventSink: Send + Sync {
    /// Queues an event, waiting while the handler's queue is full (backpressure on the socket);
    /// fails once the handler is gone.
    fn deliver(&self, event: IsolateEvent) -> impl Future<Output = Result<(), IsolateGone>> + Send;
}

/// Why a handler module could not be (re)loaded. Every message names the file, and, for errors in
/// the code, the line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerLoadError {
    /// The module's code failed: a syntax error, a top level that threw, an import that could not
    /// be resolved.
    #[error("{}: {message}", location.as_deref().unwrap_or(file))]
    Code {
        /// The handler module, relative to the workspace.
        file: String,
        /// `file:line:column` where the error is, when the engine says (it may be a module the
        /// handler imports).
        location: Option<String>,
        /// The error's message.
        message: String,
    },
    /// The module's top level ran past a limit and was terminated.
    #[error("{file}: its top level was terminated: {reason}")]
    Terminated {
        /// The handler module, relative to the workspace.
        file: String,
        /// Which limit, in words.
        reason: String,
    },
    /// The handler's file could not be read.
    #[error("{file}: cannot read the handler: {reason}")]
    Unreadable {
        /// The handler module, relative to the workspace.
        file: String,
        /// The operating system's words.
        reason: String,
    },
    /// The isolate (its thread, its event loop, our bootstrap) could not be set up.
    #[error("{file}: {what}: {reason}")]
    Isolate {
        /// The handler module, relative to the workspace.
        file: String,
        /// The step that failed, e.g. "cannot start a thread".
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The handler's isolate stopped before it could load the code.
    #[error("{file}: the isolate has stopped")]
    Stopped {
        /// The handler module, relative to the workspace.
        file: String,
    },
}

/// The event kinds, as the JavaScript dispatcher numbers them. `runtime_js` reads this table
/// through `op_sb_event_kinds` when an isolate starts, so the two sides cannot drift apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EventKind {
    /// A connection opened.
    Open = 0,
    /// A connection's message.
    Message = 1,
    /// A connection's error.
    Error = 2,
    /// A connection closed.
    Close = 3,
    /// A client opened.
    ClientOpen = 4,
    /// A client's message.
    ClientMessage = 5,
    /// A client's error.
    ClientError = 6,
    /// A client closed.
    ClientClose = 7,
    /// `onUpgrade(request)`.
    Upgrade = 8,
    /// `onStart`, `onTick` or `onStop`.
    Service = 9,
    /// `onMessage(text, from)` for a STOMP session's message, answered.
    Request = 10,
}

impl EventKind {
    /// Every kind with the name the JavaScript side knows it by.
    pub const ALL: [(&'static str, EventKind); 11] = [
        ("OPEN", EventKind::Open),
        ("MESSAGE", EventKind::Message),
        ("ERROR", EventKind::Error),
        ("CLOSE", EventKind::Close),
        ("CLIENT_OPEN", EventKind::ClientOpen),
        ("CLIENT_MESSAGE", EventKind::ClientMessage),
        ("CLIENT_ERROR", EventKind::ClientError),
        ("CLIENT_CLOSE", EventKind::ClientClose),
        ("UPGRADE", EventKind::Upgrade),
        ("SERVICE", EventKind::Service),
        ("REQUEST", EventKind::Request),
    ];

    /// The kind of a socket event for `target`: a client's kinds follow the connection's.
    pub fn for_target(self, target: Target) -> EventKind {
        match (target, self) {
            (Target::Client(_), EventKind::Open) => EventKind::ClientOpen,
            (Target::Client(_), EventKind::Message) => EventKind::ClientMessage,
            (Target::Client(_), EventKind::Error) => EventKind::ClientError,
            (Target::Client(_), EventKind::Close) => EventKind::ClientClose,
            (_, kind) => kind,
        }
    }

    /// The number the dispatcher is called with.
    pub fn number(self) -> f64 {
        f64::from(self as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_kinds_follow_the_connection_kinds_in_the_same_order() {
        for kind in [
            EventKind::Open,
            EventKind::Message,
            EventKind::Error,
            EventKind::Close,
        ] {
            let client = kind.for_target(Target::Client(1));
            assert_eq!(client as u8, kind as u8 + EventKind::ClientOpen as u8);
            assert_eq!(kind.for_target(Target::Connection(1)), kind);
        }
        let numbers: Vec<u8> = EventKind::ALL.iter().map(|(_, k)| *k as u8).collect();
        assert_eq!(
            numbers,
            (0..EventKind::ALL.len() as u8).collect::<Vec<u8>>()
        );
    }

    #[test]
    fn load_errors_name_the_file_or_the_place_in_the_code() {
        let located = HandlerLoadError::Code {
            file: "p/h.js".into(),
            location: Some("p/lib.js:2:13".into()),
            message: "SyntaxError: unexpected token".into(),
        };
        assert_eq!(
            located.to_string(),
            "p/lib.js:2:13: SyntaxError: unexpected token"
        );
        let unlocated = HandlerLoadError::Code {
            file: "p/h.mjs".into(),
            location: None,
            message: "cannot find module \"./x\" from p/h.mjs".into(),
        };
        assert_eq!(
            unlocated.to_string(),
            "p/h.mjs: cannot find module \"./x\" from p/h.mjs"
        );
    }

    #[test]
    fn ids_carry_their_node_and_stay_safe_javascript_integers() {
        const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
        assert_eq!(first_id(0), 1);
        assert_eq!(node_of(first_id(0) + 1_000_000), 0);
        let last_node = NodeId::MAX;
        let last_id = first_id(last_node) + (1 << NODE_SHIFT) - 2;
        assert!(last_id <= MAX_SAFE_INTEGER);
        assert_eq!(node_of(last_id), last_node);
        assert_eq!(node_of(first_id(7)), 7);
    }
}
