//! Sending to and closing one inbound connection, by id, through the shared connection registry.

use deno_core::op2;
use deno_core::OpState;
use tokio_tungstenite::tungstenite::Message;

use super::context::IsolateContext;
use crate::net::close::{checked_close, CloseRequestError};
use crate::net::connections::SendError;

/// Why an op on a connection failed, as JavaScript sees it.
#[derive(Debug, thiserror::Error, deno_error::JsError)]
pub enum ConnectionOpError {
    /// The connection is not open, closing, or its queue is full: an `Error`.
    #[class(generic)]
    #[error(transparent)]
    Send(#[from] SendError),
    /// A close code or reason no handler may use: a `RangeError`.
    #[class(range)]
    #[error(transparent)]
    Close(#[from] CloseRequestError),
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
    let code = checked_close(code, &reason)?;
    let context = state.borrow::<IsolateContext>();
    Ok(context.services.connections.close(id, code, reason)?)
}

/// The endpoint of an open connection, or null.
#[op2]
#[string]
pub fn op_ws_connection_endpoint(state: &mut OpState, #[number] id: u64) -> Option<String> {
    let context = state.borrow::<IsolateContext>();
    context.services.connections.endpoint_of(id)
}
