//! Other Switchboard nodes, as the connection registry sees them: what it hands over when a
//! publish, broadcast, send or close should also reach connections elsewhere, and the ids that say
//! where a connection lives. The cluster layer (`crate::cluster`) implements [`RemoteNodes`] over a
//! message broker; the registry knows only this trait, so `net` stays below it.

use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_tungstenite::tungstenite::Message;

use super::records::{ConnectionInfo, SendError};
use crate::event::ConnectionId;
pub use crate::event::{first_id, node_of, NodeId};

/// What a node's subscription to the broker is for: the registry says when the first local holder
/// of a topic or endpoint arrives and when the last one leaves, so that a node receives only the
/// traffic some local connection wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest<'a> {
    /// Subscribers of a topic (raw connections, or STOMP sessions on `/topic/{topic}`).
    Topic(&'a str),
    /// Connections of an endpoint, for its broadcasts.
    Endpoint(&'a str),
}

/// One node, as presence and `getNodes()` show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// Its number, also the high bits of its connection ids.
    pub id: NodeId,
    /// Its name (`--node-name`, by default host name and listening port).
    pub name: String,
    /// The address its clients connect to.
    pub address: String,
    /// Its open connections, as of its last heartbeat.
    pub connections: usize,
    /// Whether it is the node asking.
    #[serde(rename = "self", default)]
    pub this: bool,
}

/// The answer of `getAllConnections`: what every node that answered in time holds, and the nodes
/// that did not answer.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Presence {
    /// Connections of the nodes that answered, this node's first.
    pub connections: Vec<ConnectionInfo>,
    /// The nodes that answered (this one included).
    pub nodes: Vec<NodeInfo>,
    /// Live nodes that did not answer within the time allowed.
    pub missing: Vec<NodeInfo>,
    /// Whether some node held more connections than one answer carries (the list is partial).
    pub truncated: bool,
}

/// Where the registry hands over what must also reach other nodes. Every method returns at once:
/// messages are queued for the broker, never awaited.
pub trait RemoteNodes: Send + Sync + std::fmt::Debug {
    /// This node's number.
    fn node(&self) -> NodeId;
    /// A publish to `topic`, already delivered here.
    fn publish(&self, topic: &str, message: &Message);
    /// A broadcast to `endpoint`, already delivered here.
    fn broadcast(&self, endpoint: &str, message: &Message, except: &[ConnectionId]);
    /// A message for connection `id` of another node; `NotOpen` when that node is not live.
    fn send(&self, id: ConnectionId, message: &Message) -> Result<(), SendError>;
    /// A close of connection `id` of another node; `NotOpen` when that node is not live.
    fn close(&self, id: ConnectionId, code: u16, reason: &str) -> Result<(), SendError>;
    /// The first local holder of `interest` arrived (`held`), or the last one left.
    fn interest(&self, interest: Interest<'_>, held: bool);
    /// The connections of every live node (of one endpoint, or all; at most `limit` per node),
    /// answered within `deadline`.
    fn all_connections(
        &self,
        endpoint: Option<String>,
        limit: usize,
        deadline: Duration,
    ) -> BoxFuture<'static, Presence>;
    /// The live nodes, this one included.
    fn nodes(&self) -> Vec<NodeInfo>;
}
