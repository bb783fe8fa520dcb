//! What the connection registry says about connections: the record a listing shows (locally,
//! and from other nodes) and why a send did not happen. Below both the registry and the
//! remote side, which share them.

use crate::event::{ConnectionId, NodeId};

/// What `getConnections()` shows of a connection (and `getAllConnections()`, from every node).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionInfo {
    /// The connection's id.
    pub id: ConnectionId,
    /// The node it is open on (0 without a broker).
    pub node: NodeId,
    /// The endpoint it was upgraded on.
    pub endpoint: String,
    /// The peer's address and port.
    pub remote_address: String,
    /// When it opened, in milliseconds since the Unix epoch.
    pub opened_at: u64,
    /// `conn.data` as JSON, if `onUpgrade` attached any.
    pub data: Option<String>,
    /// The topics it subscribed to.
    pub topics: Vec<String>,
    /// Messages received from it.
    #[serde(default)]
    pub messages_in: u64,
    /// Messages sent to it.
    #[serde(default)]
    pub messages_out: u64,
}

/// Why a send to a connection did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No open connection has the id.
    #[error("connection {0} is not open")]
    NotOpen(ConnectionId),
    /// The connection is on another node, and the broker that reaches it is down.
    #[error("connection {0} is on node {1}, which cannot be reached now: the broker is down (this node keeps serving its own connections and reconnects)")]
    Unreachable(ConnectionId, u16),
    /// A close was requested; nothing sent after it would arrive.
    #[error("connection {0} is closing: nothing more can be sent on it")]
    Closing(ConnectionId),
    /// The peer stopped reading; the connection is being closed.
    #[error("connection {0}'s send queue is full: the peer is not reading; the connection is being closed with 1008")]
    QueueFull(ConnectionId),
}
