//! The nodes behind one application (`serve --broker`): which are live, and presence across
//! them. Without a broker this node is the only one, and the answers say so.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use deno_core::op2;
use deno_core::OpState;

use super::context::IsolateContext;
use crate::net::connections::ConnectionRegistry;
use crate::net::remote::{NodeInfo, Presence};

/// The longest a presence query may wait for the other nodes.
const LONGEST_WAIT_MS: u64 = 30_000;

fn registry(state: &OpState) -> Arc<ConnectionRegistry> {
    state
        .borrow::<IsolateContext>()
        .services
        .connections
        .clone()
}

/// The live nodes, this one first.
#[op2]
#[serde]
pub fn op_ws_nodes(state: &mut OpState) -> Vec<NodeInfo> {
    let registry = registry(state);
    match registry.remote() {
        Some(remote) => remote.nodes(),
        None => vec![registry.this_node()],
    }
}

/// The connections of every live node (of `endpoint`, or of all when it is ""), at most `limit`
/// per node; nodes that do not answer within `wait_ms` are named, never waited for longer.
#[op2]
#[serde]
pub async fn op_ws_all_connections(
    state: Rc<RefCell<OpState>>,
    #[string] endpoint: String,
    #[number] limit: u64,
    #[number] wait_ms: u64,
) -> Presence {
    let registry = registry(&state.borrow());
    let endpoint = (!endpoint.is_empty()).then_some(endpoint);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let wait = Duration::from_millis(wait_ms.min(LONGEST_WAIT_MS));
    match registry.remote() {
        Some(remote) => remote.all_connections(endpoint, limit, wait).await,
        None => {
            let (connections, total) = registry.list_first(endpoint.as_deref(), limit);
            let truncated = total > connections.len();
            Presence {
                connections,
                nodes: vec![registry.this_node()],
                missing: Vec::new(),
                truncated,
            }
        }
    }
}
