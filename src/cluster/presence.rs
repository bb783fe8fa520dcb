//! Presence across nodes (`getAllConnections`): a query goes to every live node, each answers on
//! the asker's node channel, and the asker settles when all have answered or its time is up,
//! naming the nodes that did not answer. Here: the queries waiting for answers, and the answer
//! put together.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::net::connections::ConnectionInfo;
use crate::net::remote::{NodeId, NodeInfo, Presence};

/// A presence query waiting for answers.
#[derive(Debug)]
pub struct PendingQuery {
    /// The live nodes asked, not yet answered.
    waiting: BTreeMap<NodeId, NodeInfo>,
    /// The answers so far: node, connections, truncated.
    answers: Vec<(NodeInfo, Vec<ConnectionInfo>, bool)>,
    /// Told when every node asked has answered.
    complete: Option<oneshot::Sender<()>>,
}

impl PendingQuery {
    /// Tells the asker when no node is left to wait for.
    fn complete_if_answered(&mut self) {
        if self.waiting.is_empty() {
            if let Some(complete) = self.complete.take() {
                let _ = complete.send(());
            }
        }
    }
}

/// The queries this node is waiting on, by request number.
#[derive(Debug)]
pub struct Queries {
    /// Waiting queries.
    pending: Mutex<HashMap<u64, PendingQuery>>,
    /// The next request number.
    next_request: AtomicU64,
}

impl Default for Queries {
    fn default() -> Self {
        Self {
            pending: Mutex::default(),
            next_request: AtomicU64::new(1),
        }
    }
}

impl Queries {
    /// A new query to `nodes`: its request number, and what tells when all have answered.
    pub fn open(&self, nodes: Vec<NodeInfo>) -> (u64, oneshot::Receiver<()>) {
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (complete, completed) = oneshot::channel();
        self.pending.lock().insert(
            request,
            PendingQuery {
                waiting: nodes.into_iter().map(|n| (n.id, n)).collect(),
                answers: Vec::new(),
                complete: Some(complete),
            },
        );
        (request, completed)
    }

    /// Node `node` answered `request` (a late or repeated answer is ignored).
    pub fn answered(
        &self,
        request: u64,
        node: NodeInfo,
        connections: Vec<ConnectionInfo>,
        truncated: bool,
    ) {
        let mut pending = self.pending.lock();
        if let Some(query) = pending.get_mut(&request) {
            if query.waiting.remove(&node.id).is_some() {
                query.answers.push((node, connections, truncated));
            }
            query.complete_if_answered();
        }
    }

    /// Node `node` left: no query waits for it any more.
    pub fn stop_waiting_for(&self, node: NodeId) {
        for query in self.pending.lock().values_mut() {
            query.waiting.remove(&node);
            query.complete_if_answered();
        }
    }

    /// Ends `request`, with what arrived.
    pub fn close(&self, request: u64) -> Option<PendingQuery> {
        self.pending.lock().remove(&request)
    }
}

/// The answer: this node's connections first, then those of the nodes that answered (by number),
/// and the nodes that did not (`missing`: asked and silent, or unreachable with the broker down).
pub fn assemble(
    local: (Vec<ConnectionInfo>, bool),
    this: NodeInfo,
    query: Option<PendingQuery>,
    missing: Vec<NodeInfo>,
) -> Presence {
    let (mut connections, mut truncated) = local;
    let mut nodes = vec![this];
    let mut missing = missing;
    if let Some(query) = query {
        let mut answers = query.answers;
        answers.sort_by_key(|(node, _, _)| node.id);
        for (node, of_node, cut) in answers {
            connections.extend(of_node);
            truncated |= cut;
            nodes.push(node);
        }
        missing.extend(query.waiting.into_values());
    }
    Presence {
        connections,
        nodes,
        missing,
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId) -> NodeInfo {
        NodeInfo {
            id,
            name: format!("n{id}"),
            address: String::new(),
            connections: 0,
            this: false,
        }
    }

    #[test]
    fn a_query_completes_when_every_node_answered_or_left_and_names_the_silent_ones() {
        let queries = Queries::default();
        let (request, mut completed) = queries.open(vec![node(2), node(3), node(4)]);
        queries.answered(request, node(3), Vec::new(), true);
        queries.answered(request, node(3), Vec::new(), false); // repeated: ignored
        assert!(completed.try_recv().is_err());
        queries.stop_waiting_for(4);
        assert!(completed.try_recv().is_err());
        let presence = assemble(
            (Vec::new(), false),
            node(1),
            queries.close(request),
            Vec::new(),
        );
        let ids = |nodes: &[NodeInfo]| nodes.iter().map(|n| n.id).collect::<Vec<_>>();
        assert_eq!(ids(&presence.nodes), [1, 3]);
        assert_eq!(ids(&presence.missing), [2]);
        assert!(presence.truncated);

        let (request, mut completed) = queries.open(vec![node(2)]);
        queries.answered(request, node(2), Vec::new(), false);
        assert!(completed.try_recv().is_ok());
        assert!(queries.close(request).is_some());
        assert!(queries.close(request).is_none());
    }
}
