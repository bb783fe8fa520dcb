//! Server-side control over inbound connections from any isolate: listing, sending,
//! disconnecting, broadcasting, topics. Messages for many peers are built once and shared.

use deno_core::op2;
use deno_core::OpState;
use tokio_tungstenite::tungstenite::Message;

use super::connection::ConnectionOpError;
use super::context::IsolateContext;
use crate::net::connections::{ConnectionInfo, ConnectionRegistry};

/// The shared registry of inbound connections.
fn connections(state: &OpState) -> &ConnectionRegistry {
    &state.borrow::<IsolateContext>().services.connections
}

/// Open connections, of one endpoint or ("") of all.
#[op2]
#[serde]
pub fn op_ws_connections_list(
    state: &mut OpState,
    #[string] endpoint: &str,
) -> Vec<ConnectionInfo> {
    let endpoint = (!endpoint.is_empty()).then_some(endpoint);
    connections(state).list(endpoint)
}

#[op2]
#[serde]
pub fn op_ws_connection_info(state: &mut OpState, #[number] id: u64) -> Option<ConnectionInfo> {
    connections(state).get(id)
}

#[op2]
#[number]
pub fn op_ws_broadcast_text(
    state: &mut OpState,
    #[string] endpoint: &str,
    #[string] text: String,
    #[serde] except: Vec<u64>,
) -> u64 {
    connections(state).broadcast(endpoint, Message::text(text), &except) as u64
}

#[op2]
#[number]
pub fn op_ws_broadcast_binary(
    state: &mut OpState,
    #[string] endpoint: &str,
    #[buffer(copy)] data: bytes::Bytes,
    #[serde] except: Vec<u64>,
) -> u64 {
    connections(state).broadcast(endpoint, Message::binary(data), &except) as u64
}

#[op2(fast)]
pub fn op_ws_subscribe(
    state: &mut OpState,
    #[number] id: u64,
    #[string] topic: &str,
) -> Result<(), ConnectionOpError> {
    Ok(connections(state).subscribe(id, topic)?)
}

#[op2(fast)]
pub fn op_ws_unsubscribe(state: &mut OpState, #[number] id: u64, #[string] topic: &str) {
    connections(state).unsubscribe(id, topic);
}

#[op2(fast)]
#[number]
pub fn op_ws_publish_text(
    state: &mut OpState,
    #[string] topic: &str,
    #[string] text: String,
) -> u64 {
    connections(state).publish(topic, Message::text(text)) as u64
}

#[op2(fast)]
#[number]
pub fn op_ws_publish_binary(
    state: &mut OpState,
    #[string] topic: &str,
    #[buffer(copy)] data: bytes::Bytes,
) -> u64 {
    connections(state).publish(topic, Message::binary(data)) as u64
}
