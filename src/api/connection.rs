//! Sending to and closing inbound connections, by id, through the shared connection registry.

use deno_core::op2;
use deno_core::OpState;
use tokio_tungstenite::tungstenite::Message;

use super::IsolateContext;
use crate::connections::SendError;

#[derive(Debug, thiserror::Error, deno_error::JsError)]
pub enum ConnectionOpError {
    #[class(generic)]
    #[error("{0}")]
    Send(#[from] SendError),
    #[class(range)]
    #[error("close: code must be 1000 or 3000-4999, got {0}")]
    CloseCode(u32),
    #[class(range)]
    #[error("close: reason must be at most 123 bytes of UTF-8, got {0}")]
    CloseReason(usize),
}

#[op2(fast)]
pub fn op_ws_send_text(
    state: &mut OpState,
    #[number] id: u64,
    #[string] text: String,
) -> Result<(), ConnectionOpError> {
    let context = state.borrow::<IsolateContext>();
    Ok(context.services.connections.send(id, Message::text(text))?)
}

#[op2(fast)]
pub fn op_ws_send_binary(
    state: &mut OpState,
    #[number] id: u64,
    #[buffer(copy)] data: bytes::Bytes,
) -> Result<(), ConnectionOpError> {
    let context = state.borrow::<IsolateContext>();
    Ok(context
        .services
        .connections
        .send(id, Message::binary(data))?)
}

#[op2(fast)]
pub fn op_ws_close(
    state: &mut OpState,
    #[number] id: u64,
    code: u32,
    #[string] reason: String,
) -> Result<(), ConnectionOpError> {
    // The JS layer validates first; this guards the ops themselves.
    if !(code == 1000 || (3000..=4999).contains(&code)) {
        return Err(ConnectionOpError::CloseCode(code));
    }
    if reason.len() > 123 {
        return Err(ConnectionOpError::CloseReason(reason.len()));
    }
    let context = state.borrow::<IsolateContext>();
    Ok(context
        .services
        .connections
        .close(id, code as u16, reason)?)
}

/// The endpoint of an open connection, or null.
#[op2]
#[string]
pub fn op_ws_connection_endpoint(state: &mut OpState, #[number] id: u64) -> Option<String> {
    let context = state.borrow::<IsolateContext>();
    context.services.connections.endpoint_of(id)
}
