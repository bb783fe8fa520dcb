//! Which nodes are alive, from their announcements: a node says hello when it connects to the
//! broker (and every node that hears it answers with its own hello, so a newcomer knows the others
//! at once), sends a heartbeat every [`HEARTBEAT`], and says bye when it stops. A node that stops
//! without a bye (`kill -9`, a host gone) is forgotten when [`FORGET_AFTER`] passes without a
//! heartbeat (checked every heartbeat, so within 8 s of its last one); presence then no longer
//! asks it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::net::connections::ConnectionInfo;
use crate::net::remote::{NodeId, NodeInfo};

/// How often a node says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// How long without a heartbeat before a node is forgotten: three heartbeats.
pub const FORGET_AFTER: Duration = Duration::from_secs(6);

/// Membership and presence traffic, as JSON inside a control envelope.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Control {
    /// A node connected to the broker (`answer`: whoever hears it answers with its own hello,
    /// to the sender's node channel).
    #[serde(rename_all = "camelCase")]
    Hello {
        /// The node.
        node: NodeInfo,
        /// This run of the node (a restarted node with the same number is a new member).
        instance: String,
        /// Whether receivers should answer with their own hello.
        answer: bool,
    },
    /// A node is alive.
    #[serde(rename_all = "camelCase")]
    Heartbeat {
        /// The node.
        node: NodeInfo,
        /// This run of the node.
        instance: String,
    },
    /// A node is stopping.
    #[serde(rename_all = "camelCase")]
    Bye {
        /// This run of the node.
        instance: String,
    },
    /// Who holds which connections (`getAllConnections`): every node answers on the asker's
    /// node channel.
    #[serde(rename_all = "camelCase")]
    Query {
        /// The asker's number for this request.
        request: u64,
        /// Only this endpoint's connections (all, when absent).
        endpoint: Option<String>,
        /// At most this many connections per answer.
        limit: usize,
    },
    /// One node's answer to a query.
    #[serde(rename_all = "camelCase")]
    Answer {
        /// The request answered.
        request: u64,
        /// The answering node.
        node: NodeInfo,
        /// Its connections.
        connections: Vec<ConnectionInfo>,
        /// Whether it held more than `limit`.
        truncated: bool,
    },
}

/// A live node.
#[derive(Debug, Clone)]
struct Member {
    /// What it said of itself.
    info: NodeInfo,
    /// Its run.
    instance: String,
    /// When it was last heard from.
    last_seen: Instant,
}

/// What hearing from a node changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// A node not known before (or a new run of a known number).
    Joined,
    /// A node already known.
    Known,
}

/// The other live nodes.
#[derive(Debug, Default)]
pub struct Members {
    /// By number.
    members: HashMap<NodeId, Member>,
}

impl Members {
    /// `node` (run `instance`) said hello or sent a heartbeat.
    pub fn heard(&mut self, node: NodeInfo, instance: &str) -> Heard {
        let now = Instant::now();
        let heard = match self.members.get(&node.id) {
            Some(member) if member.instance == instance => Heard::Known,
            _ => Heard::Joined,
        };
        self.members.insert(
            node.id,
            Member {
                info: NodeInfo {
                    this: false,
                    ..node
                },
                instance: instance.to_string(),
                last_seen: now,
            },
        );
        heard
    }

    /// Run `instance` said bye; returns the node it was.
    pub fn left(&mut self, instance: &str) -> Option<NodeInfo> {
        let id = self
            .members
            .iter()
            .find(|(_, member)| member.instance == instance)
            .map(|(id, _)| *id)?;
        self.members.remove(&id).map(|member| member.info)
    }

    /// Forgets the nodes not heard from within [`FORGET_AFTER`]; returns them.
    pub fn sweep(&mut self, now: Instant) -> Vec<NodeInfo> {
        let mut gone = Vec::new();
        self.members.retain(|_, member| {
            let alive = now.duration_since(member.last_seen) < FORGET_AFTER;
            if !alive {
                gone.push(member.info.clone());
            }
            alive
        });
        gone
    }

    /// After an outage nobody could be heard: every member gets a fresh [`FORGET_AFTER`] to
    /// speak up, so that the live ones are not forgotten before their next heartbeat.
    pub fn grace(&mut self, now: Instant) {
        for member in self.members.values_mut() {
            member.last_seen = now;
        }
    }

    /// Whether `node` is a live member.
    pub fn contains(&self, node: NodeId) -> bool {
        self.members.contains_key(&node)
    }

    /// The live members, by number.
    pub fn list(&self) -> Vec<NodeInfo> {
        let mut list: Vec<NodeInfo> = self.members.values().map(|m| m.info.clone()).collect();
        list.sort_by_key(|info| info.id);
        list
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId) -> NodeInfo {
        NodeInfo {
            id,
            name: format!("node-{id}"),
            address: "127.0.0.1:1".into(),
            connections: 0,
            this: true,
        }
    }

    #[test]
    fn nodes_join_leave_and_are_forgotten_after_three_missed_heartbeats() {
        let mut members = Members::default();
        assert_eq!(members.heard(node(1), "a"), Heard::Joined);
        assert_eq!(members.heard(node(1), "a"), Heard::Known);
        assert!(!members.list()[0].this, "a member is never this node");
        // The same number in a new run is a new member.
        assert_eq!(members.heard(node(1), "b"), Heard::Joined);
        assert_eq!(members.heard(node(2), "c"), Heard::Joined);
        assert_eq!(members.left("c").map(|n| n.id), Some(2));
        assert_eq!(members.left("c"), None);

        let now = Instant::now();
        assert!(members.sweep(now + HEARTBEAT * 2).is_empty());
        let gone = members.sweep(now + FORGET_AFTER + Duration::from_millis(1));
        assert_eq!(gone.iter().map(|n| n.id).collect::<Vec<_>>(), [1]);
        assert!(members.is_empty());
    }

    #[test]
    fn control_messages_read_back_as_written() {
        let query = Control::Query {
            request: 9,
            endpoint: Some("chat".into()),
            limit: 10,
        };
        let json = serde_json::to_string(&query).unwrap();
        assert!(json.contains(r#""type":"query""#), "{json}");
        assert_eq!(serde_json::from_str::<Control>(&json).unwrap(), query);
    }
}
